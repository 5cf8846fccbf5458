"""Observability through real boto3 traffic against the real processes (2 workers, a fake OpenAI
upstream on loopback): the request log's rows and what they never contain, /metrics aggregated over
every process, `finops report` and the admin report/dashboard agreeing with the log, no row lost
under load, retention, and OpenTelemetry traces continuing the client's trace."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from finops.workers.observe import logdb
from tests.helpers import logrows
from tests.helpers.fake_providers import FakeOpenAI
from tests.helpers.gateway import BIN, Gateway, free_port, request_log

ADMIN = "admin-token-observability-0123"
PROVIDER_KEY = "sk-obs-provider-secret-9f8e7d6c5b4a"
VK_ID, VK_SECRET = "vk-obs", "vk-obs-secret-0123456789abcdef"
LIMITED_ID, LIMITED_SECRET = "vk-limited", "vk-limited-secret-0123456789ab"
BROKE_ID, BROKE_SECRET = "vk-broke", "vk-broke-secret-0123456789abcd"      # a budget of $0
PRICE_IN, PRICE_OUT = 1000.0, 2000.0          # USD per 1M tokens: the [pricing."*"] row below
UPSTREAM = "gpt-4o-mini"
FAILING, SLOW = "fail-model", "slow-model"    # upstream models the fake answers 500 / slowly
MSG = [{"role": "user", "content": [{"text": "hello there observable world"}]}]


def config(o: FakeOpenAI, extra: str = "", observability: str = "") -> str:
    """Routes: obs.* (plain), slow.* (the upstream takes 0.2 s), fallback.* (a provider that
    refuses connections, then the working one), failing.* (the upstream answers 500), bodies.*
    (log_bodies), cached.* (exact-only response cache). No default route."""
    return f"""
[providers.openai]
kind = "openai"
base_url = "{o.url}"
keys = [{{api_key = "{PROVIDER_KEY}"}}]

[providers.broken]
kind = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
keys = [{{api_key = "{PROVIDER_KEY}"}}]
circuit_failures = 1000

[[routes]]
models = ["obs.*"]
provider = "openai"
model = "{UPSTREAM}"

[[routes]]
models = ["slow.*"]
provider = "openai"
model = "{SLOW}"

[[routes]]
models = ["fallback.*"]
targets = [{{provider = "broken", model = "{UPSTREAM}", weight = 1}}, {{provider = "openai", model = "{UPSTREAM}", weight = 0}}]

[[routes]]
models = ["failing.*"]
provider = "openai"
model = "{FAILING}"

[[routes]]
models = ["bodies.*"]
provider = "openai"
model = "{UPSTREAM}"
log_bodies = true

[[routes]]
models = ["cached.*"]
provider = "openai"
model = "{UPSTREAM}"
[routes.cache]

[cache]
embedding_model = "none"

[pricing."*"]
input = {PRICE_IN}
output = {PRICE_OUT}

[governance]
admin_token = "{ADMIN}"

[[governance.customers]]
id = "acme"

[[governance.teams]]
id = "search"
customer = "acme"

[[governance.keys]]
id = "{VK_ID}"
name = "Observed key"
secret = "{VK_SECRET}"
team = "search"
budgets = [{{amount_usd = 1000.0, period = "month"}}]

[[governance.keys]]
id = "{LIMITED_ID}"
secret = "{LIMITED_SECRET}"
rate_limits = [{{requests = 1, window = "hour"}}]

[[governance.keys]]
id = "{BROKE_ID}"
secret = "{BROKE_SECRET}"
budgets = [{{amount_usd = 0.0, period = "day"}}]

[observability]
{observability}
{extra}
"""


# --- fixtures and helpers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI(api_keys=(PROVIDER_KEY,)) as o:
        o.script(FAILING, {"status": 500})
        o.script(SLOW, {"delay": 0.2})
        yield o


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    """The gateway most tests share; tests that need exact counts start their own."""
    with Gateway(tmp_path_factory.mktemp("obs"), config(upstream)) as g:
        yield g


def client(gw, headers: dict | None = None, **cfg):
    """A boto3 client; `headers` are added to every request by a before-sign hook."""
    conf = dict(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30)
    conf.update(cfg)
    c = boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                     aws_access_key_id="finops-dummy", aws_secret_access_key="finops-dummy",
                     config=BotoConfig(**conf))
    if headers:
        def add(request, **kwargs):
            for k, v in headers.items():
                request.headers.add_header(k, v)
        c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return c


def keyed(gw, **cfg):
    return client(gw, {"x-bf-vk": VK_SECRET, "x-bf-env": "prod"}, **cfg)


def rid(resp) -> str:
    return resp["ResponseMetadata"]["RequestId"]


def failure(call, *args, **kw) -> ClientError:
    with pytest.raises(ClientError) as ei:
        call(*args, **kw)
    return ei.value


def price(tokens_in: int, tokens_out: int) -> float:
    """The pricing table's figure for these tokens (USD)."""
    return (tokens_in * PRICE_IN + tokens_out * PRICE_OUT) / 1e6


def rows_for(gw, ids, timeout: float = 10.0) -> dict[str, dict]:
    """The log rows of these request ids, once they are all written."""
    want = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        got = {r["id"]: r for r in request_log(gw.data_dir) if r["id"] in want}
        if len(got) == len(want) or time.monotonic() > deadline:
            assert set(got) == want, f"rows missing from the request log: {sorted(want - set(got))}"
            return got
        time.sleep(0.1)


def settled_log(gw, quiet: float = 1.0, timeout: float = 15.0) -> list[dict]:
    """The whole log once no row has arrived for `quiet` seconds (workers flush every 0.1 s,
    the observer commits every 0.5 s)."""
    deadline = time.monotonic() + timeout
    rows = request_log(gw.data_dir)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = request_log(gw.data_dir)
        if len(again) == len(rows):
            return again
        rows = again
    raise AssertionError("the request log kept growing")


def http(gw, path: str, token: str | None = ADMIN) -> tuple[int, bytes, object]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(gw.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def admin_json(gw, path: str) -> dict:
    status, body, _ = http(gw, path)
    assert status == 200, body
    return json.loads(body)


def scrape(gw, token: str | None = None) -> dict[str, list]:
    """/metrics parsed: {sample name: [(labels, value), ...]} (and the family names, with [])."""
    status, body, headers = http(gw, "/metrics", token)
    assert status == 200, body
    assert headers.get("Content-Type", "").startswith("text/plain")
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(body.decode()):
        out.setdefault(fam.name, [])
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(metrics: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for lab, v in metrics.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def log_sums(rows: list[dict]) -> dict:
    return {"requests": len(rows), "input_tokens": sum(r["input_tokens"] for r in rows),
            "output_tokens": sum(r["output_tokens"] for r in rows),
            "cost_usd": round(sum(round(r["cost_usd"] * 1e6) for r in rows) / 1e6, 6)}


def totals_of(doc: dict) -> dict:
    return {k: doc[k] for k in ("requests", "input_tokens", "output_tokens", "cost_usd")}


def pids_serving(ports: set[int], pids: list[int]) -> set[int]:
    """Which of `pids` own a TCP socket bound to one of these local ports (the gateway side of
    the fake upstream's recorded client addresses)."""
    inode_port = {}
    for pid in pids:
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    for line in f.readlines()[1:]:
                        parts = line.split()
                        inode_port[parts[9]] = int(parts[1].rsplit(":", 1)[1], 16)
            except OSError:
                pass
    out = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and inode_port.get(link[8:-1]) in ports:
                out.add(pid)
    return out


# --- 1. log rows and their fields ---------------------------------------------------------------

def test_converse_and_stream_rows_carry_who_what_and_what_it_cost(gw):
    """Every field a spend report needs, for a keyed converse and converse_stream."""
    c = keyed(gw)
    r = c.converse(modelId="obs.m1", messages=MSG)
    s = c.converse_stream(modelId="obs.m1", messages=MSG)
    events = list(s["stream"])
    stream_usage = events[-1]["metadata"]["usage"]
    rows = rows_for(gw, [rid(r), rid(s)])
    one, st = rows[rid(r)], rows[rid(s)]

    for row, op, usage in ((one, "converse", r["usage"]), (st, "converse-stream", stream_usage)):
        assert (row["vk"], row["vk_name"], row["team"], row["customer"], row["env"]) == \
            (VK_ID, "Observed key", "search", "acme", "prod")
        assert (row["op"], row["stream"]) == (op, int(op == "converse-stream"))
        assert (row["model"], row["provider"], row["upstream_model"], row["target"]) == \
            ("obs.m1", "openai", UPSTREAM, f"openai/{UPSTREAM}")
        assert (row["attempts"], row["fallback"], row["status"], row["error"], row["error_origin"]) == \
            (1, 0, 200, "", "")
        assert row["latency_ms"] > 0
        assert (row["input_tokens"], row["output_tokens"]) == (usage["inputTokens"], usage["outputTokens"])
        assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
        assert row["cost_usd"] == pytest.approx(price(usage["inputTokens"], usage["outputTokens"]), abs=1e-9)
        assert row["cache"] == "" and row["saved_usd"] == 0
        assert "Boto3" in row["user_agent"] or "botocore" in row["user_agent"].lower()
        assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime(row["ts"]))
        assert abs(row["ts"] - time.time()) < 60

    assert one["ttft_ms"] is None
    assert st["ttft_ms"] is not None and 0 <= st["ttft_ms"] <= st["latency_ms"]
    # the non-streaming answer's cost header is the logged cost
    assert float(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) == pytest.approx(one["cost_usd"], abs=1e-6)


def test_fallback_row_names_the_target_that_served(gw):
    """First target refuses connections, the second answers: 2 attempts, fallback, its target."""
    r = keyed(gw).converse(modelId="fallback.m1", messages=MSG)
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-bf-attempts"] == "2"
    row = rows_for(gw, [rid(r)])[rid(r)]
    assert (row["attempts"], row["fallback"], row["target"], row["provider"], row["status"], row["error"]) == \
        (2, 1, f"openai/{UPSTREAM}", "openai", 200, "")
    assert row["cost_usd"] == pytest.approx(price(r["usage"]["inputTokens"], r["usage"]["outputTokens"]))


def test_error_rows_say_what_failed_and_whose_fault(gw):
    """Throttled by the key's rate limit or refused by its spent budget (governance), an upstream
    500 (upstream), an unknown model (client): the client's status and AWS error code, and who
    refused."""
    limited = client(gw, {"x-bf-vk": LIMITED_SECRET})
    ok = limited.converse(modelId="obs.m1", messages=MSG)
    throttled = failure(limited.converse, modelId="obs.m1", messages=MSG)
    # the limit holds on a route with a fallback target too: a refusal is not a target's failure
    throttled_fb = failure(limited.converse, modelId="fallback.m1", messages=MSG)
    over_budget = failure(client(gw, {"x-bf-vk": BROKE_SECRET}).converse, modelId="fallback.m1", messages=MSG)
    upstream_500 = failure(keyed(gw).converse, modelId="failing.m1", messages=MSG)
    unknown = failure(keyed(gw).converse, modelId="nowhere.m1", messages=MSG)

    expect = {
        throttled: (429, "ThrottlingException", "governance"),
        throttled_fb: (429, "ThrottlingException", "governance"),
        over_budget: (400, "ServiceQuotaExceededException", "governance"),
        upstream_500: (424, "ModelErrorException", "upstream"),
        unknown: (404, "ResourceNotFoundException", "client"),
    }
    ids = {e: e.response["ResponseMetadata"]["RequestId"] for e in expect}
    rows = rows_for(gw, [rid(ok), *ids.values()])
    assert rows[rid(ok)]["status"] == 200 and rows[rid(ok)]["vk"] == LIMITED_ID
    for e, (status, code, origin) in expect.items():
        assert (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]) == (status, code)
        row = rows[ids[e]]
        assert (row["status"], row["error"], row["error_origin"]) == (status, code, origin), row
        assert row["cost_usd"] == 0 and row["input_tokens"] == 0
    for e in (throttled, throttled_fb, over_budget):
        assert rows[ids[e]]["attempts"] == 0                                              # never sent upstream
    assert rows[ids[upstream_500]]["attempts"] == 1 and rows[ids[upstream_500]]["upstream_model"] == FAILING
    assert rows[ids[unknown]]["attempts"] == 0 and rows[ids[unknown]]["provider"] == ""


# --- 2. secrets and bodies ----------------------------------------------------------------------

def test_bodies_are_logged_only_on_routes_that_ask_for_them(gw):
    sent = []
    c = keyed(gw)
    c.meta.events.register("before-send.bedrock-runtime.*", lambda request, **kw: sent.append(request.body))
    with_bodies = c.converse(modelId="bodies.m1", messages=MSG, inferenceConfig={"maxTokens": 50})
    plain = c.converse(modelId="obs.m1", messages=MSG)
    rows = rows_for(gw, [rid(with_bodies), rid(plain)])
    logged = rows[rid(with_bodies)]
    assert logged["request_body"] == sent[0]                          # the JSON the client sent, as sent
    assert json.loads(logged["request_body"])["inferenceConfig"] == {"maxTokens": 50}
    answer = json.loads(logged["response_body"])
    assert answer["output"] == with_bodies["output"] and answer["usage"] == with_bodies["usage"]
    assert rows[rid(plain)]["request_body"] is None and rows[rid(plain)]["response_body"] is None


def test_secrets_appear_in_no_log_column_and_not_in_metrics(gw):
    """The virtual key's secret (header and SigV4 forms), the provider's API key and the admin
    token: nowhere in any column of any row (bodies included), nor in /metrics."""
    c = keyed(gw)
    c.converse(modelId="bodies.m1", messages=MSG)
    list(c.converse_stream(modelId="bodies.m1", messages=MSG)["stream"])
    failure(c.converse, modelId="failing.m1", messages=MSG)
    sigv4 = boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                         aws_access_key_id=VK_ID, aws_secret_access_key=VK_SECRET,
                         config=BotoConfig(retries={"total_max_attempts": 1}))
    last = sigv4.converse(modelId="obs.m1", messages=MSG)
    http(gw, "/admin/report?by=key")
    rows_for(gw, [rid(last)])
    rows = settled_log(gw, quiet=0.7)
    assert any(r["request_body"] for r in rows) and any(r["vk"] == VK_ID for r in rows)
    secrets = (VK_SECRET, PROVIDER_KEY, ADMIN)
    for row in rows:
        for col, v in row.items():
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for s in secrets:
                assert s not in text, f"a secret is in column {col} of request {row['id']}"
    status, body, _ = http(gw, "/metrics", token=None)           # open by default
    assert status == 200 and b"finops_requests_total" in body
    assert not any(s.encode() in body for s in secrets)


# --- 3. metrics ---------------------------------------------------------------------------------

def test_metrics_count_a_known_sequence_exactly_across_both_workers(tmp_path, upstream):
    """On a fresh gateway: 6 concurrent ok converses (spread over both workers), a stream, 1 ok + 3
    throttled, 2 upstream 500s, a cache miss then an exact hit. Every counter matches, and the
    token and cost counters equal the log's sums."""
    with Gateway(tmp_path, config(upstream)) as g:
        g.wait_ready(workers=2)
        c = keyed(g, max_pool_connections=8)
        marker = len(upstream.requests)
        with ThreadPoolExecutor(6) as pool:
            oks = list(pool.map(lambda _: c.converse(modelId="slow.m1", messages=MSG), range(6)))
        ports = {r.client_address[1] for r in upstream.requests[marker:]}
        assert pids_serving(ports, g.child_pids("workers")) == set(g.child_pids("workers")), \
            "both workers should have served the concurrent requests"
        list(c.converse_stream(modelId="obs.m1", messages=MSG)["stream"])
        limited = client(g, {"x-bf-vk": LIMITED_SECRET})
        limited.converse(modelId="obs.m1", messages=MSG)
        for _ in range(3):
            assert failure(limited.converse, modelId="obs.m1", messages=MSG).response["Error"]["Code"] == \
                "ThrottlingException"
        for _ in range(2):
            failure(c.converse, modelId="failing.m1", messages=MSG)
        q = [{"role": "user", "content": [{"text": "what does the cache remember?"}]}]
        miss = c.converse(modelId="cached.m1", messages=q)
        hit = c.converse(modelId="cached.m1", messages=q)
        assert [x["ResponseMetadata"]["HTTPHeaders"]["x-bf-cache"] for x in (miss, hit)] == ["miss", "hit-exact"]
        rows_for(g, [rid(hit), *map(rid, oks)])
        rows = settled_log(g, quiet=0.7)
        assert len(rows) == 15
        m = scrape(g)

        # requests, by their labels: exactly the log, grouped the same way
        want = Counter((r["op"], r["model"], r["provider"], r["env"], r["vk"], str(r["status"]), r["error"])
                       for r in rows)
        got = Counter({(lab["op"], lab["model"], lab["provider"], lab["env"], lab["virtual_key"], lab["status"],
                        lab["error"]): int(v) for lab, v in m["finops_requests_total"] if v})
        assert got == want
        assert value(m, "finops_requests_total", model="slow.m1", status="200", virtual_key=VK_ID, env="prod") == 6
        assert value(m, "finops_requests_total", op="converse-stream") == 1
        assert value(m, "finops_requests_total", virtual_key=LIMITED_ID, status="429",
                     error="ThrottlingException") == 3
        assert value(m, "finops_governance_rejections_total", reason="ThrottlingException",
                     virtual_key=LIMITED_ID) == 3
        assert value(m, "finops_upstream_errors_total", provider="openai", code="ModelErrorException") == 2
        assert value(m, "finops_upstream_errors_total") == 2

        # tokens and money: the log's sums
        for kind in ("input", "output"):
            assert value(m, "finops_tokens_total", type=kind) == sum(r[f"{kind}_tokens"] for r in rows) > 0
        assert value(m, "finops_cost_usd_total") == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-9)
        assert value(m, "finops_cost_usd_total", virtual_key=VK_ID, env="prod") == \
            pytest.approx(sum(r["cost_usd"] for r in rows if r["vk"] == VK_ID), abs=1e-9)

        # the cache
        assert value(m, "finops_cache_requests_total", result="hit-exact") == 1
        assert value(m, "finops_cache_requests_total", result="miss") == 1
        saved = float(miss["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
        assert saved > 0 and value(m, "finops_cache_saved_usd_total") == pytest.approx(saved, abs=1e-6)

        # histograms, gauges, the rows counter
        assert value(m, "finops_request_duration_seconds_count") == 15
        assert value(m, "finops_request_duration_seconds_count", model="slow.m1") == 6
        assert value(m, "finops_request_duration_seconds_sum", model="slow.m1") >= 6 * 0.2
        assert value(m, "finops_time_to_first_token_seconds_count") == 1
        assert {lab["process"] for lab, _ in m["finops_requests_in_flight"]} == {"frontend", "worker"}
        assert "frontend_rows" in {lab["queue"] for lab, _ in m["finops_queue_depth"]}
        assert "finops_process_restarts" in m
        assert value(m, "finops_request_log_rows_total") == 15


def test_restart_counter_counts_a_killed_worker(tmp_path):
    with Gateway(tmp_path, workers=2) as g:
        assert value(scrape(g), "finops_process_restarts_total", kind="worker") == 0
        os.kill(g.child_pids("workers")[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        n = 0
        while time.monotonic() < deadline:
            try:
                n = value(scrape(g), "finops_process_restarts_total", kind="worker")
            except AssertionError:      # a scrape that reached the dead worker
                n = 0
            if n >= 1:
                break
            time.sleep(0.2)
        assert n >= 1


def test_metrics_auth_requires_the_admin_token(tmp_path, upstream):
    with Gateway(tmp_path, config(upstream, observability="metrics_auth = true")) as g:
        status, body, _ = http(g, "/metrics", token=None)
        assert status == 401 and b"finops_" not in body
        assert http(g, "/metrics", token="wrong-token")[0] == 401
        assert "finops_requests" in scrape(g, token=ADMIN)


# --- 4. reports agree with the log --------------------------------------------------------------

def _some_traffic(gw) -> None:
    c, anon = keyed(gw), client(gw, {"x-bf-env": "dev"})
    ids = [rid(c.converse(modelId="obs.m1", messages=MSG)), rid(anon.converse(modelId="obs.m2", messages=MSG)),
           rid(c.converse(modelId="obs.m2", messages=MSG))]
    rows_for(gw, ids)


def test_finops_report_totals_equal_the_log(gw):
    _some_traffic(gw)
    rows = settled_log(gw)
    out = subprocess.run([os.path.join(BIN, "finops"), "report", "--by", "key,model", "--format", "json",
                          "--config", gw.config_path], env=gw.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert totals_of(doc["total"]) == log_sums(rows)
    for group in doc["rows"]:
        mine = [r for r in rows if (r["vk"], r["model"]) == (group["key"], group["model"])]
        assert totals_of(group) == log_sums(mine), group
        assert group["errors"] == sum(1 for r in mine if r["error"])
    assert {(g["key"], g["model"]) for g in doc["rows"]} == {(r["vk"], r["model"]) for r in rows}


def test_admin_report_by_env_equals_the_log(gw):
    _some_traffic(gw)
    rows = settled_log(gw)
    doc = admin_json(gw, "/admin/report?by=env&since=7d")
    assert doc["by"] == ["env"]
    assert totals_of(doc["total"]) == log_sums(rows)
    assert {g["env"]: totals_of(g) for g in doc["rows"]} == \
        {env: log_sums([r for r in rows if r["env"] == env]) for env in {r["env"] for r in rows}}
    assert {"prod", "dev"} <= {g["env"] for g in doc["rows"]}


def test_admin_dashboard_totals_and_the_keys_budget(gw):
    _some_traffic(gw)
    rows = settled_log(gw)
    doc = admin_json(gw, "/admin/dashboard?days=7")
    sums = log_sums(rows)
    assert {k: doc["totals"][k] for k in sums} == sums
    assert doc["totals"]["errors"] == sum(1 for r in rows if r["error"])
    assert sum(doc["requests_by_day"]) == len(rows)
    budget = [b for b in doc["budgets"] if (b["level"], b["owner"]) == ("key", VK_ID)]
    assert len(budget) == 1 and budget[0]["limit_usd"] == 1000.0
    spent_in_log = log_sums([r for r in rows if r["vk"] == VK_ID])["cost_usd"]
    assert spent_in_log > 0 and budget[0]["burn"]["cumulative_usd"][-1] == spent_in_log
    assert budget[0]["spent_usd"] == pytest.approx(spent_in_log, abs=1e-6)
    assert budget[0]["remaining_usd"] == pytest.approx(1000.0 - spent_in_log, abs=1e-6)


# --- 5. no row lost under load ------------------------------------------------------------------

@pytest.mark.parametrize("path, status, code, needle", [
    ("/admin/dashboard?days=0", 400, "ValidationException", "days"),
    ("/admin/report?since=someday", 400, "ValidationException", "--since"),
    ("/admin/report?by=colour", 400, "ValidationException", "colour"),
    ("/admin/keys/vk-no-such-key", 404, "ResourceNotFoundException", "vk-no-such-key"),
    ("/admin/nothing-here", 404, "ResourceNotFoundException", "/admin/nothing-here"),
])
def test_admin_api_failures_are_aws_shaped(gw, path, status, code, needle):
    got, body, headers = http(gw, path)
    assert got == status and headers["x-amzn-errortype"] == code
    assert needle in json.loads(body)["message"] and headers["x-amzn-requestid"]


def test_load_logs_exactly_one_row_per_request(gw):
    """1,500 converses from 32 threads across both workers: one row per request id returned, no
    more, no fewer; the rows counter agrees with the log."""
    c = client(gw, {"x-bf-env": "load"}, max_pool_connections=32)
    before = {r["id"] for r in request_log(gw.data_dir)}
    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(lambda i: rid(c.converse(modelId="obs.load", messages=MSG)), range(1500)))
    assert len(set(ids)) == 1500
    rows_for(gw, ids, timeout=15)
    rows = settled_log(gw, quiet=0.7)
    load = [r["id"] for r in rows if r["env"] == "load"]
    assert len(load) == len(set(load)) == 1500 and set(load) == set(ids)
    assert not before & set(ids)
    assert all(r["status"] == 200 and r["input_tokens"] > 0 for r in rows if r["env"] == "load")
    assert value(scrape(gw), "finops_request_log_rows_total") >= len(rows)


# --- 6. retention -------------------------------------------------------------------------------

def test_rows_older_than_the_retention_go_at_start(tmp_path, upstream):
    now = time.time()
    g = Gateway(tmp_path, config(upstream, observability="log_retention_days = 30"))
    db = logdb.open_db(g.data_dir)
    logrows.insert(db, [logrows.row(id="old-40d", ts=now - 40 * 86400), logrows.row(id="old-31d", ts=now - 31 * 86400),
                        logrows.row(id="recent-29d", ts=now - 29 * 86400), logrows.row(id="recent-1d", ts=now - 86400)])
    db.close()
    with g:
        deadline = time.monotonic() + 10
        while {r["id"] for r in request_log(g.data_dir)} & {"old-40d", "old-31d"} and time.monotonic() < deadline:
            time.sleep(0.1)
        r = keyed(g).converse(modelId="obs.m1", messages=MSG)
        rows_for(g, [rid(r)])
        assert {row["id"] for row in request_log(g.data_dir)} == {"recent-29d", "recent-1d", rid(r)}


# --- 7. tracing ---------------------------------------------------------------------------------

def test_traces_continue_the_clients_trace_with_a_span_per_attempt(tmp_path, upstream):
    pytest.importorskip("opentelemetry.sdk")
    from tests.helpers.fake_otlp import FakeOTLP

    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    unsampled_trace = "0af7651916cd43dd8448eb211c80319c"
    with FakeOTLP() as collector:
        obs = f'otlp_endpoint = "{collector.url}"\nservice_name = "finops-obs-test"'
        with Gateway(tmp_path, config(upstream, observability=obs),
                     extra_env={"OTEL_BSP_SCHEDULE_DELAY": "200"}) as g:
            # the client decided not to sample this one: the gateway follows its decision
            client(g, {"traceparent": f"00-{unsampled_trace}-{parent}-00"}).converse(
                modelId="obs.m1", messages=MSG)
            r = client(g, {"traceparent": f"00-{trace_id}-{parent}-01", "x-bf-vk": VK_SECRET}).converse(
                modelId="fallback.m1", messages=MSG)
            spans = collector.wait_for(3, timeout=15)
        mine = [s for s in spans if s["trace_id"] == trace_id]
        server = [s for s in mine if s["name"] == "bedrock converse"]
        assert len(server) == 1
        server = server[0]
        assert server["kind"] == "SERVER" and server["parent_span_id"] == parent
        assert server["attributes"]["finops.request_id"] == rid(r)
        assert server["attributes"]["gen_ai.request.model"] == "fallback.m1"
        assert server["attributes"]["finops.virtual_key"] == VK_ID
        assert server["status"]["code"] != "ERROR"
        assert server["resource"]["service.name"] == "finops-obs-test"

        attempts = sorted((s for s in mine if s["kind"] == "CLIENT"), key=lambda s: s["attributes"]["finops.attempt"])
        assert [s["parent_span_id"] for s in attempts] == [server["span_id"]] * 2
        assert [(s["name"], s["attributes"]["finops.target"]) for s in attempts] == \
            [(f"broken {UPSTREAM}", f"broken/{UPSTREAM}"), (f"openai {UPSTREAM}", f"openai/{UPSTREAM}")]
        assert attempts[0]["status"]["code"] == "ERROR" and attempts[1]["status"]["code"] != "ERROR"
        assert all(server["start_ns"] <= s["start_ns"] <= s["end_ns"] <= server["end_ns"] for s in attempts)
        assert not [s for s in spans if s["trace_id"] == unsampled_trace]
