"""The one way a process opens the governance store and the directory it reads, by `[governance] store`.

    store = open_store(cfg)                 # Store (SQLite in the data dir) or PgStore (postgres_url)
    reader = open_directory(cfg, store)     # what the request path reads: data_version(), load_directory()

`open_store` is for writers and for what lives in the store besides the directory: the ledger
(`sync_config`, its snapshot: per node on PostgreSQL, `cfg.server.node`), the admin API and the
`finops keys|teams|customers` CLI. Either store migrates its schema on open (PostgreSQL: once, under
an advisory lock, however many nodes start at once: pg_schema.py).

`open_directory` is for readers on the request path (the governor in each worker, the ledger's
directory). SQLite: the store itself, whose `data_version()` is a local `PRAGMA` (microseconds),
so the governor polls it at most once a second. PostgreSQL: a started `DirectoryWatcher`
(pg_watch.py), a thread that LISTENs for changes and polls the version every 0.5 s; its
`data_version()` and `load_directory()` read memory, so the governor checks it on every request
and a change made on any node is in force within a second. `loaded` is False while the watcher has
never reached PostgreSQL (the reader must then refuse, not treat the empty directory as "no keys").

psycopg is imported only when store = "postgres", so the embedded default never loads it.
"""
from __future__ import annotations

from finops.shared.config import Config

from .store import DirectoryStore, Store

START_SECONDS = 5.0     # a worker waits this long for PostgreSQL at start before serving 503s (README)


def open_store(cfg: Config, *, any_thread: bool = False) -> DirectoryStore:
    """The governance store `cfg` names, created or migrated as needed. `any_thread`: the store
    may be used from any thread, one at a time (the admin API's calls run in worker threads);
    a PgStore always may (one connection, used by one thread at a time: never share it between
    threads at once). Raises StoreError (StoreUnavailable: PostgreSQL unreachable, retry)."""
    g = cfg.governance
    if g.store == "postgres":
        from .pg_store import PgStore
        return PgStore.open(g.postgres_url, node=cfg.server.node)
    return Store.open(cfg.server.data_dir, any_thread=any_thread)


def watched(cfg: Config) -> bool:
    """The directory is read through a DirectoryWatcher (store = "postgres"): free to check on
    every request, and possibly not loaded yet."""
    return cfg.governance.store == "postgres"


def open_directory(cfg: Config, store: DirectoryStore | None = None, *, timeout: float | None = None,
                   must_load: bool = True):
    """The reader of keys, teams and customers for the request path: `store` itself (or a new
    Store) on SQLite; on PostgreSQL a DirectoryWatcher started on `postgres_url`, waiting up to
    `timeout` s (default START_SECONDS) for its first load (`must_load`: else StoreUnavailable;
    without it, returned not `loaded` and still trying). Close it when done (closing the SQLite
    store twice is harmless)."""
    if watched(cfg):
        from .pg_watch import DirectoryWatcher
        return DirectoryWatcher(cfg.governance.postgres_url).start(
            START_SECONDS if timeout is None else timeout, must_load=must_load)
    return store if store is not None else open_store(cfg)


__all__ = ["open_store", "open_directory", "watched", "START_SECONDS"]
