"""What the frontend passes on for every request it dispatched: its request-log row and its settle.

A worker puts a request's outcome in the request's final envelope (finops.shared.envelope): its
packed request-log row, and the ledger settle it sent. The frontend is the process that delivers
the answer, so it holds the outcome of every answer it delivered, whatever happens to the worker
next:

* **rows** go to the observer actor in batches: within FLUSH_SECONDS of the first row waiting, or
  at once when BATCH_ROWS are waiting, and before the frontend dispatches an admin request (so a
  report sees the requests this frontend answered before it). A message per request would cost the
  observer a wake-up each (measured: 0.05 -> 0.19 ms of observer CPU per request at one
  connection). While the observer is away (restarting) they wait here, up to MAX_ROWS; past that
  the oldest are dropped and counted (`dropped`, logged).
* **settles** were sent by the worker itself, batched over a few milliseconds. The frontend keeps
  the last REPLAY_SECONDS of them, and when a worker dies it sends them to the ledger again: a
  settle still queued in the killed worker is not lost, and one that did arrive is not counted
  twice (the ledger counts a request id once).
* **its own rows**: a request the frontend failed or refused itself (no worker live within
  `server.worker_wait_seconds`, the worker died with it in flight, a body over the limit) has no
  worker row; `failure()` builds one (finops.shared.logrow.gateway_row).

A crash of the frontend itself loses the rows of the requests it was relaying (their clients
lose the connection too), the rows of the last FLUSH_SECONDS, and rows still waiting for an absent
observer.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import trio

from finops.shared import envelope, logrow
from finops.shared.actors import ActorClient
from finops.shared.config import Config

log = logging.getLogger("finops.frontend.outcomes")

REPLAY_SECONDS = 2.0     # settles kept for a worker's death: > the worker's settle batching (5 ms) and zmq's delivery
FLUSH_SECONDS = 0.05     # a row waits at most this long to go to the observer (and again while it is away)
BATCH_ROWS = 256         # ... or goes at once with this many others
MAX_ROWS = 200_000       # rows kept while the observer is away (about 100 MB at most)


class Outcomes:
    def __init__(self, cfg: Config):
        self.enabled = cfg.observability.request_log
        self.observer = ActorClient(cfg.run_dir, "observer", cfg.server.transport, replies=False)
        self.ledger = ActorClient(cfg.run_dir, "ledger", cfg.server.transport, replies=False)
        self.days = logrow.Days(cfg.governance.timezone)
        self.rows: list[bytes] = []
        self.recent: deque[tuple[float, tuple]] = deque()   # (monotonic time, settle), oldest first
        self.dropped = 0
        self._waiting = trio.Event()

    def __repr__(self) -> str:
        return f"<Outcomes {len(self.rows)} rows waiting, {len(self.recent)} recent settles, {self.dropped} dropped>"

    def take(self, msg: envelope.Final, now: float) -> None:
        """The outcome a worker's final envelope carries (nothing when it has none)."""
        row = msg.row
        if row is not None:
            self.add(row)
        settle = msg.settle
        if settle is not None:
            self.recent.append((now, settle))
            while self.recent[0][0] < now - REPLAY_SECONDS:
                self.recent.popleft()

    def failure(self, rid: str, started: float, op: str, model_id: str, headers: dict, status: int, error: str,
                stream: bool = False, messages: int = 0) -> None:
        """Log a request the frontend answered itself with `error` (an AWS code). `started` is
        the wall-clock time the request arrived."""
        if not self.enabled:
            return
        now = time.time()
        self.add(logrow.pack(logrow.gateway_row(
            rid, started, self.days(started), op, model_id, headers.get("x-bf-env", ""),
            headers.get("user-agent", ""), status, error, (now - started) * 1000, stream, messages)))

    def add(self, row: bytes) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()
        else:
            self._waiting.set()

    def flush(self) -> None:
        """Send the rows waiting to the observer, as one message; keep them when it is away."""
        if not self.rows:
            return
        if self.observer.send({"k": "rows", "packed": self.rows}):
            self.rows = []
            return
        if len(self.rows) > MAX_ROWS:
            n = len(self.rows) - MAX_ROWS
            del self.rows[:n]
            self.dropped += n
            log.error("request log: the observer has not taken rows for a while; %d dropped (%d in all)",
                      n, self.dropped)

    def worker_died(self) -> None:
        """Send the recent settles to the ledger again: the dead worker may not have sent some."""
        if self.recent and not self.ledger.send({"k": "settles", "s": [s for _, s in self.recent]}):
            log.error("ledger unreachable: %d recent settles could not be sent again", len(self.recent))

    async def run(self) -> None:
        """Send waiting rows FLUSH_SECONDS after the first of them arrived, and again every
        FLUSH_SECONDS while the observer is away."""
        while True:
            await self._waiting.wait()
            while self.rows:
                await trio.sleep(FLUSH_SECONDS)
                self._waiting = trio.Event()
                self.flush()

    def close(self) -> None:
        self.flush()
        if self.rows:
            log.error("request log: observer unreachable at exit; %d rows lost", len(self.rows))
        self.observer.close()
        self.ledger.close()
