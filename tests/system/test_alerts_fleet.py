"""Alerts on a fleet: three `finops serve` nodes on one Redis (the counters) and one PostgreSQL
(keys, settled spend, and the alerts outbox), one webhook receiver. Every node's alerts actor
detects the same crossings; the receiver gets each alert once (a flaky receiver: its 500, 500,
200, once, whichever nodes retry), every node's /admin/alerts and `finops alerts list` list the
same alerts, and the nodes' /metrics add up to the fleet's deliveries. A node SIGKILLed while it
holds a delivery (its POST out, no acknowledgement yet) is taken over by another node when its
lease expires: the alert is delivered, sent twice with the same id (the dead node's POST and the
takeover), never more.

Traffic is boto3 on the mock provider; the receiver is tests/helpers/webhooks.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers.fleet import Fleet, backends
from tests.helpers.postgres_server import PostgresMissing
from tests.helpers.redis_server import RedisMissing
from tests.helpers.webhooks import Receiver
from tests.system.test_alerts import ADMIN, SECRET, admin, client, converse, readme_verify, wait_for

LEASE = 4.0            # [alerts] lease_seconds: a dead node's delivery is taken over after this


def config(receiver: Receiver, redis_url: str, postgres_url: str, hooks: str, keys: str) -> str:
    return f"""
[server]
workers = 1

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[pricing."*"]
input = 1000.0
output = 1000.0

[governance]
admin_token = "{ADMIN}"
{backends(redis_url, postgres_url)}
[alerts]
forecast = false
anomaly = false
check_seconds = 0.2
backoff_seconds = 0.2
retry_seconds = 120
lease_seconds = {LEASE}
{hooks}
{keys}
"""


@pytest.fixture
def servers(request):
    try:
        redis = request.getfixturevalue("redis_db")
        url = request.getfixturevalue("postgres_url")
    except (RedisMissing, PostgresMissing) as e:
        pytest.skip(f"needs redis-server and PostgreSQL: {e}")
    return redis, url


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def sent_total(gw) -> float:
    """finops_alerts_sent_total{kind="budget"} on `gw`'s /metrics (0 before any)."""
    m = re.search(r'^finops_alerts_sent_total\{[^}]*kind="budget"[^}]*\} ([0-9.e+]+)$', admin(gw, "/metrics"), re.M)
    return float(m.group(1)) if m else 0.0


def test_three_nodes_send_each_alert_once_and_every_node_lists_it(tmp_path, servers, receiver):
    redis, url = servers
    hooks = f"""
[[alerts.webhooks]]
url = "{receiver.url}/ok"
secret = "{SECRET}"
name = "ok"
timeout_seconds = 2

[[alerts.webhooks]]
url = "{receiver.url}/flaky"
format = "slack"
name = "flaky"
timeout_seconds = 2
"""
    keys = """
[[governance.keys]]
id = "vk-calibrate"
secret = "calibrate-secret-0123456789"
"""
    with Fleet(tmp_path, config(receiver, redis.url, url, hooks, keys), redis=redis, nodes=3, workers=1) as fleet:
        cost = float(converse(client(fleet[0], "vk-calibrate", "calibrate-secret-0123456789"))
                     ["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
        assert cost > 0
        created = admin(fleet[1], "/admin/keys", "POST", {
            "name": "fleet-alerted", "budgets": [{"amount_usd": round(cost * 10, 6), "period": "day",
                                                  "alert_at": [15, 35, 55]}]})
        clients = [client(g, created["id"], created["secret"]) for g in fleet]
        for i, g in enumerate(fleet):
            wait_for(f"node {i}'s ledger to load the new key's budget",
                     lambda: [u for u in admin(g, f"/admin/usage?key={created['id']}")["usage"]
                              if u["kind"] == "budget"])
        for i in range(6):                        # round robin: every node serves some; 60 % spent
            converse(clients[i % 3])

        def settled():
            u = [u for u in admin(fleet[2], f"/admin/usage?key={created['id']}")["usage"]
                 if u["kind"] == "budget" and u["level"] == "key"][0]
            return u if u["spent_usd"] >= 6 * cost - 1e-6 else None

        usage = wait_for("the six requests settled", settled)       # settles are asynchronous
        expected = {t for t in (15, 35, 55) if usage["spent_usd"] / usage["limit_usd"] * 100 >= t}
        assert expected == {15, 35, 55}, usage

        def delivered_on(g):
            doc = admin(g, "/admin/alerts")
            ours = [a for a in doc["alerts"] if a["owner"] == created["id"]]
            done = len(ours) == len(expected) and all(d["status"] == "delivered" for a in ours
                                                      for d in a["deliveries"])
            return (doc, ours) if done else None

        docs = [wait_for(f"every alert delivered, as node {i} lists them", lambda g=g: delivered_on(g))
                for i, g in enumerate(fleet)]
        ids = {a["id"] for a in docs[0][1]}
        assert len(ids) == len(expected) and {a["threshold"] for a in docs[0][1]} == expected
        assert all({a["id"] for a in ours} == ids for _, ours in docs)           # one list on every node
        assert all(d["node"] in ("node0", "node1", "node2") for a in docs[0][1] for d in a["deliveries"])

        # each alert once to the json hook; three times to the flaky one (500, 500, 200), whichever
        # nodes made the attempts
        ok = receiver.on("/ok")
        assert sorted(h["x-finops-idempotency-key"] for h, _ in ok) == sorted(ids)
        verify = readme_verify()
        assert all(verify(SECRET, h["x-finops-signature"], b) for h, b in ok)
        assert {json.loads(b)["id"] for _, b in ok} == ids
        flaky = receiver.on("/flaky")
        assert sorted(h["x-finops-idempotency-key"] for h, _ in flaky) == sorted(list(ids) * 3)
        assert [d["attempts"] for a in docs[0][1] for d in a["deliveries"] if d["webhook"] == "flaky"] == [3] * 3
        assert docs[0][0]["counts"] == {"sent": {"budget": 6}, "failed": {}, "pending": 0}

        # each node's /metrics counts the deliveries it sent: together, the fleet's
        wait_for("the nodes' metrics to add up to 6 deliveries", lambda: sum(sent_total(g) for g in fleet) == 6)
        dash = admin(fleet[2], "/admin/dashboard?days=1")
        assert {a["id"] for a in dash["alerts"]} >= ids

        # the CLI on any node reads the same outbox
        finops = os.path.join(os.path.dirname(sys.executable), "finops")
        out = subprocess.run([finops, "alerts", "list", "--format", "json"], env=fleet[2].env(),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert {a["id"] for a in json.loads(out.stdout)["alerts"] if a["owner"] == created["id"]} == ids

        # a threshold added below the spend (on one node): only that new alert is sent, once
        admin(fleet[0], f"/admin/keys/{created['id']}", "PATCH", {
            "budgets": [{"amount_usd": round(cost * 10, 6), "period": "day", "alert_at": [15, 35, 55, 57]}]})
        new = wait_for("the 57 % alert delivered", lambda: [
            a for a in admin(fleet[1], "/admin/alerts")["alerts"]
            if a["owner"] == created["id"] and a["threshold"] == 57
            and all(d["status"] == "delivered" for d in a["deliveries"])])
        assert sorted(h["x-finops-idempotency-key"] for h, _ in receiver.on("/ok")) == sorted(ids | {new[0]["id"]})


def test_a_node_killed_while_it_holds_a_delivery_is_taken_over_when_its_lease_expires(
        tmp_path, servers, receiver):
    redis, url = servers
    hooks = f"""
[[alerts.webhooks]]
url = "{receiver.url}/hold"
secret = "{SECRET}"
name = "hold"
timeout_seconds = 3
"""
    keys = """
[[governance.keys]]
id = "vk-kill"
secret = "kill-secret-0123456789abcd"
budgets = [{amount_usd = 100, period = "month", alert_at = [0.0001]}]
"""
    with Fleet(tmp_path, config(receiver, redis.url, url, hooks, keys), redis=redis, nodes=3, workers=1) as fleet:
        converse(client(fleet[0], "vk-kill", "kill-secret-0123456789abcd"))
        assert receiver.first.wait(30), "no alert was posted"
        (h, _), = receiver.on("/hold")
        alert_id = h["x-finops-idempotency-key"]

        def holder():
            for a in admin(fleet[0], "/admin/alerts")["alerts"]:
                if a["id"] == alert_id and a["deliveries"][0]["status"] == "pending":
                    return a["deliveries"][0]["node"]
            return None

        node = wait_for("the claim to show which node holds the delivery", holder)
        i = int(node.removeprefix("node"))
        fleet.kill(i)                             # it sent; it will never see the acknowledgement
        receiver.release.set()
        live = fleet[(i + 1) % 3]

        def delivered():
            (a,) = [a for a in admin(live, "/admin/alerts")["alerts"] if a["id"] == alert_id]
            return a if a["deliveries"][0]["status"] == "delivered" else None

        a = wait_for("another node to deliver it once the lease expired", delivered)
        d = a["deliveries"][0]
        assert d["node"] != node and d["node"] in ("node0", "node1", "node2")
        assert d["attempts"] == 1                 # the dead node's attempt was never recorded
        got = [h["x-finops-idempotency-key"] for h, _ in receiver.on("/hold")]
        assert got == [alert_id, alert_id]        # the dead node's POST and the takeover, same id
        verify = readme_verify()
        assert all(verify(SECRET, h["x-finops-signature"], b) for h, b in receiver.on("/hold"))
        # every surviving node lists it, delivered
        for j, g in enumerate(fleet):
            if fleet.alive(j):
                (x,) = [x for x in admin(g, "/admin/alerts")["alerts"] if x["id"] == alert_id]
                assert x["deliveries"][0]["status"] == "delivered"
