"""Circuit breakers (finops.workers.routing.breaker) and retry backoff (routing.backoff)."""
from __future__ import annotations

import pytest

from finops.workers.routing.backoff import delay, fits
from finops.workers.routing.breaker import BreakerPolicy, Breakers


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# Rate tests use a huge run threshold so only the failure-rate rule can open the breaker.
RATE = BreakerPolicy(consecutive_failures=1000, failure_rate=0.5, min_requests=10, window_seconds=10.0)


def make(policy: BreakerPolicy = BreakerPolicy(), t: float = 1000.0) -> tuple[Breakers, Clock]:
    clock = Clock(t)
    return Breakers(policy, clock=clock), clock


def trip(b: Breakers, name: str = "a", n: int = 5) -> None:
    for _ in range(n):
        b.failure(name)


# -- consecutive failures ---------------------------------------------------------------------

def test_unknown_name_is_closed_and_allowed():
    b, _ = make()
    assert b.state("nope") == "closed"
    assert b.allow("nope") is True
    assert b.snapshot() == {}


def test_opens_after_n_consecutive_failures():
    b, _ = make(BreakerPolicy(consecutive_failures=3))
    b.failure("a")
    b.failure("a")
    assert b.state("a") == "closed" and b.allow("a")
    b.failure("a")
    assert b.state("a") == "open"
    assert b.allow("a") is False


def test_success_resets_the_run():
    b, _ = make(BreakerPolicy(consecutive_failures=3))
    b.failure("a")
    b.failure("a")
    b.success("a")
    b.failure("a")
    b.failure("a")
    assert b.state("a") == "closed"
    assert b.snapshot()["a"]["failures_in_a_row"] == 2
    b.failure("a")
    assert b.state("a") == "open"


# -- failure rate -----------------------------------------------------------------------------

def test_rate_needs_min_requests():
    b, _ = make(RATE)
    for _ in range(4):                 # 9 outcomes, 5 failures (> 50%) but below min_requests
        b.failure("a")
        b.success("a")
    b.failure("a")
    assert b.state("a") == "closed"
    b.success("a")                     # 10 outcomes, 5 failures = 50%: opens only on a failure
    assert b.state("a") == "closed"
    b.failure("a")                     # 11 outcomes, 6 failures
    assert b.state("a") == "open"


def test_rate_below_threshold_stays_closed():
    b, _ = make(RATE)
    for _ in range(30):                # 1 failure in 3 ≈ 33%
        b.success("a")
        b.success("a")
        b.failure("a")
    assert b.state("a") == "closed"


def test_rate_opens_exactly_at_threshold():
    b, _ = make(RATE)
    for _ in range(5):
        b.success("a")
    for _ in range(4):
        b.failure("a")
    assert b.state("a") == "closed"    # 9 outcomes
    b.failure("a")                     # 10 outcomes, 5 failures = failure_rate
    assert b.state("a") == "open"


def test_old_outcomes_age_out_of_the_window():
    b, clock = make(RATE)
    for _ in range(9):                 # 9 failures: 100% but below min_requests
        b.failure("a")
    snap = b.snapshot()["a"]
    assert (snap["window_requests"], snap["window_failures"]) == (9, 9)
    clock.t += 9.9
    assert b.snapshot()["a"]["window_requests"] == 9
    clock.t += 0.1                     # now exactly window_seconds old: gone
    assert b.snapshot()["a"]["window_requests"] == 0
    b.failure("a")                     # would be 10 of 10 failed without aging
    assert b.state("a") == "closed"
    snap = b.snapshot()["a"]
    assert (snap["window_requests"], snap["window_failures"]) == (1, 1)


def test_partial_aging_keeps_recent_outcomes():
    b, clock = make(RATE)
    for _ in range(5):
        b.success("a")
    clock.t += 6.0
    for _ in range(4):
        b.failure("a")
        b.success("a")                 # 13 outcomes, 4 failures
    clock.t += 5.0                     # the first 5 successes age out: 8 left, 4 failures
    snap = b.snapshot()["a"]
    assert (snap["window_requests"], snap["window_failures"]) == (8, 4)
    b.failure("a")
    b.success("a")                     # 10 outcomes, 5 failures: not opened (last was a success)
    assert b.state("a") == "closed"
    b.failure("a")                     # 11, 6
    assert b.state("a") == "open"


# -- open / half-open -------------------------------------------------------------------------

def test_stays_open_for_open_seconds():
    b, clock = make(BreakerPolicy(consecutive_failures=2, open_seconds=30.0))
    trip(b, n=2)
    clock.t += 29.9
    assert b.allow("a") is False
    assert b.state("a") == "open"
    clock.t += 0.1
    assert b.state("a") == "half_open"
    assert b.allow("a") is True


def test_half_open_lets_exactly_the_probes_through():
    for probes in (1, 3):
        b, clock = make(BreakerPolicy(consecutive_failures=1, open_seconds=5.0, half_open_probes=probes))
        trip(b, n=1)
        clock.t += 5.0
        assert [b.allow("a") for _ in range(probes + 2)] == [True] * probes + [False, False]
        assert b.state("a") == "half_open"


def test_probe_success_closes_and_resets():
    b, clock = make(BreakerPolicy(consecutive_failures=2, open_seconds=5.0))
    trip(b, n=2)
    clock.t += 5.0
    assert b.allow("a")
    b.success("a")
    assert b.state("a") == "closed"
    assert all(b.allow("a") for _ in range(5))
    snap = b.snapshot()["a"]
    assert snap == {
        "state": "closed", "failures_in_a_row": 0, "window_requests": 0,
        "window_failures": 0, "opened_at": None, "retry_in_s": 0,
    }
    b.failure("a")                     # the run starts over: one failure doesn't reopen
    assert b.state("a") == "closed"


def test_probe_failure_reopens_for_fresh_open_seconds():
    b, clock = make(BreakerPolicy(consecutive_failures=2, open_seconds=5.0))
    trip(b, n=2)
    clock.t += 7.0
    assert b.allow("a")
    b.failure("a")
    reopened = clock.t
    assert b.state("a") == "open"
    assert b.snapshot()["a"]["opened_at"] == reopened
    clock.t += 4.9
    assert b.allow("a") is False       # measured from the reopening, not the first opening
    clock.t += 0.1
    assert b.allow("a") is True


def test_outcomes_while_open_without_probe_are_ignored():
    b, clock = make(BreakerPolicy(consecutive_failures=2, open_seconds=5.0))
    trip(b, n=2)
    b.success("a")                     # a late reply from before the breaker opened
    assert b.state("a") == "open"
    clock.t += 5.0
    b.success("a")                     # half-open, but no probe was taken
    assert b.state("a") == "half_open"
    b.failure("a")
    assert b.snapshot()["a"]["opened_at"] == 1000.0


def test_snapshot_values_while_open():
    b, clock = make(BreakerPolicy(consecutive_failures=3, open_seconds=30.0))
    b.success("a")
    trip(b, n=3)
    clock.t += 12.0
    snap = b.snapshot()["a"]
    assert snap["state"] == "open"
    assert snap["failures_in_a_row"] == 3
    assert snap["opened_at"] == 1000.0
    assert snap["retry_in_s"] == pytest.approx(18.0)
    clock.t += 18.0
    snap = b.snapshot()["a"]
    assert snap["state"] == "half_open" and snap["retry_in_s"] == 0


def test_snapshot_counts_while_closed():
    b, _ = make()
    b.success("a")
    b.failure("a")
    b.failure("a")
    assert b.snapshot()["a"] == {
        "state": "closed", "failures_in_a_row": 2, "window_requests": 3,
        "window_failures": 2, "opened_at": None, "retry_in_s": 0,
    }


def test_names_are_independent():
    b, _ = make(BreakerPolicy(consecutive_failures=2))
    trip(b, "a", n=2)
    b.failure("b")
    assert b.state("a") == "open" and b.allow("a") is False
    assert b.state("b") == "closed" and b.allow("b") is True
    assert b.snapshot()["b"]["failures_in_a_row"] == 1
    assert set(b.snapshot()) == {"a", "b"}


def test_closed_allow_does_not_read_the_clock():
    calls = []

    def clock() -> float:
        calls.append(1)
        return 0.0

    b = Breakers(BreakerPolicy(), clock=clock)
    b.success("a")
    calls.clear()
    for _ in range(100):
        assert b.allow("a") and b.allow("unknown")
    assert calls == []


def test_policy_validation():
    with pytest.raises(ValueError):
        BreakerPolicy(failure_rate=0.0)
    with pytest.raises(ValueError):
        BreakerPolicy(half_open_probes=0)


# -- backoff ----------------------------------------------------------------------------------

def test_delay_bounds_with_stub_rng():
    for attempt in range(8):
        ceiling = min(2.0, 0.2 * 2**attempt)
        assert delay(attempt, rng=lambda: 0.0) == 0.0
        hi = delay(attempt, rng=lambda: 0.9999999)
        assert hi <= ceiling and hi == pytest.approx(ceiling, rel=1e-6)


def test_delay_grows_then_caps():
    top = [delay(a, base=0.1, cap=1.0, rng=lambda: 1.0) for a in range(8)]
    assert top[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert top[4:] == [1.0] * 4
    assert delay(10_000, rng=lambda: 1.0) == 2.0   # no overflow for absurd attempts


def test_delay_default_rng_in_range():
    for _ in range(200):
        assert 0.0 <= delay(3) <= 1.6


def test_delay_rejects_negative_attempt():
    with pytest.raises(ValueError):
        delay(-1)


def test_fits():
    assert fits(deadline=10.0, now=9.0, delay=0.5) is True
    assert fits(deadline=10.0, now=9.0, delay=0.95) is True     # exactly the reserve left
    assert fits(deadline=10.0, now=9.0, delay=0.96) is False
    assert fits(deadline=10.0, now=9.0, delay=0.9, reserve=0.2) is False
    assert fits(deadline=10.0, now=10.0, delay=0.0, reserve=0.0) is True
