"""The ledger actor on `[governance] store = "postgres"` (workers/ledger/actor.py: its store lines):
the config file's entries copied into PostgreSQL, a budget changed on another node reaching its
counters through the directory watcher, and its snapshot kept per node. A real PostgreSQL."""
from __future__ import annotations

import time

from finops.shared.config import build
from finops.shared.governance import Budget, VirtualKey
from finops.workers.governance.pg_store import PgStore
from finops.workers.ledger.actor import LedgerActor

SECRET = "s" * 20


def config(tmp_path, url: str, node: str):
    cfg = build({"server": {"data_dir": str(tmp_path), "node_name": node},
                 "governance": {"store": "postgres", "postgres_url": url,
                                "keys": [{"id": "vk-cfg", "secret": SECRET,
                                          "budgets": [{"amount_usd": 1, "period": "day"}]}]}}, "t", environ={})
    cfg.server.data_dir = str(tmp_path)
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    return cfg


def reserve(actor, rid: str, key: str, usd: float) -> dict:
    return actor.handle({"k": "reserve", "rid": rid, "key": key, "env": "", "max": usd, "tok": 1})


def test_the_ledger_on_postgres(tmp_path, postgres_url):
    a = LedgerActor(config(tmp_path / "a", postgres_url, "a"))
    try:
        with PgStore.open(postgres_url) as other_node:
            assert other_node.get_key("vk-cfg").source == "config"         # sync_config, into PostgreSQL
            before = a.directory.data_version()
            other_node.put_key(VirtualKey("vk-2", SECRET + "2", budgets=(Budget(0.5, "day"),)))
            deadline = time.monotonic() + 15
            while a.directory.data_version() == before:
                assert time.monotonic() < deadline, "the ledger's watcher never saw the change"
                time.sleep(0.01)
        a.tick()                                                            # its reload
        assert reserve(a, "r1", "vk-2", 0.6)["code"] == "ServiceQuotaExceededException"
        assert reserve(a, "r2", "vk-2", 0.4)["ok"]
        a.handle({"k": "settle", "rid": "r2", "key": "vk-2", "env": "", "cost": 0.4, "tok": 1})
    finally:
        a.close()                                                           # saves node a's snapshot
    a = LedgerActor(config(tmp_path / "a", postgres_url, "a"))
    b = LedgerActor(config(tmp_path / "b", postgres_url, "b"))
    try:
        assert reserve(a, "r3", "vk-2", 0.2)["code"] == "ServiceQuotaExceededException"   # 0.4 restored
        assert reserve(b, "r3", "vk-2", 0.2)["ok"]                  # a local ledger's counters are its node's
    finally:
        a.close()
        b.close()
    assert not (tmp_path / "a" / "governance.sqlite").exists()
