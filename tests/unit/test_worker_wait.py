"""A request that finds no live worker waits for one (frontend/dispatch.py `WorkerPool.wait_choose`),
up to `server.worker_wait_seconds`. Virtual time (pytest-trio's autojump_clock): nothing sleeps."""
from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from finops.frontend.dispatch import Worker, WorkerPool
from finops.shared import envelope
from finops.shared.config import ConfigError, build


def pool() -> WorkerPool:
    return WorkerPool(build({}, "test"))


def announce(p: WorkerPool, pid: int) -> Worker:
    """A worker the frontend found in the run directory: connected, not yet live (no pong)."""
    w = Worker(pid, f"ipc:///tmp/worker-{pid}", sock=None, monitor=None)
    p.workers[pid] = w
    return w


def pong(p: WorkerPool, pid: int) -> None:
    p._on_pong(envelope.Pong(wid=str(pid), t=0.0, inflight=0))


async def test_a_live_worker_is_chosen_at_once():
    p = pool()
    w = announce(p, 1)
    pong(p, 1)
    assert p.choose() is w
    assert await p.wait_choose(0) is w


async def test_waiting_requests_get_the_first_worker_that_becomes_live(autojump_clock):
    p = pool()
    w = announce(p, 7)
    got = []

    async def request():
        got.append(await p.wait_choose(5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request)
        nursery.start_soon(request)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []                  # announced but not live: they wait
        pong(p, 7)
    assert got == [w, w]


async def test_no_live_worker_within_the_wait_is_none(autojump_clock):
    p = pool()
    announce(p, 7)                        # never answers a ping
    start = trio.current_time()
    assert await p.wait_choose(0.5) is None
    assert trio.current_time() - start == pytest.approx(0.5)
    assert await p.wait_choose(0) is None


async def test_a_worker_gone_before_the_waiter_runs_is_not_chosen(autojump_clock):
    p = pool()
    a, b = announce(p, 7), announce(p, 8)
    got = []

    async def request():
        got.append(await p.wait_choose(5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request)
        await trio.testing.wait_all_tasks_blocked()
        pong(p, 7)
        a.dead = True                     # live, then dead before the waiter ran: it waits on
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        pong(p, 8)
    assert got == [b]


# --- server.worker_wait_seconds ---------------------------------------------------------------------

def test_worker_wait_seconds_default_and_values():
    assert build({}, "test").server.worker_wait_seconds == 5.0
    assert build({"server": {"worker_wait_seconds": 0}}, "test").server.worker_wait_seconds == 0
    env = {"WAIT": "0.5"}
    assert build({"server": {"worker_wait_seconds": "${WAIT}"}}, "test", environ=env).server.worker_wait_seconds == 0.5


@pytest.mark.parametrize("bad", [-1, -0.1, math.nan, math.inf, "soon"])
def test_worker_wait_seconds_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"server\.worker_wait_seconds"):
        build({"server": {"worker_wait_seconds": bad}}, "test")
