"""Alerts' pure cores and the outbox: crossings, once per period, the anomaly rule on synthetic
series, the signature (with the README's own snippet), Slack's payload, and the delivery state
machine driven by a controllable clock through the actor with a fake webhook."""
from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from finops.shared import config as configmod
from finops.workers.alerts import outbox, payload, rules
from finops.workers.alerts.actor import AlertsActor
from finops.workers.alerts.spend import same_hour_spend
from finops.workers.observe import logdb
from finops.workers.observe.forecast import forecast
from tests.helpers.logrows import insert, row

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec-0123456789abcdef"
DAY, HOUR = 86400.0, 3600.0
NOW = 1_800_000_000.0


def budget(spent, limit=10.0, start="2026-12-01T00:00:00Z", level="key", owner="vk-1", period="month", env=""):
    return {"level": level, "owner": owner, "kind": "budget", "period": period, "env": env,
            "label": f"{level} {owner!r} budget", "limit_usd": limit, "spent_usd": spent, "reserved_usd": 0.0,
            "remaining_usd": limit - spent, "period_start": start, "resets_at": "2027-01-01T00:00:00Z"}


DEFAULT = lambda u: (50, 80, 100)   # noqa: E731


def report(data_dir, limit=50, kind=None) -> dict:
    """What /admin/alerts shows, from the SQLite outbox in `data_dir`."""
    cfg = configmod.build({}, "test", {"FINOPS_DATA_DIR": str(data_dir)})
    cfg.server.data_dir = str(data_dir)
    return outbox.report(cfg, limit, kind)


# --- crossings ---------------------------------------------------------------------------------

def test_each_threshold_reached_is_one_alert_and_none_before():
    assert rules.budget_alerts([budget(4.99)], DEFAULT) == []
    assert [a.threshold for a in rules.budget_alerts([budget(5.0)], DEFAULT)] == [50]
    assert [a.threshold for a in rules.budget_alerts([budget(8.5)], DEFAULT)] == [50, 80]
    got = rules.budget_alerts([budget(12.0)], DEFAULT)
    assert [a.threshold for a in got] == [50, 80, 100]
    assert len({a.id for a in got}) == 3
    assert "100 % threshold" in got[-1].message and got[-1].data["percent"] == 120.0


def test_the_same_crossing_has_the_same_id_and_a_new_period_a_new_one():
    a = rules.budget_alerts([budget(6.0)], DEFAULT)[0]
    b = rules.budget_alerts([budget(9.9)], DEFAULT)[0]          # later in the same period
    c = rules.budget_alerts([budget(6.0, start="2027-01-01T00:00:00Z")], DEFAULT)[0]
    assert a.id == b.id and a.dedupe == b.dedupe
    assert c.id != a.id
    other_env = rules.budget_alerts([budget(6.0, env="dev")], DEFAULT)[0]
    assert other_env.id != a.id


def test_per_budget_thresholds_and_zero_budgets():
    own = lambda u: (25,) if u["owner"] == "vk-own" else (50, 80, 100)   # noqa: E731
    got = rules.budget_alerts([budget(3.0, owner="vk-own"), budget(3.0), budget(0.0, limit=0.0)], own)
    assert [(a.owner, a.threshold) for a in got] == [("vk-own", 25)]
    assert rules.budget_alerts([{"kind": "requests", "limit": 5, "used": 9}], DEFAULT) == []


def test_forecast_alert_when_projected_past_the_limit_and_not_yet_spent():
    start, end = NOW - 10 * DAY, NOW + 20 * DAY
    hot = forecast([(NOW - HOUR * i, 0.2) for i in range(48)], start, end, NOW, limit=10.0, spent=9.6)
    cold = forecast([(NOW - 9 * DAY, 0.5)], start, end, NOW, limit=10.0, spent=0.5)
    got = rules.forecast_alerts([budget(9.6), budget(0.5, owner="vk-2"), budget(11.0, owner="vk-3")],
                                [hot, cold, hot])
    assert [a.owner for a in got] == ["vk-1"]           # vk-2 will not pass; vk-3 already did
    assert got[0].kind == "forecast" and got[0].data["forecast_usd"] > 10.0
    assert rules.forecast_alerts([budget(9.6)], [hot])[0].id == got[0].id


# --- the anomaly rule --------------------------------------------------------------------------

def test_anomaly_fires_on_a_spike_not_on_a_steady_key_and_respects_the_floor():
    steady = [2.0, 2.2, 1.9, 2.1, 2.0, 1.8, 2.3]
    assert rules.anomaly(2.4, steady, factor=10, floor=1, active=False) is None
    assert rules.anomaly(30.0, steady, factor=10, floor=1, active=False) == "fire"
    tiny = [0.001] * 7
    assert rules.anomaly(0.5, tiny, factor=10, floor=1, active=False) is None      # 500x but under the floor
    assert rules.anomaly(1.5, [0.0] * 7, factor=10, floor=1, active=False) == "fire"   # first busy hour


def test_anomaly_is_one_alert_then_quiet_until_it_normalises():
    history = [1.0] * 7
    series = [0.9, 25.0, 40.0, 30.0, 1.1, 0.8, 50.0]
    active, events = False, []
    for spend in series:
        d = rules.anomaly(spend, history, factor=10, floor=1, active=active)
        events.append(d)
        active = {"fire": True, "clear": False}.get(d, active)
    assert events == [None, "fire", None, None, "clear", None, "fire"]


def test_the_median_ignores_one_odd_day():
    history = [1.0, 1.0, 1.0, 200.0, 1.0, 1.0, 1.0]      # one busy day last week
    assert rules.anomaly(20.0, history, factor=10, floor=1, active=False) == "fire"


def test_same_hour_spend_reads_the_eight_windows(tmp_path):
    db = logdb.open_db(str(tmp_path))
    rows = [row(ts=NOW - 60, vk="vk-1", team="t", cost_usd=3.0),
            row(ts=NOW - HOUR + 1, vk="vk-1", team="t", cost_usd=0.5),
            row(ts=NOW - HOUR - 1, vk="vk-1", team="t", cost_usd=100.0),      # just before the last hour
            row(ts=NOW - 2 * HOUR, vk="vk-2", team="t", cost_usd=7.0)]        # outside every window
    for d in range(1, 8):
        rows.append(row(ts=NOW - d * DAY - 10, vk="vk-1", team="t", cost_usd=0.1 * d))
    rows.append(row(ts=NOW - 8 * DAY - 10, vk="vk-1", team="t", cost_usd=9.0))   # 8 days ago: not read
    insert(db, rows)
    got = same_hour_spend(db, NOW)
    assert got[("key", "vk-1")] == (3.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert got[("team", "t")] == got[("key", "vk-1")]
    assert ("key", "vk-2") not in got


# --- signature and payloads --------------------------------------------------------------------

def readme_verify():
    """The verification snippet as the README documents it."""
    text = README.read_text()
    code = re.search(r"\*\*Verifying a delivery\*\*.*?```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(code, ns)
    return ns["verify"]


def test_the_signature_verifies_with_the_documented_snippet():
    import time
    alert = {"id": "al_x", "kind": "budget", "level": "key", "owner": "vk-1", "period": "day", "env": "",
             "period_start": "2026-12-06T00:00:00Z", "threshold": 80.0, "created_at": time.time(),
             "message": "m", "data": {"spent_usd": 8.0}}
    body = payload.encode(payload.event(alert))
    headers = payload.signed_headers(SECRET, alert["id"], body, time.time())
    verify = readme_verify()
    sig = headers[payload.SIGNATURE_HEADER]
    assert verify(SECRET, sig, body)
    assert payload.verify(SECRET, sig, body, time.time())
    assert not verify(SECRET, sig, body.replace(b"8.0", b"9.0"))       # a changed body
    assert not verify("another-secret-0123456", sig, body)
    old = payload.signed_headers(SECRET, alert["id"], body, time.time() - 3600)[payload.SIGNATURE_HEADER]
    assert not verify(SECRET, old, body)                              # a replay of an old delivery
    assert not verify(SECRET, "garbage", body)
    assert headers[payload.IDEMPOTENCY_HEADER] == "al_x" == json.loads(body)["id"]


def test_slack_payload_shape():
    a = rules.budget_alerts([budget(8.5)], DEFAULT)[-1]
    row_ = {"id": a.id, "kind": a.kind, "level": a.level, "owner": a.owner, "period": a.period, "env": "prod",
            "period_start": a.period_start, "threshold": a.threshold, "created_at": NOW, "message": a.message,
            "data": a.data}
    msg = payload.slack(row_)
    assert set(msg) == {"text", "blocks"} and a.message in msg["text"]
    types = [b["type"] for b in msg["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert msg["blocks"][0]["text"]["type"] == "plain_text" and len(msg["blocks"][0]["text"]["text"]) <= 150
    assert msg["blocks"][1]["text"] == {"type": "mrkdwn", "text": a.message}
    fields = msg["blocks"][2]["fields"]
    assert 1 <= len(fields) <= 10 and all(f["type"] == "mrkdwn" for f in fields)
    assert any("env prod" in f["text"] for f in fields) and any("$8.50" in f["text"] for f in fields)
    assert a.id in msg["blocks"][3]["elements"][0]["text"]


# --- the outbox --------------------------------------------------------------------------------

def test_outbox_records_an_event_once_even_from_two_processes(tmp_path):
    alerts = rules.budget_alerts([budget(9.0)], DEFAULT)
    results = []

    def fire():
        box = outbox.SqliteOutbox.open(str(tmp_path))     # a connection of its own, as another process has
        for a in alerts * 5:
            results.append(box.record(a, ["hook"], NOW))
        box.close()

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 2                    # 50 and 80, once each
    doc = report(tmp_path)
    assert sorted(a["threshold"] for a in doc["alerts"]) == [50, 80]
    assert all(len(a["deliveries"]) == 1 and a["deliveries"][0]["status"] == "pending" for a in doc["alerts"])
    assert doc["counts"] == {"sent": {}, "failed": {}, "pending": 2}


def test_delivery_state_machine():
    d = rules.Delivery(next_at=0.0)
    t0 = 1000.0
    d1 = rules.after_attempt(d, False, "HTTP 500", t0, created_at=t0, retry_seconds=60, backoff=1)
    assert (d1.status, d1.attempts, d1.next_at) == ("pending", 1, t0 + 1)
    d2 = rules.after_attempt(d1, False, "HTTP 500", t0 + 1, created_at=t0, retry_seconds=60, backoff=1)
    assert (d2.status, d2.attempts, d2.next_at) == ("pending", 2, t0 + 3)
    d3 = rules.after_attempt(d2, True, "", t0 + 3, created_at=t0, retry_seconds=60, backoff=1)
    assert (d3.status, d3.attempts, d3.delivered_at, d3.last_error) == ("delivered", 3, t0 + 3, "")
    late = rules.after_attempt(rules.Delivery(attempts=9), False, "timeout", t0 + 50, created_at=t0,
                               retry_seconds=60, backoff=1)
    assert late.status == "pending" and late.next_at == t0 + 60      # the last try is at the deadline
    gone = rules.after_attempt(late, False, "timeout", t0 + 60, created_at=t0, retry_seconds=60, backoff=1)
    assert (gone.status, gone.attempts, gone.last_error) == ("failed", 11, "timeout")
    big = rules.after_attempt(rules.Delivery(attempts=30), False, "x", t0, created_at=t0, retry_seconds=1e9,
                              backoff=1)
    assert big.next_at == t0 + rules.MAX_BACKOFF


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_actor(tmp_path, clock, post, **alerts):
    cfg = configmod.build({"alerts": {"webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": SECRET,
                                                    "name": "hook"},
                                                   {"url": "http://127.0.0.1:9/slack", "format": "slack",
                                                    "name": "slack"}], **alerts},
                           "governance": {"keys": [{"id": "vk-own", "secret": "0123456789abcdef0",
                                                    "budgets": [{"amount_usd": 10, "period": "month",
                                                                 "alert_at": [30]}]}]}},
                          "test", {"FINOPS_DATA_DIR": str(tmp_path)})
    cfg.server.data_dir = str(tmp_path)
    return AlertsActor(cfg, clock=clock, post=post)


def test_actor_fires_once_and_retries_with_backoff_on_a_controllable_clock(tmp_path):
    clock = Clock(NOW)
    sent = []
    tries: dict[str, int] = {}

    def post(url, body, headers, timeout):        # the json hook fails twice per alert, then recovers
        name, aid = url.rsplit("/", 1)[1], headers[payload.IDEMPOTENCY_HEADER]
        sent.append((name, aid, body, headers))
        if name == "slack":
            return 200, ""
        tries[aid] = tries.get(aid, 0) + 1
        return (500 if tries[aid] <= 2 else 204), ""

    actor = make_actor(tmp_path, clock, post, backoff_seconds=2.0, retry_seconds=100.0)
    usage = [budget(8.0), budget(3.5, owner="vk-own")]
    actor.ledger_usage = lambda: usage
    try:
        actor.tick()                     # vk-1: 50 and 80; vk-own: 30 (its own alert_at)
        ids = {a["id"] for a in report(tmp_path)["alerts"]}
        assert len(ids) == 3
        assert len(sent) == 6            # each alert to each webhook
        for _ in range(3):
            actor.tick()                 # the same second: nothing is due, nothing fires again
        assert len(sent) == 6
        clock.t += 2                     # the first retry is due (backoff 2 s)
        actor.tick()
        assert len(sent) == 9
        clock.t += 3                     # the second is 4 s after the first retry: not yet
        actor.tick()
        assert len(sent) == 9
        clock.t += 1
        actor.tick()
        assert len(sent) == 12
        doc = report(tmp_path)
        assert {a["id"] for a in doc["alerts"]} == ids
        hook = [d for a in doc["alerts"] for d in a["deliveries"] if d["webhook"] == "hook"]
        assert [(d["status"], d["attempts"]) for d in hook] == [("delivered", 3)] * 3
        assert tries == {i: 3 for i in ids}                          # the same id every time
        for name, _, body, headers in sent:
            if name == "hook":
                assert payload.verify(SECRET, headers[payload.SIGNATURE_HEADER], body, clock.t)
        assert doc["counts"] == {"sent": {"budget": 6}, "failed": {}, "pending": 0}
        counts = json.loads((tmp_path / "run" / "alerts.json").read_text())
        assert counts["sent"] == {"budget": 6}
        usage[0] = budget(9.0)          # more spend, no new threshold: nothing new
        clock.t += 10
        actor.tick()
        assert len(report(tmp_path)["alerts"]) == 3 and len(sent) == 12
    finally:
        actor.close()


def test_actor_gives_up_after_retry_seconds_and_a_new_actor_resends_the_same_id(tmp_path):
    clock = Clock(NOW)
    sent = []

    def down(url, body, headers, timeout):
        sent.append(headers[payload.IDEMPOTENCY_HEADER])
        return 0, "ConnectionRefusedError: [Errno 111]"

    actor = make_actor(tmp_path, clock, down, backoff_seconds=1.0, retry_seconds=5.0)
    actor.webhooks.pop("slack")          # one webhook for this test
    actor.ledger_usage = lambda: [budget(5.0)]
    actor.tick()
    first = sent[0]
    actor.close()                        # a restart: the delivery is still pending on disk
    actor = make_actor(tmp_path, clock, down, backoff_seconds=1.0, retry_seconds=5.0)
    actor.ledger_usage = lambda: [budget(5.0)]
    try:
        for _ in range(10):
            clock.t += 1
            actor.tick()
        assert set(sent) == {first}
        doc = report(tmp_path)
        hook = [d for d in doc["alerts"][0]["deliveries"] if d["webhook"] == "hook"][0]
        assert hook["status"] == "failed" and "ConnectionRefused" in hook["last_error"]
        assert doc["counts"]["failed"] == {"budget": 1}
    finally:
        actor.close()


def test_actor_anomaly_fires_once_per_episode(tmp_path):
    clock = Clock(NOW)
    actor = make_actor(tmp_path, clock, lambda *a: (200, ""), anomaly_factor=5.0, anomaly_min_usd=1.0)
    try:
        quiet = {("key", "vk-1"): (1.0, [1.0] * 7)}
        spike = {("key", "vk-1"): (50.0, [1.0] * 7), ("key", "vk-steady"): (2.0, [2.0] * 7)}
        actor.anomalies(quiet, NOW)
        actor.anomalies(spike, NOW + 60)
        actor.anomalies(spike, NOW + 3600)       # still anomalous an hour later: quiet
        assert [a["owner"] for a in report(tmp_path, kind="anomaly")["alerts"]] == ["vk-1"]
        actor.anomalies(quiet, NOW + 7200)       # back to normal
        actor.anomalies(spike, NOW + 3 * 3600)   # a new episode
        got = report(tmp_path, kind="anomaly")["alerts"]
        assert [a["owner"] for a in got] == ["vk-1", "vk-1"] and got[0]["id"] != got[1]["id"]
    finally:
        actor.close()


def test_config_keys_are_checked():
    with pytest.raises(configmod.ConfigError, match=r"alerts.webhooks\[0\].secret"):
        configmod.build({"alerts": {"webhooks": [{"url": "http://x/y"}]}}, "t")
    with pytest.raises(configmod.ConfigError, match=r"alerts.thresholds"):
        configmod.build({"alerts": {"thresholds": [0]}}, "t")
    with pytest.raises(configmod.ConfigError, match=r"budgets\[0\].alert_at"):
        configmod.build({"governance": {"customers": [{"id": "acme", "budgets": [
            {"amount_usd": 1, "period": "day", "alert_at": [2000]}]}]}}, "t")
    with pytest.raises(configmod.ConfigError, match="unknown key"):
        configmod.build({"alerts": {"treshold": [5]}}, "t")
    cfg = configmod.build({"alerts": {"webhooks": [{"url": "https://hooks.slack.com/services/T/B/x",
                                                    "format": "slack"}]}}, "t")
    assert cfg.alerts.webhooks[0].name == "hooks.slack.com" and cfg.alerts.thresholds == [50, 80, 100]


def test_a_fleets_webhook_timeout_must_end_within_its_lease():
    slow = {"webhooks": [{"url": "https://hooks.slack.com/services/T/B/x", "format": "slack",
                          "timeout_seconds": 90}]}
    pg = {"store": "postgres", "postgres_url": "postgresql://u:secret@127.0.0.1:5432/finops"}
    with pytest.raises(configmod.ConfigError, match=r"alerts.webhooks\[0\].timeout_seconds: 90 s is not under "
                                                     r"alerts.lease_seconds \(60 s\)"):
        configmod.build({"alerts": slow, "governance": pg}, "t")
    assert configmod.build({"alerts": {**slow, "lease_seconds": 120}, "governance": pg}, "t").alerts.lease_seconds == 120
    assert configmod.build({"alerts": slow}, "t").alerts.webhooks[0].timeout_seconds == 90    # one node: no lease


def test_budget_alert_at_survives_the_store_and_old_rows_read_as_before():
    from finops.shared.governance import Budget
    from finops.workers.governance.store import budgets_from_json, budgets_to_json
    b = (Budget(10, "day"), Budget(5, "month", "dev", alert_at=(25.0, 90.0)))
    assert budgets_to_json(b)[0] == {"amount_usd": 10, "period": "day", "env": ""}     # unchanged shape
    assert budgets_from_json(json.dumps(budgets_to_json(b))) == b
    assert budgets_from_json('[{"amount_usd": 1, "period": "day"}]') == (Budget(1.0, "day"),)
