"""Hypercorn's keep-alive timer, without a task per request.

Hypercorn (trio) closes a connection that stays idle for `keep_alive_timeout`, or at once when
the server shuts down while it is idle. It does that with a `TrioSingleTask`: every request stops
the timer task (a lock and a cancel) and every answer starts a new one (a lock, a cancel, a
`nursery.start` and two cancel scopes). Profiled under load that was 8 % of the frontend's CPU
(scripts/bench.py --profile: `TrioSingleTask.restart`, `.stop`, `TCPServer._idle_timeout`).

`IdleTimer` keeps the same contract with one task per connection whose deadline moves:
`restart` (the connection went idle) sets it `keep_alive_timeout` ahead, or to now when the server
is shutting down; `stop` (a request arrived) clears it. When it passes while the connection is
idle, the connection is closed as hypercorn would (`TCPServer._initiate_server_close`). The task
ends with the connection: hypercorn's read loop (`TCPServer._read_data`) returns only when the
connection is closed, and then calls `close()` (hypercorn's own timer had no task while a request
ran, so a connection closed mid-request left none behind; this one must not either).

`install()` makes hypercorn's trio TCP server use it; the frontend calls it before serving.
"""
from __future__ import annotations

import math

import trio
from hypercorn.trio import tcp_server


class IdleTimer:
    """Drop-in for `hypercorn.trio.worker_context.TrioSingleTask` as `TCPServer.idle_task`, whose
    only action is `TCPServer._idle_timeout` (the server is that bound method's `__self__`)."""

    __slots__ = ("_server", "_idle", "_since", "_closed", "_scope")

    def __init__(self) -> None:
        self._server = None
        self._idle = False
        self._since = 0.0
        self._closed = False
        self._scope: trio.CancelScope | None = None    # the current wait's; its deadline is `_due()`

    def _due(self) -> float:
        if self._closed:
            return -math.inf
        if not self._idle:
            return math.inf
        if self._server.context.terminated.is_set():
            return -math.inf
        return self._since + self._server.config.keep_alive_timeout

    def _moved(self) -> None:
        if self._scope is not None:
            self._scope.deadline = self._due()

    async def restart(self, task_group, action) -> None:
        """The connection is idle from now."""
        self._idle, self._since = True, trio.current_time()
        if self._server is None:
            self._server = action.__self__
            task_group._nursery.start_soon(self._run)
        else:
            self._moved()

    async def stop(self) -> None:
        """A request arrived: the connection is busy."""
        self._idle = False
        self._moved()

    def close(self) -> None:
        """The connection is closed: the task ends without doing anything."""
        self._closed = True
        self._moved()

    async def _run(self) -> None:
        terminated = self._server.context.terminated
        while True:
            with trio.CancelScope(deadline=self._due()) as self._scope:
                if terminated.is_set():
                    await trio.sleep_forever()      # until restart() or close() makes it now
                else:
                    await terminated.wait()         # shutting down: _due() is now if idle
            self._scope = None
            if self._closed:
                return
            if self._due() <= trio.current_time():
                break
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


async def _read_data(self) -> None:
    """TCPServer._read_data, then the end of its IdleTimer (the connection is closed)."""
    try:
        await _read_data.hypercorns(self)
    finally:
        if isinstance(self.idle_task, IdleTimer):
            self.idle_task.close()


def install() -> None:
    """Make hypercorn's trio TCP server use IdleTimer for its keep-alive timer (idempotent)."""
    if tcp_server.TCPServer._read_data is not _read_data:
        _read_data.hypercorns = tcp_server.TCPServer._read_data
        tcp_server.TCPServer._read_data = _read_data
    tcp_server.TrioSingleTask = IdleTimer
