"""Stream flow control on the worker side: a Reply sends at most `window` chunks ahead of credit."""
from __future__ import annotations

import pytest
import trio

from finops.shared import envelope, errors
from finops.workers.reply import Reply, ReplyClosed


class RecordingSocket:
    def __init__(self):
        self.sent = []

    async def send(self, data):
        self.sent.append(envelope.decode(data))


async def test_chunks_stop_at_window_until_credit_arrives():
    sock = RecordingSocket()
    reply = Reply("r1", sock, window=4, idle_timeout=30)
    await reply.head(200, [], stream=True)
    produced = 0

    async def producer():
        nonlocal produced
        for i in range(10):
            await reply.chunks([("contentBlockDelta", b"{}")])
            produced += 1

    async with trio.open_nursery() as n:
        n.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert produced == 4                      # blocked: no credit left
        reply.grant(3)
        await trio.testing.wait_all_tasks_blocked()
        assert produced == 7
        reply.grant(10)
    assert produced == 10
    kinds = [envelope.kind(e) for e in sock.sent]
    assert kinds == ["head"] + ["chunk"] * 10
    assert [e.n for e in sock.sent] == list(range(11))   # sequence numbers in order


async def test_no_credit_for_idle_timeout_gives_up(autojump_clock):
    reply = Reply("r2", RecordingSocket(), window=1, idle_timeout=5)
    await reply.head(200, [], stream=True)
    await reply.chunks([("x", b"{}")])
    with pytest.raises(trio.TooSlowError):
        await reply.chunks([("x", b"{}")])
    assert trio.current_time() >= 5


async def test_error_after_end_is_ignored_and_sending_after_end_refused():
    sock = RecordingSocket()
    reply = Reply("r3", sock, window=2, idle_timeout=5)
    await reply.head(200, [], stream=True)
    await reply.end({"in": 1})
    await reply.error(errors.internal())
    with pytest.raises(ReplyClosed):
        await reply.chunks([("x", b"{}")])
    assert [envelope.kind(e) for e in sock.sent] == ["head"]          # the end waits for the outcome
    await reply.finish(b"row", ["r3", "vk", "", 0.1, 2])
    await reply.finish(b"again")                              # once only
    assert [envelope.kind(e) for e in sock.sent] == ["head", "end"]
    end = sock.sent[-1]
    assert end == envelope.End(rid="r3", n=1, usage={"in": 1}, row=b"row", settle=("r3", "vk", "", 0.1, 2))


async def test_the_final_reply_carries_the_outcome_and_a_request_without_one_sends_a_log():
    sock = RecordingSocket()
    reply = Reply("r5", sock, window=2, idle_timeout=5)
    await reply.head(200, [], stream=False)
    await reply.body(b"{}")
    assert reply.done and [envelope.kind(e) for e in sock.sent] == ["head"]
    await reply.finish(b"row")
    assert sock.sent[-1] == envelope.Body(rid="r5", n=1, data=b"{}", row=b"row")
    gone = Reply("r6", sock, window=2, idle_timeout=5)          # cancelled before any answer
    await gone.finish(b"row2", ["r6", "", "", 0.0, 0])
    assert sock.sent[-1] == envelope.Log(rid="r6", n=0, row=b"row2", settle=("r6", "", "", 0.0, 0))


async def test_a_batch_is_split_to_fit_the_credit():
    sock = RecordingSocket()
    reply = Reply("r4", sock, window=4, idle_timeout=30)
    await reply.head(200, [], stream=True)
    events = [("contentBlockDelta", str(i).encode()) for i in range(10)]
    async with trio.open_nursery() as n:
        n.start_soon(reply.chunks, events)
        await trio.testing.wait_all_tasks_blocked()
        assert [len(e.events) for e in sock.sent[1:]] == [4]      # only the credit's worth went out
        reply.grant(5)
        await trio.testing.wait_all_tasks_blocked()
        assert [len(e.events) for e in sock.sent[1:]] == [4, 5]
        reply.grant(1)
    sent = [data for e in sock.sent[1:] for _, data in e.events]
    assert sent == [d for _, d in events]                         # all of them, in order
