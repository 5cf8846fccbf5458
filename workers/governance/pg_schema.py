"""PostgreSQL for governance: connecting, and the schema with its migrations.

Several gateway nodes share one PostgreSQL database: keys, teams and customers (pg_store.py), the
notification of their changes (pg_watch.py), and the durable record of settled spend (pg_spend.py).
Every table is prefixed `finops_`, so the database may be shared with other applications.

**Migrations** run at start, from every node: `migrate(conn)` takes a transaction-level advisory
lock (`pg_advisory_xact_lock(MIGRATION_LOCK)`), reads `finops_schema_version`, applies the missing
steps of `MIGRATIONS`, records the version and commits, all in one transaction (PostgreSQL's DDL is
transactional). Nodes starting together queue on the lock: the first one migrates, the others find
the schema current and go on; a failed step leaves the schema as it was. A database migrated by a
newer finops is refused with a message (never downgraded).

**Connections** (`connect`) are autocommit (the modules open their own transactions), with a
5 s connect timeout, TCP keepalives and a TCP user timeout (so a cut network is noticed in
seconds, not at TCP's retransmission limit of minutes), `lock_timeout` 5 s (as the SQLite store's
busy timeout: short writes queue, a stuck one fails) and `statement_timeout` 30 s. Settings given
in the URL win. Failures to reach the server are `StoreUnavailable` (retry), with the URL's
password left out of every message. A `Link` is the connection one user keeps (the store, the
settled spend): made again when found dead, and a statement that found it dead sent again once.
"""
from __future__ import annotations

import logging
import re
from typing import NamedTuple

from finops.shared.lazy import lazy

from .store import Names, StoreError, StoreUnavailable, upgrade

log = logging.getLogger("finops.governance.pg")
psycopg = lazy("psycopg", globals())     # imported by the first connection: most processes never open one

# The advisory lock key of the schema check/upgrade ("FinOps" as a 48-bit integer).
MIGRATION_LOCK = 0x46696E4F7073
# NOTIFY channel of directory changes; the payload is the new directory version.
CHANNEL = "finops_directory"

_CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",        # ms
}
_SESSION = "SET lock_timeout = '5s'; SET statement_timeout = '30s'"

# MIGRATIONS[i] takes the schema from version i to i + 1. Append only; never edit a shipped one.
# JSON columns hold the same JSON text as the SQLite store (store.py), so both share (de)serialisers.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE finops_customers (
            id          text PRIMARY KEY,
            name        text NOT NULL DEFAULT '',
            budgets     text NOT NULL DEFAULT '[]',      -- JSON [{amount_usd, period, env}]
            rate_limits text NOT NULL DEFAULT '[]',      -- JSON [{window, requests, tokens, env}]
            source      text NOT NULL DEFAULT 'api'      -- 'config' | 'api'
        )""",
        """CREATE TABLE finops_teams (
            id          text PRIMARY KEY,
            name        text NOT NULL DEFAULT '',
            customer    text NOT NULL DEFAULT '',        -- finops_customers.id, '' = none
            budgets     text NOT NULL DEFAULT '[]',
            rate_limits text NOT NULL DEFAULT '[]',
            source      text NOT NULL DEFAULT 'api'
        )""",
        "CREATE INDEX finops_teams_customer ON finops_teams (customer)",
        """CREATE TABLE finops_keys (
            id          text PRIMARY KEY,                -- also the SigV4 access key id
            secret      text NOT NULL,                   -- as given: SigV4 needs it (see store.py)
            name        text NOT NULL DEFAULT '',
            team        text NOT NULL DEFAULT '',        -- finops_teams.id, '' = none
            models      text NOT NULL DEFAULT '["*"]',   -- JSON list of globs
            providers   text NOT NULL DEFAULT '["*"]',
            enabled     boolean NOT NULL DEFAULT true,
            expires_at  double precision,                -- epoch seconds, NULL = never
            budgets     text NOT NULL DEFAULT '[]',
            rate_limits text NOT NULL DEFAULT '[]',
            created_at  double precision NOT NULL,
            source      text NOT NULL DEFAULT 'api'
        )""",
        "CREATE INDEX finops_keys_team ON finops_keys (team)",
        # One row: bumped by every write of keys, teams or customers, in the same transaction.
        """CREATE TABLE finops_directory_version (
            id      integer PRIMARY KEY CHECK (id = 1),
            version bigint NOT NULL
        )""",
        "INSERT INTO finops_directory_version (id, version) VALUES (1, 0)",
        # The local ledger's snapshot, one per node (nodes with a local ledger each keep their own).
        """CREATE TABLE finops_ledger_snapshots (
            node     text PRIMARY KEY,
            doc      text NOT NULL,                      -- JSON
            saved_at double precision NOT NULL
        )""",
        # Settled charges, the durable truth the Redis ledger's counters are rebuilt from (pg_spend.py).
        """CREATE TABLE finops_settled (
            request_id  text PRIMARY KEY,                -- a settle written twice counts once
            key_id      text NOT NULL,
            env         text NOT NULL DEFAULT '',
            team        text NOT NULL DEFAULT '',        -- as charged (the key's team then), '' = none
            customer    text NOT NULL DEFAULT '',
            cost_micro  bigint NOT NULL,                 -- USD x 1e6
            tokens      bigint NOT NULL DEFAULT 0,
            saved_micro bigint NOT NULL DEFAULT 0,       -- what the cache saved, USD x 1e6
            settled_at  double precision NOT NULL        -- epoch seconds: the periods it counts in
        )""",
        "CREATE INDEX finops_settled_at ON finops_settled (settled_at)",
    ),
    (   # 2: cost-allocation tags of a key (JSON {name: value})
        "ALTER TABLE finops_keys ADD COLUMN tags text NOT NULL DEFAULT '{}'",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


class Schema(NamedTuple):
    """Tables migrated together (`migrate`): their steps, the table recording their version, and
    the advisory lock their migrations take. Governance's is `GOVERNANCE`; another user of the
    database (the alerts outbox, alerts/pg_outbox.py) keeps a schema of its own, so neither's
    version moves with the other's."""
    migrations: list[tuple[str, ...]]
    version_table: str
    lock: int


GOVERNANCE = Schema(MIGRATIONS, "finops_schema_version", MIGRATION_LOCK)
# What the governance store's shared logic (store.DirectoryStore) calls things here.
NAMES = Names(p="%s", keys="finops_keys", teams="finops_teams", customers="finops_customers",
              schema_version="finops_schema_version", snapshots="finops_ledger_snapshots", snapshot_key="node")


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    url = re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def connect(url: str, *, application_name: str = "finops", what: str = "governance store") -> psycopg.Connection:
    """An autocommit connection to `url` (a postgresql:// URL or a libpq conninfo string) with the
    module's timeouts; `StoreUnavailable` when the server cannot be reached, `StoreError` for a URL
    that cannot be parsed."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise StoreError(f"postgres_url {redact(url)!r} is not a PostgreSQL URL: {e}") from None
    for k, v in _CONNECT_DEFAULTS.items():
        params.setdefault(k, v)
    params.setdefault("application_name", application_name)
    try:
        conn = psycopg.connect(autocommit=True, **params)
    except psycopg.Error as e:
        raise StoreUnavailable(f"{what} {redact(url)}: cannot connect: {first_line(e)}") from None
    try:
        conn.execute(_SESSION)
    except psycopg.Error as e:
        conn.close()
        raise StoreUnavailable(f"{what} {redact(url)}: {first_line(e)}") from None
    return conn


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def schema_version(conn: psycopg.Connection, schema: Schema = GOVERNANCE) -> int:
    """The version of `schema` recorded in the database (0: never migrated)."""
    from psycopg.rows import tuple_row
    cur = conn.cursor(row_factory=tuple_row)
    if cur.execute("SELECT to_regclass(%s)", (schema.version_table,)).fetchone()[0] is None:
        return 0
    row = cur.execute(f"SELECT version FROM {schema.version_table}").fetchone()
    return row[0] if row else 0


def migrate(conn: psycopg.Connection, where: str = "", schema: Schema = GOVERNANCE) -> int:
    """Bring `schema` to its latest version (see the module doc); returns the version found before."""
    from psycopg.rows import tuple_row
    where = where or "governance store"
    target = len(schema.migrations)
    try:
        conn.execute("BEGIN")
        try:
            conn.execute("SET LOCAL statement_timeout = 0")            # a migration may take long
            conn.execute("SET LOCAL lock_timeout = '60s'")             # another node's migration
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.lock,))
            version = schema_version(conn, schema)
            if version == 0 and conn.cursor(row_factory=tuple_row).execute(
                    "SELECT to_regclass(%s)", (schema.version_table,)).fetchone()[0] is None:
                conn.execute(f"CREATE TABLE {schema.version_table} (version integer NOT NULL)")
            upgrade(conn, version, schema.migrations, names=NAMES._replace(schema_version=schema.version_table),
                    where=where)
        except BaseException:
            end(conn, "ROLLBACK")
            raise
        conn.execute("COMMIT")
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"{where}: schema migration failed: {first_line(e)}") from None
    except psycopg.Error as e:
        raise StoreError(f"{where}: schema migration failed: {first_line(e)}") from None
    if version != target:
        log.info("%s: schema version %d -> %d", where, version, target)
    return version


def end(conn: psycopg.Connection, sql: str) -> None:
    """End a transaction with `sql` (COMMIT or ROLLBACK) if the connection is still usable; a
    failure is ignored (the transaction is over either way)."""
    try:
        if not conn.broken and not conn.closed:
            conn.execute(sql)
    except psycopg.Error:
        pass


def connection_lost(conn: psycopg.Connection, e: psycopg.OperationalError) -> bool:
    """Whether `e` says the connection itself is gone (so a new one may run the statement), not
    that the server refused the statement (a timeout, a lock): libpq marked the connection broken,
    the server ended the session (SQLSTATE class 08, or 57P01 to 57P03: terminated, shutting
    down), or psycopg saw the socket close before libpq read why (no SQLSTATE: "connection socket
    closed", which leaves the connection not yet marked broken)."""
    state = e.sqlstate
    return conn.broken or state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class Link:
    """One connection to the database for one user (not shared between threads), made on first
    use and made again when found dead (closed, or broken by a lost connection). `what` names the
    user in messages ("governance store", "settled spend"); `schema` is the tables `open` migrates
    (governance's unless the user keeps its own)."""

    def __init__(self, url: str, *, what: str, application_name: str, row_factory=None,
                 schema: Schema = GOVERNANCE):
        self.url = url
        self.path = redact(url)
        self.what = what
        self.application_name = application_name
        self.row_factory = row_factory
        self.schema = schema
        self.conn: psycopg.Connection | None = None

    def open(self) -> None:
        """Connect and bring the schema up to date (`migrate`: safe when several nodes start at
        once); the connection is closed again if that fails."""
        conn = self.live()
        try:
            migrate(conn, f"{self.what} {self.path}", self.schema)
        except BaseException:
            self.close()
            raise

    def live(self) -> psycopg.Connection:
        """The connection, made (again) if there is none or it is dead."""
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self.conn = None
            conn = connect(self.url, application_name=self.application_name, what=self.what)
            if self.row_factory is not None:
                conn.row_factory = self.row_factory
            self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def unavailable(self, e: psycopg.Error) -> StoreUnavailable:
        return StoreUnavailable(f"{self.what} {self.path}: {first_line(e)}")

    def failed(self, e: psycopg.Error) -> StoreError:
        return StoreError(f"{self.what} {self.path}: {first_line(e)}")

    def run(self, sql: str, params=()) -> psycopg.Cursor:
        """One statement, in a transaction of its own (autocommit) unless one is open. Every
        statement sent here is BEGIN, a read or an idempotent write, so a connection found dead
        (`connection_lost`) with no transaction open on it is replaced and the statement sent
        again, once; inside a transaction the loss is the caller's (its earlier statements are gone). `StoreUnavailable` when the server cannot be
        reached, `StoreError` when it refuses the statement."""
        for attempt in (0, 1):
            conn = self.live()
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            try:
                return conn.execute(sql, params)
            except psycopg.OperationalError as e:
                if attempt or not idle or not connection_lost(conn, e):
                    raise self.unavailable(e) from None
                conn.close()                       # live() makes a new one
            except psycopg.Error as e:
                raise self.failed(e) from None

    def begin(self) -> psycopg.Connection:
        """BEGIN a transaction on a live connection (one found dead here is replaced once: nothing
        of the transaction had run)."""
        return self.run("BEGIN").connection
