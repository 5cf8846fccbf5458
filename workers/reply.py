"""The worker's side of one request's replies: sequence numbers, stream credit, cancel.

`Reply` is what a pipeline writes to: `head()`, then `body()` or `chunks()`, then `end()`; or
`error()` at any point. Chunks wait for credit: the frontend grants credit as the client's socket
drains, so a slow reader makes the worker stop pulling from the upstream instead of buffering the
whole stream in memory. If no credit arrives for `idle_timeout` seconds the client is taken to be
gone and the request is cancelled.

The final reply (`body`, `end` or `error`) is held until `finish(row, settle)`: the pipeline
settles the request's cost and builds its request-log row first, and the final envelope carries
both to the frontend (finops.shared.envelope: the outcome). So an answer never reaches a client
without its row and settle travelling with it. A request that produced no final reply (the client
went away) still ends with `finish`, as a `log` envelope.
"""
from __future__ import annotations

import trio

from finops.shared import envelope, errors
from finops.shared.transport import AsyncSocket


class ReplyClosed(Exception):
    """The request already ended; nothing more may be sent."""


class Reply:
    __slots__ = ("rid", "sock", "n", "credit", "_credit_event", "idle_timeout", "head_sent", "done",
                 "stream", "tape", "final", "finished", "why")

    def __init__(self, rid: str, sock: AsyncSocket, window: int, idle_timeout: float):
        self.rid = rid
        self.sock = sock
        self.n = 0
        self.credit = window
        self._credit_event = trio.Event()
        self.idle_timeout = idle_timeout
        self.head_sent = False
        self.done = False               # the final reply is decided (held until finish())
        self.finished = False           # the final envelope went out
        self.stream = False
        self.tape: list | None = None   # when a list, what was sent is recorded in it (for the cache)
        self.final: tuple | None = None  # (record type, fields) of the held final reply
        self.why: envelope.Why | None = None    # a cancel's reason, from the frontend

    def grant(self, n: int) -> None:
        self.credit += n
        self._credit_event.set()

    async def _send(self, env: envelope.Sequenced) -> None:
        if self.done:
            raise ReplyClosed(self.rid)
        self.n += 1
        await self.sock.send(envelope.encode(env))

    def _hold(self, kind: type[envelope.Final], **fields) -> None:
        if self.done:
            raise ReplyClosed(self.rid)
        self.final = (kind, fields)
        self.done = True

    async def head(self, status: int, headers: list, stream: bool) -> None:
        assert not self.head_sent, "head sent twice"
        self.head_sent = True
        self.stream = stream
        if self.tape is not None:
            self.tape.append(("head", status, headers, stream))
        await self._send(envelope.Head(rid=self.rid, n=self.n, status=status, headers=headers, stream=stream))

    async def body(self, data: bytes) -> None:
        if self.tape is not None:
            self.tape.append(("body", data))
        self._hold(envelope.Body, data=data)

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
            await self._send(envelope.Chunk(rid=self.rid, n=self.n, events=batch))

    async def end(self, usage: dict | None = None) -> None:
        counts = {k: v for k, v in (usage or {}).items() if type(v) is int}   # the token counts ("tier" stays here)
        if self.tape is not None:
            self.tape.append(("end", counts))
        self._hold(envelope.End, usage=counts)

    async def error(self, err: errors.GatewayError) -> None:
        if self.done:
            return
        self.tape = None                # a failed answer is never cached
        self._hold(envelope.Error, error=err.to_wire())

    def messages(self) -> int:
        """Messages this request sends the frontend, the final one included."""
        return self.n + 1

    async def finish(self, row: bytes | None = None, settle: list | None = None) -> None:
        """Send the final reply held by body(), end() or error() (or a `log` envelope when there
        is none), carrying the request's outcome. Once; later calls do nothing."""
        if self.finished:
            return
        self.finished = self.done = True
        kind, fields = self.final or (envelope.Log, {})
        await self.sock.send(envelope.encode(kind(rid=self.rid, n=self.n, row=row, settle=settle, **fields)))
        self.n += 1


def recorded_body(tape: list | None) -> bytes | None:
    """The response body a `Reply.tape` recorded: the body, or a stream's event payloads one per
    line (None when nothing was recorded: a failure before the answer)."""
    if not tape:
        return None
    body = [item[1] for item in tape if item[0] == "body"]
    if body:
        return body[0]
    return b"\n".join(payload for item in tape if item[0] == "chunks" for _, payload in item[1])
