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

The logic (checks, refusals, `sync_config`, reads) is `DirectoryStore`'s (store.py), written once
for both backends; this module gives it PostgreSQL's transactions and connection handling. The
schema and its migrations (run by `open`, safe when several nodes start at once) are in
pg_schema.py.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row

from finops.shared.governance import Directory

from . import pg_schema
from .pg_schema import CHANNEL, SCHEMA_VERSION
from .store import DirectoryStore, StoreError

log = logging.getLogger("finops.governance.store")

_BUMP = "UPDATE finops_directory_version SET version = version + 1 WHERE id = 1 RETURNING version"
_VERSION = "SELECT version FROM finops_directory_version WHERE id = 1"


class PgStore(DirectoryStore):
    """One connection to the shared governance database. Not shared between threads; open one per
    process (or per thread)."""

    ENGINE = "postgres"
    NAMES = pg_schema.NAMES

    def __init__(self, url: str, node: str = ""):
        self.url = url
        self.link = pg_schema.Link(url, what="governance store", application_name="finops-store",
                                   row_factory=dict_row)
        self.path = self.link.path      # what messages call it (Store.path is the file's)
        self.node = node
        self._own = 0                   # directory writes committed through this object

    @property
    def _snapshot_id(self) -> str:
        return self.node

    @property
    def _snapshot_name(self) -> str:
        return f"the ledger snapshot of node {self.node!r}"

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, node: str = "") -> "PgStore":
        """Connect and migrate the schema. `node` names this node's ledger snapshot."""
        store = cls(url, node)
        store.link.open()
        return store

    def close(self) -> None:
        self.link.close()

    # --- the backend seam (DirectoryStore) --------------------------------------------------

    @contextmanager
    def _write(self):
        """One write transaction holding the directory's write lock (see the module doc); it bumps
        the directory version and notifies the listeners at commit."""
        conn = self.link.begin()
        try:
            version = conn.execute(_BUMP).fetchone()["version"]
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
            yield conn
            conn.execute("COMMIT")
        except StoreError:
            pg_schema.end(conn, "ROLLBACK")
            raise
        except psycopg.OperationalError as e:
            pg_schema.end(conn, "ROLLBACK")
            raise self.link.unavailable(e) from None
        except psycopg.Error as e:                  # e.g. a value PostgreSQL refuses (a NUL in a name)
            pg_schema.end(conn, "ROLLBACK")
            raise self.link.failed(e) from None
        except BaseException:
            pg_schema.end(conn, "ROLLBACK")
            raise
        self._own += 1

    @contextmanager
    def _read(self):
        """One read-only transaction: several SELECTs see the same snapshot."""
        conn = self.link.begin()
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn
        except psycopg.OperationalError as e:
            raise self.link.unavailable(e) from None
        finally:
            pg_schema.end(conn, "COMMIT")

    def _execute(self, sql: str, params=()) -> psycopg.Cursor:
        return self.link.run(sql, params)

    def data_version(self) -> int:
        """Changes whenever another connection (any node) committed a change to keys, teams or
        customers. Read it *before* `load_directory` so a change made in between is noticed next time."""
        return self._execute(_VERSION).fetchone()["version"] - self._own

    # --- reads ------------------------------------------------------------------------------

    def load_directory(self) -> Directory:
        """Every key, team and customer, read in one snapshot."""
        return self.load_versioned_directory()[1]

    def load_versioned_directory(self) -> tuple[int, Directory]:
        """(directory version, every key, team and customer), read in one snapshot: the version is
        exactly the one of the rows returned (pg_watch.py keeps both)."""
        with self._read() as db:
            version = db.execute(_VERSION).fetchone()["version"]
            directory = self._directory(db)
        return version, directory


__all__ = ["PgStore", "SCHEMA_VERSION"]
