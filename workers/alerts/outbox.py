"""The durable outbox: every alert fired, and its delivery to each webhook. One interface, two
backends, chosen by `open_outbox(cfg)`:

* **SQLite** (the embedded default, one node): `<data_dir>/alerts.sqlite` (WAL), `SqliteOutbox`
  below. The node's alerts actor is its only sender.
* **PostgreSQL** (a fleet: `governance.store = "postgres"` or `governance.ledger = "redis"`, on
  `governance.postgres_url`): `PgOutbox` in pg_outbox.py, one outbox shared by every node, so an
  alert is recorded and delivered once fleet-wide, whichever nodes detect it.

Written by the alerts actor; read by `finops alerts list`, `/admin/alerts` and the dashboard
(`report(cfg)`, on any node).

    alerts        one row per event: id (the idempotency id), dedupe UNIQUE (rules.py), kind,
                  scope, period start, threshold, created_at, message, data (JSON)
    deliveries    one row per (alert, webhook name): status pending | delivered | failed,
                  attempts, next_at, last_error, delivered_at (PostgreSQL also: the claim, below)
    anomalies     the scopes with an anomaly in progress (quiet until it clears)

The interface (both backends; `now` is the caller's clock, epoch seconds):

    record(alert, webhooks, now) -> bool       insert the alert and a pending delivery per webhook,
                                               unless its dedupe key is there; True when new
    anomaly_active() -> {scope: alert id}
    start_anomaly(scope, alert, webhooks, now) -> bool    mark the episode and record its alert
    clear_anomaly(scope)
    claim(now, node, lease_seconds, limit) -> [Claim]     pending deliveries due at `now`, oldest
                                               first, now this caller's to send for `lease_seconds`
    mark(claim, delivery) -> bool              the outcome of a claimed delivery; False when the
                                               claim was lost (its lease expired, another took it)
    history(limit, kind) -> [alert dict with "deliveries"]      newest first
    counts(node=None) -> {"sent": {kind: n}, "failed": {kind: n}, "pending": n}
    close()

An alert and its deliveries are inserted at once, and only when the dedupe key is new (a UNIQUE
constraint: INSERT OR IGNORE here, ON CONFLICT DO NOTHING on PostgreSQL), so an event is
recorded once even when detected again each second, or by two processes (or nodes) at once. A
delivery is marked delivered only after the webhook's 2xx; a crash between the POST and the
mark leaves it pending, so it is sent again with the same id (at-least-once).

Here (SQLite) `claim` is what is due: one actor per data dir sends, so there is no lease and
`mark` always applies; `node` is ignored (the outbox is one node's), and so is `counts(node)`.
"""
from __future__ import annotations

import json
import os
import sqlite3
from typing import NamedTuple

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
DELIVERY_COLUMNS = ("webhook", "status", "attempts", "next_at", "last_error", "delivered_at")


class Claim(NamedTuple):
    """A delivery this caller may send: the alert, the webhook's name, the delivery's state, and
    the token `mark` presents (PostgreSQL: the claim's number, which a later claim changes)."""
    alert: dict
    webhook: str
    delivery: Delivery
    token: int = 0


def empty() -> dict:
    return {"alerts": [], "counts": {"sent": {}, "failed": {}, "pending": 0}}


def shared(cfg) -> bool:
    """The outbox is the fleet's, on PostgreSQL (governance on PostgreSQL, or the ledger on Redis,
    which needs postgres_url), rather than this node's SQLite file."""
    g = cfg.governance
    return bool(g.postgres_url) and (g.store == "postgres" or g.ledger == "redis")


def open_outbox(cfg, *, reader: bool = False):
    """The outbox `cfg` says: PgOutbox (connected on first use; StoreError/StoreUnavailable from
    its calls) or SqliteOutbox. `reader`: for reports, never creates or migrates anything (a
    missing SQLite file raises FileNotFoundError; missing PostgreSQL tables read as empty)."""
    if shared(cfg):
        from .pg_outbox import PgOutbox
        return PgOutbox(cfg.governance.postgres_url, reader=reader)
    return SqliteOutbox.open(cfg.server.data_dir, readonly=reader)


def describe(cfg) -> str:
    """Where the outbox is, for messages (the PostgreSQL URL without its password)."""
    if shared(cfg):
        from finops.workers.governance.pg_schema import redact
        return f"PostgreSQL {redact(cfg.governance.postgres_url)}"
    return path_in(cfg.server.data_dir)


def report(cfg, limit: int = 50, kind: str | None = None) -> dict:
    """{"alerts": history, "counts": counts} from the outbox `cfg` says (the fleet's on PostgreSQL,
    from any node), read-only; empty when no alert was ever recorded. What `finops alerts list`,
    /admin/alerts and the dashboard show. StoreUnavailable when PostgreSQL cannot be reached."""
    try:
        box = open_outbox(cfg, reader=True)
    except FileNotFoundError:
        return empty()
    try:
        return {"alerts": box.history(limit, kind), "counts": box.counts()}
    except sqlite3.OperationalError:          # created but not initialised yet
        return empty()
    finally:
        box.close()


def path_in(data_dir: str) -> str:
    return os.path.join(data_dir, FILENAME)


def alert_dict(row) -> dict:
    d = dict(zip(ALERT_COLUMNS, row))
    d["data"] = json.loads(d["data"])
    return d


def alert_values(alert: Alert, now: float) -> tuple:
    """The alerts row of `alert` (id, dedupe, then ALERT_COLUMNS' order after id)."""
    return (alert.id, alert.dedupe, alert.kind, alert.level, alert.owner, alert.period, alert.env,
            alert.period_start, alert.threshold, now, alert.message, json.dumps(alert.data, sort_keys=True))


def counts_of(rows) -> dict:
    """counts() from rows of (kind, status, n)."""
    out: dict = {"sent": {}, "failed": {}, "pending": 0}
    for kind, status, n in rows:
        if status == "delivered":
            out["sent"][kind] = n
        elif status == "failed":
            out["failed"][kind] = n
        else:
            out["pending"] += n
    return out


class SqliteOutbox:
    """The outbox of one node, in its data dir (see the module doc)."""

    def __init__(self, db: sqlite3.Connection, path: str):
        self.db, self.path = db, path

    @classmethod
    def open(cls, data_dir: str, *, readonly: bool = False) -> "SqliteOutbox":
        """The outbox (created by the writer; a reader of a missing one raises FileNotFoundError)."""
        path = path_in(data_dir)
        if readonly:
            if not os.path.exists(path):
                raise FileNotFoundError(f"no alerts yet at {path}")
            return cls(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5), path)
        os.makedirs(data_dir, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        db = sqlite3.connect(path, timeout=10, isolation_level=None)     # explicit transactions
        db.execute("PRAGMA journal_mode=WAL")
        for stmt in SCHEMA:
            db.execute(stmt)
        return cls(db, path)

    def close(self) -> None:
        self.db.close()

    def record(self, alert: Alert, webhooks: list[str], now: float) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "INSERT OR IGNORE INTO alerts (id, dedupe, kind, level, owner, period, env, period_start, threshold, "
                "created_at, message, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", alert_values(alert, now))
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

    def anomaly_active(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT scope, alert_id FROM anomalies"))

    def start_anomaly(self, scope: str, alert: Alert, webhooks: list[str], now: float) -> bool:
        self.db.execute("INSERT OR REPLACE INTO anomalies (scope, alert_id, since) VALUES (?, ?, ?)",
                        (scope, alert.id, now))
        return self.record(alert, webhooks, now)

    def clear_anomaly(self, scope: str) -> None:
        self.db.execute("DELETE FROM anomalies WHERE scope = ?", (scope,))

    def claim(self, now: float, node: str = "", lease_seconds: float = 0.0, limit: int = 100) -> list[Claim]:
        cols = ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
        rows = self.db.execute(
            f"SELECT {cols}, d.webhook, d.status, d.attempts, d.next_at, d.last_error, d.delivered_at "
            "FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.status = 'pending' AND d.next_at <= ? "
            "ORDER BY d.next_at, a.created_at LIMIT ?", (now, limit)).fetchall()
        n = len(ALERT_COLUMNS)
        return [Claim(alert_dict(r[:n]), r[n], Delivery(*r[n + 1:])) for r in rows]

    def mark(self, claim: Claim, d: Delivery) -> bool:
        self.db.execute("UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, "
                        "delivered_at = ? WHERE alert_id = ? AND webhook = ?",
                        (d.status, d.attempts, d.next_at, d.last_error[:500], d.delivered_at, claim.alert["id"],
                         claim.webhook))
        return True

    def history(self, limit: int = 50, kind: str | None = None) -> list[dict]:
        cols = ", ".join(ALERT_COLUMNS)
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        out = [alert_dict(r) for r in self.db.execute(
            f"SELECT {cols} FROM alerts {where} ORDER BY created_at DESC, id LIMIT ?", [*params, limit])]
        for a in out:
            a["deliveries"] = [dict(zip(DELIVERY_COLUMNS, r), node="") for r in self.db.execute(
                f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries WHERE alert_id = ? ORDER BY webhook",
                (a["id"],))]
        return out

    def counts(self, node: str | None = None) -> dict:
        return counts_of(self.db.execute("SELECT a.kind, d.status, COUNT(*) FROM deliveries d JOIN alerts a "
                                         "ON a.id = d.alert_id GROUP BY 1, 2"))
