"""Governance through real boto3 clients against the real processes: the three ways to present a
virtual key, every refusal as the modeled exception, budgets and rate limits exact under
concurrency across workers, and counters that survive a restart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.helpers.gateway import Gateway, request_log

ADMIN = "admin-token-for-tests-0123"
SIGV4_ID, SIGV4_SECRET = "vk-sigv4-team", "sigv4-secret-0123456789abcdef"
HDR_ID, HDR_SECRET = "vk-header-team", "header-secret-0123456789abcdef"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSG = [{"role": "user", "content": [{"text": "hi"}]}]


def key(id_, secret, **kw) -> str:
    lines = [f'id = "{id_}"', f'secret = "{secret}"', 'team = "search"']
    for k, v in kw.items():
        lines.append(f"{k} = {v}")
    return "[[governance.keys]]\n" + "\n".join(lines) + "\n"


def config(mode="open") -> str:
    return f"""
[server]
workers = 2

[providers.mock]
kind = "mock"

[providers.slow]
kind = "mock"
latency_ms = 300

[[routes]]
models = ["slow.*"]
provider = "slow"

[default_route]
provider = "mock"

[pricing."*"]
input = 1000.0
output = 1000.0

[governance]
mode = "{mode}"
admin_token = "{ADMIN}"

[[governance.customers]]
id = "acme"

[[governance.teams]]
id = "search"
customer = "acme"

{key(SIGV4_ID, SIGV4_SECRET, models='["anthropic.*", "slow.*", "meta.*"]')}
{key(HDR_ID, HDR_SECRET)}
{key("vk-disabled", "disabled-secret-0123456789", enabled="false")}
{key("vk-expired", "expired-secret-0123456789", expires='"2020-01-01T00:00:00Z"')}
{key("vk-rate", "rate-secret-0123456789abc", rate_limits='[{requests = 3, window = "hour"}]')}
{key("vk-rate64", "rate64-secret-0123456789ab", rate_limits='[{requests = 10, window = "hour"}]')}
{key("vk-budget", "budget-secret-0123456789ab", budgets='[{amount_usd = 0.2, period = "month"}]')}
{key("vk-env", "env-secret-0123456789abcdef", budgets='[{amount_usd = 0.0, period = "day", env = "dev"}]')}
{key("vk-conc", "conc-secret-0123456789abcd", budgets='[{amount_usd = 0.5, period = "day"}]')}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("gov"), config()) as g:
        yield g


def client_for(gw, akid="finops-dummy-key", secret="finops-dummy-secret", headers=None, **cfg):
    c = boto3.client("bedrock-runtime", endpoint_url=f"http://127.0.0.1:{gw.port}/bedrock", region_name="us-east-1",
                     aws_access_key_id=akid, aws_secret_access_key=secret,
                     config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30,
                                       max_pool_connections=64))
    if headers:
        def add(request, **kwargs):
            for k, v in headers.items():
                request.headers.add_header(k, v)
        c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return c


def code_of(ei) -> str:
    return ei.value.response["Error"]["Code"]


def admin(gw, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def spent(gw, key_id) -> float:
    status, doc = admin(gw, "GET", f"/admin/usage?key={key_id}")
    assert status == 200, doc
    return sum(u["spent_usd"] for u in doc["usage"] if u.get("kind") == "budget" and u.get("level") == "key")


# --- the three ways to present a key --------------------------------------------------------------

def test_sigv4_with_the_key_as_aws_credentials(gw):
    c = client_for(gw, SIGV4_ID, SIGV4_SECRET)
    r = c.converse(modelId=CLAUDE, messages=MSG)
    assert r["output"]["message"]["content"][0]["text"].endswith("hi")
    assert float(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) > 0
    rows = [x for x in request_log(gw.data_dir) if x["id"] == r["ResponseMetadata"]["RequestId"]]
    deadline = time.monotonic() + 5
    while not rows and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = [x for x in request_log(gw.data_dir) if x["id"] == r["ResponseMetadata"]["RequestId"]]
    assert rows and rows[0]["vk"] == SIGV4_ID and rows[0]["cost_usd"] > 0


def test_sigv4_with_a_wrong_secret_is_invalid_signature(gw):
    c = client_for(gw, SIGV4_ID, "not-the-secret-at-all-000000")
    with pytest.raises(ClientError) as ei:
        c.converse(modelId=CLAUDE, messages=MSG)
    assert code_of(ei) == "InvalidSignatureException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_x_bf_vk_header_from_the_before_sign_hook(gw):
    c = client_for(gw, headers={"x-bf-vk": HDR_SECRET, "x-bf-env": "production"})
    r = c.converse(modelId=CLAUDE, messages=MSG)
    assert "x-bf-cost-usd" in r["ResponseMetadata"]["HTTPHeaders"]


def test_bearer_token_over_raw_http(gw):
    body = json.dumps({"messages": MSG}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/bedrock/model/{CLAUDE}/converse", data=body,
                                 method="POST", headers={"authorization": f"Bearer {HDR_SECRET}",
                                                         "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and float(r.headers["x-bf-cost-usd"]) > 0
    req.remove_header("Authorization")
    req.add_header("authorization", "Bearer disabled-secret-0123456789")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 403 and ei.value.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_open_mode_serves_dummy_credentials_and_unknown_header_keys(gw):
    client_for(gw).converse(modelId=CLAUDE, messages=MSG)
    client_for(gw, headers={"x-bf-vk": "vk_12345"}).converse(modelId=CLAUDE, messages=MSG)


# --- refusals, as the modeled exceptions ---------------------------------------------------------

@pytest.mark.parametrize("secret,needle", [("disabled-secret-0123456789", "disabled"),
                                           ("expired-secret-0123456789", "expired")])
def test_disabled_and_expired_keys_are_access_denied(gw, secret, needle):
    c = client_for(gw, headers={"x-bf-vk": secret})
    with pytest.raises(c.exceptions.AccessDeniedException) as ei:
        c.converse(modelId=CLAUDE, messages=MSG)
    assert needle in ei.value.response["Error"]["Message"]


def test_model_not_allowed_names_the_model(gw):
    c = client_for(gw, SIGV4_ID, SIGV4_SECRET)
    with pytest.raises(c.exceptions.AccessDeniedException) as ei:
        c.converse(modelId="mistral.mistral-large-2407-v1:0", messages=MSG)
    assert "mistral.mistral-large-2407-v1:0" in ei.value.response["Error"]["Message"]


def test_rate_limit_is_throttling_with_retry_after(gw):
    c = client_for(gw, headers={"x-bf-vk": "rate-secret-0123456789abc"})
    for _ in range(3):
        c.converse(modelId=CLAUDE, messages=MSG)
    with pytest.raises(c.exceptions.ThrottlingException) as ei:
        c.converse(modelId=CLAUDE, messages=MSG)
    retry = ei.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-retry-after"]
    assert retry.isdigit() and 0 < int(retry) <= 3600 * 1000


def test_budget_exhausted_is_service_quota_exceeded_naming_budget_and_reset(gw):
    c = client_for(gw, headers={"x-bf-vk": "budget-secret-0123456789ab"})
    with pytest.raises(c.exceptions.ServiceQuotaExceededException) as ei:
        for _ in range(100):
            r = c.converse(modelId=CLAUDE, messages=MSG, inferenceConfig={"maxTokens": 20})
            assert float(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-budget-remaining-usd"]) >= 0
    msg = ei.value.response["Error"]["Message"]
    assert "vk-budget" in msg and "monthly" in msg and "T00:00:00Z" in msg
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert spent(gw, "vk-budget") <= 0.2 + 1e-9


def test_budget_per_environment(gw):
    dev = client_for(gw, headers={"x-bf-vk": "env-secret-0123456789abcdef", "x-bf-env": "dev"})
    with pytest.raises(dev.exceptions.ServiceQuotaExceededException) as ei:
        dev.converse(modelId=CLAUDE, messages=MSG)
    assert "env dev" in ei.value.response["Error"]["Message"]
    prod = client_for(gw, headers={"x-bf-vk": "env-secret-0123456789abcdef", "x-bf-env": "production"})
    prod.converse(modelId=CLAUDE, messages=MSG)


# --- exact under concurrency, across workers -----------------------------------------------------

def test_concurrent_streams_never_overspend_and_counters_are_exact(gw):
    c = client_for(gw, headers={"x-bf-vk": "conc-secret-0123456789abcd"})

    def one(i):
        try:
            resp = c.converse_stream(modelId="slow.model", messages=[{"role": "user", "content": [{"text": f"q{i}"}]}],
                                     inferenceConfig={"maxTokens": 30})
            events = list(resp["stream"])
            return ("ok", resp["ResponseMetadata"]["RequestId"], events[-1]["metadata"]["usage"])
        except ClientError as e:
            return (e.response["Error"]["Code"], None, None)

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    ok = [r for r in results if r[0] == "ok"]
    refused = [r for r in results if r[0] == "ServiceQuotaExceededException"]
    assert len(ok) + len(refused) == 64, results
    assert 1 <= len(ok) < 64
    # every request reserved at most (input + 30 output tokens) x $0.001, within a $0.50 budget
    time.sleep(1.5)
    logged = {x["id"]: x for x in request_log(gw.data_dir)}
    costs = [logged[rid]["cost_usd"] for _, rid, _ in ok]
    assert all(cost > 0 for cost in costs)
    assert spent(gw, "vk-conc") == pytest.approx(sum(costs), abs=1e-6)
    assert spent(gw, "vk-conc") <= 0.5 + 1e-9


def test_concurrent_rate_limit_is_exact(gw):
    c = client_for(gw, headers={"x-bf-vk": "rate64-secret-0123456789ab"})

    def one(i):
        try:
            c.converse(modelId="slow.model", messages=MSG)
            return "ok"
        except ClientError as e:
            return e.response["Error"]["Code"]

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert results.count("ok") == 10
    assert results.count("ThrottlingException") == 54


# --- run-time management ------------------------------------------------------------------------

def test_admin_api_creates_a_key_usable_at_once(gw):
    status, doc = admin(gw, "POST", "/admin/keys", {"name": "made by test", "team": "search",
                                                     "budgets": [{"amount_usd": 5, "period": "day"}]})
    assert status in (200, 201), doc
    kid, secret = doc["id"], doc["secret"]
    deadline = time.monotonic() + 5
    while True:       # every worker picks the new key up within a second
        try:
            client_for(gw, kid, secret).converse(modelId=CLAUDE, messages=MSG)
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert admin(gw, "GET", "/admin/keys")[0] == 200
    assert admin(gw, "PATCH", f"/admin/keys/{kid}", {"enabled": False})[0] == 200
    time.sleep(1.2)
    with pytest.raises(ClientError) as ei:
        client_for(gw, kid, secret).converse(modelId=CLAUDE, messages=MSG)
    assert code_of(ei) == "AccessDeniedException"


def test_admin_api_needs_the_token(gw):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/admin/keys")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=5)
    assert ei.value.code == 401


def test_cli_creates_a_key(gw):
    env = dict(os.environ, FINOPS_CONFIG=gw.config_path, FINOPS_DATA_DIR=gw.data_dir)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "finops"), "keys", "create",
                          "--name", "cli key", "--team", "search", "--json"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    deadline = time.monotonic() + 5
    while True:
        try:
            client_for(gw, doc["id"], doc["secret"]).converse(modelId=CLAUDE, messages=MSG)
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- enforced mode, and a restart --------------------------------------------------------------

def test_enforced_mode_and_restart_keeps_spend(tmp_path):
    with Gateway(tmp_path, config("enforced")) as g:
        with pytest.raises(ClientError) as ei:
            client_for(g).converse(modelId=CLAUDE, messages=MSG)
        assert code_of(ei) == "UnrecognizedClientException"
        body = json.dumps({"messages": MSG}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{g.port}/bedrock/model/{CLAUDE}/converse", data=body,
                                     method="POST", headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e2:
            urllib.request.urlopen(req, timeout=10)
        assert e2.value.headers["x-amzn-errortype"] == "AccessDeniedException"
        c = client_for(g, headers={"x-bf-vk": "budget-secret-0123456789ab"})
        c.converse(modelId=CLAUDE, messages=MSG, inferenceConfig={"maxTokens": 5})
        deadline = time.monotonic() + 5           # settles reach the ledger within milliseconds
        while (before := spent(g, "vk-budget")) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert before > 0
    with Gateway(tmp_path, config("enforced")) as g:
        assert spent(g, "vk-budget") == pytest.approx(before, abs=1e-9)


def test_a_killed_ledger_fails_closed_then_recovers_with_its_counters(tmp_path):
    """A bad day for the ledger: kill -9. Requests in the gap get a retryable 503 (never an
    ungoverned answer); the supervisor restarts it, it restores its snapshot, service resumes."""
    import signal
    with Gateway(tmp_path, config()) as g:
        c = client_for(g, headers={"x-bf-vk": "conc-secret-0123456789abcd"})
        c.converse(modelId=CLAUDE, messages=MSG, inferenceConfig={"maxTokens": 5})
        deadline = time.monotonic() + 5
        while (before := spent(g, "vk-conc")) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert before > 0
        time.sleep(1.5)                                   # the ledger has snapshotted it
        [pid] = g.child_pids("workers.ledger.actor")
        os.kill(pid, signal.SIGKILL)
        outcomes = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                c.converse(modelId=CLAUDE, messages=MSG, inferenceConfig={"maxTokens": 5})
                outcomes.append("ok")
                if len(outcomes) >= 2:       # served again after the gap (or there was none)
                    break
            except ClientError as e:
                outcomes.append(e.response["Error"]["Code"])
        assert set(outcomes) <= {"ok", "ServiceUnavailableException"}, outcomes
        assert outcomes[-1] == "ok", outcomes
        assert g.child_pids("workers.ledger.actor") != [pid]
        assert spent(g, "vk-conc") >= before
