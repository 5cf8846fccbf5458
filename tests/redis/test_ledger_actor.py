"""The ledger actor on Redis (workers/ledger/actor.py + backend.py) against a real redis-server and
a real PostgreSQL: batches in one round trip and in order, the failure policy (503 or uncounted),
the circuit, settles kept while Redis is away, the rebuild after Redis lost its data, settled spend
in PostgreSQL, expiry across nodes.

The actor's `handle_batch` is called directly (what its loop does with the messages queued at
once); the circuit's clock is replaced by a counter the test advances, so no test waits on time.
"""
from __future__ import annotations

import subprocess
import time

import pytest
import redis

from finops.shared import config as configmod
from finops.workers.governance.pg_spend import SettledSpend
from finops.workers.ledger.actor import LedgerActor
from finops.workers.ledger.redis_state import RedisLedger, SettledRow
from tests.helpers.gateway import free_port

SECRET = "secret-0123456789abcdef"


class Mono:
    """The circuit's clock: moves only when the test says so."""
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def make_cfg(tmp_path, redis_url, pg_url, node="node-a", **gov):
    keys = [{"id": "vk-1", "secret": SECRET, "budgets": [{"amount_usd": 1.0, "period": "day"}]},
            {"id": "vk-free", "secret": SECRET + "x"}]
    return configmod.build({"server": {"data_dir": str(tmp_path / node), "node_name": node},
                            "governance": {"ledger": "redis", "redis_url": redis_url, "postgres_url": pg_url,
                                           "reservation_ttl_seconds": 60, "keys": keys, **gov}}, "test")


@pytest.fixture
def make_actor(tmp_path, redis_db, postgres_url):
    made = []

    def make(redis_url=None, node="node-a", clock=None, **gov):
        a = LedgerActor(make_cfg(tmp_path, redis_url or redis_db.url, postgres_url, node, **gov),
                        clock=clock or time.time)
        a.backend.mono = Mono()
        made.append(a)
        return a
    yield make
    if not redis_db.running:
        redis_db.start()
    redis_db.resume()
    for a in made:
        a.close()


def reserve(rid, max_usd, key="vk-1", pid=1, s=None):
    m = {"k": "reserve", "rid": rid, "key": key, "env": "", "max": max_usd, "tok": 10, "pid": pid, "r": "x", "i": 1}
    if s:
        m["s"] = s
    return m


def settle(rid, cost, key="vk-1"):
    return {"k": "settle", "rid": rid, "key": key, "env": "", "cost": cost, "tok": 5}


def one(actor, msg):
    return actor.handle_batch([msg])[0]


def spent(actor) -> tuple[float, float]:
    rows = [u for u in actor.backend.led.usage("vk-1") if u["kind"] == "budget"]
    return rows[0]["spent_usd"], rows[0]["reserved_usd"]


def count_round_trips(monkeypatch) -> list:
    """Count the writes to Redis that carry scripts (one per round trip: replies are read after
    the write), each as the number of EVALSHA commands it carries."""
    made = []
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self, command, *a, **kw):
        data = b"".join(command) if isinstance(command, (list, tuple)) else command
        if b"EVALSHA" in data:
            made.append(data.count(b"$7\r\nEVALSHA\r\n"))
        return original(self, command, *a, **kw)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    return made


def test_a_batch_is_one_round_trip_in_the_order_received(make_actor, monkeypatch):
    a = make_actor()
    trips = count_round_trips(monkeypatch)
    assert one(a, reserve("r1", 0.8))["ok"]
    # the settle riding along frees r1's reservation before r2 is checked
    out = a.handle_batch([reserve("r2", 0.8, s=[["r1", "vk-1", "", 0.1, 5]]), reserve("f1", 5.0, key="vk-free")])
    assert [o["ok"] for o in out] == [True, True]
    assert trips == [1, 3]                  # two messages, three scripts, one round trip
    # a reserve before a settle is checked before it: refused, the settle applied after
    out = a.handle_batch([reserve("r3", 0.8, pid=2), settle("r2", 0.1)])
    assert out[0]["code"] == "ServiceQuotaExceededException" and out[1] is None
    assert spent(a) == (0.2, 0.0)
    assert one(a, reserve("r4", 0.8))["ok"]


def test_every_settle_is_in_postgres(make_actor, postgres_url):
    a = make_actor()
    a.handle_batch([reserve("r1", 0.5), reserve("f1", 0.5, key="vk-free")])
    a.handle_batch([settle("r1", 0.25), settle("f1", 0.125, key="vk-free"), settle("r1", 0.25)])
    assert a.backend.spend.flush(10)
    with SettledSpend(postgres_url) as s:
        rows = {r.request_id: (r.key_id, r.cost_micro) for r in s.since(0)}
    assert rows == {"r1": ("vk-1", 250_000), "f1": ("vk-free", 125_000)}


def test_redis_stalled_fails_closed_then_the_circuit_then_recovery(make_actor, redis_db, monkeypatch):
    a = make_actor()
    assert one(a, reserve("r1", 0.5))["ok"]
    redis_db.pause()
    try:
        out = one(a, reserve("r2", 0.2))
        assert out["ok"] is False and out["status"] == 503 and out["code"] == "ServiceUnavailableException"
        assert f"Redis at 127.0.0.1:{redis_db.port}" in out["message"] and "unreachable" in out["message"]
        assert "Retry" in out["message"]
        a.handle_batch([settle("r1", 0.3)])              # kept while Redis is away
        assert a.backend.gauges()["queues"]["ledger_settles_kept"] >= 1
    finally:
        redis_db.resume()
    trips = count_round_trips(monkeypatch)
    out = one(a, reserve("r3", 0.2))                     # the circuit is open: Redis is not asked
    assert out["status"] == 503 and trips == []
    a.backend.mono.t += 1.5                              # past the circuit: the next batch is the probe
    assert one(a, reserve("r4", 0.2))["ok"]
    assert len(trips) == 1 and trips[0] >= 3         # one round trip: the kept settles rode along
    # r1 settled at 0.3; r2 (sent before the stall, applied when Redis resumed) released by a zero
    # settle, so only r4's reservation is held
    assert spent(a) == (0.3, 0.2)
    assert a.backend.gauges()["queues"]["ledger_settles_kept"] == 0


def test_the_message_names_redis_without_its_password(make_actor):
    port = free_port()                                   # nothing listens there
    a = make_actor(redis_url=f"redis://:sekret-pw@127.0.0.1:{port}/0")
    out = one(a, reserve("r1", 0.1))
    assert out["status"] == 503 and f"127.0.0.1:{port}" in out["message"] and "sekret" not in out["message"]


def test_open_policy_serves_uncounted_and_counts_it(make_actor, redis_db):
    a = make_actor(redis_failure="open")
    redis_db.pause()
    try:
        out = a.handle_batch([reserve("r1", 0.9), reserve("r2", 0.9)])
    finally:
        redis_db.resume()
    assert [o["ok"] for o in out] == [True, True] and out[0]["uncounted"]
    assert a.backend.take_counts() == {"uncounted": 2}
    assert a.backend.take_counts() == {}
    a.backend.mono.t += 1.5
    a.handle_batch([settle("r1", 0.4), settle("r2", 0.4)])     # their real cost is charged when Redis is back
    assert spent(a) == (0.8, 0.0)


def test_flushall_rebuilds_from_postgres_before_admitting(make_actor, redis_db):
    a = make_actor()
    assert one(a, reserve("r1", 0.6))["ok"]
    a.handle_batch([settle("r1", 0.6)])
    redis_db.flushall()
    out = one(a, reserve("r2", 0.6))                     # rebuilt first: the $0.60 spent still counts
    assert out["code"] == "ServiceQuotaExceededException", out
    assert spent(a) == (0.6, 0.0)
    assert one(a, reserve("r3", 0.4))["ok"]


def test_redis_restarted_empty_with_a_settle_made_while_it_was_down(make_actor, redis_db):
    a = make_actor()
    assert one(a, reserve("r1", 0.5))["ok"]
    redis_db.stop()
    a.handle_batch([settle("r1", 0.5)])                  # kept, and queued for PostgreSQL
    assert one(a, reserve("r2", 0.1))["status"] == 503
    redis_db.start()                                     # empty: no persistence
    a.backend.mono.t += 1.5
    out = one(a, reserve("r3", 0.6))
    assert out["code"] == "ServiceQuotaExceededException", out
    assert spent(a) == (0.5, 0.0)                        # counted once: the rebuild and the kept settle


def test_rebuild_waits_for_postgres(make_actor, redis_db, postgres):
    a = make_actor()
    assert one(a, reserve("r1", 0.5))["ok"]
    postgres.stop()
    try:
        a.handle_batch([settle("r1", 0.5)])              # in Redis; waiting for PostgreSQL
        assert one(a, reserve("r2", 0.1))["ok"]          # a PostgreSQL outage does not block admission
        redis_db.flushall()
        out = one(a, reserve("r3", 0.1))
        assert out["status"] == 503 and "PostgreSQL" in out["message"] and "rebuild" in out["message"]
    finally:
        postgres.start()
    a.backend.mono.t += 1.5
    out = one(a, reserve("r4", 0.6))
    assert out["code"] == "ServiceQuotaExceededException", out
    assert spent(a)[0] == 0.5


def test_another_nodes_rebuild_is_completed_by_settling_again(make_actor, redis_db):
    a = make_actor()
    assert [o["ok"] for o in a.handle_batch([reserve("x", 0.3), reserve("y", 0.3)])] == [True, True]
    a.handle_batch([settle("x", 0.2), settle("y", 0.3)])
    redis_db.flushall()
    # node b rebuilt from PostgreSQL before x had reached it: its rows hold y only
    b = RedisLedger.from_url(redis_db.url, a.backend.dir)
    b.rebuild([SettledRow("y", "vk-1", "", 300_000, 5, time.time())])
    b.close()
    a.backend.tick()                                     # node a sees the new marker and settles x again
    assert spent(a) == (0.5, 0.0)


def test_ttl_expiry_covers_every_node_and_dead_workers_only_this_ones(make_actor, redis_db, postgres_url):
    clock = Clock()
    a = make_actor(clock=clock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    b = RedisLedger.from_url(redis_db.url, a.backend.dir, clock=clock, reservation_ttl=60)
    assert b.reserve("gone-node", "vk-1", "", 0.1, 10, pid="node-b/4242")["ok"]   # its node died for good
    assert b.reserve("b-dead", "vk-1", "", 0.1, 10, pid=f"node-b/{dead.pid}")["ok"]
    assert one(a, reserve("a-dead", 0.1, pid=dead.pid))["ok"]
    a.expire()
    a.expire()                              # dead at two looks in a row: charged
    assert [c[0] for c in a.charges] == ["a-dead"]
    clock.t += 61
    a.expire()
    assert sorted(c[0] for c in a.charges) == ["a-dead", "b-dead", "gone-node"]
    assert a.backend.spend.flush(10)
    with SettledSpend(postgres_url) as s:
        assert sorted(r.request_id for r in s.since(0)) == ["a-dead", "b-dead", "gone-node"]
    b.close()


def test_usage_when_redis_is_down_says_so(make_actor, redis_db):
    a = make_actor()
    redis_db.pause()
    try:
        out = one(a, {"k": "usage", "key": None, "r": "x", "i": 1})
    finally:
        redis_db.resume()
    assert "unreachable" in out["error"]


def test_a_late_settle_corrects_the_expired_charge_in_postgres_too(make_actor, postgres_url):
    clock = Clock()
    a = make_actor(clock=clock)
    assert one(a, reserve("r1", 0.5, pid=0))["ok"]
    clock.t += 61
    a.expire()                                          # past its TTL: charged in full
    assert a.charges == [["r1", "vk-1", "", 0.5]]
    assert a.backend.spend.flush(10)
    a.handle_batch([settle("r1", 0.125)])               # the real settle, late
    assert a.charges[-1] == ["r1", "vk-1", "", 0.125]
    assert spent(a) == (0.125, 0.0)
    assert a.backend.spend.flush(10)
    with SettledSpend(postgres_url) as s:
        assert [(r.request_id, r.cost_micro) for r in s.since(0)] == [("r1", 125_000)]


def test_replayed_settles_are_settles_counted_once(make_actor, postgres_url):
    """What a frontend sends again to a restarted ledger ({"k": "replay"}, frontend/outcomes.py):
    on Redis the counters did not restart with the actor, so each is an ordinary settle, idempotent
    by rid (one that never reached Redis is charged, in Redis and in PostgreSQL)."""
    a = make_actor()
    assert one(a, reserve("r1", 0.5))["ok"] and one(a, reserve("r2", 0.5))["ok"]
    a.handle_batch([settle("r1", 0.125)])
    now = time.time()
    replay = {"k": "replay", "p": [[now, "r1", "vk-1", "", 0.125, 5], [now, "r2", "vk-1", "", 0.25, 5]]}
    assert a.handle_batch([replay, replay]) == [None, None]
    assert spent(a) == (0.375, 0.0)
    assert a.backend.spend.flush(10)
    with SettledSpend(postgres_url) as s:
        rows = {r.request_id: r.cost_micro for r in s.since(0)}
    assert rows == {"r1": 125_000, "r2": 250_000}
