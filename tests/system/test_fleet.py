"""Several nodes, one truth: three `finops serve` nodes on one Redis (the ledger's counters) and one
PostgreSQL (keys, durable settled spend), driven by boto3. Budgets and rate limits hold across the
nodes exactly as on one; Redis down fails closed and recovers without a restart; Redis flushed
keeps its budgets; a node killed mid-stream leaves no phantom reservation and no lost charge.

The upstream is tests/helpers/fake_bedrock.py (usage counted from the words it answers), priced at
$0.001 a token, so every cost comes from real usage numbers. Waits are bounded polls, never sleeps
followed by an assertion. (A key's visibility across nodes is tests/system/test_pg_store*'s.)
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.fleet import Fleet, backends
from tests.helpers.postgres_server import PostgresMissing
from tests.helpers.redis_server import RedisMissing

ADMIN = "admin-token-for-fleet-tests"
AKID, SECRET = "AKIDFLEETFAKE", "fleet-upstream-secret"
PRICE = 1000.0                          # USD per million tokens, input and output: a token is $0.001
ANSWER = " ".join(f"w{i}" for i in range(20))   # the fake answers 20 words: 20 output tokens
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SLOW = "anthropic.fleet-slow-v1:0"      # scripted slow streams (the kill test)


def key(id_: str, budget: float | None = None, rate: int | None = None) -> str:
    lines = [f'id = "{id_}"', f'secret = "{secret(id_)}"']
    if budget is not None:
        lines.append(f'budgets = [{{amount_usd = {budget}, period = "day"}}]')
    if rate is not None:
        lines.append(f'rate_limits = [{{requests = {rate}, window = "minute"}}]')
    return "[[governance.keys]]\n" + "\n".join(lines) + "\n"


def secret(key_id: str) -> str:
    return f"{key_id}-secret-0123456789abcdef"


def config(fake: FakeBedrock, redis_url: str, postgres_url: str, extra: str = "") -> str:
    return f"""
[server]
workers = 2

[providers.aws]
kind = "bedrock"
base_url = "{fake.url}"
region = "us-east-1"
keys = [{{access_key_id = "{AKID}", secret_access_key = "{SECRET}"}}]

[default_route]
provider = "aws"

[pricing."*"]
input = {PRICE}
output = {PRICE}

[governance]
mode = "enforced"
admin_token = "{ADMIN}"
{backends(redis_url, postgres_url)}{extra}
{key("vk-burst", budget=0.5)}
{key("vk-rate-1", rate=10)}
{key("vk-rate-2", rate=10)}
{key("vk-rate-3", rate=10)}
{key("vk-outage", budget=100.0)}
{key("vk-flush", budget=0.4)}
{key("vk-kill", budget=100.0)}
"""


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def servers(request):
    """The session's Redis and PostgreSQL (tests/conftest.py); skip when they are not installed
    and cannot be installed."""
    try:
        redis = request.getfixturevalue("redis_server")
        pg = request.getfixturevalue("postgres")
    except (RedisMissing, PostgresMissing) as e:
        pytest.skip(f"needs redis-server and PostgreSQL: {e}")
    if not redis.running:
        redis.start()
    redis.flushall()
    return redis, pg


@pytest.fixture(scope="module")
def fake():
    with FakeBedrock(AKID, SECRET) as f:
        f.script("*", {"text": ANSWER})
        yield f


@pytest.fixture(scope="module")
def database(servers):
    _, pg = servers
    url = pg.create_database()
    yield url
    if pg.running:
        pg.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, servers, fake, database):
    redis, _ = servers
    with Fleet(tmp_path_factory.mktemp("fleet"), config(fake, redis.url, database), redis=redis) as f:
        yield f
    if not redis.running:           # the next module gets a running Redis
        redis.start()


# --- helpers ----------------------------------------------------------------------------------

def client(node, key_id: str):
    """boto3 for `node`, presenting `key_id` as x-bf-vk; no retries (each outcome is seen)."""
    c = boto3.client("bedrock-runtime", endpoint_url=node.endpoint, region_name="us-east-1",
                     aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret",
                     config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60,
                                       connect_timeout=5, max_pool_connections=64))

    def add(request, **kwargs):
        request.headers.add_header("x-bf-vk", secret(key_id))
    c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return c


def usage(node, key_id: str) -> dict:
    """The key's own budget line on `node`'s /admin/usage."""
    req = urllib.request.Request(f"{node.url}/admin/usage?key={key_id}",
                                 headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    [line] = [u for u in doc["usage"] if u["kind"] == "budget" and u["level"] == "key"]
    return line


def wait_for(cond, timeout: float = 30.0, every: float = 0.2):
    """Poll `cond()` until it returns something truthy (returned) or `timeout` passes (then the
    last value is returned, for the caller's assertion to show)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(every)


def logged(fleet, ids: set, timeout: float = 15.0) -> dict:
    """The request-log rows (over every node) with these ids, once all are there."""
    def rows():
        got = {r["id"]: r for r in fleet.request_log() if r["id"] in ids}
        return got if len(got) == len(ids) else None
    return wait_for(rows, timeout) or {r["id"]: r for r in fleet.request_log() if r["id"] in ids}


def settled_everywhere(fleet, key_id: str, total: float, timeout: float = 15.0) -> list[dict]:
    """Each live node's usage line for `key_id`, once every one shows `total` spent and nothing
    reserved (settles are asynchronous: they land within a moment)."""
    def lines():
        ls = [usage(g, key_id) for i, g in enumerate(fleet) if fleet.alive(i)]
        ok = all(round(line["spent_usd"], 6) == round(total, 6) and line["reserved_usd"] == 0 for line in ls)
        return ls if ok else None
    return wait_for(lines, timeout) or [usage(g, key_id) for i, g in enumerate(fleet) if fleet.alive(i)]


def rid_of(e: ClientError) -> str:
    return e.response["ResponseMetadata"]["RequestId"]


def converse_stream(c, text: str, model: str = MODEL):
    r = c.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}],
                          inferenceConfig={"maxTokens": 30})
    events = list(r["stream"])
    return r["ResponseMetadata"]["RequestId"], events[-1]["metadata"]["usage"]


# --- budgets and rate limits across nodes -----------------------------------------------------

def test_64_streams_over_3_nodes_never_overspend_and_every_node_agrees(fleet):
    """64 concurrent streams spread over 3 nodes on one $0.50 budget: the admitted ones are charged
    what the upstream reported, the settled spend equals the sum of the logged costs to the
    micro-dollar, stays within the budget, and every node's /admin/usage shows that same figure."""
    clients = [client(g, "vk-burst") for g in fleet]

    def one(i):
        try:
            rid, u = converse_stream(clients[i % 3], f"question {i}")
            return "ok", rid, u
        except ClientError as e:
            return e.response["Error"]["Code"], rid_of(e), None

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    ok = [r for r in results if r[0] == "ok"]
    refused = [r for r in results if r[0] != "ok"]
    assert ok and refused, results                       # the budget was reached, over 3 nodes
    assert {r[0] for r in refused} == {"ServiceQuotaExceededException"}, results
    assert all(u["outputTokens"] == 20 for _, _, u in ok)
    rows = logged(fleet, {rid for _, rid, _ in results})
    assert len(rows) == 64
    assert [sum(1 for r in rows.values() if r["node"] == i) for i in range(3)] == [22, 21, 21]   # each node took its share
    for _, rid, u in ok:                                 # charged what the upstream reported
        row = rows[rid]
        assert (row["input_tokens"], row["output_tokens"]) == (u["inputTokens"], u["outputTokens"])
        assert row["cost_usd"] == round((u["inputTokens"] + u["outputTokens"]) * PRICE / 1e6, 6) > 0
    total = round(sum(r["cost_usd"] for r in rows.values()), 6)
    lines = settled_everywhere(fleet, "vk-burst", total)
    assert [round(line["spent_usd"], 6) for line in lines] == [total] * 3, (lines, total)
    assert total <= 0.5


def test_a_limit_of_10_a_minute_admits_exactly_10_over_3_nodes(fleet):
    """40 concurrent calls over 3 nodes on a 10-requests-a-minute limit: exactly 10 are served, 30
    get 429 ThrottlingException with x-amz-retry-after. A burst that straddles a minute boundary
    (two windows) is redone on a fresh key, so the count is exact, not timing-dependent."""
    for key_id in ("vk-rate-1", "vk-rate-2", "vk-rate-3"):
        wait_for(lambda: time.time() % 60 < 40, timeout=25)   # early in a minute
        clients = [client(g, key_id) for g in fleet]

        def one(i):
            try:
                clients[i % 3].converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"n{i}"}]}],
                                        inferenceConfig={"maxTokens": 30})
                return "ok", None, None
            except ClientError as e:
                return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                        e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-retry-after"))

        t0 = time.time()
        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(one, range(40)))
        if int(t0 // 60) == int(time.time() // 60):
            break
    else:
        pytest.fail("three bursts of 40 calls each straddled a minute boundary")
    assert [r[0] for r in results].count("ok") == 10, results
    throttled = [r for r in results if r[0] != "ok"]
    assert len(throttled) == 30
    assert {(code, status) for code, status, _ in throttled} == {("ThrottlingException", 429)}, throttled
    assert all(retry and retry.isdigit() and 0 < int(retry) <= 60_000 for _, _, retry in throttled), throttled


# --- Redis down, Redis empty ------------------------------------------------------------------

def test_redis_down_fails_closed_and_traffic_resumes_without_a_restart(fleet):
    """Load on all 3 nodes; Redis is stopped: every request that starts while it is down gets a
    retryable 503 ServiceUnavailableException (none is served uncounted); Redis is started again
    (empty: no persistence): each node serves again, same processes, and the spend every node
    shows equals the sum of the costs logged for what was served."""
    pids = [g.proc.pid for g in fleet]
    clients = [client(g, "vk-outage") for g in fleet]
    outcomes: list[tuple] = []           # (node, started, ended, code, status, rid)
    lock = threading.Lock()
    stop = threading.Event()

    def load(i):
        n = 0
        while not stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                r = clients[i].converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"o{i} {n}"}]}],
                                        inferenceConfig={"maxTokens": 30})
                rec = (i, t0, time.monotonic(), "ok", 200, r["ResponseMetadata"]["RequestId"])
            except ClientError as e:
                rec = (i, t0, time.monotonic(), e.response["Error"]["Code"],
                       e.response["ResponseMetadata"]["HTTPStatusCode"], rid_of(e))
            with lock:
                outcomes.append(rec)
            time.sleep(0.02)

    def count(code, after: float, before: float = float("inf")):
        with lock:
            return [sum(1 for o in outcomes if o[0] == i and o[3] == code and o[1] >= after and o[2] <= before)
                    for i in range(3)]

    def three_each(code, after, timeout):
        """Per node, the `code` outcomes of requests started after `after`, once every node has 3
        (or when `timeout` has passed)."""
        wait_for(lambda: min(count(code, after)) >= 3, timeout)
        return count(code, after)

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        first = three_each("ok", time.monotonic(), 30)
        assert min(first) >= 3, first
        fleet.redis_stop()
        t_down = time.monotonic()
        down = three_each("ServiceUnavailableException", t_down, 30)
        t_up = time.monotonic()
        fleet.redis_start()
        back = three_each("ok", t_up, 60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if not fleet.redis.running:
            fleet.redis_start()
    with lock:
        while_down = [o for o in outcomes if o[1] >= t_down and o[2] <= t_up]
    assert min(down) >= 3, (down, while_down[-10:])
    assert {(o[3], o[4]) for o in while_down} == {("ServiceUnavailableException", 503)}, while_down
    assert min(back) >= 3, back
    assert [g.proc.pid for g in fleet] == pids and all(fleet.alive(i) for i in range(3))

    served = {o[5] for o in outcomes if o[3] == "ok"}
    rows = logged(fleet, served)
    assert set(rows) == served
    total = round(sum(rows[rid]["cost_usd"] for rid in served), 6)
    assert total > 0
    lines = settled_everywhere(fleet, "vk-outage", total, timeout=30)
    assert [round(line["spent_usd"], 6) for line in lines] == [total] * 3, (lines, total)


def test_redis_flushed_the_budget_still_holds(fleet):
    """Over a third of a $0.40 budget is spent, then Redis loses everything (FLUSHALL). The counters come
    back from the durable settled spend before the budget admits anything more: a burst over 3
    nodes afterwards is refused once the budget is reached, and the total charged over both
    sides of the flush stays within it, equal to the logged costs."""
    clients = [client(g, "vk-flush") for g in fleet]
    before, cost = [], 0.0
    for i in range(30):     # until over a third is gone, over the 3 nodes (a settle lands just after the answer,
                            # so the next request may still find the last one's reservation: leave room for two)
        r = clients[i % 3].converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"f{i}"}]}],
                                    inferenceConfig={"maxTokens": 30})
        before.append(r["ResponseMetadata"]["RequestId"])
        cost += float(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
        if cost >= 0.15:
            break
    rows = logged(fleet, set(before))
    spent_before = round(sum(r["cost_usd"] for r in rows.values()), 6)
    assert spent_before == round(cost, 6) >= 0.15
    settled_everywhere(fleet, "vk-flush", spent_before)
    fleet.redis_flush()

    def one(i):
        try:
            r = clients[i % 3].converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"g{i}"}]}],
                                        inferenceConfig={"maxTokens": 30})
            return "ok", r["ResponseMetadata"]["RequestId"]
        except ClientError as e:
            return e.response["Error"]["Code"], rid_of(e)

    results = []
    for _ in range(10):                                 # a rebuild may answer 503 for a moment: go on
        with ThreadPoolExecutor(12) as pool:
            results += list(pool.map(one, range(12)))
        if any(code == "ServiceQuotaExceededException" for code, _ in results):
            break
    codes = {code for code, _ in results}
    assert "ServiceQuotaExceededException" in codes, results
    assert codes <= {"ok", "ServiceQuotaExceededException", "ServiceUnavailableException"}, results
    served = set(before) | {rid for code, rid in results if code == "ok"}
    rows = logged(fleet, served)
    total = round(sum(rows[rid]["cost_usd"] for rid in served), 6)
    assert total <= 0.4, (total, len(served))
    lines = settled_everywhere(fleet, "vk-flush", total)
    assert [round(line["spent_usd"], 6) for line in lines] == [total] * 3, (lines, total)


# --- a node killed mid-stream ---------------------------------------------------------------------

@pytest.fixture
def short_ttl_fleet(tmp_path, servers, fake, database):
    """Two nodes whose reservations expire after 10 s, on a database of their own and Redis database
    1 (the module's fleet, idle meanwhile, keeps database 0)."""
    redis, pg = servers
    redis_url = redis.url.rsplit("/", 1)[0] + "/1"
    import redis as redis_py
    c = redis_py.Redis.from_url(redis_url)
    try:
        c.flushdb()
    finally:
        c.close()
    url = pg.create_database()
    with Fleet(tmp_path, config(fake, redis_url, url, "reservation_ttl_seconds = 10\n"),
               redis=redis, nodes=2) as f:
        yield f
    pg.drop_database(url.rsplit("/", 1)[1])


def test_a_node_killed_mid_stream_leaves_no_phantom_reservation(short_ttl_fleet, fake):
    """Four slow streams on node 0; node 0 is SIGKILLed while they stream (nothing settles them).
    Their reservations expire after reservation_ttl_seconds and are charged in full, so the other
    node ends with nothing reserved and a spend equal to what it saw held for them (reserved, or
    already charged if one expired before the kill) plus the costs logged for what it served."""
    fleet = short_ttl_fleet
    fake.script(SLOW, {"text": ANSWER, "event_delay": 1.0})        # 20 words: a stream of over 20 s
    c0 = client(fleet[0], "vk-kill")
    streaming = threading.Semaphore(0)
    ends: list[str] = []

    def victim(i):
        try:
            r = c0.converse_stream(modelId=SLOW, messages=[{"role": "user", "content": [{"text": f"k{i}"}]}],
                                   inferenceConfig={"maxTokens": 30})
            first = True
            for ev in r["stream"]:
                if first and "contentBlockDelta" in ev:
                    first = False
                    streaming.release()
            ends.append("completed")
        except Exception as e:                          # the node died under it: any client error
            ends.append(type(e).__name__)

    threads = [threading.Thread(target=victim, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    started = 0
    while started < 4 and time.monotonic() < deadline:
        if streaming.acquire(timeout=1):
            started += 1
    assert started == 4, ends
    line = usage(fleet[1], "vk-kill")                   # node 1 sees node 0's reservations
    held = line["reserved_usd"] + line["spent_usd"]     # nothing has settled: spent only by expiry, in full
    assert held > 0, line
    fleet.kill(0)
    for t in threads:
        t.join(60)
    assert len(ends) == 4 and "completed" not in ends, ends

    c1 = client(fleet[1], "vk-kill")
    served = [converse_stream(c1, f"s{i}")[0] for i in range(3)]
    rows = logged(fleet, set(served))
    assert set(rows) == set(served) and all(r["node"] == 1 for r in rows.values())
    total = round(held + sum(r["cost_usd"] for r in rows.values()), 6)
    lines = settled_everywhere(fleet, "vk-kill", total, timeout=60)   # after the 10 s TTL and a sweep
    assert len(lines) == 1 and round(lines[0]["spent_usd"], 6) == total and lines[0]["reserved_usd"] == 0, \
        (lines, total, held)
    fake.script(SLOW, None)
