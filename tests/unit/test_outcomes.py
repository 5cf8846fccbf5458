"""The frontend's outcomes (frontend/outcomes.py): rows forwarded to the observer in batches, kept
while it is away, the frontend's own failure rows, and recent settles sent again to the ledger
when a worker dies or the ledger restarted."""
from __future__ import annotations

import time

import msgpack
import pytest
import trio

from finops.shared import config as configmod
from finops.shared import envelope, errors, logrow, transport
from finops.shared.transport import zmq
from finops.frontend import outcomes as mod
from finops.frontend.outcomes import Outcomes


def cfg_for(tmp_path, **observability) -> configmod.Config:
    return configmod.build({"server": {"data_dir": str(tmp_path / "data")}, "observability": observability}, "test")


def actor_socket(cfg, kind: str):
    """A PULL socket announced in the run dir as the `kind` actor."""
    pull = transport.make_socket(zmq.PULL)
    endpoint = transport.bind(pull, transport.endpoint_for(kind, cfg.run_dir, cfg.server.transport))
    return pull, transport.announce(cfg.run_dir, kind, endpoint)


def received(pull) -> list[dict]:
    out = []
    while pull.poll(500):
        out.append(msgpack.unpackb(pull.recv(), raw=False))
    return out


def row(rid: str) -> bytes:
    return logrow.pack(logrow.gateway_row(rid, 1.0, "2026-01-01", "converse", "m", "", "", 200, "", 1.0))


def test_rows_and_settles_come_from_final_envelopes_and_old_settles_are_forgotten(tmp_path):
    o = Outcomes(cfg_for(tmp_path))
    try:
        o.take(envelope.Body(rid="a", n=1, data=b"{}", row=row("a"), settle=("a", "vk", "", 0.1, 3)), now=100.0)
        o.take(envelope.Log(rid="b", n=0, row=row("b")), now=101.0)
        o.take(envelope.Error(rid="x", n=0, error=errors.internal().to_wire()), now=101.5)  # no outcome: nothing taken
        assert o.rows == [row("a"), row("b")] and [s for _, s in o.recent] == [("a", "vk", "", 0.1, 3)]
        o.take(envelope.End(rid="c", n=2, settle=("c", "vk", "", 0.2, 4)), now=100.0 + mod.REPLAY_SECONDS + 0.5)
        assert [s[0] for _, s in o.recent] == ["c"]                           # "a" is past the replay window
    finally:
        o.rows = []
        o.close()


def test_settles_kept_while_the_ledger_is_away_are_bounded_oldest_dropped_first(tmp_path, monkeypatch):
    monkeypatch.setattr(mod, "MAX_RECENT", 3)
    o = Outcomes(cfg_for(tmp_path))
    try:
        o.ledger_seen = 100.0                     # last seen alive, then away: nothing is past the window
        for i, rid in enumerate("abcde"):
            o.take(envelope.End(rid=rid, n=1, settle=(rid, "vk", "", 0.1, 3)), now=100.0 + i)
        assert [s[0] for _, s in o.recent] == ["c", "d", "e"]
    finally:
        o.close()


def test_rows_wait_while_the_observer_is_away_then_go_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr(mod, "MAX_ROWS", 3)
    cfg = cfg_for(tmp_path)
    o = Outcomes(cfg)
    try:
        for rid in "abcde":
            o.rows.append(row(rid))
            o.flush()
        assert [logrow.unpack(r)[0] for r in o.rows] == ["c", "d", "e"] and o.dropped == 2
        pull, announced = actor_socket(cfg, "observer")
        o.observer.discovered_at = 0.0                                      # look again now
        o.flush()
        msgs = received(pull)
        assert len(msgs) == 1 and [logrow.unpack(r)[0] for r in msgs[0]["packed"]] == ["c", "d", "e"]
        assert o.rows == []
        transport.withdraw(announced)
        pull.close(linger=0)
    finally:
        o.close()


def test_the_frontends_own_failure_row(tmp_path):
    o = Outcomes(cfg_for(tmp_path))
    try:
        o.failure("r1", 1_800_000_000.0, "converse-stream", "m1", {"x-bf-env": "prod", "user-agent": "ua"},
                  200, "ServiceUnavailableException", stream=True, messages=5)
        d = dict(zip(logrow.NAMES, logrow.unpack(o.rows[0])))
        assert (d["id"], d["op"], d["model"], d["env"], d["stream"], d["status"], d["error"], d["error_origin"],
                d["messages"], d["cost_usd"]) == ("r1", "converse-stream", "m1", "prod", 1, 200,
                                                   "ServiceUnavailableException", "gateway", 5, 0.0)
        off = Outcomes(cfg_for(tmp_path, request_log=False))
        off.failure("r2", 1.0, "converse", "m", {}, 503, "X")
        assert off.rows == []
        off.close()
    finally:
        o.rows = []
        o.close()


async def test_a_batch_goes_within_flush_seconds_or_at_batch_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(mod, "BATCH_ROWS", 4)
    cfg = cfg_for(tmp_path)
    pull, announced = actor_socket(cfg, "observer")
    o = Outcomes(cfg)
    try:
        async with trio.open_nursery() as n:
            n.start_soon(o.run)
            o.add(row("a"))
            assert o.rows                                                    # waits for the timer
            await trio.sleep(mod.FLUSH_SECONDS * 3)
            assert o.rows == []
            for rid in "wxyz":                                               # a full batch goes at once
                o.add(row(rid))
            assert o.rows == []
            n.cancel_scope.cancel()
        sent = [logrow.unpack(r)[0] for m in received(pull) for r in m["packed"]]
        assert sent == ["a", "w", "x", "y", "z"]
    finally:
        o.close()
        transport.withdraw(announced)
        pull.close(linger=0)


def test_a_dead_worker_makes_the_recent_settles_go_to_the_ledger_again(tmp_path):
    cfg = cfg_for(tmp_path)
    pull, announced = actor_socket(cfg, "ledger")
    o = Outcomes(cfg)
    try:
        o.take(envelope.Body(rid="a", n=1, data=b"", settle=("a", "vk", "", 0.1, 3)), now=1.0)
        o.take(envelope.End(rid="b", n=3, settle=("b", "vk", "prod", 0.2, 4, 0.5)), now=1.5)
        o.worker_died()
        [msg] = received(pull)
        assert msg["k"] == "replay" and [p[1:] for p in msg["p"]] == [["a", "vk", "", 0.1, 3],
                                                                      ["b", "vk", "prod", 0.2, 4, 0.5]]
        stamps = [p[0] for p in msg["p"]]              # wall-clock times the frontend got them
        assert stamps[1] - stamps[0] == pytest.approx(0.5) and abs(stamps[0] - (time.time() - time.monotonic() + 1.0)) < 1
    finally:
        o.close()
        transport.withdraw(announced)
        pull.close(linger=0)


def test_a_restarted_ledger_gets_the_recent_settles_again(tmp_path):
    """The ledger is seen at every look; when its announcement names a new process (it was killed
    and restarted), the settles of the last REPLAY_SECONDS before it was last seen alive go to the
    new one, all of those got while it was away too."""
    cfg = cfg_for(tmp_path)
    first, first_announced = actor_socket(cfg, "ledger")
    o = Outcomes(cfg)
    second = second_announced = None
    try:
        o.look_for_ledger(100.0)
        o.take(envelope.End(rid="a", n=1, settle=("a", "vk", "", 0.1, 3)), now=100.1)
        o.look_for_ledger(100.2)
        assert received(first) == []                                        # the same ledger: nothing sent
        transport.withdraw(first_announced)                                 # the ledger is gone ...
        first.close(linger=0)
        o.look_for_ledger(101.0)
        for i, now in enumerate((102.0, 100.2 + mod.REPLAY_SECONDS + 5)):  # ... for long: all kept
            o.take(envelope.End(rid=f"b{i}", n=1, settle=(f"b{i}", "vk", "", 0.2, 4)), now=now)
        assert [s[0] for _, s in o.recent] == ["a", "b0", "b1"]
        second, second_announced = actor_socket(cfg, "ledger")
        # (a new process in real life: the stand-in has this test's pid, so the last one seen is faked)
        o.ledger_pid = -1
        o.look_for_ledger(110.0)
        [msg] = received(second)
        assert msg["k"] == "replay" and [p[1] for p in msg["p"]] == ["a", "b0", "b1"]
        o.look_for_ledger(110.2)
        assert received(second) == []                                       # once
        o.take(envelope.End(rid="c", n=1, settle=("c", "vk", "", 0.3, 5)), now=110.3)
        assert [s[0] for _, s in o.recent] == ["b1", "c"]                   # seen again: the window applies
    finally:
        o.close()
        for p in (first, second):
            if p is not None:
                p.close(linger=0)
        if second_announced:
            transport.withdraw(second_announced)
