"""LedgerState: reserve / settle over budgets and rate limits, exact, atomic, period-aware, persistent."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team, VirtualKey
from finops.workers.ledger import state as ls
from finops.workers.ledger.state import LedgerState


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


def make(*keys, teams=(), customers=(), t="2026-11-27T12:00:00", **kw):
    clock = Clock(t)
    return LedgerState(directory(*keys, teams=teams, customers=customers), clock=clock, **kw), clock


def use(state, level, owner, kind="budget", period=None, env=""):
    rows = [u for u in state.usage() if u["level"] == level and u["owner"] == owner and u["kind"] == kind
            and u["env"] == env and (period is None or u["period"] == period)]
    assert len(rows) == 1, rows
    return rows[0]


# --- reserve -------------------------------------------------------------------------------------

def test_reserve_ok_reports_the_tightest_budget_and_requests_left():
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


def test_reserve_without_budgets_reports_none():
    st, _ = make(vk("vk-1", limits=[RateLimit("minute", requests=5)]))
    assert st.reserve("r1", "vk-1", "", 1.0, 10) == {"ok": True, "remaining_usd": None, "budget": None,
                                                     "requests_remaining": 4}
    st2, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    assert st2.reserve("r1", "vk-1", "", 0.25, 10)["requests_remaining"] is None


def test_unknown_key_reserves_nothing():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    assert st.reserve("r1", "nope", "", 50.0, 10**9) == {"ok": True, "remaining_usd": None, "budget": None,
                                                        "requests_remaining": None}
    assert st.snapshot()["counters"] == []
    assert use(st, "key", "vk-1")["reserved_usd"] == 0


def test_duplicate_rid_raises():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.reserve("r1", "vk-1", "", 0.1, 1)
    with pytest.raises(ValueError):
        st.reserve("r1", "vk-1", "", 0.1, 1)
    assert use(st, "key", "vk-1")["reserved_usd"] == 0.1


def test_invalid_amounts_raise():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            st.reserve("r1", "vk-1", "", bad, 1)
    with pytest.raises(ValueError):
        st.reserve("r1", "vk-1", "", 0.1, -1)
    st.reserve("r1", "vk-1", "", 0.1, 1)
    with pytest.raises(ValueError):
        st.settle("r1", -1.0, 0)


def test_budget_refusal_names_budget_reset_and_left():
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
    # exactly up to the amount is allowed
    assert st.reserve("r3", "vk-1", "production", 0.25, 0)["ok"]
    assert not st.reserve("r4", "vk-1", "production", 0.000001, 0)["ok"]
    assert st.reserve("r5", "vk-1", "production", 0.0, 0)["ok"]


def test_spent_plus_reserved_counts():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.reserve("r1", "vk-1", "", 0.6, 0)
    st.settle("r1", 0.5, 0)
    st.reserve("r2", "vk-1", "", 0.3, 0)           # spent 0.5 + reserved 0.3
    assert not st.reserve("r3", "vk-1", "", 0.3, 0)["ok"]
    assert st.reserve("r3", "vk-1", "", 0.2, 0)["ok"]


def test_refusal_is_atomic():
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")], limits=[RateLimit("minute", requests=10, tokens=1000)]),
                 teams=[Team("t1", budgets=[Budget(1, "day")])])
    before = st.usage()
    assert not st.reserve("r1", "vk-1", "", 2.0, 5)["ok"]      # the team budget refuses
    assert st.usage() == before
    assert st.snapshot()["reservations"] == []
    st2, _ = make(vk("vk-1", team="t1", budgets=[Budget(10, "day")], limits=[RateLimit("minute", tokens=100)]),
                  teams=[Team("t1", budgets=[Budget(1, "day")], rate_limits=[RateLimit("minute", requests=5)])])
    assert not st2.reserve("r1", "vk-1", "", 0.5, 101)["ok"]      # the last check (tokens) refuses
    assert use(st2, "key", "vk-1")["reserved_usd"] == 0
    assert use(st2, "team", "t1")["reserved_usd"] == 0
    assert use(st2, "team", "t1", "requests")["used"] == 0


def test_budget_is_reported_before_a_rate_limit():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day")], limits=[RateLimit("minute", requests=0)]))
    assert st.reserve("r1", "vk-1", "", 2, 0)["code"] == "ServiceQuotaExceededException"
    assert st.reserve("r1", "vk-1", "", 0.5, 0)["code"] == "ThrottlingException"


def test_float_amounts_do_not_drift():
    st, _ = make(vk("vk-1", budgets=[Budget(0.3, "day")]))
    for i in range(3):                             # 0.1 + 0.1 + 0.1 > 0.3 in floats
        assert st.reserve(f"r{i}", "vk-1", "", 0.1, 0)["ok"], i
    assert not st.reserve("r9", "vk-1", "", 0.000001, 0)["ok"]
    for i in range(3):
        st.settle(f"r{i}", 0.1, 0)
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"], u["remaining_usd"]) == (0.3, 0.0, 0.0)
    st2, _ = make(vk("vk-1", budgets=[Budget(1000, "day")]))
    for i in range(1000):
        st2.reserve(f"r{i}", "vk-1", "", 0.01, 0)
        st2.settle(f"r{i}", 0.000123, 0)
    assert use(st2, "key", "vk-1")["spent_usd"] == 0.123


# --- environments & scopes -----------------------------------------------------------------------

def test_env_scoping():
    st, _ = make(vk("vk-1", budgets=[Budget(1, "day", env="production"), Budget(5, "day")]))
    out = st.reserve("r1", "vk-1", "staging", 2.0, 0)    # only the env-less budget applies
    assert out["ok"] and out["budget"] == "key 'vk-1' daily budget of $5" and out["remaining_usd"] == 3.0
    assert not st.reserve("r2", "vk-1", "production", 2.0, 0)["ok"]
    out = st.reserve("r3", "vk-1", "production", 0.5, 0)
    assert out["remaining_usd"] == 0.5 and "(env production)" in out["budget"]
    assert use(st, "key", "vk-1", env="")["reserved_usd"] == 2.5          # "*" counts every env
    assert use(st, "key", "vk-1", env="production")["reserved_usd"] == 0.5
    assert st.reserve("r4", "vk-1", "", 2.0, 0)["ok"]                     # no env: env budgets don't apply
    assert not st.reserve("r5", "vk-1", "other", 0.6, 0)["ok"]            # 4.5 + 0.6 > 5


def test_env_rate_limit_and_unmentioned_env():
    st, _ = make(vk("vk-1", limits=[RateLimit("minute", requests=1, env="production")]))
    assert st.reserve("r1", "vk-1", "production", 0, 0)["ok"]
    assert not st.reserve("r2", "vk-1", "production", 0, 0)["ok"]
    for i, env in enumerate(["", "staging", "x" * 50]):
        assert st.reserve(f"s{i}", "vk-1", env, 0, 0)["requests_remaining"] is None


def test_team_budget_is_shared_by_its_keys():
    team = Team("t1", budgets=[Budget(1, "day")])
    st, _ = make(vk("a1", team="t1"), vk("a2", team="t1"), vk("b", team="t2"), teams=[team, Team("t2")])
    assert st.reserve("r1", "a1", "", 0.6, 0)["ok"]
    out = st.reserve("r2", "a2", "", 0.6, 0)
    assert not out["ok"] and out["budget"] == "team 't1' daily budget of $1"
    assert st.reserve("r3", "b", "", 0.6, 0)["ok"]


def test_same_period_budgets_share_a_counter_and_the_tighter_wins():
    st, _ = make(vk("vk-1", budgets=[Budget(5, "day"), Budget(2, "day")]))
    assert st.reserve("r1", "vk-1", "", 1.5, 0)["remaining_usd"] == 0.5
    out = st.reserve("r2", "vk-1", "", 1.0, 0)
    assert not out["ok"] and out["budget"] == "key 'vk-1' daily budget of $2"
    assert len(st.snapshot()["counters"]) == 1


# --- rate limits -----------------------------------------------------------------------------------

def test_request_limit_retry_after_and_reset():
    st, clock = make(vk("vk-1", limits=[RateLimit("minute", requests=2)]), t="2026-11-27T12:00:15")
    assert st.reserve("r1", "vk-1", "", 0, 0)["requests_remaining"] == 1
    assert st.reserve("r2", "vk-1", "", 0, 0)["requests_remaining"] == 0
    st.settle("r1", 0, 0)                           # settling does not give the request back
    clock.tick(0.5)
    out = st.reserve("r3", "vk-1", "", 0, 0)
    assert out["ok"] is False and out["code"] == "ThrottlingException" and out["status"] == 429
    assert out["retry_after_ms"] == 44500
    assert "key 'vk-1' limit of 2 requests per minute" in out["message"]
    assert out["resets_at"] == "2026-11-27T12:01:00Z"
    clock.t = ts("2026-11-27T12:01:00") - 0.0001
    assert st.reserve("r3", "vk-1", "", 0, 0)["retry_after_ms"] == 1   # at least 1
    clock.t = ts("2026-11-27T12:01:00")
    assert st.reserve("r3", "vk-1", "", 0, 0)["requests_remaining"] == 1


def test_windows_of_different_lengths_roll_independently():
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


def test_token_limit_counts_used_and_reserved():
    st, clock = make(vk("vk-1", limits=[RateLimit("hour", tokens=1000)]), t="2026-11-27T12:30:00")
    assert st.reserve("r1", "vk-1", "", 0, 600)["ok"]
    out = st.reserve("r2", "vk-1", "", 0, 401)
    assert not out["ok"] and out["retry_after_ms"] == 30 * 60 * 1000
    assert "limit of 1000 tokens per hour" in out["message"]
    st.settle("r1", 0, 200)                          # used 200, reserved 0
    assert st.reserve("r2", "vk-1", "", 0, 800)["ok"]
    assert not st.reserve("r3", "vk-1", "", 0, 1)["ok"]
    u = use(st, "key", "vk-1", "tokens")
    assert (u["used"], u["reserved"], u["remaining"]) == (200, 800, 0)
    clock.tick(30 * 60)
    assert st.reserve("r3", "vk-1", "", 0, 1000)["ok"]


# --- periods -------------------------------------------------------------------------------------

@pytest.mark.parametrize("period,start,just_before,next_start", [
    ("minute", "2026-11-27T12:00:10", "2026-11-27T12:00:59", "2026-11-27T12:01:00"),
    ("hour", "2026-11-27T12:10:00", "2026-11-27T12:59:59", "2026-11-27T13:00:00"),
    ("day", "2026-11-27T12:00:00", "2026-11-27T23:59:59", "2026-11-28T00:00:00"),
    ("month", "2026-11-27T12:00:00", "2026-11-30T23:59:59", "2026-12-01T00:00:00"),
])
def test_budget_resets_when_the_period_rolls_over(period, start, just_before, next_start):
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


def test_paris_day_budget_resets_at_paris_midnight():
    # 2026-11-27 in Paris is UTC+1: the Paris day ends at 23:00 UTC
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")]), t="2026-11-27T22:30:00", tz="Europe/Paris")
    st.reserve("r1", "vk-1", "", 1, 0)
    st.settle("r1", 1, 0)
    out = st.reserve("r2", "vk-1", "", 0.5, 0)
    assert not out["ok"] and out["resets_at"] == "2026-11-27T23:00:00Z"
    clock.t = ts("2026-11-27T23:00:00")
    assert st.reserve("r2", "vk-1", "", 0.5, 0)["ok"]
    # a UTC ledger would still refuse at that time
    st2, clock2 = make(vk("vk-1", budgets=[Budget(1, "day")]), t="2026-11-27T22:30:00")
    st2.reserve("r1", "vk-1", "", 1, 0)
    clock2.t = ts("2026-11-27T23:00:00")
    assert not st2.reserve("r2", "vk-1", "", 0.5, 0)["ok"]


def test_settle_after_rollover_charges_the_period_the_request_started_in():
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")], limits=[RateLimit("day", tokens=100)]),
                     t="2026-11-27T23:59:00")
    st.reserve("r1", "vk-1", "", 0.8, 50)
    clock.t = ts("2026-11-28T00:00:30")
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (0, 0)           # the new day starts empty
    out = st.settle("r1", 0.7, 40)
    assert out == {"cost_usd": 0.7, "remaining_usd": 1.0, "budget": "key 'vk-1' daily budget of $1",
                   "charged": True, "corrected": False}
    assert use(st, "key", "vk-1")["spent_usd"] == 0
    assert use(st, "key", "vk-1", "tokens")["used"] == 0
    assert st.reserve("r2", "vk-1", "", 1.0, 100)["ok"]


def test_old_counters_are_dropped():
    st, clock = make(vk("vk-1", budgets=[Budget(1, "minute")]))
    for i in range(5):
        st.reserve(f"r{i}", "vk-1", "", 0.1, 0)
        st.settle(f"r{i}", 0.1, 0)
        clock.tick(60)
    assert len(st.snapshot()["counters"]) == 1
    clock.tick(60)
    st.expire()                                     # also prunes counters whose period ended
    assert st.snapshot()["counters"] == []


# --- settle ----------------------------------------------------------------------------------------

def test_settle_replaces_the_reservation_by_the_cost():
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(2, "day")]), teams=[Team("t1", budgets=[Budget(10, "day")])])
    st.reserve("r1", "vk-1", "", 1.5, 10)
    out = st.settle("r1", 0.25, 7)
    assert out == {"cost_usd": 0.25, "remaining_usd": 1.75, "budget": "key 'vk-1' daily budget of $2",
                   "charged": True, "corrected": False}
    u = use(st, "team", "t1")
    assert (u["spent_usd"], u["reserved_usd"], u["remaining_usd"]) == (0.25, 0.0, 9.75)
    assert st.snapshot()["reservations"] == []


def test_settle_uses_the_reserved_counters_not_the_callers_key():
    st, _ = make(vk("vk-1", budgets=[Budget(2, "day")]), vk("vk-2", budgets=[Budget(2, "day")]))
    st.reserve("r1", "vk-1", "", 1, 0)
    st.settle("r1", 0.5, 0, key_id="vk-2", env="")
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5
    assert use(st, "key", "vk-2")["spent_usd"] == 0


def test_settle_twice_charges_once():
    st, _ = make(vk("vk-1", budgets=[Budget(2, "day")]))
    st.reserve("r1", "vk-1", "", 1, 0)
    assert st.settle("r1", 0.5, 0, "vk-1", "")["charged"] is True
    out = st.settle("r1", 0.5, 0, "vk-1", "")
    assert out["charged"] is False and out["remaining_usd"] == 1.5
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5


def test_settle_of_an_unknown_rid_charges_the_current_periods():
    st, _ = make(vk("vk-1", team="t1", budgets=[Budget(2, "day", env="prod")],
                    limits=[RateLimit("minute", requests=1, tokens=100)]),
                 teams=[Team("t1", budgets=[Budget(5, "month")])])
    out = st.settle("lost", 0.5, 30, key_id="vk-1", env="prod")
    assert out == {"cost_usd": 0.5, "remaining_usd": 1.5, "budget": "key 'vk-1' daily budget of $2 (env prod)",
                   "charged": True, "corrected": False}
    assert use(st, "team", "t1")["spent_usd"] == 0.5
    assert use(st, "key", "vk-1", "tokens")["used"] == 30
    assert use(st, "key", "vk-1", "requests")["used"] == 0   # only cost and tokens are charged
    assert st.settle("lost", 0.5, 30, key_id="vk-1", env="prod")["charged"] is False
    assert use(st, "team", "t1")["spent_usd"] == 0.5
    out = st.settle("x", 0.1, 1, key_id="ghost", env="")     # unknown key: nothing to charge
    assert out == {"cost_usd": 0.1, "remaining_usd": None, "budget": None, "charged": True, "corrected": False}


def test_settled_rids_are_bounded():
    st, clock = make(vk("vk-1", budgets=[Budget(100, "day")]), settled_max=3, reservation_ttl=10)
    for i in range(5):
        st.reserve(f"r{i}", "vk-1", "", 1, 0)
        st.settle(f"r{i}", 1, 0)
    assert [r for r, _ in st.snapshot()["settled"]] == ["r2", "r3", "r4"]
    assert st.settle("r4", 1, 0, "vk-1")["charged"] is False
    assert st.settle("r0", 1, 0, "vk-1")["charged"] is True     # forgotten: charged as unknown
    clock.tick(41)                                               # retention: 4 x ttl
    st.expire()
    assert st.snapshot()["settled"] == []


# --- expire ----------------------------------------------------------------------------------------

def test_expire_charges_old_reservations_at_their_max():
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")], limits=[RateLimit("day", tokens=1000)]),
                     reservation_ttl=900)
    st.reserve("old", "vk-1", "", 2, 100)
    clock.tick(600)
    st.reserve("new", "vk-1", "", 1, 50)
    clock.tick(300)
    assert st.expire() == []                       # exactly the TTL is not older than it
    clock.tick(1)
    assert st.expire() == ["old"]
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (2, 1)
    t = use(st, "key", "vk-1", "tokens")
    assert (t["used"], t["reserved"]) == (100, 50)
    assert [r["rid"] for r in st.snapshot()["reservations"]] == ["new"]
    # the late settle corrects the charge to the real cost; a second one charges nothing
    assert st.settle("old", 0.5, 80)["charged"] is True
    u = use(st, "key", "vk-1")
    assert (u["spent_usd"], u["reserved_usd"]) == (0.5, 1)
    assert use(st, "key", "vk-1", "tokens")["used"] == 80
    assert st.settle("old", 0.5, 80)["charged"] is False
    assert use(st, "key", "vk-1")["spent_usd"] == 0.5


def test_unknown_key_reservation_expires_harmlessly():
    st, clock = make(reservation_ttl=1)
    st.reserve("r1", "ghost", "", 1, 1)
    clock.tick(2)
    assert st.expire() == ["r1"]
    assert st.snapshot()["counters"] == []


def test_a_dead_workers_reservations_expire_at_once_and_say_what_they_were_charged():
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")]))
    st.reserve("w1-a", "vk-1", "prod", 0.25, 100, pid=101)
    st.reserve("w1-b", "vk-1", "prod", 0.5, 100, pid=101)
    st.reserve("w2-a", "vk-1", "prod", 1.0, 100, pid=202)
    st.reserve("anon", "vk-1", "prod", 1.0, 100)                       # pid unknown: TTL only
    assert st.owners() == {101, 202}
    assert sorted(st.expire({101})) == ["w1-a", "w1-b"]                  # well within the TTL
    assert st.owners() == {202}
    assert st.expired_charge("w1-a") == ("vk-1", "prod", 0.25)
    assert st.expired_charge("w2-a") is None                           # still open
    u = st.settle("w2-a", 0.1, 10)
    assert u["corrected"] is False and use(st, "key", "vk-1")["spent_usd"] == 0.75 + 0.1
    # a settle that was still queued in the dead worker arrives (the frontend sent it again)
    u = st.settle("w1-b", 0.05, 10)
    assert u["corrected"] is True and u["cost_usd"] == 0.05
    assert use(st, "key", "vk-1")["spent_usd"] == 0.25 + 0.05 + 0.1
    again = st.settle("w1-b", 0.05, 10)
    assert (again["charged"], again["corrected"]) == (False, False)
    assert use(st, "key", "vk-1")["spent_usd"] == 0.25 + 0.05 + 0.1


def test_the_reserving_pid_survives_a_snapshot():
    st, clock = make(vk("vk-1", budgets=[Budget(10, "day")]))
    st.reserve("r1", "vk-1", "", 0.25, 100, pid=4242)
    st2, _ = make(vk("vk-1", budgets=[Budget(10, "day")]))
    st2.restore(st.snapshot())
    assert st2.owners() == {4242} and st2.expire({4242}) == ["r1"]


# --- snapshot / restore ----------------------------------------------------------------------------

def _ops(st, clock):
    out = []
    out.append(st.reserve("b1", "vk-1", "prod", 0.4, 100))
    out.append(st.settle("a1", 0.2, 50))            # reserved before the snapshot
    out.append(st.settle("a2", 0.3, 10, "vk-1", "prod"))   # settled before the snapshot
    out.append(st.reserve("b2", "vk-1", "prod", 0.5, 100))
    clock.tick(1000)
    out.append(st.expire())
    out.append(st.settle("a3", 0.1, 1))             # expired now: corrected
    out.append(st.settle("a4", 0.1, 1))             # expired before the snapshot: corrected
    out.append(st.settle("a4", 0.1, 1))             # ... once
    out.append(st.reserve("b3", "vk-2", "", 0.1, 10))
    out.append(st.usage())
    return out


def test_snapshot_restore_round_trip_behaves_identically():
    keys = [vk("vk-1", team="t1", budgets=[Budget(1, "day", env="prod")],
               limits=[RateLimit("minute", requests=5, tokens=1000)]),
            vk("vk-2", team="t1")]
    teams = [Team("t1", budgets=[Budget(2, "month")], rate_limits=[RateLimit("hour", requests=50)])]
    st, clock = make(*keys, teams=teams)
    st.reserve("a4", "vk-1", "prod", 0.3, 100)
    clock.tick(901)
    assert st.expire() == ["a4"]
    st.reserve("a1", "vk-1", "prod", 0.3, 100)
    st.reserve("a2", "vk-1", "prod", 0.3, 100)
    st.settle("a2", 0.3, 10)
    st.reserve("a3", "vk-2", "", 0.2, 100)
    snap = json.loads(json.dumps(st.snapshot()))
    assert [r["rid"] for r in snap["expired"]] == ["a4"]
    st2, clock2 = make(*keys, teams=teams)
    clock2.t = clock.t
    st2.restore(snap)
    assert json.loads(json.dumps(st2.snapshot())) == snap
    assert _ops(st2, clock2) == _ops(st, clock)
    assert st2.snapshot() == st.snapshot()


def test_restore_drops_ended_counters_and_keeps_reservations():
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day"), Budget(5, "month")]), t="2026-11-27T23:00:00")
    st.reserve("r1", "vk-1", "", 0.9, 0)
    snap = json.loads(json.dumps(st.snapshot()))
    st2, clock2 = make(vk("vk-1", budgets=[Budget(1, "day"), Budget(5, "month")]), t="2026-11-28T01:00:00")
    st2.restore(snap)
    assert [c[3] for c in st2.snapshot()["counters"]] == ["month"]
    assert use(st2, "key", "vk-1", period="day")["reserved_usd"] == 0
    assert use(st2, "key", "vk-1", period="month")["reserved_usd"] == 0.9
    assert st2.reserve("r2", "vk-1", "", 1, 0)["ok"]       # the new day starts empty
    st2.settle("r1", 0.5, 0)
    m = use(st2, "key", "vk-1", period="month")
    assert (m["spent_usd"], m["reserved_usd"]) == (0.5, 1)
    assert use(st2, "key", "vk-1", period="day")["spent_usd"] == 0   # belongs to the ended day
    with pytest.raises(ValueError):
        st2.restore({"version": 99})


# --- directory changes -----------------------------------------------------------------------------

def test_set_directory_keeps_counters_and_applies_new_limits():
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
    st.settle("r2", 0.5, 0)                          # still lands on the counter it reserved
    st.set_directory(directory(vk("vk-1", budgets=[Budget(2, "day")])))
    assert use(st, "key", "vk-1")["spent_usd"] == 1.3


# --- usage -----------------------------------------------------------------------------------------

def test_usage_rows():
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
    n = len(st.snapshot()["counters"])
    st.usage()
    assert len(st.snapshot()["counters"]) == n      # read-only


# --- purity & performance --------------------------------------------------------------------------

def test_module_imports_no_io():
    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n.split('.')[0] in ('trio','zmq','httpx','httpcore','hypercorn','h11','h2','sqlite3'):\n"
            "   raise ImportError(n)\nsys.meta_path.insert(0, B())\n"
            "import finops.workers.ledger.state")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_reserve_settle_is_fast():
    budgets = [Budget(1e6, "day"), Budget(1e7, "month")]
    limits = [RateLimit("minute", requests=10**9), RateLimit("hour", tokens=10**12)]
    st, clock = make(vk("vk-1", team="t1", budgets=budgets, limits=limits),
                     teams=[Team("t1", customer="c1", budgets=budgets, rate_limits=limits)],
                     customers=[Customer("c1", budgets=budgets, rate_limits=limits)])
    n = 5000
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()       # CPU time: other processes on a busy machine don't count
        for i in range(n):
            st.reserve(str(i), "vk-1", "", 0.01, 100)
            st.settle(str(i), 0.005, 50)
        best = min(best, (time.process_time() - t0) / n)
        clock.tick(1000)
        st.expire()                    # forgets the settled rids (retention 4 x ttl = 3600 s)
        clock.tick(3000)
    assert best < 50e-6, f"{best * 1e6:.1f} µs per reserve+settle"


# --- the guarantee, property-tested ----------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st_  # noqa: E402

P_KEYS = [vk("k1", team="t", budgets=[Budget(0.3, "minute")], limits=[RateLimit("minute", requests=3)]),
          vk("k2", team="t", limits=[RateLimit("minute", tokens=500, env="prod")]),
          vk("k3", team="t", budgets=[Budget(0.2, "hour", env="prod")])]
P_TEAMS = [Team("t", customer="c", budgets=[Budget(1, "day"), Budget(0.5, "hour", env="prod")],
                rate_limits=[RateLimit("minute", requests=5)])]
P_CUST = [Customer("c", budgets=[Budget(1.2, "hour")], rate_limits=[RateLimit("day", tokens=20_000)])]

RESERVE = st_.tuples(st_.just("reserve"), st_.sampled_from(["k1", "k2", "k3"]), st_.sampled_from(["", "prod", "dev"]),
               st_.one_of(st_.sampled_from([0, 1, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000]),
                          st_.integers(0, 400_000)),
               st_.sampled_from([0, 1, 100, 250, 500]))
OP = st_.one_of(
    RESERVE, RESERVE, RESERVE,
    st_.tuples(st_.just("settle"), st_.integers(0, 50), st_.integers(0, 4), st_.integers(0, 4)),
    st_.tuples(st_.just("tick"), st_.sampled_from([0.5, 7, 30, 59, 61, 900, 3600])),
    st_.tuples(st_.just("restore")),
)


class Model:
    """The rules, restated naively: counters keyed by (base, period start), money in micros."""

    def __init__(self, d: Directory):
        self.d = d
        self.c: dict[tuple, list[int]] = {}
        self.open: dict[str, tuple] = {}

    def specs(self, key, env):
        out = []
        for level, owner, budgets, limits in self.d.scopes(key):
            for b in budgets:
                if b.env in ("", env):
                    out.append(("budget", (level, owner, "budget", b.period, b.env or "*"), round(b.amount_usd * 1e6)))
            for r in limits:
                if r.env in ("", env):
                    if r.requests is not None:
                        out.append(("requests", (level, owner, "requests", r.window, r.env or "*"), r.requests))
                    if r.tokens is not None:
                        out.append(("tokens", (level, owner, "tokens", r.window, r.env or "*"), r.tokens))
        return out

    def reserve(self, rid, key, env, max_m, est, now):
        specs = [(k, base, lim, (base, ls.bounds(base[3], now)[0])) for k, base, lim in self.specs(key, env)]
        for k, base, lim, ck in specs:
            used, res = self.c.get(ck, (0, 0))
            need = max_m if k == "budget" else 1 if k == "requests" else est
            if used + (0 if k == "requests" else res) + need > lim:
                return False
        for k, base, lim, ck in set((k, b, 0, ck) for k, b, _, ck in specs):
            cell = self.c.setdefault(ck, [0, 0])
            if k == "requests":
                cell[0] += 1
            else:
                cell[1] += max_m if k == "budget" else est
        self.open[rid] = (max_m, est, set((k, ck) for k, _, _, ck in specs if k != "requests"))
        return True

    def settle(self, rid, cost_m, tok):
        max_m, est, cks = self.open.pop(rid)
        for k, ck in cks:
            cell = self.c[ck]
            cell[0] += cost_m if k == "budget" else tok
            cell[1] -= max_m if k == "budget" else est


def check(state: LedgerState, model: Model, now):
    for u in state.usage():
        base = (u["level"], u["owner"], u["kind"], u["period"], u["env"] or "*")
        ck = (base, ls.bounds(u["period"], now)[0])
        used, res = model.c.get(ck, (0, 0))
        if u["kind"] == "budget":
            got_used, got_res = round(u["spent_usd"] * 1e6), round(u["reserved_usd"] * 1e6)
            assert got_used + got_res <= round(u["limit_usd"] * 1e6), u
        else:
            got_used, got_res = u["used"], u["reserved"]
            if u["kind"] == "requests":
                assert got_used <= u["limit"], u
        assert (got_used, got_res) == (used, res), (u, used, res)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_.lists(OP, min_size=15, max_size=60))
def test_property_budgets_and_limits_hold_under_any_interleaving(ops):
    d = directory(*P_KEYS, teams=P_TEAMS, customers=P_CUST)
    clock = Clock("2026-11-27T23:58:45")
    state = LedgerState(d, clock=clock)
    model = Model(d)
    reserved: list[tuple[str, int]] = []     # (rid, max micros) of accepted reservations, open ones
    n = 0
    for op in ops:
        if op[0] == "reserve":
            _, key, env, max_m, est = op
            rid = f"r{n}"
            n += 1
            out = state.reserve(rid, key, env, max_m / 1e6, est)
            assert out["ok"] == model.reserve(rid, key, env, max_m, est, clock.t), (op, out)
            if out["ok"]:
                reserved.append((rid, max_m))
        elif op[0] == "settle" and reserved:
            _, i, num, tnum = op
            rid, max_m = reserved.pop(i % len(reserved))
            cost_m = max_m * num // 4
            tok = 100 * tnum
            state.settle(rid, cost_m / 1e6, tok)
            model.settle(rid, cost_m, tok)
        elif op[0] == "tick":
            clock.tick(op[1])
        elif op[0] == "restore":
            snap = json.loads(json.dumps(state.snapshot()))
            state = LedgerState(d, clock=clock)
            state.restore(snap)
        check(state, model, clock.t)
    for rid, max_m in reserved:                  # settle everything left: reserved goes to 0
        state.settle(rid, max_m / 1e6, 0)
        model.settle(rid, max_m, 0)
    check(state, model, clock.t)
    assert all(r == 0 for _, r in model.c.values())


def test_snapshot_keeps_only_recently_settled_rids():
    """The snapshot is written every second: it must not grow with the request rate."""
    st, clock = make(vk("vk-1", budgets=[Budget(100, "day")]))
    st.reserve("old", "vk-1", "", 1, 0)
    st.settle("old", 1, 0)
    clock.tick(10)
    st.reserve("new", "vk-1", "", 1, 0)
    st.settle("new", 1, 0)
    assert [r for r, _ in st.snapshot()["settled"]] == ["new"]
    assert st.settle("old", 1, 0, "vk-1")["charged"] is False    # still remembered in memory


# --- cache savings -------------------------------------------------------------------------------

def test_cache_savings_are_kept_per_key_and_env_outside_budgets_and_survive_a_snapshot():
    st, clock = make(vk("vk-1", budgets=[Budget(1, "day")]))
    st.settle("hit-1", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.25)
    st.settle("hit-2", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.5)
    st.settle("hit-2", 0.0, 0, key_id="vk-1", env="prod", saved_usd=0.5)     # duplicate: not counted twice
    st.settle("hit-3", 0.0, 0, key_id="", env="", saved_usd=0.125)
    assert st.savings("vk-1") == [{"key": "vk-1", "env": "prod", "saved_usd": 0.75}]
    assert use(st, "key", "vk-1")["spent_usd"] == 0.0          # a hit spends nothing
    again, _ = make(vk("vk-1", budgets=[Budget(1, "day")]))
    again.restore(json.loads(json.dumps(st.snapshot())))
    assert again.savings() == st.savings() and len(again.savings()) == 2
