"""One contract, two backends: the same sequences of reserve / settle / expire / usage / savings
on LedgerState (in memory) and RedisLedger (a real Redis) give the same answers.

The scenarios run through a `make` fixture parametrized over both backends (LedgerState's
snapshot() and restore are test_ledger_state.py's: Redis is its own store); the property test at
the end drives both backends side by side with random operations and compares every reply.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team, VirtualKey
from finops.workers.ledger.state import LedgerState
from finops.workers.ledger.redis_state import RedisLedger


def ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t: str | float = "2026-11-27T12:00:00"):
        self.t = ts(t) if isinstance(t, str) else float(t)

    def __call__(self) -> float:
        return self.t

    def tick(self, s: float) -> None:
        self.t += s


def vk(id, team="", budgets=(), limits=()):
    return VirtualKey(id=id, secret="s-" + id, team=team, budgets=tuple(budgets), rate_limits=tuple(limits))


def directory(*keys, teams=(), customers=()):
    return Directory(keys={k.id: k for k in keys}, teams={t.id: t for t in teams},
                     customers={c.id: c for c in customers})


_ns = itertools.count()


def redis_ledger(redis_db, d: Directory, clock, **kw) -> RedisLedger:
    """A RedisLedger in its own namespace of the test's Redis, ready (rebuilt from nothing)."""
    led = RedisLedger.from_url(redis_db.url, d, clock=clock, namespace=f"t{next(_ns)}", **kw)
    led.rebuild([])
    return led


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    return request.param


@pytest.fixture
def make(request, backend):
    """make(*keys, teams=, customers=, t=, **LedgerState kwargs) -> (ledger, clock)."""
    made = []

    def _make(*keys, teams=(), customers=(), t="2026-11-27T12:00:00", **kw):
        clock = Clock(t)
        d = directory(*keys, teams=teams, customers=customers)
        if backend == "memory":
            return LedgerState(d, clock=clock, **kw), clock
        led = redis_ledger(request.getfixturevalue("redis_db"), d, clock, **kw)
        made.append(led)
        return led, clock
    yield _make
    for led in made:
        led.close()


def use(state, level, owner, kind="budget", period=None, env=""):
    rows = [u for u in state.usage() if u["level"] == level and u["owner"] == owner and u["kind"] == kind
            and u["env"] == env and (period is None or u["period"] == period)]
    assert len(rows) == 1, rows
    return rows[0]


# --- reserve -------------------------------------------------------------------------------------

def test_reserve_ok_reports_the_tightest_budget_and_requests_left(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")], limits=[RateLimit("minute", requests=5)]),
                 teams=[Team("t1", customer="c1", budgets=[Budget(3, "month")],
                             rate_limits=[RateLimit("minute", requests=2)])],
                 customers=[Customer("c1", budgets=[Budget(100, "year")])])
    out = st.reserve("r1", "vk-1", "", 0.5, 100)
    assert out == {"ok": True, "remaining_usd": 2.5, "budget": "team 't1' monthly budget of $3",
                   "requests_remaining": 1}
    assert use(st, "key", "vk-1")["reserved_usd"] == 0.5
    assert use(st, "customer", "c1")["reserved_usd"] == 0.5
    assert use(st, "team", "t1", "requests")["used"] == 1


def test_reserve_without_budgets_reports_none(make):
    st, _ = make(vk("vk-1", limits=[RateLimit("minute", requests=5)]))
    assert st.reserve("r1", "vk-1", "", 1.0, 10) == {"ok": True, "remaining_usd": None, "budget": None,
                                                     "requests_remaining": 4}
    st2, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    assert st2.reserve("r1", "vk-1", "", 0.25, 10)["requests_remaining"] is None


def test_unknown_key_reserves_nothing(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    assert st.reserve("r1", "nope", "", 50.0, 10**9) == {"ok": True, "remaining_usd": None, "budget": None,
                                                        "requests_remaining": None}
    assert use(st, "key", "vk-1")["reserved_usd"] == 0
    with pytest.raises(ValueError):                  # but it is recorded
        st.reserve("r1", "nope", "", 1.0, 1)


def test_duplicate_rid_raises(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.reserve("r1", "vk-1", "", 0.1, 1)
    with pytest.raises(ValueError):
        st.reserve("r1", "vk-1", "", 0.1, 1)
    assert use(st, "key", "vk-1")["reserved_usd"] == 0.1


def test_a_reserve_after_its_own_release_holds_nothing(make):
    """A reserve whose reply never came is released (a settle of nothing); if the reserve itself
    reaches the ledger after its release (a slow connection), it is refused instead of holding a
    reservation no one will settle (charged in full at its TTL)."""
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")], limits=[RateLimit("minute", requests=5)]))
    st.settle("late", 0.0, 0, "vk-1", "")
    with pytest.raises(ValueError, match="settled already"):
        st.reserve("late", "vk-1", "", 0.4, 10)
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (0.0, 0.0)
    assert use(st, "key", "vk-1", "requests")["used"] == 0
    assert st.owners() == set()


def test_invalid_amounts_raise(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            st.reserve("r1", "vk-1", "", bad, 1)
    with pytest.raises(ValueError):
        st.reserve("r1", "vk-1", "", 0.1, -1)
    st.reserve("r1", "vk-1", "", 0.1, 1)
    with pytest.raises(ValueError):
        st.settle("r1", -1.0, 0)
    assert use(st, "key", "vk-1")["reserved_usd"] == 0.1


def test_budget_refusal_names_budget_reset_and_left(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")]),
                 teams=[Team("t1", budgets=[Budget(1, "day", env="production")])],
                 t="2026-11-27T12:00:00")
    assert st.reserve("r1", "vk-1", "production", 0.75, 0)["ok"]
    out = st.reserve("r2", "vk-1", "production", 0.5, 0)
    label = "team 't1' daily budget of $1 (env production)"
    assert out["ok"] is False and out["code"] == "ServiceQuotaExceededException" and out["status"] == 400
    assert out["budget"] == label and out["resets_at"] == "2026-11-28T00:00:00Z"
    assert label in out["message"] and "2026-11-28T00:00:00Z" in out["message"]
    assert "$0.25" in out["message"] and "$0.50" in out["message"]
    assert out["remaining_usd"] == 0.25
    assert st.reserve("r3", "vk-1", "production", 0.25, 0)["ok"]          # exactly up to the amount
    assert not st.reserve("r4", "vk-1", "production", 0.000001, 0)["ok"]
    assert st.reserve("r5", "vk-1", "production", 0.0, 0)["ok"]


def test_spent_plus_reserved_counts(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.reserve("r1", "vk-1", "", 0.6, 0)
    st.settle("r1", 0.5, 0)
    st.reserve("r2", "vk-1", "", 0.3, 0)
    assert not st.reserve("r3", "vk-1", "", 0.3, 0)["ok"]
    assert st.reserve("r3", "vk-1", "", 0.2, 0)["ok"]


def test_refusal_is_atomic(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")],
                    limits=[RateLimit("minute", requests=10, tokens=1000)]),
                 teams=[Team("t1", budgets=[Budget(1, "day")])])
    before = st.usage()
    assert not st.reserve("r1", "vk-1", "", 2.0, 5)["ok"]      # the team budget refuses
    assert st.usage() == before
    assert st.reserve("r1", "vk-1", "", 0.5, 5)["ok"]          # the refused rid was not recorded
    st2, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")], limits=[RateLimit("minute", tokens=100)]),
                  teams=[Team("t1", budgets=[Budget(1, "day")], rate_limits=[RateLimit("minute", requests=5)])])
    assert not st2.reserve("r1", "vk-1", "", 0.5, 101)["ok"]      # the last check (tokens) refuses
    assert use(st2, "key", "vk-1")["reserved_usd"] == 0
    assert use(st2, "team", "t1")["reserved_usd"] == 0
    assert use(st2, "team", "t1", "requests")["used"] == 0


def test_budget_is_reported_before_a_rate_limit(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")], limits=[RateLimit("minute", requests=0)]))
    assert st.reserve("r1", "vk-1", "", 2, 0)["code"] == "ServiceQuotaExceededException"
    assert st.reserve("r1", "vk-1", "", 0.5, 0)["code"] == "ThrottlingException"


def test_float_amounts_do_not_drift(make):
    st, _ = make(vk("vk-1", budgets=[Budget(0.3, "day")]))
    for i in range(3):                             # 0.1 + 0.1 + 0.1 > 0.3 in floats
        assert st.reserve(f"r{i}", "vk-1", "", 0.1, 0)["ok"], i
    assert not st.reserve("r9", "vk-1", "", 0.000001, 0)["ok"]
    for i in range(3):
        st.settle(f"r{i}", 0.1, 0)
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"], u["remaining_usd"]) == (0.3, 0.0, 0.0)
    st2, _ = make(vk("vk-1", budgets=[Budget(1000, "day")]))
    for i in range(300):
        st2.reserve(f"r{i}", "vk-1", "", 0.01, 0)
        st2.settle(f"r{i}", 0.000123, 0)
    assert use(st2, "key", "vk-1")["spent_usd"] == 0.0369


# --- environments & scopes -----------------------------------------------------------------------

def test_env_scoping(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day", env="production"), Budget(5, "day")]))
    out = st.reserve("r1", "vk-1", "staging", 2.0, 0)
    assert out["ok"] and out["budget"] == "key 'vk-1' daily budget of $5" and out["remaining_usd"] == 3.0
    assert not st.reserve("r2", "vk-1", "production", 2.0, 0)["ok"]
    out = st.reserve("r3", "vk-1", "production", 0.5, 0)
    assert out["remaining_usd"] == 0.5 and "(env production)" in out["budget"]
    assert use(st, "key", "vk-1", env="")["reserved_usd"] == 2.5
    assert use(st, "key", "vk-1", env="production")["reserved_usd"] == 0.5
    assert st.reserve("r4", "vk-1", "", 2.0, 0)["ok"]
    assert not st.reserve("r5", "vk-1", "other", 0.6, 0)["ok"]


def test_env_rate_limit_and_unmentioned_env(make):
    st, _ = make(vk("vk-1", limits=[RateLimit("minute", requests=1, env="production")]))
    assert st.reserve("r1", "vk-1", "production", 0, 0)["ok"]
    assert not st.reserve("r2", "vk-1", "production", 0, 0)["ok"]
    for i, env in enumerate(["", "staging", "x" * 50, "a b:{c}\u00e9"]):
        assert st.reserve(f"s{i}", "vk-1", env, 0, 0)["requests_remaining"] is None


def test_team_budget_is_shared_by_its_keys(make):
    team = Team("t1", budgets=[Budget(1, "day")])
    st, _ = make(vk("a1", team="t1"), vk("a2", team="t1"), vk("b", team="t2"), teams=[team, Team("t2")])
    assert st.reserve("r1", "a1", "", 0.6, 0)["ok"]
    out = st.reserve("r2", "a2", "", 0.6, 0)
    assert not out["ok"] and out["budget"] == "team 't1' daily budget of $1"
    assert st.reserve("r3", "b", "", 0.6, 0)["ok"]


def test_same_period_budgets_share_a_counter_and_the_tighter_wins(make):
    st, _ = make(vk("vk-1", budgets=[Budget(5, "day"), Budget(2, "day")]))
    assert st.reserve("r1", "vk-1", "", 1.5, 0)["remaining_usd"] == 0.5
    out = st.reserve("r2", "vk-1", "", 1.0, 0)
    assert not out["ok"] and out["budget"] == "key 'vk-1' daily budget of $2"
    assert [u["reserved_usd"] for u in st.usage()] == [1.5, 1.5]


# --- rate limits -----------------------------------------------------------------------------------

def test_request_limit_retry_after_and_reset(make):
    st, clock = make(vk("vk-1", limits=[RateLimit("minute", requests=2)]), t="2026-11-27T12:00:15")
    assert st.reserve("r1", "vk-1", "", 0, 0)["requests_remaining"] == 1
    assert st.reserve("r2", "vk-1", "", 0, 0)["requests_remaining"] == 0
    st.settle("r1", 0, 0)
    clock.tick(0.5)
    out = st.reserve("r3", "vk-1", "", 0, 0)
    assert out["ok"] is False and out["code"] == "ThrottlingException" and out["status"] == 429
    assert out["retry_after_ms"] == 44500
    assert "key 'vk-1' limit of 2 requests per minute" in out["message"]
    assert out["resets_at"] == "2026-11-27T12:01:00Z"
    clock.t = ts("2026-11-27T12:01:00") - 0.0001
    assert st.reserve("r3", "vk-1", "", 0, 0)["retry_after_ms"] == 1
    clock.t = ts("2026-11-27T12:01:00")
    assert st.reserve("r3", "vk-1", "", 0, 0)["requests_remaining"] == 1


def test_windows_of_different_lengths_roll_independently(make):
    st, clock = make(vk("vk-1", team="t1", limits=[RateLimit("minute", requests=1)]),
                     teams=[Team("t1", rate_limits=[RateLimit("day", tokens=1000), RateLimit("hour", requests=2)])],
                     t="2026-11-27T12:00:00")
    assert st.reserve("r1", "vk-1", "", 0, 100)["ok"]
    out = st.reserve("r2", "vk-1", "", 0, 100)
    assert not out["ok"] and "per minute" in out["message"]
    clock.tick(60)
    assert st.reserve("r2", "vk-1", "", 0, 100)["requests_remaining"] == 0
    clock.tick(60)
    out = st.reserve("r3", "vk-1", "", 0, 100)
    assert not out["ok"] and "2 requests per hour" in out["message"] and out["retry_after_ms"] == 58 * 60 * 1000
    clock.tick(58 * 60)
    assert st.reserve("r3", "vk-1", "", 0, 100)["ok"]
    t = use(st, "team", "t1", "tokens")
    assert (t["reserved"], t["period_start"]) == (300, "2026-11-27T00:00:00Z")


def test_token_limit_counts_used_and_reserved(make):
    st, clock = make(vk("vk-1", limits=[RateLimit("hour", tokens=1000)]), t="2026-11-27T12:30:00")
    assert st.reserve("r1", "vk-1", "", 0, 600)["ok"]
    out = st.reserve("r2", "vk-1", "", 0, 401)
    assert not out["ok"] and out["retry_after_ms"] == 30 * 60 * 1000
    st.settle("r1", 0, 200)
    assert st.reserve("r2", "vk-1", "", 0, 800)["ok"]
    assert not st.reserve("r3", "vk-1", "", 0, 1)["ok"]
    u = use(st, "key", "vk-1", "tokens")
    assert (u["used"], u["reserved"], u["remaining"]) == (200, 800, 0)
    clock.tick(30 * 60)
    assert st.reserve("r3", "vk-1", "", 0, 1000)["ok"]


# --- periods -------------------------------------------------------------------------------------

@pytest.mark.parametrize("period,start,just_before,next_start", [
    ("minute", "2026-11-27T12:00:10", "2026-11-27T12:00:59", "2026-11-27T12:01:00"),
    ("day", "2026-11-27T12:00:00", "2026-11-27T23:59:59", "2026-11-28T00:00:00"),
    ("month", "2026-11-27T12:00:00", "2026-11-30T23:59:59", "2026-12-01T00:00:00"),
])
def test_budget_resets_when_the_period_rolls_over(make, period, start, just_before, next_start):
    st, clock = make(vk("vk-1", budgets=[Budget(1, period)]), t=start)
    st.reserve("r1", "vk-1", "", 1, 0)
    st.settle("r1", 1, 0)
    clock.t = ts(just_before)
    out = st.reserve("r2", "vk-1", "", 0.01, 0)
    assert not out["ok"] and out["resets_at"] == next_start + "Z"
    clock.t = ts(next_start)
    out = st.reserve("r2", "vk-1", "", 1, 0)
    assert out["ok"] and out["remaining_usd"] == 0.0
    assert use(st, "key", "vk-1")["period_start"] == next_start + "Z"


def test_paris_day_budget_resets_at_paris_midnight(make):
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")]), t="2026-11-27T22:30:00", tz="Europe/Paris")
    st.reserve("r1", "vk-1", "", 1, 0)
    st.settle("r1", 1, 0)
    out = st.reserve("r2", "vk-1", "", 0.5, 0)
    assert not out["ok"] and out["resets_at"] == "2026-11-27T23:00:00Z"
    clock.t = ts("2026-11-27T23:00:00")
    assert st.reserve("r2", "vk-1", "", 0.5, 0)["ok"]


def test_settle_after_rollover_charges_the_period_the_request_started_in(make):
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")], limits=[RateLimit("day", tokens=100)]),
                     t="2026-11-27T23:59:00")
    st.reserve("r1", "vk-1", "", 0.8, 50)
    clock.t = ts("2026-11-28T00:00:30")
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (0, 0)
    out = st.settle("r1", 0.7, 40)
    assert out == {"cost_usd": 0.7, "remaining_usd": 1.0, "budget": "key 'vk-1' daily budget of $1",
                   "charged": True, "corrected": False}
    assert use(st, "key", "vk-1")["spent_usd"] == 0
    assert use(st, "key", "vk-1", "tokens")["used"] == 0
    assert st.reserve("r2", "vk-1", "", 1.0, 100)["ok"]


# --- settle ----------------------------------------------------------------------------------------

def test_settle_replaces_the_reservation_by_the_cost(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(2, "day")]), teams=[Team("t1", budgets=[Budget(10, "day")])])
    st.reserve("r1", "vk-1", "", 1.5, 10)
    out = st.settle("r1", 0.25, 7)
    assert out == {"cost_usd": 0.25, "remaining_usd": 1.75, "budget": "key 'vk-1' daily budget of $2",
                   "charged": True, "corrected": False}
    u = use(st, "team", "t1")
    assert (u["spent_usd"], u["reserved_usd"], u["remaining_usd"]) == (0.25, 0.0, 9.75)


def test_settle_uses_the_reserved_counters_not_the_callers_key(make):
    st, _ = make(vk("vk-1", budgets=[Budget(2, "day")]), vk("vk-2", budgets=[Budget(3, "day")]))
    st.reserve("r1", "vk-1", "", 1, 0)
    out = st.settle("r1", 0.5, 0, key_id="vk-2", env="")
    assert out["remaining_usd"] == 1.5 and out["budget"] == "key 'vk-1' daily budget of $2"
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5
    assert use(st, "key", "vk-2")["spent_usd"] == 0


def test_settle_twice_charges_once(make):
    st, _ = make(vk("vk-1", budgets=[Budget(2, "day")]))
    st.reserve("r1", "vk-1", "", 1, 0)
    assert st.settle("r1", 0.5, 0, "vk-1", "")["charged"] is True
    out = st.settle("r1", 0.5, 0, "vk-1", "")
    assert out["charged"] is False and out["remaining_usd"] == 1.5
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5


def test_settle_of_an_unknown_rid_charges_the_current_periods(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(2, "day", env="prod")],
                    limits=[RateLimit("minute", requests=1, tokens=100)]),
                 teams=[Team("t1", budgets=[Budget(5, "month")])])
    out = st.settle("lost", 0.5, 30, key_id="vk-1", env="prod")
    assert out == {"cost_usd": 0.5, "remaining_usd": 1.5, "budget": "key 'vk-1' daily budget of $2 (env prod)",
                   "charged": True, "corrected": False}
    assert use(st, "team", "t1")["spent_usd"] == 0.5
    assert use(st, "key", "vk-1", "tokens")["used"] == 30
    assert use(st, "key", "vk-1", "requests")["used"] == 0
    assert st.settle("lost", 0.5, 30, key_id="vk-1", env="prod")["charged"] is False
    assert use(st, "team", "t1")["spent_usd"] == 0.5
    out = st.settle("x", 0.1, 1, key_id="ghost", env="")
    assert out == {"cost_usd": 0.1, "remaining_usd": None, "budget": None, "charged": True, "corrected": False}


def test_settled_rids_are_bounded_by_count_and_age(make):
    st, clock = make(vk("vk-1", budgets=[Budget(100, "day")]), settled_max=3, reservation_ttl=10)
    for i in range(5):
        st.reserve(f"r{i}", "vk-1", "", 1, 0)
        st.settle(f"r{i}", 1, 0)
        clock.tick(0.001)
    assert st.settle("r4", 1, 0, "vk-1")["charged"] is False
    assert st.settle("r0", 1, 0, "vk-1")["charged"] is True     # forgotten: charged as unknown
    assert use(st, "key", "vk-1")["spent_usd"] == 6
    clock.tick(41)                                               # retention: 4 x ttl
    st.expire()
    assert st.settle("r4", 1, 0, "vk-1")["charged"] is True
    clock.tick(39)
    st.expire()
    assert st.settle("r4", 1, 0, "vk-1")["charged"] is False     # remembered again (< retention)


# --- expire ----------------------------------------------------------------------------------------

def test_expire_charges_old_reservations_at_their_max(make):
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")], limits=[RateLimit("day", tokens=1000)]),
                     reservation_ttl=900)
    st.reserve("old", "vk-1", "", 2, 100)
    clock.tick(600)
    st.reserve("new", "vk-1", "", 1, 50)
    clock.tick(300)
    assert st.expire() == []                       # exactly the TTL is not older than it
    clock.tick(1)
    assert st.expire() == ["old"]
    assert st.expired_charge("old") == ("vk-1", "", 2.0)
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (2, 1)
    t = use(st, "key", "vk-1", "tokens")
    assert (t["used"], t["reserved"]) == (100, 50)
    out = st.settle("old", 0.5, 80)
    assert (out["charged"], out["corrected"], out["cost_usd"]) == (True, True, 0.5)
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (0.5, 1)
    assert use(st, "key", "vk-1", "tokens")["used"] == 80
    assert st.settle("old", 0.5, 80)["charged"] is False
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5
    assert st.expired_charge("old") is None


def test_expired_reservations_are_forgotten_after_the_retention(make):
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")]), reservation_ttl=10)
    st.reserve("r1", "vk-1", "", 2, 0)
    clock.tick(11)
    assert st.expire() == ["r1"]
    clock.tick(41)
    assert st.expire() == []
    assert st.expired_charge("r1") is None
    out = st.settle("r1", 0.5, 0, "vk-1", "")         # too late: an unknown rid, charged on top
    assert (out["charged"], out["corrected"]) == (True, False)
    assert use(st, "key", "vk-1")["spent_usd"] == 2.5


def test_unknown_key_reservation_expires_harmlessly(make):
    st, clock = make(reservation_ttl=1)
    st.reserve("r1", "ghost", "", 1, 1)
    clock.tick(2)
    assert st.expire() == ["r1"]
    assert st.usage() == []


def test_a_dead_workers_reservations_expire_at_once_and_say_what_they_were_charged(make):
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")]))
    st.reserve("w1-a", "vk-1", "prod", 0.25, 100, pid=101)
    st.reserve("w1-b", "vk-1", "prod", 0.5, 100, pid=101)
    st.reserve("w2-a", "vk-1", "prod", 1.0, 100, pid=202)
    st.reserve("anon", "vk-1", "prod", 1.0, 100)
    assert st.owners() == {101, 202}
    assert sorted(st.expire({101})) == ["w1-a", "w1-b"]
    assert st.owners() == {202}
    assert st.expired_charge("w1-a") == ("vk-1", "prod", 0.25)
    assert st.expired_charge("w2-a") is None
    u = st.settle("w2-a", 0.1, 10)
    assert u["corrected"] is False and use(st, "key", "vk-1")["spent_usd"] == 0.75 + 0.1
    assert st.owners() == set()
    u = st.settle("w1-b", 0.05, 10)
    assert u["corrected"] is True and u["cost_usd"] == 0.05
    assert use(st, "key", "vk-1")["spent_usd"] == 0.25 + 0.05 + 0.1
    again = st.settle("w1-b", 0.05, 10)
    assert (again["charged"], again["corrected"]) == (False, False)
    assert use(st, "key", "vk-1")["spent_usd"] == 0.25 + 0.05 + 0.1


# --- directory changes -----------------------------------------------------------------------------

def test_set_directory_keeps_counters_and_applies_new_limits(make):
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.reserve("r1", "vk-1", "", 0.8, 0)
    st.settle("r1", 0.8, 0)
    assert not st.reserve("r2", "vk-1", "", 0.5, 0)["ok"]
    st.set_directory(directory(vk("vk-1", budgets=[Budget(2, "day")], limits=[RateLimit("minute", requests=1)])))
    out = st.reserve("r2", "vk-1", "", 0.5, 0)
    assert out == {"ok": True, "remaining_usd": 0.7, "budget": "key 'vk-1' daily budget of $2",
                   "requests_remaining": 0}
    st.set_directory(directory(vk("vk-1")))
    assert st.reserve("r3", "vk-1", "", 100, 0)["remaining_usd"] is None
    st.settle("r2", 0.5, 0)
    st.set_directory(directory(vk("vk-1", budgets=[Budget(2, "day")])))
    assert use(st, "key", "vk-1")["spent_usd"] == 1.3


# --- usage & savings -------------------------------------------------------------------------------

def test_usage_rows(make):
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(1, "day", env="prod")],
                    limits=[RateLimit("minute", requests=3, tokens=500)]),
                 vk("vk-2"), teams=[Team("t1", budgets=[Budget(4, "month")])], t="2026-11-27T12:00:30")
    st.reserve("r1", "vk-1", "prod", 0.5, 100)
    st.settle("r1", 0.25, 80)
    st.reserve("r2", "vk-1", "prod", 0.1, 20)
    rows = st.usage("vk-1")
    assert rows[0] == {"level": "key", "owner": "vk-1", "kind": "budget", "period": "day", "env": "prod",
                       "label": "key 'vk-1' daily budget of $1 (env prod)", "limit_usd": 1.0,
                       "spent_usd": 0.25, "reserved_usd": 0.1, "remaining_usd": 0.65,
                       "period_start": "2026-11-27T00:00:00Z", "resets_at": "2026-11-28T00:00:00Z"}
    assert rows[1] == {"level": "key", "owner": "vk-1", "kind": "requests", "period": "minute", "env": "",
                       "label": "key 'vk-1' limit of 3 requests per minute", "limit": 3, "used": 2,
                       "reserved": 0, "remaining": 1, "period_start": "2026-11-27T12:00:00Z",
                       "resets_at": "2026-11-27T12:01:00Z"}
    assert rows[2]["kind"] == "tokens" and (rows[2]["used"], rows[2]["reserved"], rows[2]["remaining"]) == (80, 20, 400)
    assert rows[3]["label"] == "team 't1' monthly budget of $4" and rows[3]["spent_usd"] == 0.25
    assert len(rows) == 4
    assert st.usage("vk-2") == [] and st.usage("ghost") == []
    assert len(st.usage()) == 4


def test_cache_savings_are_kept_per_key_and_env_outside_budgets(make):
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.settle("hit-1", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.25)
    st.settle("hit-2", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.5)
    st.settle("hit-2", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.5)     # duplicate: not counted twice
    st.settle("hit-3", 0.0, 0, key_id="", env="", saved_usd=0.125)
    assert st.savings("vk-1") == [{"key": "vk-1", "env": "prod", "saved_usd": 0.75}]
    assert st.savings() == [{"key": "", "env": "", "saved_usd": 0.125},
                            {"key": "vk-1", "env": "prod", "saved_usd": 0.75}]
    assert use(st, "key", "vk-1")["spent_usd"] == 0.0


# --- both backends side by side, random operations -------------------------------------------------

P_KEYS = [vk("k1", team="t", budgets=[Budget(0.3, "minute")], limits=[RateLimit("minute", requests=3)]),
          vk("k2", team="t", limits=[RateLimit("minute", tokens=500, env="prod")]),
          vk("k3", team="t", budgets=[Budget(0.2, "hour", env="prod")])]
P_TEAMS = [Team("t", customer="c", budgets=[Budget(1, "day"), Budget(0.5, "hour", env="prod")],
                rate_limits=[RateLimit("minute", requests=5)])]
P_CUST = [Customer("c", budgets=[Budget(1.2, "hour")], rate_limits=[RateLimit("day", tokens=20_000)])]

RESERVE = st_.tuples(st_.just("reserve"), st_.sampled_from(["k1", "k2", "k3", "ghost"]),
                     st_.sampled_from(["", "prod", "dev"]),
                     st_.one_of(st_.sampled_from([0, 1, 100_000, 150_000, 200_000, 300_000, 400_000]),
                                st_.integers(0, 400_000)),
                     st_.sampled_from([0, 1, 100, 250, 500]), st_.sampled_from([0, 7, 8]))
OP = st_.one_of(
    RESERVE, RESERVE, RESERVE,
    # settle the i-th reservation (open, settled or expired), num/4 of its max, tnum x 100 tokens
    st_.tuples(st_.just("settle"), st_.integers(0, 60), st_.integers(0, 4), st_.integers(0, 4),
               st_.sampled_from([0, 0, 25_000])),
    st_.tuples(st_.just("unknown"), st_.sampled_from(["k1", "k2", "k3", "ghost"]), st_.sampled_from(["", "prod"]),
               st_.integers(0, 200_000), st_.integers(0, 300)),
    st_.tuples(st_.just("tick"), st_.sampled_from([0.5, 7, 30, 59, 61, 200, 900, 3600])),
    st_.tuples(st_.just("expire"), st_.sampled_from([(), (7,), (8,), (7, 8)])),
)


def apply(led, op, rids: list, n: int):
    """Run one operation; returns what it answered (exceptions as their type name)."""
    try:
        if op[0] == "reserve":
            _, key, env, max_m, est, pid = op
            rids.append(f"r{n}")
            return led.reserve(f"r{n}", key, env, max_m / 1e6, est, pid=pid)
        if op[0] == "settle":
            if not rids:
                return None
            _, i, num, tnum, saved = op
            rid = rids[i % len(rids)]
            return led.settle(rid, (i * 10_000 * num // 4) / 1e6, 100 * tnum, "k1", "", saved / 1e6)
        if op[0] == "unknown":
            _, key, env, cost, tok = op
            return led.settle(f"u{n}", cost / 1e6, tok, key, env)
        if op[0] == "expire":
            out = sorted(led.expire(set(op[1])))
            return out, [led.expired_charge(r) for r in out]
    except ValueError as e:
        return type(e).__name__
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st_.lists(OP, min_size=10, max_size=50))
def test_property_both_backends_answer_alike(redis_db, ops):
    d = directory(*P_KEYS, teams=P_TEAMS, customers=P_CUST)
    clock = Clock("2026-11-27T23:58:45")
    mem = LedgerState(d, clock=clock, reservation_ttl=300)
    red = redis_ledger(redis_db, d, clock, reservation_ttl=300)
    rids: list[str] = []
    try:
        for n, op in enumerate(ops):
            if op[0] == "tick":
                clock.tick(op[1])
                continue
            before = list(rids)
            a = apply(mem, op, rids, n)
            rids[:] = before
            b = apply(red, op, rids, n)
            assert a == b, (op, a, b)
            assert mem.usage() == red.usage(), op
            assert mem.owners() == red.owners(), op
        assert mem.savings() == red.savings()
    finally:
        red.close()
