"""The observer actor: one process that writes the request log and keeps the metrics.

    python -m finops.workers.observe.actor      (started by `finops serve`, or the Procfile)

Workers send their request-log rows here in batches, off the request path (observe/requestlog.py);
the observer inserts them into SQLite (logdb.py) in one transaction per `COMMIT_SECONDS` or
`COMMIT_ROWS`, and folds each row into the Prometheus metrics (metrics.py), so `/metrics` is the
whole gateway's whatever worker serves the scrape. Once an hour rows older than
`observability.log_retention_days` are deleted. The loop is `finops.shared.actors.BlockingActor`.

Protocol (msgpack maps):

    {"k": "rows", "rows": [[value, ...] in logdb.NAMES order, ...]}     (no reply)
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

from finops.shared import actors
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.supervisor import RESTARTS_FILE

from . import logdb
from .metrics import Metrics

log = logging.getLogger("finops.observer")

COMMIT_SECONDS = 0.5
COMMIT_ROWS = 2000
PRUNE_SECONDS = 3600.0


class ObserverActor(BlockingActor):
    kind = "observer"
    TICK_SECONDS = COMMIT_SECONDS

    def __init__(self, cfg: configmod.Config, clock=time.time):
        super().__init__(cfg.run_dir, cfg.server.transport)
        self.cfg = cfg
        self.clock = clock
        self.db = logdb.open_db(cfg.server.data_dir)
        self.metrics = Metrics()
        self.pending: list[list] = []
        self.written = 0
        self.next_prune = 0.0

    def handle(self, msg: dict) -> dict | None:
        k = msg.get("k")
        if k == "rows":
            names = logdb.NAMES
            for values in msg["rows"]:
                if len(values) != len(names):
                    log.error("observer: dropping a row of %d fields (expected %d)", len(values), len(names))
                    continue
                self.pending.append(values)
                try:
                    self.metrics.observe(dict(zip(names, values)))
                except (TypeError, ValueError, KeyError):      # a malformed row: logged, not counted
                    log.exception("observer: a row the metrics cannot take: %r", values[:3])
            if len(self.pending) >= COMMIT_ROWS:
                self.commit()
            return None
        if k == "gauges":
            self.metrics.report(msg["proc"], msg.get("kind", "worker"), msg.get("g", {}))
            return None
        if k == "scrape":
            self.metrics.set_restarts(self._restarts())
            return {"text": self.metrics.render({"observer_rows": len(self.pending)})}
        if k == "flush":
            self.commit()
            return {"rows": self.written}
        log.warning("observer: unknown message kind %r", k)
        return None

    def commit(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        with self.db:
            self.db.executemany(logdb.INSERT, rows)
        self.written += len(rows)

    def _restarts(self) -> dict:
        try:
            with open(os.path.join(self.cfg.run_dir, RESTARTS_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def tick(self) -> None:
        self.commit()
        self.metrics.apply()
        now = self.clock()
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


if __name__ == "__main__":
    sys.exit(actors.main(ObserverActor))
