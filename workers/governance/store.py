"""SQLite in the data dir: customers, teams, virtual keys, and the ledger's snapshot.

One file, `<data_dir>/governance.sqlite`, shared by every process: the ledger (which copies the
config file's entries in at start, `sync_config`, and saves its counters, `save_snapshot`), the
workers (which read the directory and notice changes cheaply with `data_version`), and the
`finops keys|teams|customers` CLI and the admin API (which write keys, teams and customers).

The file is created 0600 (SQLite gives its -wal and -shm files the same mode) and opened in WAL
mode with `synchronous=NORMAL` (a power cut may lose the last commits, never corrupt the file)
and a 5 s busy timeout, so short writes from several processes simply queue.

**The data dir is sensitive**: key secrets are stored as given, not hashed, because SigV4
verification needs the secret itself (the signature is an HMAC keyed by it). Treat the file like
a credentials file: keep the data dir private to the gateway's user and out of backups that are
less protected than the keys themselves.

Rows carry a `source`: "config" for entries declared in the config file (owned by the file:
`sync_config` rewrites and removes them; the CLI and the admin API refuse to change them), "api"
for entries made with the CLI or the admin API (never touched by `sync_config`).

Schema changes are migrations: append a tuple of statements to `MIGRATIONS`; `open` applies the
ones the file has not had yet, in one transaction, and records the version in `schema_version`.

The store's logic (checks, refusals, `sync_config`, reads) is written once, in `DirectoryStore`,
for both backends: `Store` here gives it SQLite (the file, its transactions, `PRAGMA
data_version`), `PgStore` (pg_store.py) gives it PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import string
import time
from contextlib import contextmanager
from typing import NamedTuple

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team, VirtualKey

log = logging.getLogger("finops.governance.store")

FILENAME = "governance.sqlite"
BUSY_TIMEOUT_SECONDS = 5.0     # SQLite waits this long for another process's write lock

# MIGRATIONS[i] takes the schema from version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE customers (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL DEFAULT '',
            budgets     TEXT NOT NULL DEFAULT '[]',     -- JSON [{amount_usd, period, env}]
            rate_limits TEXT NOT NULL DEFAULT '[]',     -- JSON [{window, requests, tokens, env}]
            source      TEXT NOT NULL DEFAULT 'api'     -- 'config' | 'api'
        )""",
        """CREATE TABLE teams (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL DEFAULT '',
            customer    TEXT NOT NULL DEFAULT '',       -- customers.id, '' = none
            budgets     TEXT NOT NULL DEFAULT '[]',
            rate_limits TEXT NOT NULL DEFAULT '[]',
            source      TEXT NOT NULL DEFAULT 'api'
        )""",
        "CREATE INDEX teams_customer ON teams (customer)",
        """CREATE TABLE keys (
            id          TEXT PRIMARY KEY,               -- also the SigV4 access key id
            secret      TEXT NOT NULL,                  -- as given: SigV4 needs it (see the module doc)
            name        TEXT NOT NULL DEFAULT '',
            team        TEXT NOT NULL DEFAULT '',       -- teams.id, '' = none
            models      TEXT NOT NULL DEFAULT '["*"]',  -- JSON list of globs
            providers   TEXT NOT NULL DEFAULT '["*"]',
            enabled     INTEGER NOT NULL DEFAULT 1,
            expires_at  REAL,                           -- epoch seconds, NULL = never
            budgets     TEXT NOT NULL DEFAULT '[]',
            rate_limits TEXT NOT NULL DEFAULT '[]',
            created_at  REAL NOT NULL,
            source      TEXT NOT NULL DEFAULT 'api'
        )""",
        "CREATE INDEX keys_team ON keys (team)",
        """CREATE TABLE ledger_snapshot (
            id       INTEGER PRIMARY KEY CHECK (id = 1),  -- one row
            doc      TEXT NOT NULL,                       -- JSON
            saved_at REAL NOT NULL
        )""",
    ),
    (   # 2: cost-allocation tags of a key (JSON {name: value})
        "ALTER TABLE keys ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

KINDS = ("keys", "teams", "customers")
SINGULAR = {"keys": "key", "teams": "team", "customers": "customer"}
_ID_ALPHABET = string.ascii_lowercase + string.digits


class StoreError(Exception):
    """Something the caller asked of the store cannot be done; the message says why."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy right now (PostgreSQL down, connection lost, a lock
    held too long): nothing was changed, or the change may be retried; try again."""


class NotFound(StoreError):
    """No key, team or customer with that id."""


class Conflict(StoreError):
    """The id is taken, or the row is still in use (a team with keys, a customer with teams)."""


class InvalidReference(StoreError):
    """A key names a team, or a team a customer, that does not exist. The message starts with the
    field name ("team: ..." / "customer: ...")."""


# --- new keys --------------------------------------------------------------------------------

def new_key_id() -> str:
    """`vk-` + 16 random lowercase letters and digits (~82 bits)."""
    import secrets      # here, not at the top: secrets loads OpenSSL (3.4 MiB RSS) in the ledger actor
    return "vk-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    """`fos-` + 40 URL-safe characters (240 random bits)."""
    import secrets
    return "fos-" + secrets.token_urlsafe(30)


def generate_key(name: str = "", *, team: str = "", models=("*",), providers=("*",), enabled: bool = True,
                 expires_at: float | None = None, budgets=(), rate_limits=(), id: str | None = None,
                 secret: str | None = None) -> VirtualKey:
    """A new API-sourced key with a fresh id and secret (unless given). Not stored: `put_key` it."""
    return VirtualKey(id=id or new_key_id(), secret=secret or new_secret(), name=name, team=team,
                      models=tuple(models), providers=tuple(providers), enabled=enabled,
                      expires_at=expires_at, budgets=tuple(budgets), rate_limits=tuple(rate_limits),
                      created_at=time.time(), source="api")


# --- (de)serialisation -------------------------------------------------------------------------

def budgets_to_json(budgets) -> list[dict]:
    return [{"amount_usd": b.amount_usd, "period": b.period, "env": b.env,
             **({"alert_at": list(b.alert_at)} if b.alert_at else {})} for b in budgets]


def rate_limits_to_json(limits) -> list[dict]:
    return [{"window": r.window, "requests": r.requests, "tokens": r.tokens, "env": r.env} for r in limits]


def budgets_from_json(text: str) -> tuple[Budget, ...]:
    return tuple(Budget(amount_usd=float(d["amount_usd"]), period=d["period"], env=d.get("env", ""),
                        alert_at=tuple(float(x) for x in d.get("alert_at", ())))
                 for d in json.loads(text))


def rate_limits_from_json(text: str) -> tuple[RateLimit, ...]:
    return tuple(RateLimit(window=d["window"], requests=d.get("requests"), tokens=d.get("tokens"),
                           env=d.get("env", "")) for d in json.loads(text))


def to_json(v) -> str:
    return json.dumps(v, separators=(",", ":"))


def key_from_row(r) -> VirtualKey:
    """A key from a row read by column name (either backend's)."""
    return VirtualKey(id=r["id"], secret=r["secret"], name=r["name"], team=r["team"],
                      models=tuple(json.loads(r["models"])), providers=tuple(json.loads(r["providers"])),
                      enabled=bool(r["enabled"]), expires_at=r["expires_at"],
                      budgets=budgets_from_json(r["budgets"]), rate_limits=rate_limits_from_json(r["rate_limits"]),
                      created_at=r["created_at"], source=r["source"], tags=json.loads(r["tags"] or "{}"))


def team_from_row(r) -> Team:
    return Team(id=r["id"], name=r["name"], customer=r["customer"], budgets=budgets_from_json(r["budgets"]),
                rate_limits=rate_limits_from_json(r["rate_limits"]))


def customer_from_row(r) -> Customer:
    return Customer(id=r["id"], name=r["name"], budgets=budgets_from_json(r["budgets"]),
                    rate_limits=rate_limits_from_json(r["rate_limits"]))


def short_list(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


class Names(NamedTuple):
    """What one backend calls things in its SQL: the parameter placeholder and the tables."""
    p: str                  # "?" (sqlite3) or "%s" (psycopg)
    keys: str
    teams: str
    customers: str
    schema_version: str
    snapshots: str          # the ledger's snapshot
    snapshot_key: str       # its key column: "id" (one row) or "node" (one row per node)

    def table(self, kind: str) -> str:
        """The table of `kind` ("keys", "teams", "customers")."""
        return getattr(self, kind)

    def marks(self, n: int) -> str:
        """`n` placeholders, comma-separated."""
        return ", ".join([self.p] * n)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")


def upgrade(db, found: int, migrations: list[tuple[str, ...]], *, names: Names, where: str) -> None:
    """Take a schema at version `found` to `len(migrations)`, inside the caller's transaction
    (which holds the lock that makes it safe and has made the version table): refuse a schema a
    newer finops wrote, apply the missing steps, record the version."""
    target = len(migrations)
    if found > target:
        raise StoreError(f"{where}: schema version {found} was written by a newer finops "
                         f"(this one knows up to {target}); upgrade finops")
    for steps in migrations[found:]:
        for stmt in steps:
            db.execute(stmt)
    if found != target:
        t, p = names.schema_version, names.p
        if db.execute(f"UPDATE {t} SET version = {p}", (target,)).rowcount == 0:
            db.execute(f"INSERT INTO {t} (version) VALUES ({p})", (target,))


class DirectoryStore:
    """The governance store's logic, written once for both backends: writes and deletes of keys,
    teams and customers with their checks and refusals, reads, `sync_config`, the ledger's
    snapshot. `Store` (below, SQLite) and `PgStore` (pg_store.py, PostgreSQL) give the backend:

    * `NAMES`: the placeholder and the table names (rows are read by column name: sqlite3.Row
      and psycopg's dict_row both allow it);
    * `_write()`: one write transaction that holds the database's write lock from its start, so
      a check and the write it guards are atomic; it yields `db`, whose `execute(sql, params)`
      returns a cursor;
    * `_read()`: one read transaction (every SELECT sees the same snapshot), yielding such a `db`;
    * `_execute(sql, params)`: one statement in a transaction of its own (a read, or the
      snapshot's upsert), returning a cursor;
    * `_snapshot_id` and `_snapshot_name`: this store's row of the snapshot table, and what
      messages call it;
    * `open()`, `close()` and `data_version()`.
    """

    NAMES: Names
    ENGINE: str             # "sqlite" | "postgres": what `[governance] store` calls it
    path: str

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _write(self):
        raise NotImplementedError

    def _read(self):
        raise NotImplementedError

    def _execute(self, sql: str, params=()):
        raise NotImplementedError

    def schema_version(self) -> int:
        return self._execute(f"SELECT version FROM {self.NAMES.schema_version}").fetchone()["version"]

    # --- writes -----------------------------------------------------------------------------

    def put_customer(self, c: Customer, *, source: str = "api", create: bool = False) -> None:
        """Insert or replace customer `c`. `create=True`: raise Conflict if the id exists."""
        with self._write() as db:
            self._put_customer(db, c, source, create)

    def put_team(self, t: Team, *, source: str = "api", create: bool = False) -> None:
        """Insert or replace team `t`; its customer (if any) must exist (InvalidReference)."""
        with self._write() as db:
            self._put_team(db, t, source, create)

    def put_key(self, k: VirtualKey, *, create: bool = False) -> None:
        """Insert or replace key `k` (source from `k.source`; created_at kept on update, set to now
        when 0); its team (if any) must exist (InvalidReference)."""
        with self._write() as db:
            self._put_key(db, k, create)

    def _exists(self, db, kind: str, id: str) -> bool:
        n = self.NAMES
        return db.execute(f"SELECT 1 FROM {n.table(kind)} WHERE id = {n.p}", (id,)).fetchone() is not None

    def _check_new(self, db, kind: str, id: str, create: bool) -> None:
        if create and self._exists(db, kind, id):
            raise Conflict(f"{SINGULAR[kind]} {id!r} already exists")

    def _put_customer(self, db, c: Customer, source: str, create: bool) -> None:
        self._check_new(db, "customers", c.id, create)
        n = self.NAMES
        db.execute(f"INSERT INTO {n.customers} (id, name, budgets, rate_limits, source) VALUES ({n.marks(5)}) "
                   "ON CONFLICT (id) DO UPDATE SET name = excluded.name, budgets = excluded.budgets, "
                   "rate_limits = excluded.rate_limits, source = excluded.source",
                   (c.id, c.name, to_json(budgets_to_json(c.budgets)), to_json(rate_limits_to_json(c.rate_limits)),
                    source))

    def _put_team(self, db, t: Team, source: str, create: bool) -> None:
        self._check_new(db, "teams", t.id, create)
        if t.customer and not self._exists(db, "customers", t.customer):
            raise InvalidReference(f"customer: no customer {t.customer!r}")
        n = self.NAMES
        db.execute(f"INSERT INTO {n.teams} (id, name, customer, budgets, rate_limits, source) VALUES ({n.marks(6)}) "
                   "ON CONFLICT (id) DO UPDATE SET name = excluded.name, customer = excluded.customer, "
                   "budgets = excluded.budgets, rate_limits = excluded.rate_limits, source = excluded.source",
                   (t.id, t.name, t.customer, to_json(budgets_to_json(t.budgets)),
                    to_json(rate_limits_to_json(t.rate_limits)), source))

    def _put_key(self, db, k: VirtualKey, create: bool) -> None:
        self._check_new(db, "keys", k.id, create)
        if k.team and not self._exists(db, "teams", k.team):
            raise InvalidReference(f"team: no team {k.team!r}")
        n = self.NAMES
        db.execute(f"INSERT INTO {n.keys} (id, secret, name, team, models, providers, enabled, expires_at, "
                   f"budgets, rate_limits, created_at, source, tags) VALUES ({n.marks(13)}) "
                   "ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, name = excluded.name, "
                   "team = excluded.team, models = excluded.models, providers = excluded.providers, "
                   "enabled = excluded.enabled, expires_at = excluded.expires_at, budgets = excluded.budgets, "
                   "rate_limits = excluded.rate_limits, source = excluded.source, tags = excluded.tags",
                   (k.id, k.secret, k.name, k.team, to_json(list(k.models)), to_json(list(k.providers)),
                    bool(k.enabled), k.expires_at, to_json(budgets_to_json(k.budgets)),   # SQLite keeps a bool as 1/0
                    to_json(rate_limits_to_json(k.rate_limits)), k.created_at or time.time(), k.source,
                    to_json(dict(k.tags))))

    def delete_key(self, id: str) -> None:
        self._delete("keys", id)

    def delete_team(self, id: str) -> None:
        """Refused (Conflict) while keys belong to the team."""
        self._delete("teams", id)

    def delete_customer(self, id: str) -> None:
        """Refused (Conflict) while teams belong to the customer."""
        self._delete("customers", id)

    def _delete(self, kind: str, id: str) -> None:
        n = self.NAMES
        with self._write() as db:
            if not self._exists(db, kind, id):
                raise NotFound(f"no {SINGULAR[kind]} {id!r}")
            if kind != "keys":
                self._refuse_if_used(db, kind, id)
            db.execute(f"DELETE FROM {n.table(kind)} WHERE id = {n.p}", (id,))

    def _users(self, db, kind: str, id: str) -> list[str]:
        """The ids of the rows that point at team/customer `id`."""
        n = self.NAMES
        child, column = (n.keys, "team") if kind == "teams" else (n.teams, "customer")
        return [r["id"] for r in db.execute(f"SELECT id FROM {child} WHERE {column} = {n.p} ORDER BY id", (id,))]

    def _refuse_if_used(self, db, kind: str, id: str) -> None:
        users = self._users(db, kind, id)
        if users:
            child = "key" if kind == "teams" else "team"
            them = "them" if len(users) > 1 else "it"
            raise Conflict(f"{SINGULAR[kind]} {id!r} still has {len(users)} {child}"
                           f"{'s' if len(users) > 1 else ''} ({short_list(users)}): delete {them} or move "
                           f"{them} to another {SINGULAR[kind]} first")

    # --- reads ------------------------------------------------------------------------------

    def _get(self, kind: str, id: str, from_row):
        n = self.NAMES
        r = self._execute(f"SELECT * FROM {n.table(kind)} WHERE id = {n.p}", (id,)).fetchone()
        return from_row(r) if r else None

    def get_key(self, id: str) -> VirtualKey | None:
        return self._get("keys", id, key_from_row)

    def get_team(self, id: str) -> Team | None:
        return self._get("teams", id, team_from_row)

    def get_customer(self, id: str) -> Customer | None:
        return self._get("customers", id, customer_from_row)

    def list_keys(self) -> list[VirtualKey]:
        """Oldest first."""
        return [key_from_row(r) for r in self._execute(f"SELECT * FROM {self.NAMES.keys} ORDER BY created_at, id")]

    def list_teams(self) -> list[Team]:
        return [team_from_row(r) for r in self._execute(f"SELECT * FROM {self.NAMES.teams} ORDER BY id")]

    def list_customers(self) -> list[Customer]:
        return [customer_from_row(r) for r in self._execute(f"SELECT * FROM {self.NAMES.customers} ORDER BY id")]

    def source_of(self, kind: str, id: str) -> str | None:
        """"config" | "api" for the row `id` of `kind` ("keys", "teams", "customers"); None if absent."""
        _check_kind(kind)
        n = self.NAMES
        r = self._execute(f"SELECT source FROM {n.table(kind)} WHERE id = {n.p}", (id,)).fetchone()
        return r["source"] if r else None

    def sources(self, kind: str) -> dict[str, str]:
        """{id: source} for every row of `kind` (keys carry theirs in VirtualKey.source already)."""
        _check_kind(kind)
        return {r["id"]: r["source"] for r in self._execute(f"SELECT id, source FROM {self.NAMES.table(kind)}")}

    def load_directory(self) -> Directory:
        """Every key, team and customer, read in one snapshot."""
        with self._read() as db:
            return self._directory(db)

    def _directory(self, db) -> Directory:
        n = self.NAMES
        keys = [key_from_row(r) for r in db.execute(f"SELECT * FROM {n.keys}")]
        teams = [team_from_row(r) for r in db.execute(f"SELECT * FROM {n.teams}")]
        customers = [customer_from_row(r) for r in db.execute(f"SELECT * FROM {n.customers}")]
        return Directory(keys={k.id: k for k in keys}, teams={t.id: t for t in teams},
                         customers={c.id: c for c in customers})

    # --- the config file's entries ----------------------------------------------------------

    def sync_config(self, gov_cfg) -> dict:
        """Make the store hold exactly the keys, teams and customers `gov_cfg` (a GovernanceConfig)
        declares, as source="config": upsert each one (an API-made row with the same id is taken
        over by the file), and remove config-sourced rows the file no longer declares. API-made rows
        are not touched.

        A removed config team that API-made keys still belong to (or a removed config customer that
        API-made teams still belong to) is not deleted, which would silently drop its budgets: it
        is kept and becomes source="api", so the CLI or admin API can change or delete it; a
        warning is logged. All in one transaction (nodes starting at once with the same file
        queue on the write lock and leave the same rows).

        Returns {"upserted": N, "removed": ["key:ID", ...], "adopted": ["team:ID", ...]}.
        """
        removed: list[str] = []
        adopted: list[str] = []
        n = self.NAMES
        with self._write() as db:
            for c in gov_cfg.customers:
                self._put_customer(db, c, "config", False)
            for t in gov_cfg.teams:
                self._put_team(db, t, "config", False)
            for k in gov_cfg.keys:
                if k.source != "config":
                    k = dataclasses.replace(k, source="config")
                self._put_key(db, k, False)
            declared = {"keys": {k.id for k in gov_cfg.keys}, "teams": {t.id for t in gov_cfg.teams},
                        "customers": {c.id for c in gov_cfg.customers}}
            for kind in KINDS:              # keys first: a team's keys go before the team
                table = n.table(kind)
                stale = [r["id"] for r in db.execute(f"SELECT id FROM {table} WHERE source = 'config' ORDER BY id")
                         if r["id"] not in declared[kind]]
                for id in stale:
                    if kind != "keys" and self._users(db, kind, id):
                        db.execute(f"UPDATE {table} SET source = 'api' WHERE id = {n.p}", (id,))
                        adopted.append(f"{SINGULAR[kind]}:{id}")
                        log.warning("governance: %s %r was removed from the config file but %s still "
                                    "belong to it; kept as an API-managed %s (delete it with the CLI or "
                                    "admin API once they are moved)", SINGULAR[kind], id,
                                    "keys" if kind == "teams" else "teams", SINGULAR[kind])
                    else:
                        db.execute(f"DELETE FROM {table} WHERE id = {n.p}", (id,))
                        removed.append(f"{SINGULAR[kind]}:{id}")
        if removed:
            log.info("governance: removed from the store (no longer in the config file): %s", ", ".join(removed))
        return {"upserted": len(gov_cfg.customers) + len(gov_cfg.teams) + len(gov_cfg.keys),
                "removed": removed, "adopted": adopted}

    # --- the ledger's snapshot --------------------------------------------------------------

    _snapshot_id: object
    _snapshot_name: str

    def save_snapshot(self, doc: dict) -> None:
        """Replace this store's snapshot (one statement: not a directory change)."""
        n = self.NAMES
        self._execute(f"INSERT INTO {n.snapshots} ({n.snapshot_key}, doc, saved_at) VALUES ({n.marks(3)}) "
                      f"ON CONFLICT ({n.snapshot_key}) DO UPDATE SET doc = excluded.doc, saved_at = excluded.saved_at",
                      (self._snapshot_id, to_json(doc), time.time()))

    def _snapshot(self, column: str):
        n = self.NAMES
        r = self._execute(f"SELECT {column} FROM {n.snapshots} WHERE {n.snapshot_key} = {n.p}",
                          (self._snapshot_id,)).fetchone()
        return None if r is None else r[column]

    def load_snapshot(self) -> dict | None:
        """The last saved document, or None if none was saved."""
        text = self._snapshot("doc")
        if text is None:
            return None
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise StoreError(f"governance store {self.path}: {self._snapshot_name} is not valid JSON ({e})") from None
        return doc if isinstance(doc, dict) else None

    def snapshot_saved_at(self) -> float | None:
        """When the snapshot was saved (epoch seconds), or None."""
        return self._snapshot("saved_at")


class Store(DirectoryStore):
    """One connection to the governance database in the data dir (SQLite). Not shared between
    threads; open one per process.

    Reads see the latest committed state. `data_version()` changes when *another* connection
    commits (this connection's own writes do not change it), so a process can poll it cheaply and
    reload its directory only when the CLI, the admin API or another process changed something.
    """

    ENGINE = "sqlite"
    NAMES = Names(p="?", keys="keys", teams="teams", customers="customers", schema_version="schema_version",
                  snapshots="ledger_snapshot", snapshot_key="id")
    _snapshot_id = 1                                    # one row
    _snapshot_name = "the ledger snapshot"

    def __init__(self, db: sqlite3.Connection, path: str):
        self._db = db
        self.path = path

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str, *, any_thread: bool = False) -> "Store":
        """The store in `data_dir`, created or migrated as needed. `any_thread`: the connection may
        be used from any thread, one at a time (the admin API runs its calls in worker threads)."""
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        path = os.path.join(data_dir, FILENAME)
        # Create the file 0600 before SQLite does (it would use 0644 minus the umask); SQLite then
        # creates the -wal and -shm files with the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError:
            pass
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                 check_same_thread=not any_thread)
        except sqlite3.Error as e:
            raise StoreError(f"governance store {path}: cannot open: {e}") from None
        db.row_factory = sqlite3.Row
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("governance store %s: journal mode is %s, not wal", path, mode)
            db.execute("PRAGMA synchronous = NORMAL")
            store = cls(db, path)
            store._migrate()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row["version"] if row else 0
            upgrade(db, version, MIGRATIONS, names=self.NAMES, where=f"governance store {self.path}")
        if version != SCHEMA_VERSION:
            log.info("governance store %s: schema version %d -> %d", self.path, version, SCHEMA_VERSION)

    # --- the backend seam (DirectoryStore) --------------------------------------------------

    @contextmanager
    def _write(self):
        """One write transaction, taken up front (BEGIN IMMEDIATE) so checks and writes are atomic."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _read(self):
        """One read transaction: several SELECTs see the same snapshot."""
        db = self._db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)        # autocommit (isolation_level=None)

    def data_version(self) -> int:
        """Changes whenever another connection (any process) committed a change to the file.
        Read it *before* `load_directory` so a change made in between is noticed next time."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]
