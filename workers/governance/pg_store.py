"""PostgreSQL store of customers, teams and virtual keys (and a ledger snapshot per node), shared by
every gateway node: `[governance] store = "postgres"`. Same interface and semantics as `Store`
(store.py, the embedded SQLite default): read its module doc for `source`, `sync_config`, the
errors and the sensitivity of key secrets (stored as given here too: protect the database, its
backups and the URL's credentials like a credentials file).

What differs, and why:

* **Writes are serialised** like SQLite's BEGIN IMMEDIATE: every write transaction starts by
  updating the one row of `finops_directory_version` (version + 1), which holds a row lock until
  commit, so a check and the write it guards (a team still has keys; the id is free) are atomic
  across all nodes. The same transaction NOTIFYs channel `finops_directory` with the new version;
  PostgreSQL delivers it at commit to every listener (pg_watch.py), and drops it on rollback.
* **`data_version()`** is the directory version minus this connection's own writes: like
  SQLite's `PRAGMA data_version` it changes only when *another* connection (any node) committed a
  change to keys, teams or customers. It costs a round trip; the workers read pg_watch.py's copy
  instead, which costs none.
* **The ledger snapshot** is kept per node (`PgStore.open(url, node=...)`), outside the directory
  version: a local ledger's counters belong to its node, and saving them every second must not make
  every worker of every node reload its directory.
* **Connection failures** raise `StoreUnavailable` (the admin API answers 503: retry). A connection
  found dead when a read or a transaction starts is replaced once, transparently (nothing of the
  call had run); a failure later in a write is not retried (it may have committed): the caller sees
  `StoreUnavailable` and retries, which the upserts tolerate.

The schema and its migrations (run by `open`, safe when several nodes start at once) are in
pg_schema.py.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row

from finops.shared.governance import Customer, Directory, Team, VirtualKey

from . import pg_schema
from .pg_schema import CHANNEL, SCHEMA_VERSION, redact
from .store import (KINDS, Conflict, InvalidReference, NotFound, StoreError, StoreUnavailable, customer_from_row, to_json,
                    key_from_row, short_list, SINGULAR, team_from_row, budgets_to_json, rate_limits_to_json)

log = logging.getLogger("finops.governance.store")

TABLES = {"keys": "finops_keys", "teams": "finops_teams", "customers": "finops_customers"}
_BUMP = "UPDATE finops_directory_version SET version = version + 1 WHERE id = 1 RETURNING version"


class PgStore:
    """One connection to the shared governance database. Not shared between threads; open one per
    process (or per thread)."""

    def __init__(self, url: str, node: str = ""):
        self.url = url
        self.path = redact(url)         # what messages call it (Store.path is the file's)
        self.node = node
        self._conn: psycopg.Connection | None = None
        self._own = 0                   # directory writes committed through this object

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, node: str = "") -> "PgStore":
        """Connect and migrate the schema. `node` names this node's ledger snapshot."""
        store = cls(url, node)
        store._connect()
        try:
            pg_schema.migrate(store._conn, f"governance store {store.path}")
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> psycopg.Connection:
        self._conn = pg_schema.connect(self.url, application_name="finops-store")
        self._conn.row_factory = dict_row
        return self._conn

    def _live(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            return self._connect()
        return self._conn

    def _unavailable(self, e: psycopg.Error) -> StoreUnavailable:
        return StoreUnavailable(f"governance store {self.path}: {pg_schema._first_line(e)}")

    def _begin(self) -> psycopg.Connection:
        """BEGIN on a live connection; a connection found dead here is replaced once."""
        for attempt in (0, 1):
            conn = self._live()
            try:
                conn.execute("BEGIN")
                return conn
            except psycopg.OperationalError as e:
                if not conn.broken or attempt:
                    raise self._unavailable(e) from None

    @staticmethod
    def _end(conn: psycopg.Connection, sql: str) -> None:
        if not conn.broken and not conn.closed:
            try:
                conn.execute(sql)
            except psycopg.Error:
                pass

    @contextmanager
    def _write(self):
        """One write transaction holding the directory's write lock (see the module doc); it bumps
        the directory version and notifies the listeners at commit."""
        conn = self._begin()
        try:
            version = conn.execute(_BUMP).fetchone()["version"]
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
            yield conn
            conn.execute("COMMIT")
        except StoreError:
            self._end(conn, "ROLLBACK")
            raise
        except psycopg.OperationalError as e:
            self._end(conn, "ROLLBACK")
            raise self._unavailable(e) from None
        except psycopg.Error as e:                  # e.g. a value PostgreSQL refuses (a NUL in a name)
            self._end(conn, "ROLLBACK")
            raise StoreError(f"governance store {self.path}: {pg_schema._first_line(e)}") from None
        except BaseException:
            self._end(conn, "ROLLBACK")
            raise
        self._own += 1

    @contextmanager
    def _read(self):
        """One read-only transaction: several SELECTs see the same snapshot."""
        conn = self._begin()
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn
        except psycopg.OperationalError as e:
            raise self._unavailable(e) from None
        finally:
            self._end(conn, "COMMIT")

    def _one(self, sql: str, params=()) -> dict | None:
        return self._all(sql, params, one=True)

    def _all(self, sql: str, params=(), one: bool = False, rows: bool = True):
        """One autocommit statement, a read or an idempotent write; a connection found dead is
        replaced once."""
        for attempt in (0, 1):
            conn = self._live()
            try:
                cur = conn.execute(sql, params)
                if not rows:
                    return None
                return cur.fetchone() if one else cur.fetchall()
            except psycopg.OperationalError as e:
                if not conn.broken or attempt:
                    raise self._unavailable(e) from None
            except psycopg.Error as e:
                raise StoreError(f"governance store {self.path}: {pg_schema._first_line(e)}") from None

    def schema_version(self) -> int:
        return self._one("SELECT version FROM finops_schema_version")["version"]

    def data_version(self) -> int:
        """Changes whenever another connection (any node) committed a change to keys, teams or
        customers. Read it *before* `load_directory` so a change made in between is noticed next time."""
        return self._one("SELECT version FROM finops_directory_version WHERE id = 1")["version"] - self._own

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

    @staticmethod
    def _exists(db, kind: str, id: str) -> bool:
        return db.execute(f"SELECT 1 FROM {TABLES[kind]} WHERE id = %s", (id,)).fetchone() is not None

    def _check_new(self, db, kind: str, id: str, create: bool) -> None:
        if create and self._exists(db, kind, id):
            raise Conflict(f"{SINGULAR[kind]} {id!r} already exists")

    def _put_customer(self, db, c: Customer, source: str, create: bool) -> None:
        self._check_new(db, "customers", c.id, create)
        db.execute("INSERT INTO finops_customers (id, name, budgets, rate_limits, source) VALUES (%s, %s, %s, %s, %s) "
                   "ON CONFLICT (id) DO UPDATE SET name = excluded.name, budgets = excluded.budgets, "
                   "rate_limits = excluded.rate_limits, source = excluded.source",
                   (c.id, c.name, to_json(budgets_to_json(c.budgets)), to_json(rate_limits_to_json(c.rate_limits)),
                    source))

    def _put_team(self, db, t: Team, source: str, create: bool) -> None:
        self._check_new(db, "teams", t.id, create)
        if t.customer and not self._exists(db, "customers", t.customer):
            raise InvalidReference(f"customer: no customer {t.customer!r}")
        db.execute("INSERT INTO finops_teams (id, name, customer, budgets, rate_limits, source) "
                   "VALUES (%s, %s, %s, %s, %s, %s) "
                   "ON CONFLICT (id) DO UPDATE SET name = excluded.name, customer = excluded.customer, "
                   "budgets = excluded.budgets, rate_limits = excluded.rate_limits, source = excluded.source",
                   (t.id, t.name, t.customer, to_json(budgets_to_json(t.budgets)),
                    to_json(rate_limits_to_json(t.rate_limits)), source))

    def _put_key(self, db, k: VirtualKey, create: bool) -> None:
        self._check_new(db, "keys", k.id, create)
        if k.team and not self._exists(db, "teams", k.team):
            raise InvalidReference(f"team: no team {k.team!r}")
        db.execute("INSERT INTO finops_keys (id, secret, name, team, models, providers, enabled, expires_at, "
                   "budgets, rate_limits, created_at, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                   "ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, name = excluded.name, "
                   "team = excluded.team, models = excluded.models, providers = excluded.providers, "
                   "enabled = excluded.enabled, expires_at = excluded.expires_at, budgets = excluded.budgets, "
                   "rate_limits = excluded.rate_limits, source = excluded.source",
                   (k.id, k.secret, k.name, k.team, to_json(list(k.models)), to_json(list(k.providers)),
                    bool(k.enabled), k.expires_at, to_json(budgets_to_json(k.budgets)),
                    to_json(rate_limits_to_json(k.rate_limits)), k.created_at or time.time(), k.source))

    def delete_key(self, id: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM finops_keys WHERE id = %s", (id,)).rowcount == 0:
                raise NotFound(f"no key {id!r}")

    def delete_team(self, id: str) -> None:
        """Refused (Conflict) while keys belong to the team."""
        with self._write() as db:
            if not self._exists(db, "teams", id):
                raise NotFound(f"no team {id!r}")
            self._refuse_if_used(db, "teams", id)
            db.execute("DELETE FROM finops_teams WHERE id = %s", (id,))

    def delete_customer(self, id: str) -> None:
        """Refused (Conflict) while teams belong to the customer."""
        with self._write() as db:
            if not self._exists(db, "customers", id):
                raise NotFound(f"no customer {id!r}")
            self._refuse_if_used(db, "customers", id)
            db.execute("DELETE FROM finops_customers WHERE id = %s", (id,))

    @staticmethod
    def _users(db, kind: str, id: str) -> list[str]:
        """The ids of the rows that point at team/customer `id`."""
        if kind == "teams":
            return [r["id"] for r in db.execute("SELECT id FROM finops_keys WHERE team = %s ORDER BY id", (id,))]
        return [r["id"] for r in db.execute("SELECT id FROM finops_teams WHERE customer = %s ORDER BY id", (id,))]

    def _refuse_if_used(self, db, kind: str, id: str) -> None:
        users = self._users(db, kind, id)
        if users:
            child = "key" if kind == "teams" else "team"
            them = "them" if len(users) > 1 else "it"
            raise Conflict(f"{SINGULAR[kind]} {id!r} still has {len(users)} {child}"
                           f"{'s' if len(users) > 1 else ''} ({short_list(users)}): delete {them} or move "
                           f"{them} to another {SINGULAR[kind]} first")

    # --- reads ------------------------------------------------------------------------------

    def get_key(self, id: str) -> VirtualKey | None:
        r = self._one("SELECT * FROM finops_keys WHERE id = %s", (id,))
        return key_from_row(r) if r else None

    def get_team(self, id: str) -> Team | None:
        r = self._one("SELECT * FROM finops_teams WHERE id = %s", (id,))
        return team_from_row(r) if r else None

    def get_customer(self, id: str) -> Customer | None:
        r = self._one("SELECT * FROM finops_customers WHERE id = %s", (id,))
        return customer_from_row(r) if r else None

    def list_keys(self) -> list[VirtualKey]:
        """Oldest first."""
        return [key_from_row(r) for r in self._all("SELECT * FROM finops_keys ORDER BY created_at, id")]

    def list_teams(self) -> list[Team]:
        return [team_from_row(r) for r in self._all("SELECT * FROM finops_teams ORDER BY id")]

    def list_customers(self) -> list[Customer]:
        return [customer_from_row(r) for r in self._all("SELECT * FROM finops_customers ORDER BY id")]

    def source_of(self, kind: str, id: str) -> str | None:
        """"config" | "api" for the row `id` of `kind` ("keys", "teams", "customers"); None if absent."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        r = self._one(f"SELECT source FROM {TABLES[kind]} WHERE id = %s", (id,))
        return r["source"] if r else None

    def sources(self, kind: str) -> dict[str, str]:
        """{id: source} for every row of `kind` (keys carry theirs in VirtualKey.source already)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        return {r["id"]: r["source"] for r in self._all(f"SELECT id, source FROM {TABLES[kind]}")}

    def load_directory(self) -> Directory:
        """Every key, team and customer, read in one snapshot."""
        return self.load_versioned_directory()[1]

    def load_versioned_directory(self) -> tuple[int, Directory]:
        """(directory version, every key, team and customer), read in one snapshot: the version is
        exactly the one of the rows returned (pg_watch.py keeps both)."""
        with self._read() as db:
            version = db.execute("SELECT version FROM finops_directory_version WHERE id = 1").fetchone()["version"]
            keys = [key_from_row(r) for r in db.execute("SELECT * FROM finops_keys")]
            teams = [team_from_row(r) for r in db.execute("SELECT * FROM finops_teams")]
            customers = [customer_from_row(r) for r in db.execute("SELECT * FROM finops_customers")]
        return version, Directory(keys={k.id: k for k in keys}, teams={t.id: t for t in teams},
                                  customers={c.id: c for c in customers})

    # --- the config file's entries ----------------------------------------------------------

    def sync_config(self, gov_cfg) -> dict:
        """As `Store.sync_config` (store.py): the store holds exactly the config file's keys, teams
        and customers as source="config", API-made rows untouched, removed config teams/customers
        still in use adopted as source="api". One transaction: several nodes starting at once with
        the same file queue on the write lock and leave the same rows.

        Returns {"upserted": N, "removed": ["key:ID", ...], "adopted": ["team:ID", ...]}.
        """
        removed: list[str] = []
        adopted: list[str] = []
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
                table = TABLES[kind]
                stale = [r["id"] for r in db.execute(f"SELECT id FROM {table} WHERE source = 'config' ORDER BY id")
                         if r["id"] not in declared[kind]]
                for id in stale:
                    if kind != "keys" and self._users(db, kind, id):
                        db.execute(f"UPDATE {table} SET source = 'api' WHERE id = %s", (id,))
                        adopted.append(f"{SINGULAR[kind]}:{id}")
                        log.warning("governance: %s %r was removed from the config file but %s still "
                                    "belong to it; kept as an API-managed %s (delete it with the CLI or "
                                    "admin API once they are moved)", SINGULAR[kind], id,
                                    "keys" if kind == "teams" else "teams", SINGULAR[kind])
                    else:
                        db.execute(f"DELETE FROM {table} WHERE id = %s", (id,))
                        removed.append(f"{SINGULAR[kind]}:{id}")
        if removed:
            log.info("governance: removed from the store (no longer in the config file): %s", ", ".join(removed))
        return {"upserted": len(gov_cfg.customers) + len(gov_cfg.teams) + len(gov_cfg.keys),
                "removed": removed, "adopted": adopted}

    # --- the ledger's snapshot (this node's) ------------------------------------------------

    def save_snapshot(self, doc: dict) -> None:
        """Replace this node's snapshot (one statement; not a directory change: no version bump)."""
        self._all("INSERT INTO finops_ledger_snapshots (node, doc, saved_at) VALUES (%s, %s, %s) "
                  "ON CONFLICT (node) DO UPDATE SET doc = excluded.doc, saved_at = excluded.saved_at",
                  (self.node, to_json(doc), time.time()), rows=False)

    def load_snapshot(self) -> dict | None:
        """This node's last saved document, or None if none was saved."""
        r = self._one("SELECT doc FROM finops_ledger_snapshots WHERE node = %s", (self.node,))
        if r is None:
            return None
        try:
            doc = json.loads(r["doc"])
        except ValueError as e:
            raise StoreError(f"governance store {self.path}: the ledger snapshot of node {self.node!r} is not "
                             f"valid JSON ({e})") from None
        return doc if isinstance(doc, dict) else None

    def snapshot_saved_at(self) -> float | None:
        """When this node's snapshot was saved (epoch seconds), or None."""
        r = self._one("SELECT saved_at FROM finops_ledger_snapshots WHERE node = %s", (self.node,))
        return r["saved_at"] if r else None


__all__ = ["PgStore", "SCHEMA_VERSION", "TABLES"]
