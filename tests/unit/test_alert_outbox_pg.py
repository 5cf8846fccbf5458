"""The alerts outbox on PostgreSQL (alerts/pg_outbox.py), a fleet's: an event recorded once
whoever detects it, due deliveries claimed by one node at a time (concurrent claimers get disjoint
ones), a lease that expires so a dead node's delivery is taken over, fenced marks, shared anomaly
episodes, and two alerts actors (two nodes) on one outbox sending each alert once. A real
PostgreSQL (tests/helpers/postgres_server.py); the clock is the caller's, so leases expire on a
controllable clock."""
from __future__ import annotations

import threading

import pytest

from finops.shared import config as configmod
from finops.workers.alerts import outbox, payload, rules
from finops.workers.alerts.actor import AlertsActor
from finops.workers.alerts.pg_outbox import PgOutbox
from finops.workers.governance import pg_schema
from finops.workers.governance.store import StoreUnavailable
from tests.helpers.postgres_server import PostgresServer

NOW = 1_800_000_000.0
SECRET = "whsec-0123456789abcdef"
LEASE = 30.0


def budget(spent, limit=10.0, owner="vk-1"):
    return {"level": "key", "owner": owner, "kind": "budget", "period": "month", "env": "",
            "label": f"key {owner!r} budget", "limit_usd": limit, "spent_usd": spent, "reserved_usd": 0.0,
            "remaining_usd": limit - spent, "period_start": "2026-12-01T00:00:00Z",
            "resets_at": "2027-01-01T00:00:00Z"}


def alerts_for(n: int) -> list[rules.Alert]:
    """One alert (the 50 % threshold) for each of `n` keys."""
    return rules.budget_alerts([budget(6.0, owner=f"vk-{i}") for i in range(n)], lambda u: (50,))


@pytest.fixture
def box(postgres_url):
    b = PgOutbox(postgres_url)
    yield b
    b.close()


def test_an_event_is_recorded_once_fleet_wide_whoever_detects_it(postgres_url):
    alerts = alerts_for(3)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def node():
        b = PgOutbox(postgres_url)                  # a node of its own: its own connection (and migration)
        try:
            start.wait()
            for a in alerts * 3:
                new = b.record(a, ["hook", "slack"], NOW)
                with lock:
                    results.append(new)
        finally:
            b.close()

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 3 and len(results) == 36
    doc = outbox.report(configmod.build({"governance": {"store": "postgres", "postgres_url": postgres_url}}, "t"))
    assert sorted(a["owner"] for a in doc["alerts"]) == ["vk-0", "vk-1", "vk-2"]
    assert all([d["webhook"] for d in a["deliveries"]] == ["hook", "slack"] for a in doc["alerts"])
    assert doc["counts"] == {"sent": {}, "failed": {}, "pending": 6}
    with pg_schema.connect(postgres_url) as conn:
        assert pg_schema.schema_version(conn) == 0          # its own schema: governance's is not touched
        assert conn.execute("SELECT version FROM finops_alerts_schema_version").fetchone()[0] == 1


def test_a_claim_is_leased_and_an_expired_lease_is_taken_over_with_fenced_marks(box, postgres_url):
    (a,) = alerts_for(1)
    assert box.record(a, ["hook"], NOW)
    assert box.claim(NOW - 1, "node-a", LEASE) == []             # not due yet
    (c,) = box.claim(NOW, "node-a", LEASE)
    assert (c.alert["id"], c.webhook, c.delivery.status, c.delivery.attempts) == (a.id, "hook", "pending", 0)
    assert c.alert["data"] == a.data and c.alert["message"] == a.message
    other = PgOutbox(postgres_url)                               # another node
    try:
        assert other.claim(NOW + 1, "node-b", LEASE) == []       # leased to node-a
        assert other.claim(NOW + LEASE - 0.001, "node-b", LEASE) == []
        (c2,) = other.claim(NOW + LEASE, "node-b", LEASE)        # node-a's lease ran out: taken over
        assert c2.alert["id"] == a.id and c2.token != c.token
        # node-a comes back late: its outcome is refused, node-b's stands
        assert not box.mark(c, rules.Delivery("pending", 1, NOW + 99, "HTTP 500"))
        assert other.mark(c2, rules.Delivery("delivered", 1, NOW + LEASE, "", NOW + LEASE))
        (h,) = box.history()[0]["deliveries"]
        assert (h["status"], h["attempts"], h["node"]) == ("delivered", 1, "node-b")
        assert box.claim(NOW + 10 * LEASE, "node-a", LEASE) == []          # delivered: never again
        assert box.counts("node-b") == {"sent": {"budget": 1}, "failed": {}, "pending": 0}
        assert box.counts("node-a") == {"sent": {}, "failed": {}, "pending": 0}
        assert box.counts() == {"sent": {"budget": 1}, "failed": {}, "pending": 0}
    finally:
        other.close()


def test_a_failed_attempt_is_claimable_again_when_due_not_before(box):
    (a,) = alerts_for(1)
    box.record(a, ["hook"], NOW)
    (c,) = box.claim(NOW, "node-a", LEASE)
    assert box.mark(c, rules.Delivery("pending", 1, NOW + 2, "HTTP 500"))     # retry in 2 s; lease released
    assert box.claim(NOW + 1, "node-b", LEASE) == []
    (c2,) = box.claim(NOW + 2, "node-b", LEASE)                                # due: any node, lease or not
    assert (c2.delivery.attempts, c2.delivery.last_error) == (1, "HTTP 500")
    assert box.mark(c2, rules.Delivery("failed", 2, NOW + 2, "timeout"))
    assert box.counts("node-b") == {"sent": {}, "failed": {"budget": 1}, "pending": 0}


def test_concurrent_claimers_get_disjoint_deliveries(postgres_url, box):
    alerts = alerts_for(30)
    for a in alerts:
        box.record(a, ["hook", "slack"], NOW)
    got: dict[str, list[tuple[str, str]]] = {}
    start = threading.Barrier(4)

    def node(name):
        b = PgOutbox(postgres_url)
        mine = got.setdefault(name, [])
        try:
            start.wait()
            for _ in range(100):                    # bounded: a broken lease would claim forever
                claimed = b.claim(NOW, name, LEASE, limit=3)             # claims, never marks: all stay leased
                if not claimed:
                    break
                mine += [(c.alert["id"], c.webhook) for c in claimed]
        finally:
            b.close()

    threads = [threading.Thread(target=node, args=(f"node-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [d for mine in got.values() for d in mine]
    assert len(every) == len(set(every)) == 60                           # each delivery once, none left out
    assert sorted(every) == sorted((a.id, w) for a in alerts for w in ("hook", "slack"))
    assert box.claim(NOW + 1, "node-x", LEASE) == []                      # all leased


def test_claims_come_oldest_first(box):
    old, new = alerts_for(2)
    box.record(new, ["hook"], NOW + 5)
    box.record(old, ["hook"], NOW)
    assert [c.alert["id"] for c in box.claim(NOW + 5, "n", LEASE)] == [old.id, new.id]


def test_an_anomaly_episode_is_started_by_one_node(postgres_url, box):
    alert = rules.anomaly_alert("key", "vk-1", 50.0, [1.0] * 7, 5.0, "2027-01-15T08:00:00Z")
    other = PgOutbox(postgres_url)
    try:
        assert box.start_anomaly("key|vk-1", alert, ["hook"], NOW)
        assert not other.start_anomaly("key|vk-1", alert, ["hook"], NOW + 60)    # the episode is open
        assert other.anomaly_active() == {"key|vk-1": alert.id}
        other.clear_anomaly("key|vk-1")
        assert box.anomaly_active() == {}
        later = rules.anomaly_alert("key", "vk-1", 60.0, [1.0] * 7, 5.0, "2027-01-15T11:00:00Z")
        assert other.start_anomaly("key|vk-1", later, ["hook"], NOW + 3 * 3600)  # a new episode
        assert [a["id"] for a in box.history(kind="anomaly")] == [later.id, alert.id]
        assert len(box.claim(NOW + 3 * 3600, "n", LEASE)) == 2
    finally:
        other.close()


def test_a_reader_of_an_empty_database_creates_nothing(postgres_url):
    r = PgOutbox(postgres_url, reader=True)
    try:
        assert r.history() == [] and r.counts() == {"sent": {}, "failed": {}, "pending": 0}
        assert r.link.run("SELECT to_regclass('finops_alerts')").fetchone()[0] is None
    finally:
        r.close()


# --- two alerts actors (two nodes) on one outbox -------------------------------------------------

class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def fleet_actor(tmp_path, url, node, clock, post, **alerts):
    cfg = configmod.build({"alerts": {"webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": SECRET,
                                                    "name": "hook"}], "lease_seconds": LEASE, **alerts},
                           "server": {"node_name": node},
                           "governance": {"store": "postgres", "postgres_url": url}},
                          "test", {"FINOPS_DATA_DIR": str(tmp_path / node)})
    cfg.server.data_dir = str(tmp_path / node)
    return AlertsActor(cfg, clock=clock, post=post)


def test_two_nodes_detecting_the_same_crossings_send_each_alert_once(tmp_path, postgres_url):
    clock = Clock(NOW)
    sent: list[tuple[str, str]] = []

    def poster(node):
        def post(url, body, headers, timeout):
            sent.append((node, headers[payload.IDEMPOTENCY_HEADER]))
            return 200, ""
        return post

    nodes = [fleet_actor(tmp_path, postgres_url, f"node{i}", clock, poster(f"node{i}")) for i in range(2)]
    usage = [budget(8.5)]                          # 50 and 80 %
    try:
        for n in nodes:
            n.ledger_usage = lambda: usage
        for _ in range(3):
            for n in nodes:
                n.tick()
            clock.t += 1
        ids = sorted(a.id for a in rules.budget_alerts(usage, lambda u: (50, 80, 100)))
        assert sorted(i for _, i in sent) == ids                 # once each, by whichever node claimed it
        doc = nodes[1].box.history()
        assert all(d["status"] == "delivered" for a in doc for d in a["deliveries"])
        shares = [n.box.counts(n.node)["sent"].get("budget", 0) for n in nodes]
        assert sum(shares) == 2 and shares == [len([s for s in sent if s[0] == n.node]) for n in nodes]
    finally:
        for n in nodes:
            n.close()


def test_postgres_down_detection_goes_on_delivery_waits_and_nothing_is_lost(tmp_path):
    clock = Clock(NOW)
    sent: list[str] = []
    with PostgresServer() as pg:
        url = pg.create_database()
        actor = fleet_actor(tmp_path, url, "node0", clock,
                            lambda u, b, h, t: (sent.append(h[payload.IDEMPOTENCY_HEADER]), (200, ""))[1])
        usage = [budget(6.0)]
        actor.ledger_usage = lambda: usage
        try:
            actor.tick()
            assert len(sent) == 1                      # 50 %: recorded and delivered
            pg.stop()
            usage[0] = budget(8.5)                     # 80 % crossed while PostgreSQL is down
            clock.t += 1
            actor.tick()
            assert len(sent) == 1 and len(actor.waiting) == 1          # detected, kept, not sent
            pg.start()
            clock.t += 1
            actor.tick()
            assert actor.waiting == {} and len(sent) == 2 and len(set(sent)) == 2
            clock.t += 1
            actor.tick()
            assert len(sent) == 2
            assert [d["status"] for a in actor.box.history() for d in a["deliveries"]] == ["delivered"] * 2
        finally:
            actor.close()


def test_an_outcome_not_written_while_postgres_is_down_is_written_when_it_is_back(tmp_path):
    clock = Clock(NOW)
    sent: list[str] = []
    with PostgresServer() as pg:
        url = pg.create_database()

        def post(u, b, h, t):                          # PostgreSQL goes away while the POST is out
            sent.append(h[payload.IDEMPOTENCY_HEADER])
            pg.stop()
            return 200, ""

        actor = fleet_actor(tmp_path, url, "node0", clock, post)
        actor.ledger_usage = lambda: [budget(6.0)]
        try:
            actor.tick()
            assert len(sent) == 1 and len(actor.unmarked) == 1
            pg.start()
            clock.t += 1
            actor.ledger_usage = lambda: None          # the ledger has nothing new to say
            actor.tick()                               # the kept outcome first: not sent again
            assert actor.unmarked == [] and len(sent) == 1
            (a,) = actor.box.history()
            assert a["deliveries"][0]["status"] == "delivered"
        finally:
            actor.close()


def test_unreachable_postgres_is_a_storeunavailable_without_the_password(tmp_path):
    with PostgresServer() as pg:
        url = pg.create_database()
        b = PgOutbox(url)
        try:
            assert b.record(alerts_for(1)[0], ["hook"], NOW)
            pg.stop()
            with pytest.raises(StoreUnavailable, match=r"alerts outbox postgresql://.*:\*\*\*@"):
                b.claim(NOW, "n", LEASE)
        finally:
            b.close()
