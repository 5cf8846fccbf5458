"""One request log for a fleet: three real `finops serve` nodes (each its own data dir, port and
node name) write one PostgreSQL log (`[observability] log_store = "postgres"`), and the reports
read the fleet's log from any node. Real boto3 clients, a real PostgreSQL
(tests/helpers/postgres_server.py), the mock provider.

* 1,500 requests spread over the nodes: the fleet report (`finops report --by node`, and
  `/admin/report?by=node` on any node) equals the sum of the answered requests' `x-bf-cost-usd`
  and token counts, per node and in total; every request id is in the log once.
* PostgreSQL stopped for 10 s under load, then started: every request was answered, and every
  row arrives (they waited in each node's spool)."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from decimal import Decimal

import psycopg
import pytest

from tests.helpers.gateway import Gateway

ADMIN = "admin-token-for-fleet-log-0123"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NODES = ("gw-a", "gw-b", "gw-c")
N = 1500


def config(url: str) -> str:
    return f"""
[server]
workers = 2

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[governance]
admin_token = "{ADMIN}"

[observability]
log_store = "postgres"
log_postgres_url = "{url}"
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, postgres):
    url = postgres.create_database()
    tmp = tmp_path_factory.mktemp("fleetlog")
    nodes = []
    for name in NODES:
        d = tmp / name
        d.mkdir()
        nodes.append(Gateway(d, config(url), extra_env={"FINOPS_NODE_NAME": name}))
    procs = []
    try:
        for g in nodes:                  # all launched before any is waited for: they migrate at once
            g.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "finops"), "serve"],
                                      env=g.env(), stdout=open(g.log_path, "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
            procs.append(g)
        for g in nodes:
            g.wait_ready(workers=2)
        yield url, nodes
    finally:
        for g in procs:
            g.stop()


class Answers:
    """What the clients were told: per node, request ids, cost (micro-dollars) and tokens."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_node = {n: {"ids": set(), "cost": 0, "in": 0, "out": 0} for n in NODES}
        self.failures: list[str] = []

    def send(self, g: Gateway, client, i: int) -> None:
        try:
            r = client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"question {i}"}]}])
        except Exception as e:            # the test fails on any: the gateway must keep serving
            with self.lock:
                self.failures.append(f"{g.url}: {e!r}")
            return
        h = r["ResponseMetadata"]["HTTPHeaders"]
        node = NODES[[x.url for x in FLEET].index(g.url)]
        with self.lock:
            a = self.by_node[node]
            a["ids"].add(h["x-amzn-requestid"])
            a["cost"] += int(Decimal(h["x-bf-cost-usd"]) * 1_000_000)
            a["in"] += r["usage"]["inputTokens"]
            a["out"] += r["usage"]["outputTokens"]


FLEET: list[Gateway] = []


def load(nodes, answers: Answers, n: int, threads: int = 6, stop: threading.Event | None = None) -> int:
    """`n` requests (or until `stop`) spread round robin over the nodes, from `threads` threads."""
    clients = [g.client() for g in nodes]
    counter = iter(range(10**9))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter)
            if (stop is None and i >= n) or (stop is not None and stop.is_set()):
                return
            k = i % len(nodes)
            answers.send(nodes[k], clients[k], i)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker) for _ in range(threads)]:
            f.result()
    return sum(len(a["ids"]) for a in answers.by_node.values())


def log_ids(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as c:
        out: dict[str, list[str]] = {}
        for rid, node in c.execute("SELECT id, node FROM finops_requests"):
            out.setdefault(node, []).append(rid)
        return out


def wait_rows(url: str, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as c:
            have = c.execute("SELECT count(*) FROM finops_requests").fetchone()[0]
        if have >= want or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def admin_report(g: Gateway, by: str) -> dict:
    req = urllib.request.Request(f"{g.url}/admin/report?by={by}&since=1d",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def cli_report(g: Gateway, *args: str) -> str:
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "finops"), "report", *args],
                         env=g.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_fleet_report_equals_what_the_clients_were_charged(fleet):
    url, nodes = fleet
    FLEET[:] = nodes
    answers = Answers()
    assert load(nodes, answers, N) == N and not answers.failures
    wait_rows(url, N)
    ids = log_ids(url)
    for name in NODES:               # each node's rows, once each, named by the node that served them
        assert sorted(ids.get(name, [])) == sorted(answers.by_node[name]["ids"]), name
    for g in nodes:                  # the same fleet report from every node
        doc = admin_report(g, "node")
        got = {r["node"]: r for r in doc["rows"]}
        assert set(got) == set(NODES)
        for name in NODES:
            a = answers.by_node[name]
            assert got[name]["requests"] == len(a["ids"])
            assert round(got[name]["cost_usd"] * 1_000_000) == a["cost"], name
            assert (got[name]["input_tokens"], got[name]["output_tokens"]) == (a["in"], a["out"])
        assert doc["total"]["requests"] == N
        assert round(doc["total"]["cost_usd"] * 1_000_000) == sum(a["cost"] for a in answers.by_node.values())
        assert doc["total"]["cost_usd"] > 0
    cli = json.loads(cli_report(nodes[1], "--by", "node", "--since", "1d", "--format", "json"))
    assert {r["node"]: r["requests"] for r in cli["rows"]} == {n: len(answers.by_node[n]["ids"]) for n in NODES}
    assert cli["total"] == admin_report(nodes[0], "node")["total"]
    table = cli_report(nodes[2], "--by", "node,model", "--since", "1d")
    assert all(name in table for name in NODES) and "TOTAL" in table


def test_postgres_down_for_ten_seconds_under_load_loses_no_row(fleet, postgres):
    url, nodes = fleet
    FLEET[:] = nodes
    before = sum(len(v) for v in log_ids(url).values())
    answers = Answers()
    stop = threading.Event()
    runner = threading.Thread(target=load, args=(nodes, answers, 0), kwargs={"threads": 3, "stop": stop})
    runner.start()
    try:
        time.sleep(1.0)
        postgres.stop()
        during_start = sum(len(a["ids"]) for a in answers.by_node.values())
        time.sleep(10.0)
        during = sum(len(a["ids"]) for a in answers.by_node.values()) - during_start
        postgres.start()
        time.sleep(2.0)
    finally:
        stop.set()
        runner.join()
        if not postgres.running:
            postgres.start()
    assert not answers.failures, answers.failures[:3]
    assert during > 0                          # the gateway kept serving while PostgreSQL was down
    sent = sum(len(a["ids"]) for a in answers.by_node.values())
    wait_rows(url, before + sent)
    ids = log_ids(url)
    for name in NODES:
        assert answers.by_node[name]["ids"] <= set(ids.get(name, [])), name
    assert sum(len(v) for v in ids.values()) == before + sent          # none twice
    assert all("rows wait in the spool" in g.log() for g in nodes)      # the outage was seen, on every node
    for g in nodes:                                                     # each node's spool is empty again
        assert os.listdir(os.path.join(g.data_dir, "log-spool")) == []
    metrics = urllib.request.urlopen(urllib.request.Request(
        f"{nodes[0].url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}), timeout=10).read().decode()
    assert 'finops_request_log_dropped_total{node="gw-a"} 0.0' in metrics
