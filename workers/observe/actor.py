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
    {"k": "scrape"}                                                       -> {"text": exposition bytes}
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
from .metrics import Metrics

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
        self.db = logdb.open_db(cfg.server.data_dir)
        self.metrics = Metrics()
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
            return {"text": self.metrics.render({"observer_rows": len(self.pending)})}
        if k == "flush":
            self.drain()            # rows a frontend sent before this request are written too
            self.commit()
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
            self.add_row(_charged(row, key, env, cost))

    def commit(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        with self.db:
            self.db.executemany(logdb.INSERT, rows)
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
        self.metrics.apply()
        days = self.cfg.observability.log_retention_days
        if days and now >= self.next_prune:
            self.next_prune = now + PRUNE_SECONDS
            n = logdb.prune(self.db, now - days * 86400)
            if n:
                log.info("observer: %d request-log rows older than %g days deleted", n, days)

    def close(self) -> None:
        self.commit()
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


if __name__ == "__main__":
    sys.exit(actors.main(ObserverActor))
