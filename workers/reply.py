"""The worker's side of one request's replies: sequence numbers, stream credit, cancel.

`Reply` is what a pipeline writes to: `head()`, then `body()` or `chunks()`, then `end()`; or
`error()` at any point. Chunks wait for credit: the frontend grants credit as the client's socket
drains, so a slow reader makes the worker stop pulling from the upstream instead of buffering the
whole stream in memory. If no credit arrives for `idle_timeout` seconds the client is taken to be
gone and the request is cancelled.
"""
from __future__ import annotations

import trio

from finops.shared import envelope, errors
from finops.shared.transport import AsyncSocket


class ReplyClosed(Exception):
    """The request already ended; nothing more may be sent."""


class Reply:
    __slots__ = ("rid", "sock", "n", "credit", "_credit_event", "idle_timeout", "head_sent", "done",
                 "stream", "tape")

    def __init__(self, rid: str, sock: AsyncSocket, window: int, idle_timeout: float):
        self.rid = rid
        self.sock = sock
        self.n = 0
        self.credit = window
        self._credit_event = trio.Event()
        self.idle_timeout = idle_timeout
        self.head_sent = False
        self.done = False
        self.stream = False
        self.tape: list | None = None   # when a list, what was sent is recorded in it (for the cache)

    def grant(self, n: int) -> None:
        self.credit += n
        self._credit_event.set()

    async def _send(self, data: bytes) -> None:
        if self.done:
            raise ReplyClosed(self.rid)
        self.n += 1
        await self.sock.send(data)

    async def head(self, status: int, headers: list, stream: bool) -> None:
        assert not self.head_sent, "head sent twice"
        self.head_sent = True
        self.stream = stream
        if self.tape is not None:
            self.tape.append(("head", status, headers, stream))
        await self._send(envelope.head(self.rid, status, headers, stream))

    async def body(self, data: bytes) -> None:
        if self.tape is not None:
            self.tape.append(("body", data))
        await self._send(envelope.body(self.rid, self.n, data))
        self.done = True

    async def chunks(self, events: list) -> None:
        """Send stream events [(event_type, payload)], as few envelopes as the credit allows."""
        if self.tape is not None:
            self.tape.append(("chunks", events))
        i = 0
        while i < len(events):
            while self.credit <= 0:
                self._credit_event = trio.Event()
                with trio.move_on_after(self.idle_timeout) as scope:
                    await self._credit_event.wait()
                if scope.cancelled_caught:
                    raise trio.TooSlowError(f"no stream credit for {self.idle_timeout:.0f}s; client presumed gone")
            batch = events[i:i + self.credit]
            self.credit -= len(batch)
            i += len(batch)
            await self._send(envelope.chunk(self.rid, self.n, batch))

    async def end(self, usage: dict | None = None, meta: dict | None = None) -> None:
        if self.tape is not None:
            self.tape.append(("end", usage or {}))
        await self._send(envelope.end(self.rid, self.n, usage, meta))
        self.done = True

    async def error(self, err: errors.GatewayError) -> None:
        if self.done:
            return
        self.tape = None                # a failed answer is never cached
        await self._send(envelope.error(self.rid, self.n, err.to_wire()))
        self.done = True
