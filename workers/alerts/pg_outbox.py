"""The alerts outbox on PostgreSQL: one outbox for a fleet (outbox.py has the interface and the
SQLite backend). Used when the gateway's governance is on PostgreSQL (`governance.store =
"postgres"`, or `governance.ledger = "redis"`, which needs it), on `governance.postgres_url`.

Every node's alerts actor detects the same events (the counters are the fleet's, on Redis) and
records them here: the dedupe key is UNIQUE and the insert is `ON CONFLICT DO NOTHING`, so an
event is one row fleet-wide, whichever nodes detect it and however often. Its deliveries are then
sent by one node at a time:

* **Claims with a lease.** `claim(now, node, lease_seconds)` takes pending deliveries that are
  due and not leased (`lease_until <= now`) with `SELECT ... FOR UPDATE SKIP LOCKED`, and in the
  same statement sets `lease_until = now + lease_seconds`, `node` (the claimer) and bumps `claim`
  (a counter: the claim's token). Concurrent claimers skip each other's locked rows and, once a
  claim is committed, see the lease: they get disjoint deliveries. The lease is committed at
  once, so the POST happens outside any transaction; a node that dies while it holds a delivery
  only delays it: when the lease expires another node claims it and sends it again with the same
  idempotency id (at least once, as on one node).
* **Fenced marks.** `mark(claim, delivery)` writes the outcome only `WHERE claim = <its token>`:
  a node whose lease expired while it waited on a slow receiver (and another node took the
  delivery over) writes nothing, so a late "failed, retry later" cannot undo the other's
  "delivered". The mark clears the lease (a retry is claimable when it is due).
* **Anomaly episodes** (`finops_alert_anomalies`) are shared too: the node whose insert of the
  scope wins records the episode's alert, in the same statement.

Clocks: `now` is the caller's (the actors' clocks, as for `next_at`); nodes run NTP, and a lease
(`[alerts] lease_seconds`, 60 s by default) dwarfs their skew.

Statements go through `pg_schema.Link` (one connection, made again when found dead; the password
never in a message) and raise StoreUnavailable when PostgreSQL cannot be reached (the actor keeps
what it has and tries again; nothing is lost: an unreachable claim sends nothing, an unwritten
mark is kept and written later, an unrecorded alert is kept in memory and recorded later) or
StoreError when it refuses. Every statement is one transaction. Record, anomaly start and mark
are idempotent, so `Link.run` may send them again after a lost connection; a claim sent again
may leave the first attempt's deliveries leased until their lease expires (a delay, not a loss).

The tables are the outbox's own schema (`SCHEMA`: its version in `finops_alerts_schema_version`,
migrated by `pg_schema.migrate` under its own advisory lock), in the governance database.
"""
from __future__ import annotations

from finops.workers.governance import pg_schema

from .outbox import ALERT_COLUMNS, DELIVERY_COLUMNS, Claim, alert_dict, alert_values, counts_of
from .rules import Alert, Delivery

ALERTS, DELIVERIES, ANOMALIES = "finops_alerts", "finops_alert_deliveries", "finops_alert_anomalies"

# MIGRATIONS[i] takes the outbox's schema from version i to i + 1. Append only.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        f"""CREATE TABLE {ALERTS} (
            id           text PRIMARY KEY,                -- the idempotency id (a hash of dedupe)
            dedupe       text NOT NULL UNIQUE,            -- what makes it one event (rules.py)
            kind         text NOT NULL,
            level        text NOT NULL,
            owner        text NOT NULL,
            period       text NOT NULL,
            env          text NOT NULL,
            period_start text NOT NULL,
            threshold    double precision NOT NULL,
            created_at   double precision NOT NULL,       -- epoch seconds
            message      text NOT NULL,
            data         text NOT NULL                    -- JSON
        )""",
        f"CREATE INDEX {ALERTS}_created ON {ALERTS} (created_at)",
        f"""CREATE TABLE {DELIVERIES} (
            alert_id     text NOT NULL REFERENCES {ALERTS} (id) ON DELETE CASCADE,
            webhook      text NOT NULL,                   -- [[alerts.webhooks]] name
            status       text NOT NULL,                   -- pending | delivered | failed
            attempts     integer NOT NULL DEFAULT 0,
            next_at      double precision NOT NULL,       -- due then (epoch seconds)
            last_error   text NOT NULL DEFAULT '',
            delivered_at double precision,
            claim        bigint NOT NULL DEFAULT 0,       -- bumped by each claim: the mark's fence
            lease_until  double precision NOT NULL DEFAULT 0,   -- claimed until then (0: not claimed)
            node         text NOT NULL DEFAULT '',        -- the node that claimed it last (sent it)
            PRIMARY KEY (alert_id, webhook)
        )""",
        f"CREATE INDEX {DELIVERIES}_due ON {DELIVERIES} (next_at) WHERE status = 'pending'",
        f"""CREATE TABLE {ANOMALIES} (
            scope    text PRIMARY KEY,                    -- "level|owner"
            alert_id text NOT NULL,
            since    double precision NOT NULL
        )""",
    ),
]
SCHEMA = pg_schema.Schema(MIGRATIONS, "finops_alerts_schema_version", pg_schema.MIGRATION_LOCK + 19)

_ALERT_INSERT = (f"INSERT INTO {ALERTS} (id, dedupe, {', '.join(ALERT_COLUMNS[1:])}) "
                 "{source} ON CONFLICT DO NOTHING RETURNING id")
_VALUES = ("VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::float8, %s::float8, %s, %s)")
_SELECT = ("SELECT %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, "
           "%s::float8, %s::float8, %s::text, %s::text FROM s")
_DELIVERIES_INSERT = (f"d AS (INSERT INTO {DELIVERIES} (alert_id, webhook, status, attempts, next_at) "
                      "SELECT a.id, w, 'pending', 0, %s::float8 FROM a, unnest(%s::text[]) AS w) ")
_RECORD = (f"WITH a AS ({_ALERT_INSERT.format(source=_VALUES)}), {_DELIVERIES_INSERT}SELECT count(*) FROM a")
_START_ANOMALY = (f"WITH s AS (INSERT INTO {ANOMALIES} (scope, alert_id, since) VALUES (%s, %s, %s::float8) "
                  "ON CONFLICT (scope) DO NOTHING RETURNING alert_id), "
                  f"a AS ({_ALERT_INSERT.format(source=_SELECT)}), {_DELIVERIES_INSERT}SELECT count(*) FROM a")
_ACOLS = ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
_CLAIM = (f"WITH c AS (SELECT alert_id, webhook FROM {DELIVERIES} "
          "WHERE status = 'pending' AND next_at <= %(now)s AND lease_until <= %(now)s "
          "ORDER BY next_at, alert_id, webhook LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
          f"UPDATE {DELIVERIES} d SET claim = d.claim + 1, lease_until = %(until)s, node = %(node)s "
          f"FROM c, {ALERTS} a WHERE d.alert_id = c.alert_id AND d.webhook = c.webhook AND a.id = d.alert_id "
          f"RETURNING {_ACOLS}, d.webhook, d.status, d.attempts, d.next_at, d.last_error, d.delivered_at, d.claim")
_MARK = (f"UPDATE {DELIVERIES} SET status = %s, attempts = %s, next_at = %s, last_error = %s, delivered_at = %s, "
         "lease_until = 0 WHERE alert_id = %s AND webhook = %s AND claim = %s")


class PgOutbox:
    """The fleet's outbox (see the module doc). One connection, used by one thread at a time.
    `reader`: reports only; it never creates the tables (none yet reads as no alerts)."""

    def __init__(self, url: str, *, reader: bool = False):
        self.link = pg_schema.Link(url, what="alerts outbox", application_name="finops-alerts", schema=SCHEMA)
        self.path = self.link.path
        self.reader = reader
        self._ready = False          # the schema is known to be there (migrated, or found by a reader)

    def _run(self, sql: str, params=()):
        if not self._ready:
            if self.reader:
                if self.link.run("SELECT to_regclass(%s)", (DELIVERIES,)).fetchone()[0] is None:
                    return None              # no alert was ever recorded in this database
            else:
                self.link.open()             # connect and migrate (safe when every node starts at once)
            self._ready = True
        return self.link.run(sql, params)

    def close(self) -> None:
        self.link.close()

    # --- recording ------------------------------------------------------------------------------
    def record(self, alert: Alert, webhooks: list[str], now: float) -> bool:
        return self._run(_RECORD, (*alert_values(alert, now), now, list(webhooks))).fetchone()[0] == 1

    def anomaly_active(self) -> dict[str, str]:
        cur = self._run(f"SELECT scope, alert_id FROM {ANOMALIES}")
        return dict(cur.fetchall()) if cur is not None else {}

    def start_anomaly(self, scope: str, alert: Alert, webhooks: list[str], now: float) -> bool:
        """Mark `scope`'s episode and record its alert, unless another node started the episode
        first (then nothing: its alert is that node's)."""
        params = (scope, alert.id, now, *alert_values(alert, now), now, list(webhooks))
        return self._run(_START_ANOMALY, params).fetchone()[0] == 1

    def clear_anomaly(self, scope: str) -> None:
        self._run(f"DELETE FROM {ANOMALIES} WHERE scope = %s", (scope,))

    # --- delivering -----------------------------------------------------------------------------
    def claim(self, now: float, node: str = "", lease_seconds: float = 60.0, limit: int = 100) -> list[Claim]:
        rows = self._run(_CLAIM, {"now": now, "until": now + lease_seconds, "node": node, "limit": limit}).fetchall()
        n = len(ALERT_COLUMNS)
        out = [Claim(alert_dict(r[:n]), r[n], Delivery(*r[n + 1:n + 6]), r[n + 6]) for r in rows]
        return sorted(out, key=lambda c: (c.delivery.next_at, c.alert["created_at"], c.alert["id"], c.webhook))

    def mark(self, claim: Claim, d: Delivery) -> bool:
        return self._run(_MARK, (d.status, d.attempts, d.next_at, d.last_error[:500], d.delivered_at,
                                 claim.alert["id"], claim.webhook, claim.token)).rowcount == 1

    # --- reading --------------------------------------------------------------------------------
    def history(self, limit: int = 50, kind: str | None = None) -> list[dict]:
        where, params = ("WHERE kind = %s", [kind]) if kind else ("", [])
        cur = self._run(f"SELECT {', '.join(ALERT_COLUMNS)} FROM {ALERTS} {where} "
                        "ORDER BY created_at DESC, id LIMIT %s", [*params, limit])
        if cur is None:
            return []
        out = [alert_dict(r) for r in cur.fetchall()]
        by_id = {a["id"]: a for a in out}
        for a in out:
            a["deliveries"] = []
        if out:
            for r in self._run(f"SELECT alert_id, {', '.join(DELIVERY_COLUMNS)}, node FROM {DELIVERIES} "
                               "WHERE alert_id = ANY(%s) ORDER BY alert_id, webhook", (list(by_id),)):
                by_id[r[0]]["deliveries"].append(dict(zip((*DELIVERY_COLUMNS, "node"), r[1:])))
        return out

    def counts(self, node: str | None = None) -> dict:
        """The fleet's counts; with `node`, the deliveries that node sent (or gave up on): its
        share, what its /metrics reports."""
        where, params = ("WHERE d.node = %s", (node,)) if node is not None else ("", ())
        cur = self._run(f"SELECT a.kind, d.status, count(*) FROM {DELIVERIES} d JOIN {ALERTS} a "
                        f"ON a.id = d.alert_id {where} GROUP BY 1, 2", params)
        return counts_of(cur.fetchall() if cur is not None else ())
