"""The durable outbox: every alert fired, and its delivery to each webhook. SQLite in the data dir.

File: <data_dir>/alerts.sqlite (WAL). Written by the alerts actor; read by `finops alerts list`,
`/admin/alerts` and the dashboard.

    alerts        one row per event: id (the idempotency id), dedupe UNIQUE (rules.py), kind,
                  scope, period start, threshold, created_at, message, data (JSON)
    deliveries    one row per (alert, webhook name): status pending | delivered | failed,
                  attempts, next_at, last_error, delivered_at
    anomalies     the scopes with an anomaly in progress (quiet until it clears)

An alert and its deliveries are inserted in one transaction, and only when the dedupe key is new
(INSERT OR IGNORE under the UNIQUE constraint), so an event is recorded once even when detected
again each second, or by two processes at once: SQLite's write lock orders them and the second
insert is ignored. A delivery is marked delivered only after the webhook's 2xx; a crash between
the POST and the mark leaves it pending, so it is sent again with the same id (at-least-once).
"""
from __future__ import annotations

import json
import os
import sqlite3

from .rules import Alert, Delivery

FILENAME = "alerts.sqlite"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, dedupe TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, level TEXT NOT NULL,
        owner TEXT NOT NULL, period TEXT NOT NULL, env TEXT NOT NULL, period_start TEXT NOT NULL,
        threshold REAL NOT NULL, created_at REAL NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alerts_created ON alerts (created_at)",
    """CREATE TABLE IF NOT EXISTS deliveries (
        alert_id TEXT NOT NULL, webhook TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        next_at REAL NOT NULL, last_error TEXT NOT NULL, delivered_at REAL,
        PRIMARY KEY (alert_id, webhook))""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_at)",
    "CREATE TABLE IF NOT EXISTS anomalies (scope TEXT PRIMARY KEY, alert_id TEXT NOT NULL, since REAL NOT NULL)",
)
ALERT_COLUMNS = ("id", "kind", "level", "owner", "period", "env", "period_start", "threshold", "created_at",
                 "message", "data")


def path_in(data_dir: str) -> str:
    return os.path.join(data_dir, FILENAME)


def open_db(data_dir: str, *, readonly: bool = False) -> sqlite3.Connection:
    """The outbox (created by the writer; a reader of a missing one raises FileNotFoundError)."""
    path = path_in(data_dir)
    if readonly:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no alerts yet at {path}")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    os.makedirs(data_dir, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None)     # explicit transactions
    db.execute("PRAGMA journal_mode=WAL")
    for stmt in SCHEMA:
        db.execute(stmt)
    return db


def record(db: sqlite3.Connection, alert: Alert, webhooks: list[str], now: float) -> bool:
    """Insert `alert` with a pending delivery per webhook, unless its event is already there.
    True when it was new."""
    db.execute("BEGIN IMMEDIATE")
    try:
        cur = db.execute(
            "INSERT OR IGNORE INTO alerts (id, dedupe, kind, level, owner, period, env, period_start, threshold, "
            "created_at, message, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (alert.id, alert.dedupe, alert.kind, alert.level, alert.owner, alert.period, alert.env,
             alert.period_start, alert.threshold, now, alert.message, json.dumps(alert.data, sort_keys=True)))
        new = cur.rowcount == 1
        if new:
            db.executemany("INSERT OR IGNORE INTO deliveries (alert_id, webhook, status, attempts, next_at, "
                           "last_error, delivered_at) VALUES (?, ?, 'pending', 0, ?, '', NULL)",
                           [(alert.id, w, now) for w in webhooks])
        db.execute("COMMIT")
        return new
    except BaseException:
        db.execute("ROLLBACK")
        raise


def anomaly_active(db: sqlite3.Connection) -> dict[str, str]:
    """{scope "level|owner": alert id} of the anomalies in progress."""
    return dict(db.execute("SELECT scope, alert_id FROM anomalies"))


def start_anomaly(db: sqlite3.Connection, scope: str, alert: Alert, webhooks: list[str], now: float) -> bool:
    db.execute("INSERT OR REPLACE INTO anomalies (scope, alert_id, since) VALUES (?, ?, ?)", (scope, alert.id, now))
    return record(db, alert, webhooks, now)


def clear_anomaly(db: sqlite3.Connection, scope: str) -> None:
    db.execute("DELETE FROM anomalies WHERE scope = ?", (scope,))


def _alert_dict(row) -> dict:
    d = dict(zip(ALERT_COLUMNS, row))
    d["data"] = json.loads(d["data"])
    return d


def due(db: sqlite3.Connection, now: float, limit: int = 100) -> list[tuple[dict, str, Delivery]]:
    """[(alert, webhook, delivery)] pending and due at `now`, oldest first."""
    cols = ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
    rows = db.execute(
        f"SELECT {cols}, d.webhook, d.status, d.attempts, d.next_at, d.last_error, d.delivered_at "
        "FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.status = 'pending' AND d.next_at <= ? "
        "ORDER BY d.next_at, a.created_at LIMIT ?", (now, limit)).fetchall()
    n = len(ALERT_COLUMNS)
    return [(_alert_dict(r[:n]), r[n], Delivery(*r[n + 1:])) for r in rows]


def mark(db: sqlite3.Connection, alert_id: str, webhook: str, d: Delivery) -> None:
    db.execute("UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, delivered_at = ? "
               "WHERE alert_id = ? AND webhook = ?",
               (d.status, d.attempts, d.next_at, d.last_error[:500], d.delivered_at, alert_id, webhook))


def history(db: sqlite3.Connection, limit: int = 50, kind: str | None = None) -> list[dict]:
    """The latest alerts, newest first, each with its deliveries."""
    cols = ", ".join(ALERT_COLUMNS)
    where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
    out = [_alert_dict(r) for r in db.execute(
        f"SELECT {cols} FROM alerts {where} ORDER BY created_at DESC, id LIMIT ?", [*params, limit])]
    for a in out:
        a["deliveries"] = [{"webhook": w, "status": s, "attempts": n, "next_at": t, "last_error": e,
                            "delivered_at": at} for w, s, n, t, e, at in db.execute(
            "SELECT webhook, status, attempts, next_at, last_error, delivered_at FROM deliveries "
            "WHERE alert_id = ? ORDER BY webhook", (a["id"],))]
    return out


def counts(db: sqlite3.Connection) -> dict:
    """{"sent": {kind: n}, "failed": {kind: n}, "pending": n}: deliveries acknowledged (2xx),
    given up after `retry_seconds`, and still being tried."""
    out: dict = {"sent": {}, "failed": {}, "pending": 0}
    for kind, status, n in db.execute("SELECT a.kind, d.status, COUNT(*) FROM deliveries d JOIN alerts a "
                                      "ON a.id = d.alert_id GROUP BY 1, 2"):
        if status == "delivered":
            out["sent"][kind] = n
        elif status == "failed":
            out["failed"][kind] = n
        else:
            out["pending"] += n
    return out


def report(data_dir: str, limit: int = 50, kind: str | None = None) -> dict:
    """{"alerts": history, "counts": counts} from the outbox in `data_dir`, read-only (empty when
    no alert was ever recorded). What `finops alerts list`, /admin/alerts and the dashboard show."""
    try:
        db = open_db(data_dir, readonly=True)
    except FileNotFoundError:
        return {"alerts": [], "counts": {"sent": {}, "failed": {}, "pending": 0}}
    try:
        return {"alerts": history(db, limit, kind), "counts": counts(db)}
    except sqlite3.OperationalError:          # created but not initialised yet
        return {"alerts": [], "counts": {"sent": {}, "failed": {}, "pending": 0}}
    finally:
        db.close()
