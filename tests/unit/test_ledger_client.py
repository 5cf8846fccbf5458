"""The workers' ledger client keeps settles it could not deliver: a reserve carries the queued
settles; when the ledger does not answer it (killed, restarting) or the request is cancelled, they
are queued again and go with the next message, or on their own once the ledger can take them (the
ledger counts a request id settled twice once), followed by a zero settle of the reserve itself,
which the ledger may have made.
Virtual time: no ledger runs, so every reserve times out."""
from __future__ import annotations

import pytest
import trio

from finops.shared import errors
from finops.workers.ledger.client import LedgerClient


@pytest.fixture
def client(tmp_path):
    c = LedgerClient(str(tmp_path / "run"), timeout=2.0)
    yield c
    c.close()


async def test_settles_riding_an_unanswered_reserve_are_kept(client, autojump_clock):
    client.settle("r1", "vk", "", 0.25, 10)
    client.settle("r2", "vk", "", 0.5, 20, saved_usd=0.1)
    with pytest.raises(errors.GatewayError) as e:
        await client.reserve("r3", "vk", "", 1.0, 100)
    assert e.value.code == "ServiceUnavailableException"
    assert client.settles == [["r1", "vk", "", 0.25, 10], ["r2", "vk", "", 0.5, 20, 0.1],
                              ["r3", "vk", "", 0.0, 0]]  # r3's reservation, if made, released
    client.settle("r4", "vk", "", 0.125, 5)              # later settles after them, in order
    assert [s[0] for s in client.settles] == ["r1", "r2", "r3", "r4"]


async def test_settles_riding_a_cancelled_reserve_are_kept(client, autojump_clock):
    client.settle("r1", "vk", "", 0.25, 10)
    with trio.move_on_after(0.5):
        await client.reserve("r2", "vk", "", 1.0, 100)
    assert client.settles == [["r1", "vk", "", 0.25, 10], ["r2", "vk", "", 0.0, 0]]


async def test_a_settle_the_ledger_could_not_take_goes_once_it_can_with_no_further_settle(tmp_path):
    """With the ledger on Redis, reserves go straight to Redis and no longer carry settles: a settle
    the actor could not take (not yet connected, stopped, queue full) must go on its own once it
    can. It waited for the next settle instead: a worker's last settles stayed unsent, their
    reservations held, and the spend short (tests/redis: a ledger actor SIGSTOPped)."""
    import msgpack
    import zmq

    from finops.shared import transport

    run_dir = str(tmp_path / "run")

    class Direct:       # every reserve answered in Redis (direct.py); only its run() is used here
        async def run(self):
            await trio.sleep_forever()

    c = LedgerClient(run_dir, timeout=2.0, direct=Direct())
    ledger = transport.make_socket(zmq.PULL)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.run)
            c.settle("r1", "vk", "", 0.25, 10)
            await trio.sleep(0.3)                       # no ledger announced: the settle waits
            assert c.settles == [["r1", "vk", "", 0.25, 10]]
            endpoint = transport.bind(ledger, transport.endpoint_for("ledger", run_dir, "ipc"))
            transport.announce(run_dir, "ledger", endpoint)
            got = None
            with trio.move_on_after(5):                # the client looks for the ledger once a second
                while got is None:
                    try:
                        got = msgpack.unpackb(ledger.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert got == {"k": "settles", "s": [["r1", "vk", "", 0.25, 10]]}
        assert c.settles == []
    finally:
        ledger.close()
        c.close()
