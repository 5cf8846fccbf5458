"""What a webhook receives. Pure: the event's JSON, its signature, Slack's message.

    event(alert_row)                 -> dict   the JSON body (format "json")
    signed_headers(secret, id, body, now) -> headers: X-FinOps-Signature, X-FinOps-Idempotency-Key
    verify(secret, header, body, now, tolerance=300) -> bool   what a receiver runs (README "Alerts")
    slack(alert_row)                 -> dict   an incoming-webhook message: {"text", "blocks"}

The signature is HMAC-SHA256 with the webhook's secret over `timestamp + "." + body` (the raw
bytes sent), sent as `X-FinOps-Signature: t=<unix seconds>,v1=<hex>`: the timestamp is signed
too, so a receiver that refuses old timestamps cannot be replayed an old delivery; the body is
signed as bytes, so a receiver verifies before parsing. `X-FinOps-Idempotency-Key` (also the
body's `id`) is the alert's stable id: every retry, and any re-send after a restart, carries the
same one, so a receiver dedupes on it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone

SIGNATURE_HEADER = "X-FinOps-Signature"
IDEMPOTENCY_HEADER = "X-FinOps-Idempotency-Key"
EVENT_TYPE = "finops.alert"
TITLES = {"budget": "Budget threshold reached", "forecast": "Budget forecast over its limit",
          "anomaly": "Spend anomaly"}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def event(a: dict) -> dict:
    """The JSON event for an outbox alert row (keys: id, kind, level, owner, period, env,
    period_start, threshold, created_at, message, data)."""
    return {"type": EVENT_TYPE, "id": a["id"], "kind": a["kind"], "created_at": iso(a["created_at"]),
            "scope": {"level": a["level"], "owner": a["owner"], "period": a["period"], "env": a["env"]},
            "period_start": a["period_start"], "threshold": a["threshold"], "message": a["message"],
            "data": a["data"]}


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, alert_id: str, body: bytes, now: float) -> dict[str, str]:
    t = int(now)
    return {SIGNATURE_HEADER: f"t={t},v1={signature(secret, t, body)}", IDEMPOTENCY_HEADER: alert_id}


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """True when `header` (X-FinOps-Signature) signs `body` with `secret` within `tolerance` s of `now`."""
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    expected = signature(secret, t, body)
    return abs(now - t) <= tolerance and hmac.compare_digest(expected, parts.get("v1", ""))


def _money(v) -> str:
    return f"${v:,.2f}" if isinstance(v, (int, float)) else str(v)


def slack(a: dict) -> dict:
    """Slack's incoming-webhook message: `text` (the notification's fallback) and Block Kit
    `blocks`: a header, the message, the figures as fields, and the alert's id."""
    title = TITLES.get(a["kind"], "FinOps alert")
    d = a["data"]
    scope = f"{a['level']} `{a['owner']}`" + (f" (env {a['env']})" if a["env"] else "")
    figures = [("Scope", scope)]
    for k, name in (("spent_usd", "Spent"), ("limit_usd", "Limit"), ("forecast_usd", "Forecast"),
                    ("last_hour_usd", "Last hour"), ("median_usd", "Usual (median)")):
        if k in d:
            figures.append((name, _money(d[k])))
    if "resets_at" in d:
        figures.append(("Resets", d["resets_at"]))
    return {
        "text": f"{title}: {a['message']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"FinOps: {title}"[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": a["message"][:3000]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{n}*\n{v}"} for n, v in figures[:10]]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert {a['id']} · {iso(a['created_at'])}"}]},
        ],
    }
