"""Which key of a provider an attempt uses (workers/providers/base.py Provider.choose_key): by
weight among the keys allowed for the model with a circuit that is not open; keys the request
already tried on its target come last, and keys that refused it are never drawn again."""
import pytest

from finops.shared import errors
from finops.shared.config import build
from finops.workers.providers import build_provider
from finops.workers.providers.base import Call
from finops.workers.routing.breaker import BreakerPolicy, Breakers


def provider(*keys):
    c = build({"providers": {"o": {"kind": "openai", "keys": list(keys)}}}, "test", env={})
    p = build_provider(c.providers["o"])
    p.breakers = Breakers(BreakerPolicy(consecutive_failures=1))
    return p


def call(tried=(), refused=()):
    return Call(rid="r", op="converse", model_id="m", upstream_model="m", keys_tried=tried, keys_refused=refused)


def test_an_untried_key_comes_first_whatever_the_weights():
    p = provider({"api_key": "a", "weight": 1000}, {"api_key": "b", "weight": 1})
    for _ in range(200):
        c = call(tried=("o#key0",))
        assert p.choose_key("m", c) == 1 and c.key_name == "o#key1"


def test_once_every_key_was_tried_the_draw_is_among_all_of_them():
    p = provider({"api_key": "a"}, {"api_key": "b"})
    picks = {p.choose_key("m", call(tried=("o#key0", "o#key1"))) for _ in range(200)}
    assert picks == {0, 1}


def test_a_refused_key_is_never_drawn_again_for_the_request():
    p = provider({"api_key": "a", "weight": 1000}, {"api_key": "b", "weight": 1})
    for _ in range(200):
        assert p.choose_key("m", call(tried=("o#key0", "o#key1"), refused=("o#key0",))) == 1
    with pytest.raises(errors.GatewayError, match="refused upstream") as ei:
        p.choose_key("m", call(tried=("o#key0", "o#key1"), refused=("o#key0", "o#key1")))
    assert ei.value.code == "ServiceUnavailableException"


def test_has_untried_key_counts_only_keys_that_may_serve_the_model_now():
    p = provider({"api_key": "a"}, {"api_key": "b", "models": ["gpt-4o*"]}, {"api_key": "c"})
    assert p.has_untried_key("m", call(tried=("o#key0",)))                   # c
    assert not p.has_untried_key("m", call(tried=("o#key0", "o#key2")))      # b may not serve m
    assert p.has_untried_key("gpt-4o", call(tried=("o#key0", "o#key2")))     # ...but gpt-4o
    p.breakers.failure("o#key2")                                              # c's circuit opens
    assert not p.has_untried_key("m", call(tried=("o#key0",)))


def test_a_one_key_provider_has_no_other_key():
    p = provider({"api_key": "a"})
    assert not p.has_untried_key("m", call(tried=("o#key0",)))
    assert p.choose_key("m", call()) == 0
