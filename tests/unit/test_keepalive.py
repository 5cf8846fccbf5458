"""frontend/keepalive.py: the keep-alive timer closes a connection exactly when hypercorn's own
timer (TrioSingleTask + TCPServer._idle_timeout) would. Each scenario is played against both, in
virtual time (autojump_clock), and the moment each closes the connection is compared."""
from __future__ import annotations

import pytest
import trio
from hypercorn.trio import tcp_server
from hypercorn.trio.worker_context import EventWrapper, TrioSingleTask

from finops.frontend.keepalive import IdleTimer
from tests.helpers.inprocess_hypercorn import serving

TIMEOUT = 75.0


class Server:
    """The part of hypercorn's TCPServer the timer touches: its config, context, and the close."""
    _idle_timeout = tcp_server.TCPServer._idle_timeout      # hypercorn's own action, bound to this

    def __init__(self):
        self.config = type("Config", (), {"keep_alive_timeout": TIMEOUT})()
        self.context = type("Context", (), {"terminated": EventWrapper()})()
        self.closed_at: float | None = None

    async def _initiate_server_close(self):
        if self.closed_at is None:
            self.closed_at = trio.current_time()


class TaskGroup:
    def __init__(self, nursery):
        self._nursery = nursery


# Each step: (seconds to wait first, what happens): "idle" (the answer went out: restart), "busy" (a
# request arrived: stop), "terminate" (the server is shutting down).
SCENARIOS = {
    "idle past the timeout": [(0, "idle")],
    "a request before the timeout, then idle again": [(0, "idle"), (60, "busy"), (30, "idle")],
    "busy for longer than the timeout": [(0, "idle"), (1, "busy"), (200, "idle")],
    "shut down while idle": [(0, "idle"), (10, "terminate")],
    "shut down while busy, then idle": [(0, "idle"), (5, "busy"), (10, "terminate"), (20, "idle")],
    "shut down before the first idle": [(0, "terminate"), (3, "idle")],
    "many short requests": [(0, "idle")] + [(50, "busy"), (1, "idle")] * 5,
}


async def play(timer_cls, steps) -> float | None:
    server = Server()
    timer = timer_cls()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        group = TaskGroup(nursery)
        for wait, what in steps:
            await trio.sleep(wait)
            if server.closed_at is not None:
                break
            if what == "idle":
                await timer.restart(group, server._idle_timeout)
            elif what == "busy":
                await timer.stop()
            else:
                await server.context.terminated.set()
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    return None if server.closed_at is None else server.closed_at - start


@pytest.mark.parametrize("name", SCENARIOS)
async def test_closes_when_hypercorns_own_timer_would(name, autojump_clock):
    theirs = await play(TrioSingleTask, SCENARIOS[name])
    ours = await play(IdleTimer, SCENARIOS[name])
    assert ours == pytest.approx(theirs) if theirs is not None else ours is None


async def test_the_expected_moments(autojump_clock):
    """The reference itself, so a change in hypercorn's timer shows here first."""
    assert await play(IdleTimer, SCENARIOS["idle past the timeout"]) == pytest.approx(TIMEOUT)
    assert await play(IdleTimer, SCENARIOS["a request before the timeout, then idle again"]) == pytest.approx(90 + TIMEOUT)
    assert await play(IdleTimer, SCENARIOS["busy for longer than the timeout"]) == pytest.approx(201 + TIMEOUT)
    assert await play(IdleTimer, SCENARIOS["shut down while idle"]) == pytest.approx(10)
    assert await play(IdleTimer, SCENARIOS["shut down while busy, then idle"]) == pytest.approx(35)


async def test_closing_the_connection_ends_the_timer_without_a_server_close(autojump_clock):
    """A connection closed mid-request (or idle) leaves no task behind to hold its handler open."""
    for steps in ([(0, "idle"), (5, "busy")], [(0, "idle")], [(0, "idle"), (5, "busy"), (1, "terminate")]):
        server, timer = Server(), IdleTimer()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for wait, what in steps:
                await trio.sleep(wait)
                if what == "idle":
                    await timer.restart(TaskGroup(nursery), server._idle_timeout)
                elif what == "busy":
                    await timer.stop()
                else:
                    await server.context.terminated.set()
            await trio.sleep(1)
            timer.close()
        assert trio.current_time() - start == pytest.approx(sum(w for w, _ in steps) + 1), steps
        assert server.closed_at is None


async def test_a_real_hypercorn_leaves_no_timer_behind(monkeypatch):
    """Served by hypercorn with the timer installed: clients that close their connections (after
    `Connection: close`, mid-request, or idle) leave no timer task; one idle keep-alive connection
    keeps exactly one."""
    from finops.frontend import keepalive
    monkeypatch.setattr(tcp_server.TCPServer, "_read_data", tcp_server.TCPServer._read_data)
    monkeypatch.setattr(tcp_server, "TrioSingleTask", TrioSingleTask)
    keepalive.install()
    assert tcp_server.TrioSingleTask is IdleTimer
    keepalive.install()                                  # twice is the same as once

    release = trio.Event()

    async def app(scope, receive, send):
        await receive()
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def timers() -> int:
        n, todo = 0, [trio.lowlevel.current_root_task()]
        while todo:
            t = todo.pop()
            n += t.name.endswith("IdleTimer._run")
            todo += [c for nursery in t.child_nurseries for c in nursery.child_tasks]
        return n

    async def wait_for(count: int) -> None:
        with trio.fail_after(10):
            while timers() != count:
                await trio.sleep(0.01)

    async with serving(app) as port:

        async def request(path: bytes, close: bool) -> trio.SocketStream:
            s = await trio.open_tcp_stream("127.0.0.1", port)
            await s.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
            return s

        for _ in range(5):                               # answered, then closed by the server
            s = await request(b"/", close=True)
            while await s.receive_some(1000):
                pass
            await s.aclose()
        slow = [await request(b"/slow", close=False) for _ in range(5)]
        await trio.sleep(0.2)
        for s in slow:                                   # closed by the client mid-request
            await s.aclose()
        idle = await request(b"/", close=False)          # answered and kept open
        assert (await idle.receive_some(1000)).startswith(b"HTTP/1.1 200")
        await wait_for(1)
        await idle.aclose()                              # closed by the client while idle
        await wait_for(0)
        release.set()
