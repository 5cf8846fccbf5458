"""Which key a request presents and whether it may proceed (workers/governance/auth.py)."""
from datetime import datetime, timezone

import pytest

from finops.shared import sigv4
from finops.shared.errors import GatewayError
from finops.shared.governance import Directory, VirtualKey
from finops.workers.governance import auth

NOW = 1_790_000_000.0
KEY = VirtualKey(id="vk-alpha", secret="alpha-secret-0123456789", models=("anthropic.*",), providers=("bedrock", "mock"))
OFF = VirtualKey(id="vk-off", secret="off-secret-0123456789xx", enabled=False)
OLD = VirtualKey(id="vk-old", secret="old-secret-0123456789xx", expires_at=NOW - 1)
INDEX = auth.KeyIndex.of(Directory(keys={k.id: k for k in (KEY, OFF, OLD)}))
PATH = "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
BODY = b'{"messages":[]}'


def signed(akid, secret, when=NOW, body=BODY, path=PATH):
    h = sigv4.sign_headers("POST", f"http://127.0.0.1:8080{path}", {"content-type": "application/json"}, body,
                           access_key_id=akid, secret_key=secret, region="us-east-1",
                           now=datetime.fromtimestamp(when, timezone.utc))
    return {k.lower(): v for k, v in h.items()} | {"host": "127.0.0.1:8080"}


def ident(headers, mode="open", body=BODY, path=PATH, now=NOW):
    return auth.identify(INDEX, mode, "POST", "127.0.0.1:8080", path, headers, body, now, 300)


def refused(*a, **kw) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        ident(*a, **kw)
    return ei.value


def test_x_bf_vk_secret():
    i = ident({"x-bf-vk": KEY.secret})
    assert (i.key, i.form, i.label) == (KEY, "x-bf-vk", "vk-alpha")


def test_sigv4_with_the_key_as_credentials():
    i = ident(signed(KEY.id, KEY.secret))
    assert (i.key, i.form) == (KEY, "sigv4")


def test_bearer():
    assert ident({"authorization": f"Bearer {KEY.secret}"}).key == KEY


def test_x_bf_vk_wins_over_a_dummy_signature():
    h = signed("finops-dummy-key", "finops-dummy-secret") | {"x-bf-vk": KEY.secret}
    assert ident(h).form == "x-bf-vk"


@pytest.mark.parametrize("mode", ["open", "enforced"])
def test_a_known_key_with_a_bad_signature_is_refused_in_every_mode(mode):
    e = refused(signed(KEY.id, "wrong-secret-000000000"), mode)
    assert (e.code, e.status) == ("InvalidSignatureException", 403)


def test_tampered_body_or_path_fails_the_signature():
    h = signed(KEY.id, KEY.secret)
    assert refused(h, body=b'{"messages":[1]}').code == "InvalidSignatureException"
    assert refused(h, path=PATH.replace("%3A", ":")).code == "InvalidSignatureException"


def test_clock_skew_beyond_five_minutes():
    assert ident(signed(KEY.id, KEY.secret, when=NOW - 290)).key == KEY
    assert refused(signed(KEY.id, KEY.secret, when=NOW - 400)).code == "InvalidSignatureException"


def test_open_mode_serves_unknown_presentations_anonymously():
    assert ident(signed("finops-dummy-key", "x")).key is None
    i = ident({"x-bf-vk": "vk_12345"})
    assert i.key is None and i.label == "vk_12345"
    assert ident({"authorization": "Bearer nope"}).key is None
    assert ident({}).key is None


def test_enforced_mode_refusals():
    assert refused(signed("AKIDUNKNOWN", "x"), "enforced").code == "UnrecognizedClientException"
    assert refused({"x-bf-vk": "vk_12345"}, "enforced").code == "AccessDeniedException"
    assert refused({"authorization": "Bearer nope"}, "enforced").code == "AccessDeniedException"
    e = refused({}, "enforced")
    assert e.code == "AccessDeniedException" and "x-bf-vk" in e.message
    e = refused({"authorization": "AWS4-HMAC-SHA256 garbage"}, "enforced")
    assert e.code == "IncompleteSignatureException"


def test_unknown_key_messages_do_not_echo_the_secret():
    e = refused({"x-bf-vk": "a-long-secret-value-123456"}, "enforced")
    assert "a-long-secret-value-123456" not in e.message


@pytest.mark.parametrize("key,model,provider,needle", [
    (OFF, "anthropic.x", "mock", "disabled"),
    (OLD, "anthropic.x", "mock", "expired"),
    (KEY, "mistral.mistral-large", "mock", "'mistral.mistral-large'"),
    (KEY, "anthropic.x", "openai", "provider 'openai'")])
def test_authorize_refusals(key, model, provider, needle):
    with pytest.raises(GatewayError) as ei:
        auth.authorize(key, model, provider, NOW)
    assert ei.value.code == "AccessDeniedException" and needle in ei.value.message


def test_authorize_allows():
    auth.authorize(KEY, "anthropic.claude-3-haiku", "bedrock", NOW)
