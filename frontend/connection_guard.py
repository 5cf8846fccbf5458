"""One connection's failure inside the HTTP server closes that connection, never the frontend.

Hypercorn 0.18 (trio) runs every connection as a task of one nursery (`trio.serve_listeners`'
handler nursery, in `hypercorn.trio.run.worker_serve`), and `TCPServer.run` lets through every
exception but `OSError`. An exception raised by the protocol code of one connection (an h11, h2
or wsproto state error on input it did not expect; hypercorn issues #177, #197, #225, #329, #365)
therefore ends the nursery, the server and the frontend process, with every request in flight on
every other connection. One request from anyone who can reach the port did it: an
`Upgrade: websocket` head followed by one more byte (tests/system/test_hostile_input.py).

`install()` wraps `TCPServer.run`: such an exception is logged once with its traceback and the
peer's address, the connection is closed (hypercorn's own `finally` has closed it already; closing
again is harmless), and the frontend goes on serving everyone else. Cancellation (`trio.Cancelled`,
`KeyboardInterrupt`: `BaseException`s) passes through untouched, so shutdown and drain work as
before. Application errors never get here: hypercorn's task group turns them into a 500.

It also mends the one such failure seen in ordinary traffic: HTTP/2 clients that end their
connection (GOAWAY, as the JS SDK does after every answer) while its last bytes are being
written; fuzzing with such clients hit it 3 times in 900 connections. `TCPServer.protocol_send`
writes under a lock, but its close (`_close`: `send_eof`) does not take that lock, so a write in
another task met trio's `BusyResourceError` ("another task is currently sending data").
h2_protocol.py no longer closes on a GOAWAY before the last write; any other close racing a write
still can, so a write that finds the connection being closed is now that close
(`protocol.handle(Closed())`, as for a broken connection), which is what it is: after `send_eof`
nothing more can be written anyway.
"""
from __future__ import annotations

import logging

import trio
from hypercorn.events import Closed
from hypercorn.trio import tcp_server

log = logging.getLogger("finops.frontend")


def _peer(server) -> str:
    """The client's address as hypercorn read it when the connection began (no system call)."""
    client = getattr(getattr(server, "protocol", None), "client", None)
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


async def _run(self) -> None:
    """TCPServer.run, except that an exception ends this connection only."""
    try:
        await _run.hypercorns(self)
    except Exception:       # an ExceptionGroup of Exceptions included; Cancelled is not one
        log.exception("a connection from %s failed inside the HTTP server; closed it, serving on", _peer(self))
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def _protocol_send(self, event) -> None:
    """TCPServer.protocol_send, except that a write meeting the connection's close is that close."""
    try:
        await _protocol_send.hypercorns(self, event)
    except trio.BusyResourceError:      # send_all while _close's send_eof is under way
        await self.protocol.handle(Closed())


def install() -> None:
    """Make hypercorn's trio TCP server contain each connection's failures (idempotent)."""
    if tcp_server.TCPServer.run is not _run:
        _run.hypercorns = tcp_server.TCPServer.run
        tcp_server.TCPServer.run = _run
    if tcp_server.TCPServer.protocol_send is not _protocol_send:
        _protocol_send.hypercorns = tcp_server.TCPServer.protocol_send
        tcp_server.TCPServer.protocol_send = _protocol_send
