"""Alerts end to end: the real gateway (2 workers, the alerts actor), boto3 traffic on the mock
provider, and a local webhook receiver. Thresholds fire exactly once per period under concurrent
traffic; a receiver that fails twice gets the same idempotency id three times; SIGKILL of the
alerts actor between a POST and its acknowledgement re-delivers the same id and loses nothing;
the signature verifies with the README's snippet; Slack gets its payload shape."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from finops.workers.observe import logdb
from tests.helpers.gateway import Gateway, request_log
from tests.helpers.logrows import insert, row
from tests.helpers.webhooks import Receiver

ADMIN = "admin-token-for-alert-tests"
SECRET = "whsec-alerts-0123456789abcdef"
README = Path(__file__).resolve().parents[2] / "README.md"
MSG = [{"role": "user", "content": [{"text": "hello there"}]}]


def readme_verify():
    code = re.search(r"\*\*Verifying a delivery\*\*.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    ns: dict = {}
    exec(code, ns)
    return ns["verify"]


def config(receiver: Receiver, hooks: str, keys: str) -> str:
    return f"""
[server]
workers = 2

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[pricing."*"]
input = 1000.0
output = 1000.0

[governance]
admin_token = "{ADMIN}"

[alerts]
forecast = false
anomaly = false
check_seconds = 0.2
backoff_seconds = 0.2
retry_seconds = 120
{hooks}
{keys}
"""


def admin(gw, path, method="GET", body=None):
    req = urllib.request.Request(gw.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read()) if r.headers.get("content-type", "").startswith("application/json") \
            else r.read().decode()


def client(gw, akid, secret):
    return boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                        aws_access_key_id=akid, aws_secret_access_key=secret,
                        config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30,
                                          max_pool_connections=32))


def converse(c):
    return c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MSG,
                      inferenceConfig={"maxTokens": 40})


def wait_for(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def dashboard_alerts(gw) -> list[str]:
    """The dashboard's "Recent alerts" panel, as headless Chromium renders it: the messages."""
    from playwright.sync_api import sync_playwright

    from tests.helpers.chromium import ARGS, chromium_path
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(gw.url + f"/ui/#token={ADMIN}")
            page.wait_for_function("() => document.body.dataset.ready === '1' || "
                                   "document.body.dataset.error !== undefined", timeout=15000)
            assert page.evaluate("document.body.dataset.error") is None and not errors, errors
            assert page.locator("#alerts-section").is_visible()
            assert page.locator("#alerts .chip.delivered").count() == page.locator("#alerts li").count()
            return sorted(page.locator("#alerts .alert-message").all_inner_texts())
        finally:
            browser.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_thresholds_fire_once_per_period_under_concurrent_traffic(tmp_path, receiver):
    hooks = f"""
[[alerts.webhooks]]
url = "{receiver.url}/flaky"
secret = "{SECRET}"
name = "flaky"

[[alerts.webhooks]]
url = "{receiver.url}/ok"
format = "slack"
name = "slack"
"""
    keys = """
[[governance.keys]]
id = "vk-calibrate"
secret = "calibrate-secret-0123456789"
"""
    with Gateway(tmp_path, config(receiver, hooks, keys)) as gw:
        # one request's cost, to size the budget at about ten of them
        out = converse(client(gw, "vk-calibrate", "calibrate-secret-0123456789"))
        cost = float(out["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
        assert cost > 0
        created = admin(gw, "/admin/keys", "POST", {
            "name": "alerted", "budgets": [{"amount_usd": round(cost * 10, 6), "period": "day",
                                            "alert_at": [20, 40, 60]}]})
        c = client(gw, created["id"], created["secret"])
        wait_for("the ledger to load the new key's budget",      # it reloads the directory within a second
                 lambda: [u for u in admin(gw, f"/admin/usage?key={created['id']}")["usage"] if u["kind"] == "budget"])

        def call(_):
            try:
                converse(c)
                return "ok"
            except ClientError as e:
                return e.response["Error"]["Code"]

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(call, range(20)))
        assert results.count("ok") >= 5 and set(results) <= {"ok", "ServiceQuotaExceededException"}
        usage = admin(gw, f"/admin/usage?key={created['id']}")["usage"]
        b = [u for u in usage if u["kind"] == "budget" and u["level"] == "key"][0]
        pct = b["spent_usd"] / b["limit_usd"] * 100
        expected = {t for t in (20, 40, 60) if pct >= t}
        assert len(expected) >= 2, pct

        def settled():
            doc = admin(gw, "/admin/alerts")
            ours = [a for a in doc["alerts"] if a["owner"] == created["id"]]
            done = len(ours) == len(expected) and all(d["status"] == "delivered" for a in ours
                                                      for d in a["deliveries"])
            return (doc, ours) if done else None

        doc, ours = wait_for("every alert delivered", settled)
        assert {a["threshold"] for a in ours} == expected
        assert all(a["kind"] == "budget" and a["period_start"] == b["period_start"] for a in ours)
        ids = {a["id"] for a in ours}
        assert len(ids) == len(expected)

        # the flaky receiver: each alert three times (500, 500, 200), always with the same id, signed
        verify = readme_verify()
        flaky = receiver.on("/flaky")
        assert sorted(h["x-finops-idempotency-key"] for h, _ in flaky) == sorted(list(ids) * 3)
        for h, body in flaky:
            assert verify(SECRET, h["x-finops-signature"], body)
            event = json.loads(body)
            assert event["id"] == h["x-finops-idempotency-key"] and event["type"] == "finops.alert"
            assert event["scope"] == {"level": "key", "owner": created["id"], "period": "day", "env": ""}
        assert not verify("not-the-secret-0123456789", flaky[0][0]["x-finops-signature"], flaky[0][1])
        flaky_deliveries = [d for a in ours for d in a["deliveries"] if d["webhook"] == "flaky"]
        assert [d["attempts"] for d in flaky_deliveries] == [3] * len(expected)

        # slack: once each, its shape
        slack = receiver.on("/ok")
        assert sorted(h["x-finops-idempotency-key"] for h, _ in slack) == sorted(ids)
        for _, body in slack:
            msg = json.loads(body)
            assert set(msg) == {"text", "blocks"} and created["id"] in msg["text"]
            assert [blk["type"] for blk in msg["blocks"]] == ["header", "section", "section", "context"]

        # history and metrics agree
        assert doc["counts"]["sent"] == {"budget": 2 * len(expected)} and doc["counts"]["pending"] == 0
        assert doc["webhooks"] == ["flaky", "slack"]
        metrics = admin(gw, "/metrics")
        assert f'finops_alerts_sent_total{{kind="budget"}} {2.0 * len(expected)}' in metrics
        dash = admin(gw, "/admin/dashboard?days=1")
        assert {a["id"] for a in dash["alerts"]} == ids and all(a["delivered"] for a in dash["alerts"])
        assert dashboard_alerts(gw) == sorted(a["message"] for a in dash["alerts"])
        # more spend in the same period, refused, fires nothing new. The concurrent calls leave the
        # budget more or less spent (each reserves its maximum, above its cost, so how many got in
        # depends on timing): this one asks for a maximum over the whole budget, refused whatever is left.
        with pytest.raises(ClientError) as refused:
            c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MSG,
                       inferenceConfig={"maxTokens": 4000})
        assert refused.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
        assert len([a for a in admin(gw, "/admin/alerts")["alerts"] if a["owner"] == created["id"]]) == len(ids)


def test_sigkill_between_firing_and_acknowledgement_redelivers_the_same_id_and_a_restart_repeats_nothing(
        tmp_path, receiver):
    hooks = f"""
[[alerts.webhooks]]
url = "{receiver.url}/hold"
secret = "{SECRET}"
name = "hold"
"""
    keys = """
[[governance.keys]]
id = "vk-kill"
secret = "kill-secret-0123456789abcd"
budgets = [{amount_usd = 100, period = "month", alert_at = [0.0001, 0.0002]}]
"""
    with Gateway(tmp_path, config(receiver, hooks, keys)) as gw:
        converse(client(gw, "vk-kill", "kill-secret-0123456789abcd"))
        assert receiver.first.wait(30), "no alert was posted"
        (pid,) = gw.child_pids("workers.alerts.actor")
        first_id = receiver.on("/hold")[0][0]["x-finops-idempotency-key"]
        os.kill(pid, signal.SIGKILL)           # it sent, it has not seen the acknowledgement
        receiver.release.set()
        wait_for("a new alerts actor", lambda: [p for p in gw.child_pids("workers.alerts.actor") if p != pid])

        def delivered():
            doc = admin(gw, "/admin/alerts")
            return doc if (len(doc["alerts"]) == 2 and all(d["status"] == "delivered" for a in doc["alerts"]
                                                           for d in a["deliveries"])) else None

        doc = wait_for("both alerts delivered after the restart", delivered)
        ids = {a["id"] for a in doc["alerts"]}
        got = [h["x-finops-idempotency-key"] for h, _ in receiver.on("/hold")]
        assert first_id in ids
        assert got.count(first_id) >= 2            # re-sent with the same id: the receiver dedupes on it
        assert set(got) == ids                     # nothing lost, nothing else
        verify = readme_verify()
        assert all(verify(SECRET, h["x-finops-signature"], b) for h, b in receiver.on("/hold"))
        # the CLI reads the same outbox
        finops = os.path.join(os.path.dirname(sys.executable), "finops")
        table = subprocess.run([finops, "alerts", "list"], env=gw.env(), capture_output=True, text=True, timeout=30)
        assert table.returncode == 0, table.stderr
        assert all(i in table.stdout for i in ids) and "hold delivered" in table.stdout
        assert "deliveries: 2 sent, 0 failed, 0 pending" in table.stdout
        js = subprocess.run([finops, "alerts", "list", "--format", "json", "--kind", "budget"], env=gw.env(),
                            capture_output=True, text=True, timeout=30)
        assert {a["id"] for a in json.loads(js.stdout)["alerts"]} == ids

    # a restart of the whole gateway: the acknowledged alerts are not sent again; a new one is
    sent_before = len(receiver.on("/hold"))
    keys2 = keys + """
[[governance.keys]]
id = "vk-after"
secret = "after-secret-0123456789abcd"
budgets = [{amount_usd = 100, period = "month", alert_at = [0.0001]}]
"""
    with Gateway(tmp_path, config(receiver, hooks, keys2)) as gw:
        converse(client(gw, "vk-after", "after-secret-0123456789abcd"))

        def three_delivered():
            d = admin(gw, "/admin/alerts")
            ok = len(d["alerts"]) == 3 and all(x["status"] == "delivered" for a in d["alerts"] for x in a["deliveries"])
            return d if ok else None

        doc = wait_for("the new alert delivered", three_delivered)
        new = [h["x-finops-idempotency-key"] for h, _ in receiver.on("/hold")[sent_before:]]
        assert new == [a["id"] for a in doc["alerts"] if a["owner"] == "vk-after"]   # only the new one


def test_forecast_and_anomaly_alerts_from_the_request_log(tmp_path, receiver):
    hooks = f"""
[[alerts.webhooks]]
url = "{receiver.url}/ok"
secret = "{SECRET}"
name = "ok"
"""
    keys = "".join(f"""
[[governance.keys]]
id = "{k}"
secret = "{k}-secret-0123456789abcd"
""" for k in ("vk-calibrate", "vk-steady", "vk-spiky", "vk-fc")) + \
        'budgets = [{amount_usd = 1, period = "day"}]\n'          # vk-fc's
    text = config(receiver, hooks, keys).replace("forecast = false\nanomaly = false\n", """forecast = true
anomaly = true
anomaly_factor = 5.0
anomaly_min_usd = 0.05
analysis_seconds = 0.5
thresholds = []
""")
    with Gateway(tmp_path, text) as gw:
        cost = float(converse(client(gw, "vk-calibrate", "vk-calibrate-secret-0123456789abcd"))
                     ["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
        assert cost < 0.05 <= 4 * cost, cost      # one request is under the floor, four are over it
        now = time.time()
        history = [row(ts=now - d * 86400 - 600, vk="vk-steady", cost_usd=4 * cost) for d in range(1, 8)]
        history += [row(ts=now - d * 86400 - 600, vk="vk-spiky", cost_usd=cost / 100) for d in range(1, 8)]
        history.append(row(ts=now - 5, vk="vk-fc", cost_usd=10_000.0))    # a huge pace today: the forecast
        db = logdb.open_db(gw.data_dir)                                  # a second writer, as a tool would be
        try:
            insert(db, history)
        finally:
            db.close()
        steady = client(gw, "vk-steady", "vk-steady-secret-0123456789abcd")
        for _ in range(4):
            converse(steady)                      # its usual hour: 4 requests
        wait_for("vk-steady's rows in the log",
                 lambda: len([r for r in request_log(gw.data_dir)
                              if r["vk"] == "vk-steady" and r["ts"] > now - 60]) == 4)
        spiky = client(gw, "vk-spiky", "vk-spiky-secret-0123456789abcd")
        for _ in range(4):
            converse(spiky)                       # usually ~nothing at this hour
        converse(client(gw, "vk-fc", "vk-fc-secret-0123456789abcd"))

        def fired():
            doc = admin(gw, "/admin/alerts")
            kinds = {(a["kind"], a["owner"]) for a in doc["alerts"]}
            want = {("anomaly", "vk-spiky"), ("anomaly", "vk-fc"), ("forecast", "vk-fc")}
            done = want <= kinds and all(d["status"] == "delivered" for a in doc["alerts"] for d in a["deliveries"])
            return doc if done else None

        doc = wait_for("the anomaly and forecast alerts", fired)
        assert sorted((a["kind"], a["owner"]) for a in doc["alerts"]) == [
            ("anomaly", "vk-fc"), ("anomaly", "vk-spiky"), ("forecast", "vk-fc")]      # not vk-steady
        spike = [a for a in doc["alerts"] if a["owner"] == "vk-spiky"][0]
        assert spike["data"]["last_hour_usd"] == round(4 * cost, 6)
        assert spike["data"]["history_usd"] == [round(cost / 100, 6)] * 7
        fc = [a for a in doc["alerts"] if a["kind"] == "forecast"][0]
        assert fc["data"]["forecast_usd"] > fc["data"]["limit_usd"] == 1.0 > fc["data"]["spent_usd"]
        usage = admin(gw, "/admin/usage?key=vk-fc")["usage"]
        assert [u["forecast_usd"] > 1.0 for u in usage if u["kind"] == "budget"] == [True]   # the same forecast
        verify = readme_verify()
        posted = receiver.on("/ok")
        assert sorted(json.loads(b)["kind"] for _, b in posted) == ["anomaly", "anomaly", "forecast"]
        assert all(verify(SECRET, h["x-finops-signature"], b) for h, b in posted)
