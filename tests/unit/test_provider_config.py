"""Provider tables for openai, anthropic and mistral, and PROVIDER/MODEL addressing."""
import pytest

from finops.shared.config import ConfigError, build
from finops.workers.providers import build_provider
from finops.workers.providers.openai import max_tokens_field
from finops.workers.request import Attempt
from finops.workers.routing.planner import AttemptPlan
from finops.workers.routing.router import Circuits


def cfg(providers, **rest):
    return build({"providers": providers, **rest}, "test", environ={"OPENAI_API_KEY": "sk-x", "K": "k"})


def test_defaults_base_urls_and_strips_trailing_slash():
    c = cfg({"o": {"kind": "openai", "keys": [{"api_key": "${OPENAI_API_KEY}"}]},
             "a": {"kind": "anthropic", "keys": [{"api_key": "${K}"}]},
             "m": {"kind": "mistral", "keys": [{"api_key": "${K}"}]},
             "local": {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1/"}})
    assert c.providers["o"].base_url == "https://api.openai.com/v1"
    assert c.providers["a"].base_url == "https://api.anthropic.com"
    assert c.providers["m"].base_url == "https://api.mistral.ai/v1"
    assert c.providers["local"].base_url == "http://127.0.0.1:11434/v1"
    assert c.providers["o"].keys[0].api_key == "sk-x"


@pytest.mark.parametrize("kind", ["anthropic", "mistral"])
def test_anthropic_and_mistral_need_a_key(kind):
    with pytest.raises(ConfigError, match=rf"providers.p.keys: a {kind} provider needs at least one key"):
        cfg({"p": {"kind": kind}})


def test_an_empty_api_key_is_named():
    with pytest.raises(ConfigError, match=r"providers.p.keys\[0\].api_key: missing or empty"):
        cfg({"p": {"kind": "openai", "keys": [{"api_key": ""}]}})


def test_azure_needs_base_url():
    with pytest.raises(ConfigError, match="providers.az.base_url: required for Azure"):
        cfg({"az": {"kind": "openai", "azure_api_version": "2024-10-21", "keys": [{"api_key": "k"}]}})


@pytest.mark.parametrize("bad,msg", [
    ({"headers": {"a": 1}}, "headers: expected a table of strings"),
    ({"headers": "x"}, "headers: expected dict"),
    ({"passthrough_fields": "top_k"}, "passthrough_fields: expected list"),
    ({"max_tokens_field": "max"}, "max_tokens_field: must be"),
    ({"stream_usage": "yes"}, "stream_usage: expected bool"),
    ({"kind": "anthropic", "keys": [{"api_key": "k"}], "default_max_tokens": 0}, "default_max_tokens: must be >= 1")])
def test_option_validation(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        cfg({"p": {"kind": "openai", **bad}})


@pytest.mark.parametrize("table,key", [
    ({"kind": "openai", "default_max_tokens": 5}, "default_max_tokens"),       # anthropic's
    ({"kind": "mock", "base_url": "http://x"}, "base_url"),                    # the mock has no upstream
    ({"kind": "mock", "keys": [{"api_key": "k"}]}, "keys"),
    ({"kind": "bedrock", "headers": {"a": "b"}}, "headers"),                   # openai, anthropic, mistral only
    ({"kind": "anthropic", "keys": [{"api_key": "k"}], "azure_api_version": "v"}, "azure_api_version"),
    ({"kind": "openai", "region": "eu-west-1"}, "region"),                     # bedrock's
])
def test_each_kind_has_only_its_own_keys(table, key):
    with pytest.raises(ConfigError, match=rf"providers\.p\.{key}: unknown key \(known keys: .*kind"):
        cfg({"p": table})


def test_a_key_of_the_wrong_shape_names_the_fields_of_the_right_one():
    with pytest.raises(ConfigError, match=r"providers.p.keys\[0\].api_key: unknown key \(known keys: access_key_id, "
                                          r"models, secret_access_key, session_token, weight\)"):
        cfg({"p": {"kind": "bedrock", "keys": [{"api_key": "k"}]}})


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="providers.p.kind: must be one of mock, bedrock, openai, anthropic, mistral"):
        cfg({"p": {"kind": "vertex"}})


def test_max_tokens_field_by_server():
    c = cfg({"official": {"kind": "openai", "keys": [{"api_key": "k"}]},
             "az": {"kind": "openai", "base_url": "https://r.openai.azure.com", "azure_api_version": "v",
                    "keys": [{"api_key": "k"}]},
             "vllm": {"kind": "openai", "base_url": "http://10.0.0.1:8000/v1"},
             "forced": {"kind": "openai", "base_url": "http://10.0.0.1:8000/v1",
                        "max_tokens_field": "max_completion_tokens"}})
    assert max_tokens_field(c.providers["official"]) == "max_completion_tokens"
    assert max_tokens_field(c.providers["az"]) == "max_completion_tokens"
    assert max_tokens_field(c.providers["vllm"]) == "max_tokens"
    assert max_tokens_field(c.providers["forced"]) == "max_completion_tokens"


def test_endpoints_and_auth_headers():
    c = cfg({"o": {"kind": "openai", "keys": [{"api_key": "sk-1"}], "headers": {"OpenAI-Organization": "org-1"}},
             "az": {"kind": "openai", "base_url": "https://r.openai.azure.com", "azure_api_version": "2024-10-21",
                    "azure_deployment": "my dep", "keys": [{"api_key": "az-1"}]},
             "a": {"kind": "anthropic", "keys": [{"api_key": "ak"}], "anthropic_version": "2023-06-01"},
             "m": {"kind": "mistral", "keys": [{"api_key": "mk"}]}})
    o, az, a, m = (build_provider(c.providers[n]) for n in ("o", "az", "a", "m"))
    assert o.endpoint("gpt-4o-mini") == "https://api.openai.com/v1/chat/completions"
    assert (b"authorization", b"Bearer sk-1") in o.headers(None, first_key(o))
    assert (b"OpenAI-Organization", b"org-1") in o.headers(None, first_key(o))
    assert az.endpoint("gpt-4o") == ("https://r.openai.azure.com/openai/deployments/my%20dep/chat/completions"
                                     "?api-version=2024-10-21")
    h = az.headers(None, first_key(az))
    assert (b"api-key", b"az-1") in h and not any(k == b"authorization" for k, _ in h)
    assert a.endpoint("claude") == "https://api.anthropic.com/v1/messages"
    h = a.headers(None, first_key(a))
    assert (b"x-api-key", b"ak") in h and (b"anthropic-version", b"2023-06-01") in h
    assert m.endpoint("mistral-small") == "https://api.mistral.ai/v1/chat/completions"
    assert (b"authorization", b"Bearer mk") in m.headers(None, first_key(m))


def first_key(provider) -> Attempt:
    """An attempt with the provider's first key."""
    return Attempt(number=1, target=f"{provider.name}/*", provider=provider.name, upstream_model="m", fallback=False,
                   key_index=0, key=provider.cfg.keys[0], key_circuit="", op="converse", model_id="m", headers={},
                   started=0.0)


def test_weighted_keys_follow_their_weights():
    c = cfg({"o": {"kind": "openai", "keys": [{"api_key": "a", "weight": 3}, {"api_key": "b", "weight": 1}]}},
            routes=[{"models": ["*"], "provider": "o"}])
    route = c.routes[0]
    picks = [AttemptPlan(route.targets, route, "m", {"o": c.providers["o"].keys}, Circuits(c.providers)).next().key
             for _ in range(4000)]
    assert 0.70 < picks.count(0) / len(picks) < 0.80


def test_provider_slash_model_addresses_a_provider_directly():
    c = cfg({"openai": {"kind": "openai", "keys": [{"api_key": "k"}]}, "mock": {"kind": "mock"}},
            routes=[{"models": ["*"], "provider": "mock"}])
    r = c.route_for("openai/gpt-4o-mini")
    assert (r.provider, r.model) == ("openai", "gpt-4o-mini")
    assert c.route_for("openai/ft:gpt-4o:org:x").model == "ft:gpt-4o:org:x"
    # not a configured provider name, an ARN, or an empty model: the globs decide
    assert c.route_for("cohere/command").provider == "mock"
    assert c.route_for("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.x").provider == "mock"
    assert c.route_for("openai/").provider == "mock"
