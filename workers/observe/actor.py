"""The observer actor: one process that writes the request log and keeps the metrics.

    python -m finops.workers.observe.actor      (started by `finops serve`, or the Procfile)

Frontends forward the request-log rows here in batches, off the request path (each row rides its
request's final envelope from the worker: frontend/outcomes.py); the observer inserts them into
SQLite (logdb.py) in one transaction per `COMMIT_SECONDS` or `COMMIT_ROWS`, and folds each row
into the Prometheus metrics (metrics.py), so `/metrics` is the whole gateway's whatever worker
serves the scrape. Once an hour rows older than `observability.log_retention_days` are deleted.
The loop is `finops.shared.actors.BlockingActor`.

**The ledger's charges.** A reservation no worker settled (its worker died, or it outlived
`governance.reservation_ttl_seconds`) is charged by the ledger itself, in full; a settle that
arrives after that corrects it. The ledger sends each such charge here, and the observer sets the
request's `cost_usd` to it (and its key and env when the row had none: a row the frontend wrote
for a dead worker's request), so the log always shows what the ledger charged. A charge whose row
has not arrived waits for it; after ORPHAN_SECONDS without one (its frontend died too) it becomes
a row of its own (`error` = "reservation_expired"), so the log's total still equals the ledger's.

Protocol (msgpack maps):

    {"k": "rows", "packed": [logrow.pack(row), ...]}                    (no reply; from frontends)
    {"k": "rows", "rows": [[value, ...] in logdb.NAMES order, ...]}     (no reply; tools and tests)
    {"k": "charges", "c": [[rid, key, env, cost_usd], ...]}             (no reply; from the ledger)
    {"k": "ledger", "c": {"uncounted": n, "settles_dropped": n, "spend_dropped": n}}  (no reply; increments)
    {"k": "cache", "c": {"published": n, "applied": n, "expired_skipped": n, "dropped": n}}  (no reply; the
                                                                          cache's replication, increments)
    {"k": "gauges", "proc": "worker-123", "kind": "worker", "g": {...}}  (no reply; see Metrics.report)
    {"k": "scrape"}                                -> {"text": exposition bytes, "type": its content type}
    {"k": "flush"}                                                        -> {"rows": rows written so far}
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from finops.shared import actors, logrow
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.rundir import ALERTS_FILE, RESTARTS_FILE

from . import logdb
from .metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("finops.observer")

COMMIT_SECONDS = 0.5        # rows are committed at least this often (what a crash of the observer can lose)
COMMIT_ROWS = 2000          # ... or as soon as this many wait
PRUNE_SECONDS = 3600.0      # retention deletes old rows once an hour
ORPHAN_SECONDS = 60.0       # a ledger charge waits this long for its request's row
MAX_ORPHANS = 100_000       # ledger charges kept waiting for their rows


class ObserverActor(BlockingActor):
    kind = "observer"
    TICK_SECONDS = COMMIT_SECONDS

    def __init__(self, cfg: configmod.Config, clock=time.time):
        super().__init__(cfg, clock)
        self.node = cfg.server.node
        self.pg = None              # the fleet's log (log_store = "postgres"): pgsink.PgSink
        self.db = None
        if cfg.observability.log_store == "postgres":
            self.pg = open_pg_sink(cfg, self.node, clock)
        else:
            self.db = logdb.open_db(cfg.server.data_dir, node=self.node)
        self.metrics = Metrics(node=cfg.server.node_name)     # a named node (a fleet): node="..." on every sample
        self.log_dropped = 0
        self.pending: list[list] = []
        self.written = 0
        self.next_prune = 0.0
        self.days = logrow.Days(cfg.governance.timezone)
        self.unmatched: dict[str, tuple] = {}      # rid -> (when, key, env, cost): charges waiting for their row

    def handle(self, msg: dict) -> dict | None:
        k = msg.get("k")
        if k == "rows":
            for values in msg.get("rows", ()):
                self.add_row(values)
            for data in msg.get("packed", ()):
                try:
                    self.add_row(logrow.unpack(data))
                except ValueError as e:
                    log.error("observer: dropping a row: %s", e)
            if len(self.pending) >= COMMIT_ROWS:
                self.commit()
            return None
        if k == "charges":
            for rid, key, env, cost in msg["c"]:
                self.charge(rid, key, env, cost)
            return None
        if k == "ledger":
            self.metrics.ledger_counts(msg.get("c", {}))
            return None
        if k == "cache":
            self.metrics.cache_counts(msg.get("c", {}))
            return None
        if k == "gauges":
            self.metrics.report(msg["proc"], msg.get("kind", "worker"), msg.get("g", {}))
            return None
        if k == "scrape":
            self.metrics.set_restarts(self._restarts())
            self.metrics.set_alerts(self._run_file(ALERTS_FILE))
            if self.pg is not None:
                self._pg_results()
            queues = {"observer_rows": len(self.pending)}
            if self.pg is not None:
                queues["request_log_spool_batches"] = self.pg.spooled
            return {"text": self.metrics.render(queues), "type": CONTENT_TYPE}
        if k == "flush":
            self.drain()            # rows a frontend sent before this request are written too
            self.commit()
            if self.pg is not None:
                self.pg.flush()
                self._pg_results()
            return {"rows": self.written}
        log.warning("observer: unknown message kind %r", k)
        return None

    def add_row(self, values: list) -> None:
        names = logdb.NAMES
        if len(values) != len(names):
            log.error("observer: dropping a row of %d fields (expected %d)", len(values), len(names))
            return
        if self.unmatched and values[0] in self.unmatched:     # the ledger charged it before it arrived
            _, key, env, cost = self.unmatched.pop(values[0])
            values = _charged(list(values), key, env, cost)
        self.pending.append(values)
        try:
            self.metrics.observe(dict(zip(names, values)))
        except (TypeError, ValueError, KeyError):      # a malformed row: logged, not counted
            log.exception("observer: a row the metrics cannot take: %r", values[:3])

    def charge(self, rid: str, key: str, env: str, cost: float) -> None:
        """The ledger charged request `rid` `cost` USD itself: the row shows it (module docstring)."""
        if self.pg is not None:
            for row in self.pending:                 # not written yet: charged in place
                if row[0] == rid:
                    old = dict(zip(logdb.NAMES, row))
                    new = dict(zip(logdb.NAMES, _charged(row, key, env, cost)))
                    self.metrics.add_cost(new, new["cost_usd"] - (old["cost_usd"] or 0.0))
                    return
            self.commit()
            self.pg.submit({"charges": [[rid, key, env, cost, None]]})
            return
        self.commit()
        found = self.db.execute(f"SELECT {', '.join(logdb.NAMES)} FROM requests WHERE id = ?", (rid,)).fetchone()
        if found is None:
            if len(self.unmatched) < MAX_ORPHANS:
                self.unmatched[rid] = (self.clock(), key, env, cost)
            else:
                log.error("observer: too many ledger charges without rows; %s (%.6f USD) not recorded", rid, cost)
            return
        old = dict(zip(logdb.NAMES, found))
        new = dict(zip(logdb.NAMES, _charged(list(found), key, env, cost)))
        with self.db:
            self.db.execute("UPDATE requests SET cost_usd = ?, vk = ?, env = ? WHERE id = ?",
                            (new["cost_usd"], new["vk"], new["env"], rid))
        self.metrics.add_cost(new, new["cost_usd"] - (old["cost_usd"] or 0.0))

    def orphans(self, now: float) -> None:
        """Charges whose row never came (its frontend died too) become rows of their own."""
        late = [rid for rid, (t, *_) in self.unmatched.items() if t < now - ORPHAN_SECONDS]
        for rid in late:
            t, key, env, cost = self.unmatched.pop(rid)
            row = list(logrow.gateway_row(rid, t, self.days(t), "", "", env, "", 0, "reservation_expired", 0.0))
            if self.pg is not None:     # written only if its row is still missing in the fleet's log
                self.pg.submit({"charges": [[rid, key, env, cost, _charged(row, key, env, cost) + [self.node]]]})
                continue
            self.add_row(_charged(row, key, env, cost))

    def _pg_results(self) -> None:
        """What the PostgreSQL writer reports back (pgsink.py): charges' effects on the metrics."""
        pg = self.pg
        while pg.results:
            r = pg.results.popleft()
            if r[0] == "charged":
                (model, provider, env, vk, old), cost = r[1], r[2]
                self.metrics.add_cost({"model": model, "provider": provider, "env": env, "vk": vk},
                                      round(cost, 6) - old)
            elif r[0] == "missing":
                _, rid, key, env, cost = r
                if len(self.unmatched) < MAX_ORPHANS:
                    self.unmatched[rid] = (self.clock(), key, env, cost)
            elif r[0] == "orphan":
                self.metrics.observe(dict(zip(logdb.NAMES, r[1])))
        if pg.dropped > self.log_dropped:
            self.metrics.log_dropped(pg.dropped - self.log_dropped)
            self.log_dropped = pg.dropped

    def commit(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        node = [self.node]
        if self.pg is not None:
            self.pg.submit({"rows": [list(r) + node for r in rows]})
        else:
            with self.db:
                self.db.executemany(logdb.INSERT_NODE, [list(r) + node for r in rows])
        self.written += len(rows)

    def _restarts(self) -> dict:
        return self._run_file(RESTARTS_FILE)

    def _run_file(self, name: str) -> dict:
        """A JSON file another process keeps in the run directory (shared/rundir.py); {} if none."""
        try:
            with open(os.path.join(self.cfg.run_dir, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def tick(self) -> None:
        now = self.clock()
        if self.unmatched:
            self.orphans(now)
        self.commit()
        if self.pg is not None:
            self._pg_results()
        self.metrics.apply()
        days = self.cfg.observability.log_retention_days
        if self.pg is not None:
            self.pg.retention_days = days         # whole daily partitions, dropped by its thread
        elif days and now >= self.next_prune:
            self.next_prune = now + PRUNE_SECONDS
            n = logdb.prune(self.db, now - days * 86400)
            if n:
                log.info("observer: %d request-log rows older than %g days deleted", n, days)

    def close(self) -> None:
        self.commit()
        if self.pg is not None:
            self.pg.stop()
        else:
            self.db.close()
        log.info("observer: request log closed (%d rows written)", self.written)


_I = logrow.INDEX


def _charged(row: list, key: str, env: str, cost: float) -> list:
    """`row` with the ledger's charge: its cost, and the key and env when it had none."""
    row[_I["cost_usd"]] = round(cost, 6)
    if not row[_I["vk"]]:
        row[_I["vk"]] = key
    if not row[_I["env"]]:
        row[_I["env"]] = env
    return row


def open_pg_sink(cfg: configmod.Config, node: str, clock):
    """The fleet log's writer thread, with its spool in the data dir (pgsink.py). PostgreSQL may be
    down now: rows wait in the spool until it answers."""
    from .pglog import PgLogWriter, Spool
    from .pgsink import PgSink
    from finops.workers.governance.store import StoreError

    writer = PgLogWriter(cfg.log_postgres_url, node)
    try:
        writer.open()
    except StoreError as e:
        log.warning("observer: %s; rows wait in the spool until it answers", e)
    spool = Spool(os.path.join(cfg.server.data_dir, "log-spool"), int(cfg.observability.log_spool_max_mb * 1024 * 1024))
    sink = PgSink(writer, spool, clock)
    sink.retention_days = cfg.observability.log_retention_days
    sink.start()
    return sink


if __name__ == "__main__":
    sys.exit(actors.main(ObserverActor))
