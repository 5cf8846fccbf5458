"""The frontend's view of the worker pool: discovery, liveness, choice, replies, credit, cancel.

Decisions are plain methods (`choose`, `open`, `close`, `mark_dead`); sockets are touched only in
the async loops (`run`) and in `send`. One PULL socket receives the replies of every request this
frontend dispatched; `_reader` routes each to the request's own bounded channel. Because a worker
sends at most `window` stream chunks ahead of the credit the frontend grants, a channel never
needs more than `window + 4` slots, so the reader never blocks on one slow client.

A worker is *live* after its first pong. It is *dead* when its DEALER connection drops (socket
monitor: immediate on process death), or when it has not answered a ping for
`worker_dead_after_seconds` (a hung process). Every request in flight on a dead worker gets a
`WorkerLost` at once in place of its worker's replies: 503 ServiceUnavailableException before the
response head (SDKs retry it), an exception frame after.

A request that finds no live worker (right after start, or while every worker restarts) waits
for one up to `worker_wait_seconds` (`wait_choose`); a worker's first pong wakes it.
"""
from __future__ import annotations

import logging
import os
import time

import msgspec
import trio

from finops.shared import envelope, errors, transport
from finops.shared.config import Config
from finops.shared.transport import zmq

from .outcomes import Outcomes

log = logging.getLogger("finops.frontend.dispatch")

DISCOVERY_INTERVAL = 0.2   # seconds between run-directory scans for new workers ...
DISCOVERY_INTERVAL_SHORT = 0.02   # ... while fewer than server.workers are known (starting, a restart)


class Worker:
    __slots__ = ("pid", "endpoint", "sock", "monitor", "live", "dead", "last_pong", "inflight",
                 "connected", "draining")

    def __init__(self, pid: int, endpoint: str, sock: transport.AsyncSocket, monitor):
        self.pid = pid
        self.endpoint = endpoint
        self.sock = sock
        self.monitor = monitor
        self.live = False
        self.dead = False
        self.connected = False
        self.draining = False   # withdrew its announcement: finishing its requests, takes no new ones
        self.last_pong = 0.0
        self.inflight: set[str] = set()

    def __repr__(self) -> str:
        state = ("dead" if self.dead else "draining" if self.draining else "live" if self.live
                 else "pending")
        return f"<Worker pid={self.pid} {state} inflight={len(self.inflight)}>"


class WorkerLost(msgspec.Struct, frozen=True, gc=False):
    """The frontend's own last reply for a request whose worker died (never on the wire): the
    client gets `error`, and no worker row will come, so the frontend logs the request itself."""
    rid: str
    error: errors.WireError


class Pending:
    """One request in flight: where its replies go and which worker has it."""
    __slots__ = ("rid", "worker", "send_ch", "recv_ch", "seq", "finished", "why")

    def __init__(self, rid: str, worker: Worker, window: int):
        self.rid = rid
        self.worker = worker
        self.send_ch, self.recv_ch = trio.open_memory_channel(window + 4)
        self.seq = envelope.SequenceChecker()
        self.finished = False   # the worker sent its last reply (or is gone): no cancel needed
        self.why: envelope.Why | None = None   # the frontend answered the client itself


class WorkerPool:
    def __init__(self, cfg: Config, outcomes: Outcomes | None = None):
        self.cfg = cfg
        self.outcomes = outcomes if outcomes is not None else Outcomes(cfg)
        self.workers: dict[int, Worker] = {}
        self.pending: dict[str, Pending] = {}
        self.reply_endpoint = ""
        self._pull: transport.AsyncSocket | None = None
        self._nursery: trio.Nursery | None = None
        self._forgotten: dict[int, float] = {}  # pid -> monotonic time until which it is ignored
        self._became_live = trio.Event()         # set (and replaced) each time a worker becomes live

    def __repr__(self) -> str:
        live = sum(1 for w in self.workers.values() if w.live and not w.dead)
        return f"<WorkerPool {live} live of {len(self.workers)}, {len(self.pending)} in flight>"

    # --- decisions (sync) ------------------------------------------------------------------
    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.live and not w.dead and not w.draining]

    def choose(self) -> Worker | None:
        """The live worker with the fewest requests in flight from this frontend.

        Ties go to the first worker in a fixed order, on purpose: at low load consecutive
        requests then land on the same, cache-warm process. Round robin on ties measured
        0.3-0.5 ms more CPU and latency per request at 1 connection (scripts/bench.py A/B);
        under load the in-flight counts spread requests anyway.
        """
        best = None
        for w in self.workers.values():
            if w.live and not (w.dead or w.draining) and (best is None or len(w.inflight) < len(best.inflight)):
                best = w
        return best

    async def wait_choose(self, timeout: float) -> Worker | None:
        """`choose()`, waiting up to `timeout` seconds for a worker to become live when none is
        (right after start, or while every worker restarts). None if none did in time.
        A live worker is only ever added by `_on_pong`, which wakes every waiter."""
        with trio.move_on_after(timeout):
            while (w := self.choose()) is None:
                await self._became_live.wait()
            return w
        return None

    def open(self, rid: str, worker: Worker) -> Pending:
        p = Pending(rid, worker, self.cfg.server.stream_window)
        self.pending[rid] = p
        worker.inflight.add(rid)
        return p

    def close(self, p: Pending) -> None:
        self.pending.pop(p.rid, None)
        p.worker.inflight.discard(p.rid)

    def mark_dead(self, w: Worker, reason: str) -> None:
        if w.dead:
            return
        w.dead = True
        unfinished = [p for p in (self.pending.get(rid) for rid in w.inflight) if p is not None and not p.finished]
        log.warning("worker %d is gone (%s); failing its %d unfinished requests", w.pid, reason, len(unfinished))
        err = errors.unavailable(
            "The gateway worker handling this request stopped before finishing it. "
            "Retry the request; the gateway restarts failed workers.").to_wire()
        for p in unfinished:
            p.finished = True
            try:
                p.send_ch.send_nowait(WorkerLost(p.rid, err))
            except trio.WouldBlock:
                pass
        w.inflight.clear()
        self.workers.pop(w.pid, None)
        w.sock.close()
        w.monitor.close()
        self.outcomes.worker_died()

    # --- I/O ---------------------------------------------------------------------------------
    async def send(self, w: Worker, data: bytes) -> None:
        await w.sock.send(data)

    def send_nowait(self, w: Worker, data: bytes) -> None:
        if not w.dead:
            w.sock.send_nowait(data)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        s = self.cfg.server
        pull = transport.make_socket(zmq.PULL)
        self.reply_endpoint = transport.bind(pull, transport.endpoint_for("frontend", self.cfg.run_dir, s.transport))
        self._pull = transport.AsyncSocket(pull)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                nursery.start_soon(self.outcomes.run)
                nursery.start_soon(self._discovery)
                nursery.start_soon(self._heartbeat)
                task_status.started()
        finally:
            self._pull.close()
            self.outcomes.close()
            for w in list(self.workers.values()):
                w.sock.close()
                w.monitor.close()
            if self.reply_endpoint.startswith("ipc://"):
                try:
                    os.unlink(self.reply_endpoint[6:])
                except OSError:
                    pass

    async def _discovery(self) -> None:
        while True:
            found = transport.discover(self.cfg.run_dir, "worker")
            for pid, endpoint in found.items():
                w = self.workers.get(pid)
                if w is not None and w.endpoint != endpoint:
                    self.mark_dead(w, "re-announced at a new address")
                    w = None
                if w is None and self._forgotten.get(pid, 0.0) < time.monotonic():
                    self._connect(pid, endpoint)
            for pid, w in list(self.workers.items()):
                if pid not in found:
                    if transport.pid_alive(pid):
                        # withdrawn but running: it is draining (SIGTERM). Its requests in flight
                        # go on; its connection dropping will mark it dead when it exits.
                        w.draining = True
                    else:
                        self.mark_dead(w, "process exited")
            short = len(found) < self.cfg.server.workers
            await trio.sleep(DISCOVERY_INTERVAL_SHORT if short else DISCOVERY_INTERVAL)

    def _connect(self, pid: int, endpoint: str) -> None:
        sock = transport.make_socket(zmq.DEALER)
        monitor = transport.monitor_socket(sock)
        sock.connect(endpoint)
        w = Worker(pid, endpoint, transport.AsyncSocket(sock), monitor)
        w.last_pong = time.monotonic()
        self.workers[pid] = w
        self._nursery.start_soon(self._watch, w)
        w.sock.send_nowait(envelope.encode(envelope.Ping(reply=self.reply_endpoint, t=time.monotonic())))

    async def _watch(self, w: Worker) -> None:
        """Connection events of one worker's DEALER: a drop after a connect means it died."""
        try:
            while not w.dead:
                parts = await w.monitor.recv_multipart()
                event = transport.parse_monitor_event(parts)
                if event == zmq.EVENT_CONNECTED:
                    w.connected = True
                elif event == zmq.EVENT_DISCONNECTED and w.connected:
                    self.mark_dead(w, "connection dropped")
                    return
        except (zmq.ZMQError, trio.ClosedResourceError):
            return

    async def _heartbeat(self) -> None:
        s = self.cfg.server
        while True:
            now = time.monotonic()
            for w in list(self.workers.values()):
                if now - w.last_pong > s.worker_dead_after_seconds:
                    self.mark_dead(w, f"no heartbeat for {s.worker_dead_after_seconds:.1f}s")
                    self._forgotten[w.pid] = now + 10 * s.worker_dead_after_seconds
                else:
                    w.sock.send_nowait(envelope.encode(envelope.Ping(reply=self.reply_endpoint, t=now)))
            await trio.sleep(s.heartbeat_seconds)

    async def _reader(self) -> None:
        pull = self._pull
        outcomes = self.outcomes
        while True:
            data = await pull.recv()
            now = time.monotonic()
            for raw in [data] + pull.recv_batch_nowait():
                try:
                    msg = envelope.decode(raw)
                except envelope.EnvelopeError as e:
                    log.error("dropping reply: %s", e)
                    continue
                if not isinstance(msg, envelope.Sequenced):
                    if type(msg) is envelope.Pong:
                        self._on_pong(msg)
                    else:
                        log.error("dropping reply: a worker sent a %s envelope", envelope.kind(msg))
                    continue
                final = isinstance(msg, envelope.Final)
                if final:
                    outcomes.take(msg, now)     # the row and settle, whether or not the client is still here
                p = self.pending.get(msg.rid)
                if p is None:
                    continue  # the request already ended (client gone, or timed out)
                if final:
                    p.finished = True
                try:
                    p.send_ch.send_nowait(msg)
                except trio.WouldBlock:
                    log.error("request %s: worker sent past its credit; ending the request", p.rid)
                    self.close(p)

    def _on_pong(self, msg: envelope.Pong) -> None:
        try:
            pid = int(msg.wid)
        except ValueError:
            return
        w = self.workers.get(pid)
        if w is None or w.dead:
            return
        w.last_pong = time.monotonic()
        if not w.live:
            w.live = True
            log.info("worker %d is live", pid)
            woken, self._became_live = self._became_live, trio.Event()
            woken.set()
