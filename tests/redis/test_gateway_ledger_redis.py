"""One `finops serve` node with `[governance] ledger = "redis"`, through boto3, on a real Redis and a
real PostgreSQL: budgets refuse as with the local ledger, Redis stopped fails closed with a
retryable 503 and traffic resumes when it is back with no restart, a FLUSHALL does not forget the
spend, and redis_failure = "open" serves uncounted and counts it in /metrics. The workers reserve
in Redis themselves (workers/ledger/direct.py): a stalled ledger actor stops no request, and a
reserve lost in a stalled Redis is refused and released.
(Several nodes on one Redis: the fleet tests.)"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from finops.shared.governance import Budget, Directory, VirtualKey
from finops.workers.ledger.redis_state import RedisLedger
from tests.helpers.gateway import Gateway, request_log

ADMIN = "admin-token-for-tests-0123"
VK_SECRET = "budget-secret-0123456789ab"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSG = [{"role": "user", "content": [{"text": "hi"}]}]


def config(redis_url: str, postgres_url: str, failure: str = "closed") -> str:
    return f"""
[server]
workers = 2
node_name = "node-a"

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[pricing."*"]
input = 1000.0
output = 1000.0

[governance]
admin_token = "{ADMIN}"
ledger = "redis"
redis_url = "{redis_url}"
postgres_url = "{postgres_url}"
redis_failure = "{failure}"

[[governance.keys]]
id = "vk-budget"
secret = "{VK_SECRET}"
budgets = [{{amount_usd = 0.2, period = "month"}}]
"""


def client(gw, secret: str, attempts: int = 1):
    c = boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                     aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret",
                     config=BotoConfig(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=30))

    def add(request, **kwargs):
        request.headers.add_header("x-bf-vk", secret)
    c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return c


def get(gw, path: str):
    req = urllib.request.Request(gw.url + path, headers={"authorization": f"Bearer {ADMIN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def spent(gw, key_id: str = "vk-budget") -> float:
    status, body = get(gw, f"/admin/usage?key={key_id}")
    assert status == 200, body
    return sum(u["spent_usd"] for u in json.loads(body)["usage"] if u["kind"] == "budget" and u["level"] == "key")


def settled_spend(gw, timeout: float = 15.0) -> float:
    """The key's spent once nothing is reserved any more (the last settles have landed)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(gw, "/admin/usage?key=vk-budget")
        assert status == 200, body
        u = [u for u in json.loads(body)["usage"] if u["kind"] == "budget" and u["level"] == "key"][0]
        if u["reserved_usd"] == 0 or time.monotonic() > deadline:
            return u["spent_usd"]
        time.sleep(0.05)


def converse(c):
    return c.converse(modelId=MODEL, messages=MSG, inferenceConfig={"maxTokens": 20})


def until_ok(c, timeout: float = 30.0):
    """Call until one succeeds (the gateway recovering on its own), within a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return converse(c)
        except ClientError as e:
            if e.response["Error"]["Code"] != "ServiceUnavailableException" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def spend_until_refused(c) -> int:
    with pytest.raises(c.exceptions.ServiceQuotaExceededException) as ei:
        for n in range(200):
            converse(c)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "vk-budget" in ei.value.response["Error"]["Message"]
    return n


def logged_cost(gw, key_id: str = "vk-budget", timeout: float = 15.0) -> float:
    """The request log's total for the key, once it stops changing."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rows = [r for r in request_log(gw.data_dir) if r["vk"] == key_id]
        total = round(sum(round(r["cost_usd"] * 1e6) for r in rows) / 1e6, 6)
        if total == last:
            return total
        last = total
        time.sleep(0.7)
    raise AssertionError("the request log kept changing")


@pytest.fixture
def node(tmp_path, redis_db, postgres_url):
    def start(failure: str = "closed") -> Gateway:
        return Gateway(tmp_path, config(redis_db.url, postgres_url, failure)).start()
    made = []

    def make(failure="closed"):
        g = start(failure)
        made.append(g)
        return g
    yield make
    for g in made:
        g.stop()


def test_budget_refuses_past_its_limit_and_usage_is_redis(node, redis_db):
    gw = node()
    c = client(gw, VK_SECRET)
    n = spend_until_refused(c)
    assert n >= 2
    total = settled_spend(gw)
    assert 0 < total <= 0.2
    assert logged_cost(gw) == pytest.approx(total, abs=1e-9)
    # /admin/usage is Redis's figure (what every node of a fleet reads)
    d = Directory(keys={"vk-budget": VirtualKey("vk-budget", VK_SECRET, budgets=(Budget(0.2, "month"),))})
    led = RedisLedger.from_url(redis_db.url, d)
    try:
        assert [u["spent_usd"] for u in led.usage("vk-budget") if u["kind"] == "budget"] == [total]
    finally:
        led.close()


def test_redis_stopped_fails_closed_with_a_retryable_503_then_resumes_without_restart(node, redis_db):
    gw = node()
    c = client(gw, VK_SECRET)
    converse(c)
    before = settled_spend(gw)
    assert before > 0
    redis_db.stop()
    with pytest.raises(ClientError) as ei:
        converse(c)
    err = ei.value.response
    assert err["Error"]["Code"] == "ServiceUnavailableException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert f"Redis at 127.0.0.1:{redis_db.port}" in err["Error"]["Message"]
    assert "Retry" in err["Error"]["Message"]
    # botocore retries it (the standard retry mode's shape for a throttling/transient error)
    retrying = client(gw, VK_SECRET, attempts=3)
    with pytest.raises(ClientError) as ei:
        converse(retrying)
    assert ei.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    redis_db.start()                                   # empty (no persistence): rebuilt from PostgreSQL
    until_ok(c)
    assert spent(gw) >= before > 0                     # what was spent before Redis went away still counts
    spend_until_refused(c)
    assert settled_spend(gw) <= 0.2
    assert logged_cost(gw) == pytest.approx(settled_spend(gw), abs=1e-9)


def test_flushall_mid_way_the_budget_still_holds(node, redis_db):
    gw = node()
    c = client(gw, VK_SECRET)
    for _ in range(3):
        converse(c)
    before = settled_spend(gw)
    redis_db.flushall()
    until_ok(c)                                        # rebuilt before admitting
    assert spent(gw) >= before > 0                     # the spend before the flush still counts
    spend_until_refused(c)
    total = settled_spend(gw)
    assert total <= 0.2
    assert logged_cost(gw) == pytest.approx(total, abs=1e-9)


def test_open_policy_serves_uncounted_and_counts_it_in_metrics(node, redis_db):
    gw = node("open")
    c = client(gw, VK_SECRET)
    converse(c)
    redis_db.pause()
    try:
        for _ in range(3):
            converse(c)                                 # served: uncounted
    finally:
        redis_db.resume()
    deadline = time.monotonic() + 15
    while True:
        status, body = get(gw, "/metrics")
        assert status == 200
        n = sum(s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples
                if s.name == "finops_ledger_uncounted_total")
        if n >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert n == 3
    assert "served uncounted" in gw.log() or "serving requests uncounted" in gw.log()


def test_reserves_go_straight_to_redis_so_a_stalled_ledger_actor_stops_no_request(node):
    """Each worker reserves in Redis itself (workers/ledger/direct.py): with the node's ledger actor
    stopped (SIGSTOP), requests are still admitted against the budget, and their settles, queued
    meanwhile, land when it resumes: spend = the request log, nothing left reserved. Through the
    actor, each would have waited for it and failed with a 503 after ledger_timeout_seconds."""
    gw = node()
    c = client(gw, VK_SECRET)
    converse(c)
    [ledger] = gw.child_pids("workers.ledger.actor")
    os.kill(ledger, signal.SIGSTOP)
    try:
        for _ in range(3):
            r = converse(c)
            assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        os.kill(ledger, signal.SIGCONT)
    total = settled_spend(gw)
    assert total > 0
    assert logged_cost(gw) == pytest.approx(total, abs=1e-9)


def test_a_reserve_lost_in_a_stalled_redis_is_refused_aws_shaped_and_released(node, redis_db):
    """Redis stalls (SIGSTOP) after a worker wrote its reserve: no answer within
    redis_timeout_seconds, so the reserve may have run. The client gets a retryable 503
    ServiceUnavailableException naming Redis by address (never the password); once Redis resumes
    and runs that reserve, the release the worker asked for frees it: nothing stays reserved, and
    the spend still equals the request log."""
    gw = node()
    c = client(gw, VK_SECRET)
    converse(c)
    redis_db.pause()
    try:
        with pytest.raises(ClientError) as ei:
            converse(c)
    finally:
        redis_db.resume()
    err = ei.value.response
    assert err["Error"]["Code"] == "ServiceUnavailableException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert err["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith("ServiceUnavailableException")
    assert "unreachable" in err["Error"]["Message"] and "127.0.0.1" in err["Error"]["Message"]
    until_ok(c)
    deadline = time.monotonic() + 15
    while True:
        status, body = get(gw, "/admin/usage?key=vk-budget")
        u = [u for u in json.loads(body)["usage"] if u["kind"] == "budget" and u["level"] == "key"][0]
        if u["reserved_usd"] == 0:
            break
        assert time.monotonic() < deadline, f"the lost reserve was never released: {u}"
        time.sleep(0.1)
    assert logged_cost(gw) == pytest.approx(u["spent_usd"], abs=1e-9)
