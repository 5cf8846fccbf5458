"""The ledger actor with the local backend (the embedded default): every message queued at once is
handled in order (a worker's settles riding along before its reserve), one bad message costs only
its own reply, and the counters are saved and restored through the store's snapshot."""
from __future__ import annotations

import time

from finops.shared import config as configmod
from finops.workers.ledger.actor import LedgerActor
from finops.workers.ledger.backend import LocalBackend

SECRET = "secret-0123456789abcdef"


def actor(tmp_path) -> LedgerActor:
    keys = [{"id": "vk-1", "secret": SECRET, "budgets": [{"amount_usd": 1.0, "period": "day"}]}]
    cfg = configmod.build({"server": {"data_dir": str(tmp_path / "data")}, "governance": {"keys": keys}}, "test")
    return LedgerActor(cfg)


def reserve(rid, max_usd, s=None):
    m = {"k": "reserve", "rid": rid, "key": "vk-1", "env": "", "max": max_usd, "tok": 10, "pid": 1, "r": "x", "i": 1}
    if s:
        m["s"] = s
    return m


def spent(a) -> tuple[float, float]:
    u = [u for u in a.backend.usage("vk-1")["usage"] if u["kind"] == "budget"][0]
    return u["spent_usd"], u["reserved_usd"]


def test_local_is_the_default_backend(tmp_path):
    a = actor(tmp_path)
    try:
        assert isinstance(a.backend, LocalBackend)
    finally:
        a.close()


def test_a_batch_is_applied_in_the_order_received(tmp_path):
    a = actor(tmp_path)
    try:
        assert a.handle_batch([reserve("r1", 0.8)])[0]["ok"]
        out = a.handle_batch([reserve("r2", 0.8, s=[["r1", "vk-1", "", 0.1, 5]])])
        assert out[0]["ok"]                     # r1's settle rode along and was applied first
        out = a.handle_batch([reserve("r3", 0.8), {"k": "settle", "rid": "r2", "key": "vk-1", "env": "",
                                                   "cost": 0.1, "tok": 5}])
        assert out[0]["code"] == "ServiceQuotaExceededException" and out[1] is None
        assert spent(a) == (0.2, 0.0)
    finally:
        a.close()


def test_one_bad_message_costs_only_its_own_reply(tmp_path):
    a = actor(tmp_path)
    try:
        out = a.handle_batch([reserve("r1", 0.1), {"k": "reserve", "rid": "r2"}, reserve("r3", "lots"),
                              reserve("r4", 0.1), {"k": "usage", "key": "vk-1", "r": "x", "i": 2}])
        assert out[0]["ok"] and out[1] is None and out[3]["ok"]
        assert out[2] is None or out[2]["code"] == "ValidationException"
        assert [u["reserved_usd"] for u in out[4]["usage"] if u["kind"] == "budget"] == [0.2]
    finally:
        a.close()


def test_counters_survive_a_restart_through_the_snapshot(tmp_path):
    a = actor(tmp_path)
    a.handle_batch([reserve("r1", 0.5, s=None)])
    a.handle_batch([{"k": "settles", "s": [["r1", "vk-1", "", 0.25, 5]]}])
    a.close()
    b = actor(tmp_path)
    try:
        assert spent(b) == (0.25, 0.0)
    finally:
        b.close()


def test_replayed_settles_after_a_crash_count_once(tmp_path):
    """kill -9 after the last snapshot: the restarted ledger has the snapshot's counters, and the
    settles a frontend sends again ({"k": "replay"}, stamped) put back what was lost: the open
    reservation is settled (not charged in full at its TTL), a settle it already counted is not
    counted again."""
    a = actor(tmp_path)
    a.handle_batch([reserve("r1", 0.5), reserve("r2", 0.25)])
    a.handle_batch([{"k": "settles", "s": [["r1", "vk-1", "", 0.125, 5]]}])
    t1 = time.time()
    a.save()                                        # the last snapshot
    a.handle_batch([{"k": "settles", "s": [["r2", "vk-1", "", 0.0625, 5]]}])
    t2 = time.time()
    assert spent(a) == (0.1875, 0.0)
    a.observer.close()                              # killed: nothing saved at exit
    a.store.close()
    b = actor(tmp_path)
    try:
        assert spent(b) == (0.125, 0.25)
        replay = {"k": "replay", "p": [[t1, "r1", "vk-1", "", 0.125, 5], [t2, "r2", "vk-1", "", 0.0625, 5]]}
        assert b.handle_batch([replay, replay]) == [None, None]
        assert spent(b) == (0.1875, 0.0)
    finally:
        b.close()
