"""The Redis ledger on a real Redis: what only a shared store has to get right.

Concurrency across processes (a limit of N admits exactly N, spend never exceeds a budget),
several nodes on one Redis, the key layout (one Cluster slot, everything expires), exact money
near 2^53, NOSCRIPT, Redis stalled / stopped / flushed / back, rebuilding the counters from the
settled charges, AUTH and TLS.
"""
from __future__ import annotations

import multiprocessing
from datetime import datetime, timezone

import pytest
from redis.crc import key_slot

from finops.shared.governance import Budget, Directory, RateLimit, Team, VirtualKey
from finops.workers.ledger.redis_state import (MAX_EXACT, LedgerNotReady, LedgerUnavailable, RebuildBusy,
                                                    RedisLedger, SettledRow)
from tests.helpers.redis_server import RedisServer

T0 = datetime(2026, 11, 27, 12, 0, 30, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def vk(id, team="", budgets=(), limits=()):
    return VirtualKey(id=id, secret="s-" + id, team=team, budgets=tuple(budgets), rate_limits=tuple(limits))


def directory(*keys, teams=()):
    return Directory(keys={k.id: k for k in keys}, teams={t.id: t for t in teams})


def ledger(url: str, d: Directory, clock=None, ready: bool = True, **kw) -> RedisLedger:
    led = RedisLedger.from_url(url, d, clock=clock or Clock(), **kw)
    if ready:
        led.rebuild([])
    return led


def spent(led, level="key", owner="vk-1", kind="budget", period=None):
    rows = [u for u in led.usage() if (u["level"], u["owner"], u["kind"]) == (level, owner, kind)
            and (period is None or u["period"] == period)]
    assert len(rows) == 1, rows
    return rows[0]


# --- concurrency ---------------------------------------------------------------------------------

SHARED = directory(vk("vk-1", team="t1", budgets=[Budget(1, "day")]),
                   vk("vk-2", team="t1", limits=[RateLimit("minute", requests=10)]),
                   teams=[Team("t1", budgets=[Budget(50, "day")])])


def _hammer(url: str, node: int, n: int, barrier, out):
    """One node: n reserves against the $1 budget (max and cost $0.03) and n against the 10/minute
    limit, all at once with the other nodes; puts (budget admitted, limit admitted, micro-dollars
    settled)."""
    led = RedisLedger.from_url(url, SHARED, clock=Clock())
    barrier.wait()
    ok_b = ok_l = cost_m = 0
    for i in range(n):
        rid = f"n{node}-{i}"
        if led.reserve(rid + "b", "vk-1", "", 0.03, 10, pid=f"node{node}/1")["ok"]:
            ok_b += 1
            cost_m += 30_000
            led.settle(rid + "b", 0.03, 10)
        if led.reserve(rid + "l", "vk-2", "", 0.001, 1, pid=f"node{node}/1")["ok"]:
            ok_l += 1
            led.settle(rid + "l", 0.001, 1)
    out.put((ok_b, ok_l, cost_m))
    led.close()


def test_many_processes_at_once_a_limit_of_n_admits_n_and_spend_stays_within_the_budget(redis_db):
    setup = ledger(redis_db.url, SHARED)
    procs, n = 6, 20
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_hammer, args=(redis_db.url, i, n, barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    assert sum(r[1] for r in results) == 10                     # exactly the limit, over 120 tries
    u = spent(setup)
    assert u["reserved_usd"] == 0 and u["spent_usd"] <= 1.0
    admitted = sum(r[0] for r in results)
    assert admitted == 33 and u["spent_usd"] == 0.99           # 33 x $0.03 <= $1 < 34 x $0.03
    assert round(u["spent_usd"] * 1e6) == sum(r[2] for r in results)   # every settle counted, once
    assert spent(setup, "team", "t1")["spent_usd"] == round(u["spent_usd"] + 10 * 0.001, 6)
    assert spent(setup, "key", "vk-2", "requests")["used"] == 10
    assert setup.owners() == set()


def test_two_nodes_share_counters_reservations_and_expiry(redis_db):
    clock = Clock()
    a = ledger(redis_db.url, SHARED, clock, reservation_ttl=60)
    b = RedisLedger.from_url(redis_db.url, SHARED, clock=clock, reservation_ttl=60)
    assert a.reserve("r1", "vk-1", "", 0.6, 0, pid="a/10")["ok"]
    assert not b.reserve("r2", "vk-1", "", 0.6, 0, pid="b/20")["ok"]        # node B sees A's reservation
    assert b.settle("r1", 0.5, 0, "vk-1", "")["charged"] is True             # settled on the other node
    assert a.settle("r1", 0.5, 0, "vk-1", "")["charged"] is False            # and counted once
    assert a.reserve("r3", "vk-1", "", 0.4, 0, pid="a/10")["ok"]
    assert b.owners() == {"a/10"}
    assert b.expire({"b/99"}) == []                                          # B's own dead pids only
    clock.t += 61
    assert b.expire() == ["r3"]                                              # TTL expiry from any node
    assert a.expired_charge("r3") == ("vk-1", "", 0.4)
    assert spent(a)["spent_usd"] == 0.9 and a.owners() == set()


# --- key layout ----------------------------------------------------------------------------------

def test_every_key_is_in_one_cluster_slot_and_everything_but_the_fixed_keys_expires(redis_db):
    d = directory(vk("vk:1 {x}", budgets=[Budget(5, "day", env="a b")], limits=[RateLimit("minute", tokens=900)]))
    led = ledger(redis_db.url, d, namespace="acme")
    led.reserve("r1", "vk:1 {x}", "a b", 1, 100, pid=7)
    led.reserve("r2", "vk:1 {x}", "a b", 1, 100, pid=7)
    led.settle("r1", 0.5, 50, saved_usd=0.1)
    led.settle("lost", 0.5, 50, "vk:1 {x}", "a b")
    r = redis_db.client()
    keys = sorted(k.decode() for k in r.keys("*"))
    assert all(k.startswith("{acme}:") for k in keys), keys
    assert len({key_slot(k.encode()) for k in keys}) == 1
    counters = [k for k in keys if k.startswith("{acme}:c:")]
    assert len(counters) == 2 and all(len(k.split(":")) == 8 for k in counters)    # owner and env %-encoded
    no_ttl = {k for k in keys if r.ttl(k) == -1}
    assert no_ttl == {"{acme}:ready", "{acme}:open", "{acme}:settled", "{acme}:pids", "{acme}:saved",
                      "{acme}:p:7"}
    assert all(r.ttl(k) > 0 for k in counters + ["{acme}:r:r2"])
    # a counter lives until its period's end (by the ledger's clock) + TTL + retention + 60 s
    day_end = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()
    budget = [k for k in counters if ":budget:day:" in k][0]
    assert abs(r.ttl(budget) - (day_end - T0 + 900 + 3600 + 60)) <= 2
    tokens = [k for k in counters if ":tokens:minute:" in k][0]
    assert abs(r.ttl(tokens) - (30 + 900 + 3600 + 60)) <= 2
    assert spent(led, owner="vk:1 {x}")["spent_usd"] == 1.0
    assert led.savings() == [{"key": "", "env": "", "saved_usd": 0.1}]


# --- exact money ---------------------------------------------------------------------------------

def test_money_is_exact_up_to_2_pow_53_micro_dollars(redis_db):
    big = (MAX_EXACT - 1) / 1e6
    led = ledger(redis_db.url, directory(vk("vk-1", budgets=[Budget(big, "year")]), vk("vk-2", budgets=[Budget(0.3, "day")])))
    half = (MAX_EXACT - 1) // 2
    assert led.reserve("a", "vk-1", "", half / 1e6, 0)["ok"]
    assert led.reserve("b", "vk-1", "", half / 1e6, 0)["ok"]
    out = led.reserve("c", "vk-1", "", 0.000001, 0)
    assert not out["ok"] and out["remaining_usd"] == 0
    led.settle("a", half / 1e6, 0)
    assert spent(led)["spent_usd"] * 1e6 == half
    with pytest.raises(ValueError, match="at most"):
        led.reserve("d", "vk-1", "", (MAX_EXACT + 2) / 1e6, 0)
    for i in range(30):                                       # 0.01 thirty times, no float drift
        assert led.reserve(f"s{i}", "vk-2", "", 0.01, 0)["ok"]
    assert not led.reserve("s-x", "vk-2", "", 0.000001, 0)["ok"]


# --- scripts -------------------------------------------------------------------------------------

def test_scripts_are_loaded_again_after_script_flush(redis_db):
    led = ledger(redis_db.url, SHARED)
    assert led.reserve("r1", "vk-1", "", 0.1, 0)["ok"]
    redis_db.client().script_flush()
    assert led.reserve("r2", "vk-1", "", 0.1, 0)["ok"]
    redis_db.client().script_flush()
    assert [o["charged"] for o in led.settle_many([("r1", 0.1, 0), ("r2", 0.1, 0), ("r1", 0.1, 0)])] == [True, True, False]
    redis_db.client().script_flush()
    out = led.reserve_many([("r3", "vk-2", "", 0, 0), ("r3", "vk-2", "", 0, 0), ("r4", "vk-2", "", 0, 0)])
    assert out[0]["ok"] and isinstance(out[1], ValueError) and out[2]["requests_remaining"] == 8
    assert spent(led)["spent_usd"] == 0.2


# --- Redis away, stalled, back, flushed ----------------------------------------------------------

@pytest.fixture
def own_redis(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        yield srv


def test_redis_stopped_fails_closed_and_comes_back_without_a_new_ledger(own_redis):
    led = ledger(own_redis.url, SHARED, timeout=0.5)
    assert led.reserve("r1", "vk-1", "", 0.25, 0)["ok"]
    own_redis.stop()
    with pytest.raises(LedgerUnavailable, match="unavailable"):
        led.reserve("r2", "vk-1", "", 0.25, 0)
    with pytest.raises(LedgerUnavailable):
        led.settle("r1", 0.25, 0)
    with pytest.raises(LedgerUnavailable):
        led.usage()
    own_redis.start()                                   # no persistence: it comes back empty
    with pytest.raises(LedgerNotReady, match="rebuilt"):
        led.reserve("r2", "vk-1", "", 0.25, 0)
    assert led.rebuild([SettledRow("r0", "vk-1", "", 250_000, 0, T0)]) == 1
    assert led.reserve("r2", "vk-1", "", 0.25, 0)["ok"]
    assert spent(led)["spent_usd"] == 0.25 and spent(led)["reserved_usd"] == 0.25


def test_with_persistence_a_restart_keeps_the_counters(tmp_path):
    with RedisServer(tmp_path / "p", persist=True) as srv:
        led = ledger(srv.url, SHARED)
        assert led.reserve("r1", "vk-1", "", 0.75, 0)["ok"]
        srv.kill()
        srv.start()
        assert led.ready()
        assert not led.reserve("r2", "vk-1", "", 0.5, 0)["ok"]
        assert led.settle("r1", 0.5, 0)["remaining_usd"] == 0.5


def test_a_stalled_redis_times_out_instead_of_hanging_and_a_given_up_reserve_can_be_cancelled(own_redis):
    led = ledger(own_redis.url, SHARED, timeout=0.2)
    own_redis.pause()
    try:
        with pytest.raises(LedgerUnavailable, match="[Tt]imeout|timed out"):
            led.reserve("r1", "vk-1", "", 0.5, 0)
    finally:
        own_redis.resume()
    # the reserve reached Redis and was applied after all: the caller gave up on it, so it cancels
    assert led.settle("r1", 0, 0, "vk-1", "")["charged"] is True
    u = spent(led)
    assert (u["spent_usd"], u["reserved_usd"]) == (0, 0)


def test_after_a_flush_reserves_wait_for_the_rebuild_which_restores_the_current_periods(redis_db):
    clock = Clock()
    d = directory(vk("vk-1", budgets=[Budget(1, "day"), Budget(3, "month")],
                     limits=[RateLimit("minute", requests=5, tokens=1000)]))
    led = ledger(redis_db.url, d, clock)
    rows = []
    for i in range(3):
        led.reserve(f"r{i}", "vk-1", "", 0.3, 100)
        led.settle(f"r{i}", 0.2, 40)
        rows.append(SettledRow(f"r{i}", "vk-1", "", 200_000, 40, clock.t))
    rows.append(SettledRow("yesterday", "vk-1", "", 500_000, 40, clock.t - 86_400))   # counts for the month only
    before = led.usage()
    redis_db.flushall()
    assert not led.ready()
    with pytest.raises(LedgerNotReady):
        led.reserve("r9", "vk-1", "", 0.1, 1)
    # a settle sent again meanwhile (a worker died) is charged as an unknown rid ...
    assert led.settle("r2", 0.2, 40, "vk-1", "")["charged"] is True
    # ... and the rebuild adds only its request; another node cannot rebuild at the same time
    redis_db.client().set("{finops}:rebuild", "someone-else", px=5000)
    with pytest.raises(RebuildBusy):
        led.rebuild(rows)
    redis_db.client().delete("{finops}:rebuild")
    assert led.rebuild(rows) == 4
    assert led.rebuild(rows) is None                          # ready: a second rebuild does nothing
    after = led.usage()
    month = [u for u in after if u["period"] == "month"][0]
    assert month["spent_usd"] == 1.1
    assert [u for u in after if u["period"] != "month"] == [u for u in before if u["period"] != "month"]
    assert led.settle("r1", 0.2, 40, "vk-1", "")["charged"] is False      # remembered by the rebuild
    assert not led.reserve("r9", "vk-1", "", 0.41, 1)["ok"]              # $0.60 spent of $1
    assert led.reserve("r9", "vk-1", "", 0.4, 1)["ok"]


# --- AUTH and TLS --------------------------------------------------------------------------------

def test_auth_password_in_the_url_or_given_apart_and_a_wrong_one_fails_closed(tmp_path):
    with RedisServer(tmp_path / "a", password="s3cret") as srv:
        led = ledger(srv.url, SHARED)
        assert led.reserve("r1", "vk-1", "", 0.5, 0)["ok"]
        apart = RedisLedger.from_url(srv.url.replace(":s3cret@", ""), SHARED, password="s3cret", clock=Clock())
        assert not apart.reserve("r2", "vk-1", "", 0.6, 0)["ok"]
        for bad in (RedisLedger.from_url(srv.url.replace("s3cret", "wrong"), SHARED, clock=Clock()),
                    RedisLedger.from_url(srv.url.replace(":s3cret@", ""), SHARED, clock=Clock())):
            with pytest.raises(LedgerUnavailable):
                bad.reserve("r3", "vk-1", "", 0.1, 0)
        assert spent(led)["reserved_usd"] == 0.5


def test_tls_with_the_servers_ca_and_refused_without_it(tmp_path):
    with RedisServer(tmp_path / "t", password="pw", tls=True) as srv:
        assert srv.url.startswith("rediss://")
        led = ledger(srv.url, SHARED, ca_file=srv.ca_file)
        assert led.reserve("r1", "vk-1", "", 0.5, 0)["ok"]
        assert led.settle("r1", 0.25, 0)["remaining_usd"] == 0.75
        untrusted = RedisLedger.from_url(srv.url, SHARED, clock=Clock())    # system CAs only
        with pytest.raises(LedgerUnavailable, match="[Cc]ertificate"):
            untrusted.reserve("r2", "vk-1", "", 0.1, 0)
        plain = RedisLedger.from_url(srv.url.replace("rediss://", "redis://"), SHARED, clock=Clock(), timeout=0.5)
        with pytest.raises(LedgerUnavailable):
            plain.reserve("r3", "vk-1", "", 0.1, 0)


def test_older_rows_are_summed_per_counter_and_a_rebuild_stopped_half_way_counts_nothing_twice(redis_db):
    clock = Clock()
    d = directory(vk("vk-1", team="t1", budgets=[Budget(100, "day")], limits=[RateLimit("hour", requests=10_000)]),
                  teams=[Team("t1", budgets=[Budget(1000, "month")])])
    # 1,500 older rows this morning (summed: one entry per counter) and 700 recent ones (one entry each)
    rows = [SettledRow(f"old{i}", "vk-1", "", 10_000 + i, 5, T0 - 3 * 3600 + i) for i in range(1500)]
    rows += [SettledRow(f"new{i}", "vk-1", "", 1_000, 5, T0 - 600 + i * 0.5) for i in range(700)]
    rows.append(SettledRow("ghost", "nobody", "", 5_000_000, 5, T0))        # a key no longer in the directory
    want_day = sum(r.cost_micros for r in rows[:-1])
    want_hour = sum(1 for r in rows[:-1] if r.at >= T0 - 30)                  # the hour started at 12:00:00

    class NodeDied(Exception):
        pass

    def dies_after(n):
        for i, r in enumerate(rows):
            if i == n:
                raise NodeDied()
            yield r

    a = ledger(redis_db.url, d, clock, ready=False)
    with pytest.raises(NodeDied):
        a.rebuild(dies_after(1500 + 600))           # 600 recent rows sent (one chunk of 500 applied)
    b = RedisLedger.from_url(redis_db.url, d, clock=clock)
    with pytest.raises(RebuildBusy):                 # the lock is still held for the dead node
        b.rebuild(rows)
    redis_db.client().delete("{finops}:rebuild")     # ... until it expires
    assert b.rebuild(rows) == 200 + 2 + 1            # the recent rows not applied yet, 2 sums (key day, team month), the ghost
    day = spent(b, period="day")
    assert round(day["spent_usd"] * 1e6) == want_day
    assert spent(b, "team", "t1")["spent_usd"] == day["spent_usd"]
    assert spent(b, kind="requests")["used"] == want_hour
    assert not redis_db.client().exists("{finops}:rebuilt")
    assert b.settle("new699", 0.001, 5, "vk-1", "")["charged"] is False     # recent rids are remembered
    assert b.settle("old0", 0.01, 5, "vk-1", "")["charged"] is True          # older ones are not (summed)


def test_usage_over_more_counters_than_one_read_holds(redis_db):
    keys = [vk(f"vk-{i:04d}", budgets=[Budget(1, "day"), Budget(5, "month")]) for i in range(600)]
    led = ledger(redis_db.url, directory(*keys))
    led.reserve("a", "vk-0000", "", 0.25, 0)
    led.reserve("b", "vk-0599", "", 0.5, 0)
    rows = led.usage()
    assert len(rows) == 1200
    assert [(u["owner"], u["period"], u["reserved_usd"]) for u in rows if u["reserved_usd"]] == [
        ("vk-0000", "day", 0.25), ("vk-0000", "month", 0.25), ("vk-0599", "day", 0.5), ("vk-0599", "month", 0.5)]
