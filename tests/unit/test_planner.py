"""The attempts of one request (workers/routing/planner.py AttemptPlan): which target and which
key next, and what a failure means. Keys are drawn by weight among those allowed for the model
with a circuit that is not open; keys the request already tried on its target come last, and keys
that refused it are never drawn again; decisions return the circuit outcomes to record."""
import itertools

import pytest

from finops.shared import errors
from finops.shared.config import build
from finops.workers.routing import router
from finops.workers.routing.planner import AttemptPlan


def config(*keys, targets=None, retries=0):
    raw = {"providers": {"o": {"kind": "openai", "keys": list(keys)},
                         "b": {"kind": "openai", "keys": [{"api_key": "z"}]}},
           "routes": [{"models": ["*"], "retries": retries,
                       **({"targets": targets} if targets else {"provider": "o"})}]}
    return build(raw, "test", environ={})


def plan_for(cfg, rng=None):
    route = cfg.routes[0]
    kw = {"rng": rng} if rng else {}
    circuits = router.Circuits(cfg.providers)
    return AttemptPlan(route.targets, route, "m", {n: p.keys for n, p in cfg.providers.items()}, circuits, **kw)


def refused() -> errors.GatewayError:
    e = errors.GatewayError("AccessDeniedException", "key refused", 403)
    e.origin = "upstream"
    return e


def throttled() -> errors.GatewayError:
    e = errors.GatewayError("ThrottlingException", "slow down", 429)
    e.origin = "upstream"
    return e


def test_an_untried_key_comes_first_whatever_the_weights():
    cfg = config({"api_key": "a", "weight": 1000}, {"api_key": "b", "weight": 1}, retries=1)
    for _ in range(100):
        p = plan_for(cfg)
        first = p.next()
        d = p.failed(first, throttled(), head_sent=False)
        assert d.action == router.RETRY
        assert p.next(same_target=True).key == 1 - first.key


def test_once_every_key_was_tried_the_draw_is_among_all_of_them():
    cfg = config({"api_key": "a"}, {"api_key": "b"}, retries=5)
    picks = set()
    for _ in range(60):
        p = plan_for(cfg)
        s = p.next()
        for _ in range(2):
            p.failed(s, throttled(), head_sent=False)
            s = p.next(same_target=True)
        picks.add(s.key)
    assert picks == {0, 1}


def test_a_refused_key_goes_to_another_key_then_the_next_target_and_its_circuit_fails():
    cfg = config({"api_key": "a"}, {"api_key": "b"},
                 targets=[{"provider": "o", "weight": 1}, {"provider": "b", "weight": 0}])
    p = plan_for(cfg, rng=itertools.cycle([0.0]).__next__)
    s1 = p.next()
    d = p.failed(s1, refused(), head_sent=False)
    assert d.action == router.OTHER_KEY and d.outcomes == (("o", s1.key_circuit, False),)   # the key's, not the target's
    s2 = p.next(same_target=True)
    assert s2.target.provider == "o" and s2.key == 1 - s1.key and s2.number == 2
    d = p.failed(s2, refused(), head_sent=False)
    assert d.action == router.NEXT and ("o", "o/*", False) in d.outcomes
    s3 = p.next()
    assert (s3.target.provider, s3.fallback, s3.number) == ("b", True, 3)


def test_no_key_left_blocks_the_target():
    cfg = config({"api_key": "a", "models": ["gpt-*"]})
    p = plan_for(cfg)
    assert p.next() is None
    assert p.blocked.code == "ServiceUnavailableException" and "keys[].models" in p.blocked.message


def test_a_stream_that_started_stops_and_a_client_error_stops():
    cfg = config({"api_key": "a"}, retries=3)
    p = plan_for(cfg)
    s = p.next()
    assert p.failed(s, throttled(), head_sent=True).action == router.STOP
    bad = errors.validation("no")
    assert p.failed(s, bad, head_sent=False).action == router.STOP


def test_retries_back_off_and_are_counted_per_target():
    cfg = config({"api_key": "a"}, retries=2)
    p = plan_for(cfg, rng=lambda: 0.5)
    s = p.next()
    d1 = p.failed(s, throttled(), head_sent=False)
    d2 = p.failed(p.next(same_target=True), throttled(), head_sent=False)
    d3 = p.failed(p.next(same_target=True), throttled(), head_sent=False)
    assert (d1.action, d2.action, d3.action) == (router.RETRY, router.RETRY, router.NEXT)
    assert 0 < d1.delay < d2.delay
    assert p.next() is None


def test_a_lone_target_and_a_lone_key_have_no_circuits():
    p = plan_for(config({"api_key": "a"}))
    s = p.next()
    assert (s.target_circuit, s.key_circuit) == ("", "")
    assert p.succeeded(s) == () and p.failed(s, throttled(), head_sent=False).outcomes == ()


def test_an_open_target_circuit_is_skipped():
    cfg = config({"api_key": "a"}, targets=[{"provider": "o", "weight": 1}, {"provider": "b", "weight": 0}])
    p = plan_for(cfg)
    breakers = p.circuits.for_provider("o")
    for _ in range(cfg.providers["o"].circuit_failures):
        breakers.failure("o/*")
    s = p.next()
    assert s.target.provider == "b" and s.fallback and s.number == 1
