"""Keys, teams and customers from PostgreSQL, kept current in memory by a listener thread: what a
worker reads on its request path when `[governance] store = "postgres"`.

`DirectoryWatcher` has the read side of the store's interface that the governor and the ledger use,
`data_version()` and `load_directory()`, and both cost no I/O: they return what the thread last
loaded. So the request path never waits on the database, and a PostgreSQL that is slow or down
does not stall requests: the workers go on with the last directory they had (no change can be
committed meanwhile anyway) and catch up as soon as it is back.

The thread holds one connection that LISTENs on `finops_directory` (pg_store.py NOTIFYs it in the
transaction of every change to keys, teams or customers, delivered at commit). It waits for a
notification at most `poll_seconds` (0.5 s); on a notification, or when the wait times out, it reads
the directory version (one indexed row) and, when it differs from the one it holds, reloads the
whole directory in one snapshot with its version (`PgStore.load_versioned_directory`). So a change
committed on any node is in force on every worker within milliseconds when the notification
arrives, and within `poll_seconds` plus a reload when it does not (a notification lost with a
connection, or a pooler in transaction mode that does not carry LISTEN). After a lost connection
it reconnects (every `retry_seconds`) and reloads unconditionally.

Why a thread and not a poll from the request path (what the SQLite store does with its cheap local
`PRAGMA data_version`): a poll of PostgreSQL is a network round trip made synchronously inside the
worker's trio loop; with a remote database that is a millisecond or more added to some requests, and
a database that hangs would stall the worker for the connect or statement timeout. The thread
costs one idle connection per worker process and about two tiny queries a second.

`on_change(version, directory)`, if given, is called from the thread after each reload that brought
a newer version (e.g. to wake a trio loop with `trio.lowlevel.TrioToken.run_sync_soon`); it must not
block. A process that changed the directory itself (the admin API in a worker) can `offer()` what it
reloaded, so its next request does not wait for the notification. Versions only move forward.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import psycopg

from finops.shared.governance import Directory

from . import pg_schema
from .pg_schema import CHANNEL
from .pg_store import PgStore
from .store import StoreError, StoreUnavailable

log = logging.getLogger("finops.governance.watch")

POLL_SECONDS = 0.5          # the version is also polled this often, in case a NOTIFY was lost
RETRY_SECONDS = 1.0         # PostgreSQL unreachable: try again this often
WAKE_SECONDS = 0.25         # the longest wait between looks at the stop flag
WARN_EVERY_SECONDS = 30.0   # an unreachable PostgreSQL is logged at most this often


class DirectoryWatcher:
    def __init__(self, url: str, *, poll_seconds: float = POLL_SECONDS, retry_seconds: float = RETRY_SECONDS,
                 on_change: Callable[[int, Directory], None] | None = None):
        self.url = url
        self.path = pg_schema.redact(url)
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.on_change = on_change
        self._state: tuple[int, Directory] | None = None     # (version, directory), swapped whole
        self._swap = threading.Lock()                       # versions only move forward
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: PgStore | None = None
        self.connected = False
        self.reloads = 0
        self.last_error = ""

    # --- what the request path reads: no I/O ----------------------------------------------------

    def data_version(self) -> int:
        """The version of the directory `load_directory` returns; changes after any committed change
        of keys, teams or customers (by any node) has been loaded."""
        state = self._state
        return state[0] if state is not None else -1

    def load_directory(self) -> Directory:
        """The directory last loaded (the thread replaces it whole: never changed in place)."""
        state = self._state
        return state[1] if state is not None else Directory()

    @property
    def loaded(self) -> bool:
        """The directory has been loaded at least once (before that, `load_directory` is empty
        because nothing is known, not because no key exists)."""
        return self._state is not None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0, *, must_load: bool = True) -> "DirectoryWatcher":
        """Start the thread and wait until the directory is loaded once, at most `timeout` seconds.
        Not loaded by then: with `must_load`, raise StoreUnavailable (the thread stops); without,
        return anyway (`loaded` is False) and let the thread keep trying every `retry_seconds`."""
        self._thread = threading.Thread(target=self._run, name="finops-directory-watch", daemon=True)
        self._thread.start()
        if not self._loaded.wait(timeout) and must_load:
            self.close()
            raise StoreUnavailable(f"governance store {self.path}: could not load the keys within {timeout:g}s"
                                   + (f" ({self.last_error})" if self.last_error else ""))
        return self

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=WAKE_SECONDS + 10)
        self._thread = None

    def __enter__(self) -> "DirectoryWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        warned = 0.0
        while not self._stop.is_set():
            try:
                self._watch()
                continue                                # reconnected on the way: LISTEN again now
            except Exception as e:                      # noqa: BLE001 - the thread must outlive any failure
                if not isinstance(e, (StoreError, psycopg.Error)):
                    log.exception("governance: the directory watcher failed")
                self.last_error = pg_schema.first_line(e)
                now = time.monotonic()
                if now - warned > WARN_EVERY_SECONDS:
                    warned = now
                    log.warning("governance store %s: %s; workers keep the keys they have and retry every %gs",
                                self.path, self.last_error, self.retry_seconds)
            finally:
                self.connected = False
                if self._store is not None:
                    self._store.close()
                    self._store = None
            self._stop.wait(self.retry_seconds)

    def _watch(self) -> None:
        """One connection's life: LISTEN, load, then wait for notifications or the poll timeout."""
        store = self._store = PgStore(self.url)
        conn = store.link.live()
        conn.execute(f"LISTEN {CHANNEL}")              # before loading: no change can fall in between
        self.connected = True
        self._load(store)
        next_poll = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            notified = False
            wait = min(WAKE_SECONDS, max(0.0, next_poll - time.monotonic()))
            for _ in conn.notifies(timeout=wait, stop_after=1):
                notified = True                         # the payload is a version: we read the row anyway
            if self._stop.is_set():
                return
            if notified or time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_seconds
                row = conn.execute("SELECT version FROM finops_directory_version WHERE id = 1").fetchone()
                if row["version"] > self.data_version():
                    self._load(store)
                    if store.link.conn is not conn:         # the load reconnected: LISTEN again, on the new one
                        return

    def offer(self, version: int, directory: Directory) -> bool:
        """Take a directory the caller loaded itself (`PgStore.load_versioned_directory()`), e.g. right
        after its own admin write, so its next request sees the change without waiting for the
        notification; ignored unless newer than the one held. True if taken."""
        with self._swap:
            state = self._state
            if state is not None and version <= state[0]:
                return False
            self._state = (version, directory)
        return True

    def _load(self, store: PgStore) -> None:
        version, directory = store.load_versioned_directory()
        with self._swap:
            state = self._state
            changed = state is None or version > state[0]
            if changed:
                self._state = (version, directory)
        self.reloads += 1
        self.last_error = ""
        self._loaded.set()
        if changed and self.on_change is not None:
            try:
                self.on_change(version, directory)
            except Exception:
                log.exception("governance: the directory change callback failed")


__all__ = ["DirectoryWatcher", "POLL_SECONDS"]
