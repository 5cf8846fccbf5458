"""The workers' ledger client keeps settles it could not deliver: a reserve carries the queued
settles; when the ledger does not answer it (killed, restarting) or the request is cancelled, they
are queued again and go with the next message (the ledger counts a request id settled twice once),
followed by a zero settle of the reserve itself, which the ledger may have made.
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
