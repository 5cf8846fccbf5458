"""LedgerState's own behaviour: snapshots and restore, counter hygiene, purity and speed.

What every ledger backend must do alike (reserve, settle, expire, usage, savings) is the contract
suite, test_ledger_contract.py, run on LedgerState and on RedisLedger."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team
from finops.workers.ledger import state as ls
from finops.workers.ledger.state import LedgerState

from .test_ledger_contract import Clock, directory, use, vk


def make(*keys, teams=(), customers=(), t="2026-11-27T12:00:00", **kw):
    clock = Clock(t)
    return LedgerState(directory(*keys, teams=teams, customers=customers), clock=clock, **kw), clock


# --- periods -------------------------------------------------------------------------------------

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


# --- purity --------------------------------------------------------------------------

def test_module_imports_no_io():
    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n.split('.')[0] in ('trio','zmq','httpx','httpcore','hypercorn','h11','h2','sqlite3'):\n"
            "   raise ImportError(n)\nsys.meta_path.insert(0, B())\n"
            "import finops.workers.ledger.state")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


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


# --- replay after a crash (LedgerState.replay) -------------------------------------------------------

def _crash_scenario():
    """A ledger that snapshots at `snap_at` and keeps going: returns it (what the ledger knew at the
    crash, the reference), the snapshot, and every settle with the time it was made, as the
    frontend replays them. One request per case of `replay`'s docstring."""
    keys = [vk("vk-1", budgets=[Budget(100, "day")], limits=[RateLimit("day", tokens=1_000_000)])]
    st, clock = make(*keys, reservation_ttl=60)
    settles = []

    def settle(rid, cost, tokens):
        st.settle(rid, cost, tokens, "vk-1", "")
        settles.append((clock.t, rid, cost, tokens))

    st.reserve("old", "vk-1", "", 1.0, 100)
    settle("old", 0.25, 10)                      # case 4: settled long before the snapshot
    clock.tick(ls.SNAPSHOT_SETTLED_SECONDS + 5)
    st.reserve("recent", "vk-1", "", 1.0, 100)
    settle("recent", 0.125, 20)                  # case 3: settled just before, listed in the snapshot
    st.reserve("a", "vk-1", "", 1.0, 100)        # case 1: reserved before the snapshot ...
    st.reserve("open", "vk-1", "", 1.0, 100)     # still open at the crash: its worker settles it later
    clock.tick(0.5)
    snap = json.loads(json.dumps(st.snapshot()))
    clock.tick(0.3)
    settle("a", 0.5, 30)                         # ... settled after it
    st.reserve("b", "vk-1", "", 1.0, 100)
    settle("b", 0.0625, 40)                      # case 2: reserved and settled after the snapshot
    settle("hit", 0.0, 0)                        # a cache hit after the snapshot (never reserved)
    return st, clock, snap, settles, keys


def _spent(st):
    b, t = use(st, "key", "vk-1"), use(st, "key", "vk-1", kind="tokens", period="day")
    return b["spent_usd"], b["reserved_usd"], t["used"], t["reserved"]


def test_replayed_settles_put_back_what_a_crash_lost_and_count_nothing_twice():
    ref, clock, snap, settles, keys = _crash_scenario()
    crashed, clock2 = make(*keys, reservation_ttl=60)
    clock2.t = clock.t + 1                              # restarted a second later
    crashed.restore(snap)
    assert _spent(crashed) != _spent(ref)               # the last moments are lost ...
    out = [crashed.replay(t, rid, cost, tok, "vk-1", "") for t, rid, cost, tok in settles]
    assert [o and o["charged"] for o in out] == [None, False, True, True, True]   # old skipped, recent known
    assert _spent(crashed) == _spent(ref)               # ... and put back, to the micro-dollar
    assert use(crashed, "key", "vk-1")["reserved_usd"] == 1.0     # only "open" stays reserved
    for t, rid, cost, tok in settles:                   # a second replay (another frontend, a worker death)
        crashed.replay(t, rid, cost, tok, "vk-1", "")
    assert _spent(crashed) == _spent(ref)
    crashed.settle("open", 0.75, 50)                    # its worker's own settle
    ref.settle("open", 0.75, 50)
    assert _spent(crashed) == _spent(ref) and _spent(crashed)[1] == 0


def test_a_replay_after_the_ttl_corrects_the_reservation_the_restart_charged_in_full():
    ref, clock, snap, settles, keys = _crash_scenario()
    crashed, clock2 = make(*keys, reservation_ttl=60)
    clock2.t = clock.t + 61                             # the restart took longer than the TTL
    crashed.restore(snap)
    assert sorted(crashed.expire()) == ["a", "open"]    # charged their maximum
    for t, rid, cost, tok in settles:
        crashed.replay(t, rid, cost, tok, "vk-1", "")
    crashed.settle("open", 0.75, 50)
    ref.settle("open", 0.75, 50)
    assert _spent(crashed) == _spent(ref)


def test_an_unknown_rid_is_skipped_only_when_it_could_have_been_settled_before_the_snapshots_list():
    _, clock, snap, _, keys = _crash_scenario()
    after = snap["settled_after"]
    assert after == pytest.approx(clock.t - 0.3 - ls.SNAPSHOT_SETTLED_SECONDS)      # the snapshot was 0.3 s ago
    st, clock2 = make(*keys)
    clock2.t = clock.t
    st.restore(snap)
    before = _spent(st)
    assert st.replay(after + ls.REPLAY_LAG, "x1", 1.0, 1, "vk-1", "") is None
    assert _spent(st) == before
    assert st.replay(after + ls.REPLAY_LAG + 0.001, "x2", 1.0, 1, "vk-1", "")["charged"]
    fresh, clock3 = make(*keys)                         # no snapshot restored: knows every rid it settled
    clock3.t = clock.t
    assert fresh.replay(0.0, "x3", 1.0, 1, "vk-1", "")["charged"]
    old = dict(snap, settled_after=None)                # a snapshot written before settled_after existed
    st.restore(old)
    assert st.replay(0.0, "x4", 1.0, 1, "vk-1", "")["charged"]


def test_the_snapshots_list_stays_complete_when_the_settled_rids_are_bounded():
    st, clock = make(vk("vk-1", budgets=[Budget(100, "day")]), settled_max=2)
    for i in range(4):
        clock.tick(0.1)
        st.reserve(f"r{i}", "vk-1", "", 1, 0)
        st.settle(f"r{i}", 1, 0)
    snap = st.snapshot()
    assert [r for r, _ in snap["settled"]] == ["r2", "r3"]
    assert snap["settled_after"] == pytest.approx(clock.t - 0.2)     # r1's time: r0 and r1 are forgotten
    st2, clock2 = make(vk("vk-1", budgets=[Budget(100, "day")]))
    clock2.t = clock.t
    st2.restore(json.loads(json.dumps(snap)))
    assert st2.replay(clock.t - 0.3, "r0", 1, 0, "vk-1", "") is None        # settled before: skipped
    assert use(st2, "key", "vk-1")["spent_usd"] == 4


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
