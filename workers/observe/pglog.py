"""The request log on PostgreSQL (`[observability] log_store = "postgres"`): one log for a fleet.

Every node's observer actor writes its rows into one table, `finops_requests` (the columns of
shared/logrow.py plus `node`), declaratively partitioned by range of `ts`, one partition per UTC day
(`finops_requests_pYYYYMMDD`). Reports read it from any node (`PgLogReader`, in the dialect of
logsql.py).

* **Writes** (`PgLogWriter.write`): one transaction per batch: COPY into a session temp table
  (`finops_requests_stage`, emptied at commit), then `INSERT INTO finops_requests SELECT ... ON
  CONFLICT (id, ts) DO NOTHING`. The primary key is (id, ts) (a partitioned table's unique keys
  include the partition key; a request's id and time never change, so this is the request id,
  unique within its day's partition). Why the staging merge rather than COPY straight into the
  table: COPY has no ON CONFLICT, so a batch retried after an ambiguous failure (the COMMIT sent,
  the connection lost before its answer) would fail whole on its first duplicate and leave us
  guessing; through the stage a retried batch is a no-op row by row, and the transfer is still
  COPY (rows/s in README, scripts/pglog_bench.py).
* **Partitions** are created ahead (today and tomorrow, UTC, once an hour) and on demand for any
  day a batch carries, under an advisory lock (`PARTITION_LOCK`) so nodes do not race.
* **Retention** (`drop_before`) drops whole partitions whose day ended before the cut-off (no
  bulk DELETE: no dead tuples, no vacuum debt); a day is kept until all of it is past retention.
* **Migrations**: `migrate` under its own advisory lock, one transaction, version in
  `finops_log_schema_version` (separate from governance's schema: a log database may be its own).
* **Spool** (`Spool`): while PostgreSQL is unreachable the observer keeps batches on disk, one
  msgpack file per batch, fsync'd, in `<data_dir>/log-spool/`, bounded in bytes; they are written
  (oldest first) when it returns. A batch that does not fit is dropped and counted.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone

import msgpack

from finops.shared import logrow
from finops.shared.lazy import lazy
from finops.workers.governance import pg_schema
from finops.workers.governance.store import StoreError, StoreUnavailable

from . import logdb
from .logsql import LABELS, MEASURES, POSTGRES, SOURCE_COLUMNS

psycopg = lazy("psycopg", globals())     # imported by the first connection: most processes never open one

log = logging.getLogger("finops.observer.pglog")

TABLE = "finops_requests"
STAGE = "finops_requests_stage"
MIGRATION_LOCK = pg_schema.MIGRATION_LOCK + 17      # the log's schema
PARTITION_LOCK = pg_schema.MIGRATION_LOCK + 18      # creating / dropping partitions
DAY = 86400

_PG_TYPE = {"TEXT": 'text COLLATE "C"', "REAL": "double precision", "INTEGER": "integer", "BLOB": "bytea"}
_COLS = [(c, _PG_TYPE[t]) for c, t in logrow.COLUMNS] + [("node", 'text COLLATE "C" NOT NULL DEFAULT \'\'')]
_COLS = [(c, t + " NOT NULL" if c in ("id", "ts") else t) for c, t in _COLS]
# each money column's whole micro-dollars, rounded once per row as SQLite's ROUND does (logsql.py)
_MICROS = [(f"{c}_micros", f"bigint GENERATED ALWAYS AS (CAST(SIGN(COALESCE({c}, 0) * 1000000) * "
            f"FLOOR(ABS(COALESCE({c}, 0) * 1000000) + 0.5) AS bigint)) STORED") for c in ("cost_usd", "saved_usd", "prompt_saved_usd")]
NAMES = logdb.DB_NAMES
_LIST = ", ".join(NAMES)

HOURLY = "finops_requests_hourly"
DAILY = "finops_requests_daily"
ROLLUPS = (HOURLY, DAILY)
_HOURLY_KEY = ("hour", *LABELS, "status")
_HOURLY_TYPES = {"hour": "bigint", "status": "integer", "lat_sum": "double precision", "ts_sum": "double precision"}


def _hourly_type(c: str) -> str:
    if c in _HOURLY_TYPES:
        return _HOURLY_TYPES[c] + " NOT NULL"
    return ('text COLLATE "C" NOT NULL' if c in LABELS or c == "vk_name" else "bigint NOT NULL")


def _hourly_upsert(rows_sql: str, sign: str = "", table: str = HOURLY) -> str:
    """INSERT ... ON CONFLICT adding the requests of `rows_sql` (logsql's per-request source
    columns) to a rollup (`table`: the hourly one, or the daily one), each measure times `sign`
    ("" or "-")."""
    cols = ", ".join(SOURCE_COLUMNS)
    key = ", ".join(_HOURLY_KEY)
    aggs = ", ".join(f"{sign}SUM({m})" for m in MEASURES)
    sets = ", ".join([f"vk_name = GREATEST(h.vk_name, EXCLUDED.vk_name)"]
                     + [f"{m} = h.{m} + EXCLUDED.{m}" for m in MEASURES])
    return (f"INSERT INTO {table} AS h ({cols}) SELECT {key}, MAX(vk_name), {aggs} FROM ({rows_sql}) r "
            f"GROUP BY {key} ON CONFLICT ({key}) DO UPDATE SET {sets}")


# MIGRATIONS[i] takes the log's schema from version i to i + 1. Append only.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        f"CREATE TABLE {TABLE} (" + ", ".join(f"{c} {t}" for c, t in _COLS + _MICROS)
        + ", PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)",
        f"CREATE INDEX {TABLE}_ts ON {TABLE} (ts)",
        # the forecasts' and budget cards' lookups (per key / team / customer over a period)
        f"CREATE INDEX {TABLE}_vk_ts ON {TABLE} (vk, ts)",
        f"CREATE INDEX {TABLE}_team_ts ON {TABLE} (team, ts)",
        f"CREATE INDEX {TABLE}_customer_ts ON {TABLE} (customer, ts)",
        # The hourly rollup the reports read for whole hours (logsql.py): one row per hour and
        # labels, kept in the same transaction as the rows (write, charge), so it always equals them.
        *(stmt for t in ROLLUPS for stmt in (
            f"CREATE TABLE {t} (" + ", ".join(f"{c} {_hourly_type(c)}" for c in SOURCE_COLUMNS)
            + f", PRIMARY KEY ({', '.join(_HOURLY_KEY)}))",
            f"CREATE INDEX {t}_day ON {t} (day)")),
    ),
]
VERSION = len(MIGRATIONS)

# the batch's new rows (a row already there is skipped), and their sums into the hourly rollup
_INSERT = (f"WITH ins AS (INSERT INTO {TABLE} ({_LIST}) SELECT {_LIST} FROM {STAGE} "
           f"ON CONFLICT (id, ts) DO NOTHING RETURNING *), "
           f"up AS ({_hourly_upsert(POSTGRES._rows('ins'))}), "
           f"up_daily AS ({_hourly_upsert(POSTGRES._rows('ins', daily=True), table=DAILY)}) "
           "SELECT count(*) FROM ins")
_ONE, _ONE_DAILY = (POSTGRES._rows(TABLE, daily) + " WHERE id = %s AND ts = %s" for daily in (False, True))
_UNCOUNT = (_hourly_upsert(_ONE, "-"), _hourly_upsert(_ONE_DAILY, "-", DAILY))
_COUNT = (_hourly_upsert(_ONE), _hourly_upsert(_ONE_DAILY, "", DAILY))


def migrate(conn: psycopg.Connection, where: str) -> int:
    """The log's schema to VERSION (one transaction, under MIGRATION_LOCK); the version found."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL lock_timeout = '60s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS finops_log_schema_version (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM finops_log_schema_version").fetchone()
            found = row[0] if row else 0
            if found > VERSION:
                raise StoreError(f"{where}: request-log schema version {found} was written by a newer finops "
                                 f"(this one knows up to {VERSION}); upgrade finops")
            for steps in MIGRATIONS[found:]:
                for stmt in steps:
                    conn.execute(stmt)
            if row is None:
                conn.execute("INSERT INTO finops_log_schema_version (version) VALUES (%s)", (VERSION,))
            elif found != VERSION:
                conn.execute("UPDATE finops_log_schema_version SET version = %s", (VERSION,))
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"{where}: schema migration failed: {pg_schema.first_line(e)}") from None
    except psycopg.Error as e:
        raise StoreError(f"{where}: schema migration failed: {pg_schema.first_line(e)}") from None
    return found


def partition_name(day: int) -> str:
    """The partition of UTC day number `day` (epoch seconds // 86400)."""
    return f"{TABLE}_p" + datetime.fromtimestamp(day * DAY, timezone.utc).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    """The UTC day number of a partition's name; None for a table that is not one of ours."""
    stem = name[len(TABLE) + 2:] if name.startswith(f"{TABLE}_p") else ""
    try:
        return int(datetime.strptime(stem, "%Y%m%d").replace(tzinfo=timezone.utc).timestamp()) // DAY
    except ValueError:
        return None


class PgLogWriter:
    """The observer's connection to the log (one thread uses it). Every method raises
    `StoreUnavailable` when PostgreSQL cannot be reached (the caller keeps the batch and writes it
    again later: writes are idempotent) and `StoreError` when it refuses."""

    def __init__(self, url: str, node: str):
        self.link = pg_schema.Link(url, what="request log", application_name="finops-log")
        self.path = self.link.path
        self.node = node
        self.partitions: set[int] = set()           # days known to have a partition
        self._conn = None                            # the connection the stage was made on

    def _live(self) -> psycopg.Connection:
        conn = self.link.live()
        if conn is not self._conn:                   # a new connection: schema check, its own stage
            migrate(conn, f"request log {self.path}")
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (LIKE {TABLE} INCLUDING DEFAULTS) "
                         "ON COMMIT DELETE ROWS")
            self._conn = conn
            self.partitions.clear()
        return conn

    def _do(self, fn):
        """`fn(conn)` with the module's error mapping; a dead connection is made again next time."""
        try:
            return fn(self._live())
        except psycopg.OperationalError as e:
            self._conn = None
            raise self.link.unavailable(e) from None
        except psycopg.Error as e:
            raise self.link.failed(e) from None

    def open(self) -> None:
        self._do(lambda conn: None)

    def close(self) -> None:
        self.link.close()
        self._conn = None

    def ensure_partitions(self, days) -> None:
        missing = sorted(set(days) - self.partitions)
        if not missing:
            return

        def create(conn):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                for d in missing:
                    conn.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(d)} PARTITION OF {TABLE} "
                                 f"FOR VALUES FROM ({d * DAY}) TO ({(d + 1) * DAY})")
        self._do(create)
        self.partitions.update(missing)

    def write(self, rows: list) -> int:
        """Write a batch of rows (values in NAMES order: the wire row, then the node) in one
        transaction; returns how many were new (a row already there is skipped)."""
        if not rows:
            return 0
        self.ensure_partitions({int(r[1] // DAY) for r in rows})

        def copy(conn):
            with conn.transaction():
                with conn.cursor().copy(f"COPY {STAGE} ({_LIST}) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
                return conn.execute(_INSERT).fetchone()[0]
        try:
            return self._do(copy)
        except StoreError as e:
            if "no partition" not in str(e):
                raise
            self.partitions.clear()                  # another node dropped one (retention): make it again
            self.ensure_partitions({int(r[1] // DAY) for r in rows})
            return self._do(copy)

    def charge(self, rid: str, key: str, env: str, cost: float) -> tuple | None:
        """The ledger's charge of request `rid` (observe/actor.py): its row's cost, and key and env
        when it had none. Returns the row's (model, provider, env, vk, old cost) or None when no
        row has that id (yet)."""
        def upd(conn):
            with conn.transaction():
                old = conn.execute(f"SELECT ts, model, provider, env, vk, cost_usd FROM {TABLE} WHERE id = %s "
                                   "ORDER BY ts LIMIT 1 FOR UPDATE", (rid,)).fetchone()
                if old is None:
                    return None
                ts, model, provider, env0, vk0, cost0 = old
                env1, vk1 = env0 or env, vk0 or key
                for sql in _UNCOUNT:                         # the rollups: out of its old group ...
                    conn.execute(sql, (rid, ts))
                conn.execute(f"UPDATE {TABLE} SET cost_usd = %s, vk = %s, env = %s WHERE id = %s AND ts = %s",
                             (round(cost, 6), vk1, env1, rid, ts))
                for sql in _COUNT:                           # ... into its new one
                    conn.execute(sql, (rid, ts))
                conn.execute(f"DELETE FROM {HOURLY} WHERE hour = %s AND n = 0", (int(ts // 3600),))
                conn.execute(f"DELETE FROM {DAILY} WHERE hour = %s AND n = 0", (int(ts // DAY) * 24,))
                return model, provider, env1, vk1, cost0 or 0.0
        return self._do(upd)

    def partition_days(self) -> list[int]:
        def q(conn):
            rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                "WHERE i.inhparent = %s::regclass", (TABLE,)).fetchall()
            return sorted(d for (name,) in rows if (d := partition_day(name)) is not None)
        return self._do(q)

    def drop_before(self, before_ts: float) -> int:
        """Drop the partitions whose whole day is before `before_ts`; returns how many went."""
        old = [d for d in self.partition_days() if (d + 1) * DAY <= before_ts]
        if not old:
            return 0

        def drop(conn):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                for d in old:
                    conn.execute(f"DROP TABLE IF EXISTS {partition_name(d)}")
                for t in ROLLUPS:
                    conn.execute(f"DELETE FROM {t} WHERE hour < %s", ((max(old) + 1) * 24,))
        self._do(drop)
        self.partitions.difference_update(old)
        return len(old)


class Spool:
    """Batches waiting for PostgreSQL on the node's disk: one file per batch
    (`<seq>.msgpack`, written to a temp name, fsync'd, renamed), read back oldest first. At most
    `max_bytes` in all: a batch that would pass it is refused (the caller counts its rows dropped).
    What survives a restart of the observer is written when PostgreSQL answers."""

    def __init__(self, directory: str, max_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.files: list[str] = sorted(f for f in os.listdir(directory) if f.endswith(".msgpack"))
        for f in os.listdir(directory):
            if f.endswith(".tmp"):
                os.unlink(os.path.join(directory, f))         # a batch cut short by a crash: never acknowledged
        self.bytes = sum(os.path.getsize(os.path.join(directory, f)) for f in self.files)
        self.seq = int(self.files[-1].split(".")[0]) + 1 if self.files else 0

    def __len__(self) -> int:
        return len(self.files)

    def append(self, record: dict) -> bool:
        data = msgpack.packb(record, use_bin_type=True)
        if self.bytes + len(data) > self.max_bytes:
            return False
        name = f"{self.seq:012d}.msgpack"
        self.seq += 1
        tmp = os.path.join(self.dir, name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.dir, name))
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.files.append(name)
        self.bytes += len(data)
        return True

    def oldest(self) -> dict | None:
        if not self.files:
            return None
        with open(os.path.join(self.dir, self.files[0]), "rb") as f:
            return msgpack.unpackb(f.read(), raw=False)

    def pop(self) -> None:
        """Remove the oldest batch (written)."""
        path = os.path.join(self.dir, self.files.pop(0))
        self.bytes -= os.path.getsize(path)
        os.unlink(path)


class PgLogReader:
    """A read connection to the fleet's log for the reports (report.py and friends): `execute(sql,
    params)` with the reports' `?` placeholders, `dialect` = logsql.POSTGRES."""
    dialect = POSTGRES

    def __init__(self, url: str):
        self.path = pg_schema.redact(url)
        self.conn = pg_schema.connect(url, application_name="finops-report", what="request log")
        try:
            if self.conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
                raise FileNotFoundError(f"no request log in {self.path}: no node has logged a request there yet "
                                        "(or observability.log_postgres_url points elsewhere)")
        except BaseException:
            self.conn.close()
            raise

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.conn.close()


def open_reader(cfg):
    """A read connection to the request log `cfg` says (SQLite in the data dir, or PostgreSQL);
    FileNotFoundError when there is none yet, StoreUnavailable when PostgreSQL cannot be reached."""
    if cfg.observability.log_store == "postgres":
        return PgLogReader(cfg.log_postgres_url)
    from finops.shared.config import default_data_dir
    return logdb.open_db(cfg.server.data_dir or default_data_dir(os.environ), readonly=True)
