"""The workers' side of the ledger protocol (ledger.py): reserve with a reply, settle without.

Settles are batched: they ride along with the next reserve, or go together within 5 ms.

A PUSH socket to the ledger's endpoint (from the run directory) carries the messages; replies come
back on this worker's own PULL socket, named in every reserve (the frontend/worker pattern: one
socket per direction, so a sender never disturbs the receiver's wake-ups). Many requests share
them: each reserve carries a number, and one receiver task hands each reply to the request
waiting for it. A ledger that does not answer within `timeout` fails the request closed
(503 ServiceUnavailableException, which SDKs retry): a budget is never skipped because the ledger
was restarting.

This class is the seam for other ledgers: anything with `reserve()`, `settle()` and `usage()` of
the same meaning (a Redis-backed ledger with Lua scripts, for several gateway nodes) can replace it.
"""
from __future__ import annotations

import logging
import os
import time

import msgpack
import trio

from finops.shared import errors, transport
from finops.shared.transport import zmq

log = logging.getLogger("finops.ledger.client")
_pack = msgpack.Packer(use_bin_type=True).pack


SETTLE_DELAY = 0.005   # seconds a settle may wait for a reserve to ride along with


class LedgerClient:
    def __init__(self, run_dir: str, transport_kind: str = "ipc", timeout: float = 2.0):
        self.run_dir = run_dir
        self.timeout = timeout
        self.sock: transport.AsyncSocket | None = None       # PUSH to the ledger
        self.endpoint = ""
        os.makedirs(run_dir, exist_ok=True)
        pull = transport.make_socket(zmq.PULL)
        self.reply_endpoint = transport.bind(pull, transport.endpoint_for("ledger-reply", run_dir, transport_kind))
        self.replies = transport.AsyncSocket(pull)
        self.n = 0
        self.discovered_at = 0.0
        self.waiting: dict[int, list] = {}     # n -> [trio.Event, reply]
        self.settles: list[list] = []           # settles not sent yet: [rid, key, env, cost, tokens]
        self._settle_due = trio.Event()

    def _connect(self) -> bool:
        """(Re)connect to the ledger announced in the run directory (a restarted ledger has a new
        endpoint). Looks at most once a second."""
        now = time.monotonic()
        if self.sock is not None and now - self.discovered_at < 1.0:
            return True
        self.discovered_at = now
        found = transport.discover(self.run_dir, "ledger")
        if not found:
            return False
        endpoint = found[max(found)]
        if endpoint != self.endpoint:
            if self.sock is not None:
                self.sock.close()
            s = transport.make_socket(zmq.PUSH)
            s.connect(endpoint)
            self.sock = transport.AsyncSocket(s)
            self.endpoint = endpoint
            log.info("connected to the ledger at %s", endpoint)
        return True

    async def run(self) -> None:
        """The receiver and the settle flusher: run it in the worker's nursery for its lifetime."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_settles)
            await self._receive()
            nursery.cancel_scope.cancel()

    async def _flush_settles(self) -> None:
        """Settles ride along with the next reserve; when none comes within SETTLE_DELAY they
        go on their own. Half the messages under load, and the ledger's counters are exact
        either way (the reservation holds the request's maximum until its settle arrives)."""
        while True:
            await self._settle_due.wait()
            await trio.sleep(SETTLE_DELAY)
            self._settle_due = trio.Event()
            self.flush()

    def flush(self) -> None:
        if self.settles and self._send({"k": "settles", "s": self.settles}):
            self.settles = []

    async def _receive(self) -> None:
        while True:
            try:
                data = await self.replies.recv()
            except trio.ClosedResourceError:
                return
            for d in [data] + self.replies.recv_batch_nowait():
                msg = msgpack.unpackb(d, raw=False)
                w = self.waiting.pop(msg.get("i"), None)
                if w is not None:
                    w[1] = msg
                    w[0].set()

    def _send(self, msg: dict) -> bool:
        if not self._connect():
            return False
        return self.sock.send_nowait(_pack(msg))

    async def reserve(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int) -> dict:
        self.n += 1
        n = self.n
        w = self.waiting[n] = [trio.Event(), None]
        try:
            with trio.move_on_after(self.timeout):
                msg = {"k": "reserve", "i": n, "r": self.reply_endpoint, "rid": rid,
                       "key": key_id, "env": env, "max": max_cost_usd, "tok": est_tokens}
                if self.settles:
                    msg["s"], self.settles = self.settles, []
                while not self._send(msg):
                    await trio.sleep(0.05)
                    self._connect()
                await w[0].wait()
                return w[1]
        finally:
            self.waiting.pop(n, None)
        raise errors.unavailable("The governance ledger did not answer in time; the request was not sent "
                                 "upstream. Retry shortly.")

    def settle(self, rid: str, key_id: str, env: str, cost_usd: float, tokens: int) -> None:
        """Queue the settle; it goes with the next reserve, or within SETTLE_DELAY."""
        self.settles.append([rid, key_id, env, cost_usd, tokens])
        self._settle_due.set()

    async def usage(self, key_id: str | None) -> list:
        self.n += 1
        n = self.n
        w = self.waiting[n] = [trio.Event(), None]
        try:
            with trio.move_on_after(self.timeout):
                self._send({"k": "usage", "i": n, "r": self.reply_endpoint, "key": key_id})
                await w[0].wait()
                return w[1]["usage"]
        finally:
            self.waiting.pop(n, None)
        raise errors.unavailable("The governance ledger did not answer in time.")

    def close(self) -> None:
        self.flush()
        if self.settles:
            log.error("ledger unreachable at exit: %d settles could not be sent", len(self.settles))
        if self.sock is not None:
            self.sock.close(linger_ms=2000)
        self.replies.close()
