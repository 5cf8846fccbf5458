"""A worker's reserves straight to Redis (workers/ledger/direct.py) on a real Redis: the same
counters as the ledger actor's, exact under concurrent tasks, and every case it hands to the actor
or answers itself (lost data, NOSCRIPT, nobody listening, a stall in each `redis_failure` policy, a
caller that went away)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import trio

from finops.shared.governance import Budget, Directory, RateLimit, VirtualKey
from finops.workers.ledger.direct import DirectReserver
from finops.workers.ledger.redis_state import RedisLedger
from tests.helpers.beside import beside
from tests.helpers.gateway import free_port
from tests.helpers.redis_server import RedisServer

DIR = Directory(keys={
    "vk-1": VirtualKey("vk-1", "s1", budgets=(Budget(1.0, "day"),)),
    "vk-lim": VirtualKey("vk-lim", "s2", rate_limits=(RateLimit("minute", requests=10),)),
})


def cfg(url: str, policy: str = "closed", timeout: float = 0.3, node: str = "node-a"):
    g = SimpleNamespace(timezone="UTC", reservation_ttl_seconds=900.0, redis_url=url, redis_ca_file="",
                        redis_timeout_seconds=timeout, redis_failure=policy)
    return SimpleNamespace(governance=g, server=SimpleNamespace(node=node))


def actor_ledger(url: str) -> RedisLedger:
    """What the node's ledger actor uses on the same Redis (settles, reports, the rebuild)."""
    led = RedisLedger.from_url(url, DIR)
    led.rebuild([])
    return led


def budget(led: RedisLedger) -> dict:
    """vk-1's daily budget as the actor's ledger reports it (spent_usd, reserved_usd, ...)."""
    return [u for u in led.usage("vk-1") if u["kind"] == "budget"][0]


class Calls:
    def __init__(self):
        self.released: list[str] = []
        self.uncounted = 0

    def release(self, rid):
        self.released.append(rid)

    def count(self):
        self.uncounted += 1


async def run_with(direct: DirectReserver, fn):
    return await beside(direct.run, fn)


def reserver(url, **kw) -> DirectReserver:
    return DirectReserver(cfg(url, **kw), lambda: DIR)


async def test_a_direct_reserve_is_the_actor_s_reservation(redis_db):
    led = actor_ledger(redis_db.url)
    d, calls = reserver(redis_db.url), Calls()

    async def go():
        a = await d.reserve("r1", "vk-1", "", 0.6, 100, 4242, calls.release, calls.count)
        b = await d.reserve("r2", "vk-1", "", 0.6, 100, 4242, calls.release, calls.count)
        return a, b
    a, b = await run_with(d, go)
    assert a["ok"] and a["remaining_usd"] == 0.4 and a["budget"] == "key 'vk-1' daily budget of $1"
    assert not b["ok"] and b["code"] == "ServiceQuotaExceededException" and "$0.40 left" in b["message"]
    assert led.owners() == {"node-a/4242"}          # this node's worker: its reservations expire with it
    led.settle("r1", 0.25, 50, "vk-1", "")
    assert (budget(led)["spent_usd"], budget(led)["reserved_usd"]) == (0.25, 0.0)
    assert calls.released == [] and calls.uncounted == 0


async def test_a_limit_of_ten_admits_exactly_ten_over_several_workers_and_tasks(redis_db):
    actor_ledger(redis_db.url)
    workers = [reserver(redis_db.url) for _ in range(3)]
    calls, results = Calls(), []

    async def go():
        async with trio.open_nursery() as n:
            for w, d in enumerate(workers):
                for i in range(15):
                    n.start_soon(lambda d=d, rid=f"w{w}-{i}": _reserve_into(d, rid, results, calls))
        return results

    async with trio.open_nursery() as n:
        for d in workers:
            n.start_soon(d.run)
        await go()
        n.cancel_scope.cancel()
    assert len(results) == 45
    assert sum(r["ok"] for r in results) == 10
    assert {r["code"] for r in results if not r["ok"]} == {"ThrottlingException"}


async def _reserve_into(d, rid, results, calls):
    results.append(await d.reserve(rid, "vk-lim", "", 0.0, 0, 1, calls.release, calls.count))


async def test_lost_data_and_unknown_scripts_go_to_the_actor(redis_db):
    d, calls = reserver(redis_db.url), Calls()

    async def go():
        lost = await d.reserve("r1", "vk-1", "", 0.1, 0, 1, calls.release, calls.count)   # no ready marker
        actor_ledger(redis_db.url)
        redis_db.client().script_flush()
        noscript = await d.reserve("r2", "vk-1", "", 0.1, 0, 1, calls.release, calls.count)
        return lost, noscript
    assert await run_with(d, go) == (None, None)
    assert calls.released == []                 # neither script ran


async def test_nobody_listening_goes_to_the_actor_and_opens_the_circuit():
    d, calls = reserver(f"redis://127.0.0.1:{free_port()}/0"), Calls()

    async def go():
        got = await d.reserve("r1", "vk-1", "", 0.1, 0, 1, calls.release, calls.count)
        return got, d.down_until - trio.current_time()
    got, circuit_left = await run_with(d, go)
    assert got is None
    assert calls.released == []                 # nothing was written
    assert 0.5 < circuit_left <= 1.0            # the next second's reserves go to the actor at once


async def test_a_stall_after_the_write_is_refused_and_released_when_closed(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        led = actor_ledger(srv.url)
        d, calls = reserver(srv.url, timeout=0.3), Calls()

        async def go():
            srv.pause()
            try:
                return await d.reserve("r1", "vk-1", "", 0.5, 0, 1, calls.release, calls.count)
            finally:
                srv.resume()
        got = await run_with(d, go)
        assert got["code"] == "ServiceUnavailableException" and got["status"] == 503
        assert "unreachable" in got["message"] and "127.0.0.1" in got["message"]
        assert calls.released == ["r1"] and calls.uncounted == 0
        # the reserve did run once Redis resumed: the actor's release (a settle of nothing) frees it
        deadline = time.monotonic() + 5
        while budget(led)["reserved_usd"] != 0.5:
            assert time.monotonic() < deadline, "the written reserve never ran"
            time.sleep(0.02)
        led.settle("r1", 0.0, 0, "", "")
        assert budget(led)["reserved_usd"] == 0.0


async def test_a_stall_after_the_write_is_served_uncounted_when_open(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        actor_ledger(srv.url)
        d, calls = reserver(srv.url, policy="open", timeout=0.3), Calls()

        async def go():
            srv.pause()
            try:
                first = await d.reserve("r1", "vk-1", "", 0.5, 0, 1, calls.release, calls.count)
                second = await d.reserve("r2", "vk-1", "", 0.5, 0, 1, calls.release, calls.count)
            finally:
                srv.resume()
            return first, second
        first, second = await run_with(d, go)
        assert first["ok"] and first["uncounted"]
        assert second is None                   # the circuit is open: the actor decides (its own policy)
        assert calls.uncounted == 1 and calls.released == []    # its own settle will settle it


async def test_a_caller_that_went_away_has_its_reservation_released_when_the_reply_comes(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        led = actor_ledger(srv.url)
        d, calls = reserver(srv.url, timeout=5), Calls()

        async def go():
            srv.pause()
            try:
                with trio.move_on_after(0.2):
                    await d.reserve("gone", "vk-1", "", 0.5, 0, 1, calls.release, calls.count)
                assert calls.released == []     # not yet: did it reserve?
            finally:
                srv.resume()
            with trio.fail_after(5):
                while not calls.released:
                    await trio.sleep(0.01)
            return await d.reserve("after", "vk-1", "", 0.1, 0, 1, calls.release, calls.count)
        after = await run_with(d, go)
        assert after["ok"] and after["remaining_usd"] == 0.4       # "gone" holds $0.50 until released
        assert calls.released == ["gone"]
        led.settle("gone", 0.0, 0, "", "")
        assert budget(led)["reserved_usd"] == 0.1
