"""Worker process: an actor that runs many requests at once under trio.

It binds a ROUTER socket, announces its endpoint in the run directory, and handles envelopes:

    request  -> a new task running `pipeline.handle()`, under its own cancel scope
    credit   -> more stream credit for that request
    cancel   -> cancel that request's scope (the upstream call stops; its cost is settled)
    ping     -> pong to the sender's reply endpoint

Replies go out on one PUSH socket per frontend reply endpoint. SIGTERM: the worker withdraws
its announcement (no new requests come), lets in-flight requests finish for up to
`server.drain_seconds`, then exits.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from finops.shared import config as configmod
from finops.shared import envelope, errors, memtrim, transport
from finops.shared.logs import setup_logging
from finops.shared.transport import zmq

from .pipeline import Pipeline
from .reply import Reply

log = logging.getLogger("finops.worker")

REPLY_LINGER_MS = 2000   # at exit, queued replies get this long to reach their frontend


class WorkerActor:
    def __init__(self, cfg: configmod.Config):
        self.cfg = cfg
        self.wid = str(os.getpid())
        self.pipeline = Pipeline(cfg)
        self.replies: dict[str, transport.AsyncSocket] = {}
        self.inflight: dict[str, tuple[trio.CancelScope, Reply]] = {}
        self._idle = trio.Event()
        self._draining = False
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<WorkerActor pid={self.wid} inflight={len(self.inflight)}>"

    def reply_socket(self, endpoint: str) -> transport.AsyncSocket:
        s = self.replies.get(endpoint)
        if s is None:
            sock = transport.make_socket(zmq.PUSH)
            sock.connect(endpoint)
            s = self.replies[endpoint] = transport.AsyncSocket(sock)
        return s

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        s = self.cfg.server
        router = transport.make_socket(zmq.ROUTER)
        endpoint = transport.bind(router, transport.endpoint_for("worker", self.cfg.run_dir, s.transport))
        rsock = transport.AsyncSocket(router)
        announced = transport.announce(self.cfg.run_dir, "worker", endpoint)
        log.info("worker ready at %s", endpoint)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._signals, announced)
                nursery.start_soon(self.pipeline.admin.run)      # circuit states for /admin/circuits
                nursery.start_soon(self.pipeline.observer.run, self.gauges)
                nursery.start_soon(self.pipeline.gov.run)
                if self.pipeline.cache is not None:
                    nursery.start_soon(self.pipeline.cache.run)
                nursery.start_soon(memtrim.run)                   # free heap pages back to the system
                task_status.started(endpoint)
                while True:
                    try:
                        parts = await rsock.recv_multipart()
                    except trio.ClosedResourceError:
                        break
                    self._on_message(parts[-1])
                    for parts in rsock.recv_batch_nowait(multipart=True):
                        self._on_message(parts[-1])
        finally:
            transport.withdraw(announced)
            rsock.close()
            for sock in self.replies.values():
                sock.close(linger_ms=REPLY_LINGER_MS)   # the last replies of a drain still go out
            if endpoint.startswith("ipc://"):
                try:
                    os.unlink(endpoint[6:])
                except OSError:
                    pass

    def _on_message(self, data: bytes) -> None:
        try:
            msg = envelope.decode(data)
        except envelope.EnvelopeError as e:
            log.error("dropping message: %s", e)
            return
        kind = type(msg)
        if kind is envelope.Request:
            self._nursery.start_soon(self._run_request, msg)
        elif kind is envelope.Credit:
            item = self.inflight.get(msg.rid)
            if item is not None:
                item[1].grant(msg.grant)
        elif kind is envelope.Cancel:
            item = self.inflight.get(msg.rid)
            if item is not None:
                item[1].why = msg.why             # a frontend timeout: the row says so
                item[0].cancel()
        elif kind is envelope.Ping:
            # answered while draining too, so frontends do not take a draining worker for hung
            self.reply_socket(msg.reply).send_nowait(envelope.encode(
                envelope.Pong(wid=self.wid, t=msg.t, inflight=len(self.inflight))))
        else:
            log.error("dropping message: a frontend sent a %s envelope", envelope.kind(msg))

    async def _run_request(self, msg: envelope.Request) -> None:
        rid = msg.rid
        sock = self.reply_socket(msg.reply)
        reply = Reply(rid, sock, msg.window, msg.deadline)
        if len(self.inflight) >= self.cfg.server.worker_concurrency:
            e = errors.unavailable(
                f"This gateway worker is at its limit of {self.cfg.server.worker_concurrency} requests "
                "in flight (server.worker_concurrency); retry shortly.")
            await reply.error(e)
            await reply.finish(self.pipeline.requestlog.refusal_row(msg, e.status, e.code))
            return
        scope = trio.CancelScope()
        self.inflight[rid] = (scope, reply)
        try:
            with scope:
                await self.pipeline.handle(msg, reply)
        except Exception:           # the pipeline handles its own failures; this is a last resort
            log.exception("request %s failed", rid)
            with trio.move_on_after(1):
                await reply.error(errors.internal())
                await reply.finish()
        finally:
            del self.inflight[rid]
            if not self.inflight:
                self._idle.set()

    def gauges(self) -> dict:
        """What this worker reports to /metrics every second (observe/requestlog.py)."""
        g = {"inflight": len(self.inflight), "queues": {"ledger_settles": len(self.pipeline.gov.ledger.settles)}}
        if self.pipeline.cache is not None:
            g["semantic"] = int(self.pipeline.cache.embedder is not None)
        return g

    async def _signals(self, announced: str) -> None:
        # Every signal is consumed here for the life of the process: the first starts the drain,
        # repeats (honcho and process managers signal every process when one exits) are ignored.
        # A signal left unconsumed would be re-raised when the receiver closes, killing us.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                if self._draining:
                    log.info("already draining")
                    continue
                self._draining = True
                self._nursery.start_soon(self._drain, announced)

    async def _drain(self, announced: str) -> None:
        transport.withdraw(announced)
        drain = self.cfg.server.drain_seconds
        log.info("draining %d requests (up to %.0fs)", len(self.inflight), drain)
        with trio.move_on_after(drain):
            while self.inflight:
                self._idle = trio.Event()
                await self._idle.wait()
        await self.pipeline.aclose()
        self._nursery.cancel_scope.cancel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finops.workers", description="FinOps worker actor")
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    setup_logging("worker")
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"finops worker: config error: {e}", file=sys.stderr)
        return 2
    os.makedirs(cfg.run_dir, exist_ok=True)
    trio.run(WorkerActor(cfg).serve)
    return 0
