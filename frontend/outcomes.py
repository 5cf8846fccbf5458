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
  the last REPLAY_SECONDS of them (counted back from the last time it saw the ledger alive, so
  while the ledger is away they are all kept, up to MAX_RECENT), each with when it got it, and
  sends them to the ledger again (`{"k": "replay"}`, LedgerState.replay):
  - when a worker dies: a settle still queued in the killed worker is not lost, and one that did
    arrive is not counted twice (the ledger counts a request id once);
  - when the ledger restarted (its announcement in the run directory names a new process; looked
    at every LEDGER_LOOK_SECONDS): a ledger killed with kill -9 restores its last snapshot, at most
    a second old, and loses the settles it applied since; they are all among the replayed ones
    (REPLAY_SECONDS > the snapshot interval plus the time to notice the ledger gone), and the
    ledger tells those its snapshot already counted from the others by their rid and their time.
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

from finops.shared import envelope, logrow, transport
from finops.shared.actors import ActorClient
from finops.shared.config import Config

log = logging.getLogger("finops.frontend.outcomes")

REPLAY_SECONDS = 3.0     # settles kept before the ledger was last seen alive: > the ledger's snapshot interval
                         # (1 s) + LEDGER_LOOK_SECONDS, and > the worker's settle batching (5 ms) and zmq's delivery
MAX_RECENT = 200_000     # settles kept while the ledger is away (the oldest dropped past that)
LEDGER_LOOK_SECONDS = 0.2    # how often the frontend looks for a restarted ledger (a glob of the run directory)
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
        self.run_dir = cfg.run_dir
        self.recent: deque[tuple[float, tuple]] = deque(maxlen=MAX_RECENT)   # (monotonic time, settle), oldest first
        self.ledger_pid: int | None = None      # the ledger process last seen announced
        self.ledger_seen: float | None = None   # monotonic time it was last seen alive
        self.replay_due = False                 # a restarted ledger has not got the recent settles yet
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
            recent = self.recent
            recent.append((now, settle))
            seen = self.ledger_seen
            cutoff = (now if seen is None or seen > now else seen) - REPLAY_SECONDS
            while recent[0][0] < cutoff:
                recent.popleft()

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

    def replay(self) -> bool:
        """Send the recent settles to the ledger again, each stamped with the wall-clock time this
        frontend got it; False when the ledger is not there."""
        if not self.recent:
            return True
        off = time.time() - time.monotonic()        # `recent` is in monotonic time
        return self.ledger.send({"k": "replay", "p": [[t + off, *s] for t, s in self.recent]})

    def worker_died(self) -> None:
        """Send the recent settles to the ledger again: the dead worker may not have sent some."""
        if not self.replay():
            log.error("ledger unreachable: %d recent settles could not be sent again", len(self.recent))

    def look_for_ledger(self, now: float) -> None:
        """Note that the ledger is alive (at monotonic time `now`); when it is a new process (the
        last one was killed or restarted), send it the recent settles: what it applied after its
        last snapshot was lost with it. Retried at the next look until the ledger takes them."""
        found = transport.discover(self.run_dir, "ledger")
        if not found:
            return
        pid = max(found)
        if self.ledger_pid is not None and pid != self.ledger_pid:
            log.warning("the ledger restarted (pid %d, was %d): sending it the last %d settles again",
                        pid, self.ledger_pid, len(self.recent))
            self.replay_due = True
            self.ledger.rediscover()
        self.ledger_pid, self.ledger_seen = pid, now
        if self.replay_due and self.replay():
            self.replay_due = False

    async def watch_ledger(self) -> None:
        while True:
            self.look_for_ledger(time.monotonic())
            await trio.sleep(LEDGER_LOOK_SECONDS)

    async def run(self) -> None:
        """Look for a restarted ledger every LEDGER_LOOK_SECONDS; send waiting rows FLUSH_SECONDS
        after the first of them arrived, and again every FLUSH_SECONDS while the observer is away."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_ledger)
            await self._send_rows()

    async def _send_rows(self) -> None:
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
