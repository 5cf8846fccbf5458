"""The observer's thread that writes the fleet's request log (log_store = "postgres"), so that
PostgreSQL's latency or an outage never stalls the observer's loop (metrics, scrapes, frontends).

The observer hands it records: `{"rows": [row + node, ...]}` (a batch) or `{"charges": [[rid, key,
env, cost, orphan_row | None], ...]}` (the ledger's charges, actor.py). Each is written at once when
nothing waits in the spool and PostgreSQL answers; otherwise it goes to the spool (pglog.Spool:
on disk, fsync'd) and the spool is written oldest first as soon as PostgreSQL answers again
(tried every RETRY_SECONDS). So records reach PostgreSQL in the order they came, none is lost
while the spool has room, and one that does not fit is dropped and counted (`dropped`: rows).

What the observer needs back (a charge's effect on the metrics) is put on `results`:
`("charged", (model, provider, env, vk, old_cost), new_cost)`, `("missing", rid, key, env, cost)`,
`("orphan", row)` (a charge whose row never came, written as a row of its own).
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time

from finops.workers.governance.store import StoreError, StoreUnavailable

from .pglog import DAY, PgLogWriter, Spool

log = logging.getLogger("finops.observer.pgsink")

RETRY_SECONDS = 1.0
AHEAD_SECONDS = 3600.0       # partitions for today and tomorrow are made this often


class PgSink:
    def __init__(self, writer: PgLogWriter, spool: Spool, clock=time.time):
        self.writer, self.spool, self.clock = writer, spool, clock
        self.q: queue.Queue = queue.Queue()
        self.results: collections.deque = collections.deque()
        self.dropped = 0                 # rows dropped with a full spool (the observer adds them to a metric)
        self.written = 0                 # rows written to PostgreSQL
        self.up = True
        self.retry_at = 0.0
        self.ahead_at = 0.0
        self.retention_days = 0.0
        self.prune_at = 0.0
        self._warned = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pglog", daemon=True)

    # --- the observer's side --------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, record: dict) -> None:
        self.q.put(record)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record submitted so far is written to PostgreSQL or in the spool."""
        done = threading.Event()
        self.q.put(done)
        done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self.thread.join(timeout)
        self.writer.close()

    @property
    def spooled(self) -> int:
        return len(self.spool)

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.q.get(timeout=0.2)
            except queue.Empty:
                item = None
            if isinstance(item, threading.Event):
                item.set()
            elif item is not None:
                self.take(item)
            self.step()

    def take(self, record: dict) -> None:
        """One record from the observer: written now, or kept in the spool."""
        if not len(self.spool) and self.up:
            try:
                self._apply(record)
                return
            except StoreUnavailable as e:
                self._down(e)
            except StoreError as e:
                log.error("request log: PostgreSQL refused a batch (kept in the spool): %s", e)
                self._down(e)
        self._keep(record)

    def step(self) -> None:
        """Housekeeping between records: the spool, partitions ahead, retention."""
        now = self.clock()
        if len(self.spool) and now >= self.retry_at:
            self.drain()
        if self.up and now >= self.ahead_at:
            try:
                today = int(now // DAY)
                self.writer.ensure_partitions([today, today + 1])
                self.ahead_at = now + AHEAD_SECONDS
            except StoreError as e:
                self._down(e)
        if self.up and self.retention_days and now >= self.prune_at:
            try:
                n = self.writer.drop_before(now - self.retention_days * DAY)
                self.prune_at = now + AHEAD_SECONDS
                if n:
                    log.info("request log: %d daily partitions past %g days of retention dropped", n,
                             self.retention_days)
            except StoreError as e:
                self._down(e)

    def drain(self) -> int:
        """Write the spool, oldest first, until it is empty or PostgreSQL fails; the batches written."""
        n = 0
        while len(self.spool):
            try:
                self._apply(self.spool.oldest())
            except StoreError as e:
                self._down(e)
                return n
            self.spool.pop()
            n += 1
        if not self.up or n:
            log.warning("request log: PostgreSQL %s answers again; the spool is written (%d batches)",
                        self.writer.path, n)
        self.up = True
        return n

    def _apply(self, record: dict) -> None:
        rows = record.get("rows")
        if rows:
            self.writer.write(rows)
            self.written += len(rows)
        for rid, key, env, cost, orphan in record.get("charges", ()):
            found = self.writer.charge(rid, key, env, cost)
            if found is not None:
                self.results.append(("charged", found, cost))
            elif orphan is not None:
                self.writer.write([orphan])
                self.written += 1
                self.results.append(("orphan", orphan))
            else:
                self.results.append(("missing", rid, key, env, cost))

    def _keep(self, record: dict) -> None:
        if not self.spool.append(record):
            n = len(record.get("rows", ())) + len(record.get("charges", ()))
            self.dropped += n
            log.error("request log: the spool is full (%d bytes); %d records dropped", self.spool.bytes, n)

    def _down(self, e: Exception) -> None:
        now = self.clock()
        self.up = False
        self.retry_at = now + RETRY_SECONDS
        if now - self._warned >= 10:
            self._warned = now
            log.warning("request log: %s; rows wait in the spool (%d batches) until it answers", e, len(self.spool))
