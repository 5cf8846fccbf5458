"""Which governance store a process opens (workers/governance/stores.py), and how the governor
reads keys from PostgreSQL: through a DirectoryWatcher checked on every request, never an empty
directory taken for "no keys". A real PostgreSQL (tests/helpers/postgres_server.py)."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pytest

from finops.shared import errors
from finops.shared.config import build
from finops.shared.governance import VirtualKey
from finops.workers.governance import stores
from finops.workers.governance.governor import Governor
from finops.workers.governance.pg_store import PgStore
from finops.workers.governance.pg_watch import DirectoryWatcher
from finops.workers.governance.store import Store
from finops.workers.request import Request
from tests.helpers.postgres_server import PostgresServer, free_port

SECRET = "s" * 20
WAIT = 15.0             # the most a test waits for a change to arrive (generous: a slow machine)


def config(tmp_path, url: str = "", node: str = "", **gov):
    g = dict(gov)
    if url:
        g.update(store="postgres", postgres_url=url)
    cfg = build({"server": {"data_dir": str(tmp_path), "node_name": node}, "governance": g}, "t", environ={})
    cfg.server.data_dir = str(tmp_path)
    return cfg


def with_key(secret: str) -> Request:
    return Request(rid="r1", op="converse", model_id="m", headers={"x-bf-vk": secret}, environment="",
                   started=0.0, body=b"")


def until(pred, timeout: float = WAIT):
    """Poll `pred` until it returns something true (the test fails if it never does)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail("the change never arrived")
        time.sleep(0.01)


# --- open_store / open_directory --------------------------------------------------------------------

def test_the_default_is_the_sqlite_file_in_the_data_dir(tmp_path):
    cfg = config(tmp_path)
    with stores.open_store(cfg) as s:
        assert isinstance(s, Store) and s.path == str(tmp_path / "governance.sqlite")
        assert stores.open_directory(cfg, s) is s and not stores.watched(cfg)


def test_postgres_opens_the_shared_database_with_a_snapshot_per_node(tmp_path, postgres_url):
    with stores.open_store(config(tmp_path, postgres_url, node="a")) as a, \
            stores.open_store(config(tmp_path, postgres_url, node="b")) as b:
        assert isinstance(a, PgStore) and (a.node, b.node) == ("a", "b")
        a.save_snapshot({"n": 1})
        assert a.load_snapshot() == {"n": 1} and b.load_snapshot() is None    # a node's counters are its own
        a.put_key(VirtualKey("vk-1", SECRET))
        assert b.get_key("vk-1") is not None                                   # the keys are everyone's
    assert not (tmp_path / "governance.sqlite").exists()


def test_the_postgres_directory_is_a_watcher_loaded_before_it_is_returned(tmp_path, postgres_url):
    cfg = config(tmp_path, postgres_url)
    with stores.open_store(cfg) as s:
        s.put_key(VirtualKey("vk-1", SECRET))
        w = stores.open_directory(cfg, s)
        try:
            assert isinstance(w, DirectoryWatcher) and w.loaded and "vk-1" in w.load_directory().keys
        finally:
            w.close()


def test_three_nodes_starting_at_once_on_an_empty_database(tmp_path, postgres_url, caplog):
    """Each node's ledger opens the store (migrations) and copies the config file's entries in
    (sync_config) at the same moment: the schema is migrated once, no node fails, one row per entry."""
    gov = {"customers": [{"id": "cust-1"}], "teams": [{"id": "team-1", "customer": "cust-1"}],
           "keys": [{"id": f"vk-{i}", "secret": f"{SECRET}{i}", "team": "team-1"} for i in range(5)]}
    cfgs = [config(tmp_path / n, postgres_url, node=n, **gov) for n in "abc"]
    go = threading.Barrier(len(cfgs))
    failed = []

    def node(cfg):
        try:
            go.wait()
            with stores.open_store(cfg) as s:
                s.sync_config(cfg.governance)
        except BaseException as e:          # noqa: BLE001 - reported below
            failed.append(e)

    caplog.set_level(logging.INFO, logger="finops.governance")
    threads = [threading.Thread(target=node, args=(c,)) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert len([r for r in caplog.records if "schema version 0 -> 2" in r.getMessage()]) == 1
    with PgStore.open(postgres_url) as s:
        assert [k.id for k in s.list_keys()] == [f"vk-{i}" for i in range(5)]
        assert [t.id for t in s.list_teams()] == ["team-1"] and [c.id for c in s.list_customers()] == ["cust-1"]
        assert {k.source for k in s.list_keys()} == {"config"}
        n = s._execute("SELECT count(*) AS n FROM finops_schema_version").fetchone()["n"]
        assert n == 1 and s.schema_version() == 2


# --- the governor on PostgreSQL ---------------------------------------------------------------------

@pytest.fixture
def pg_governor(tmp_path, postgres_url):
    with PgStore.open(postgres_url):
        pass                                    # the schema exists (the ledger would have made it)
    g = Governor(config(tmp_path, postgres_url, mode="enforced"))
    yield g
    g.close()


def test_the_governor_takes_a_change_on_the_very_next_request_after_the_watcher_has_it(pg_governor,
                                                                                      postgres_url):
    """With SQLite the governor looks at most once a second; the watcher costs nothing, so it is
    looked at on every request: as soon as the watcher holds a version, the next request uses it."""
    gov = pg_governor
    assert gov.watched and gov.reload_every == 0
    with pytest.raises(errors.GatewayError) as e:
        gov.identify(with_key(SECRET))
    assert e.value.code == "AccessDeniedException"           # a known empty directory: the key is unknown
    k = VirtualKey("vk-1", SECRET)
    with PgStore.open(postgres_url) as other_node:
        for change, admitted in ((lambda: other_node.put_key(k), True),
                                 (lambda: other_node.put_key(dataclasses.replace(k, enabled=False)), False),
                                 (lambda: other_node.put_key(k), True),
                                 (lambda: other_node.delete_key("vk-1"), False)):
            before = gov.store.data_version()
            change()
            until(lambda: gov.store.data_version() > before)
            if admitted:
                assert gov.identify(with_key(SECRET)).key.id == "vk-1"
            else:
                with pytest.raises(errors.GatewayError) as e:
                    ident = gov.identify(with_key(SECRET))
                    gov.authorize(ident, "m", "p")
                assert e.value.code == "AccessDeniedException"


def test_the_governor_takes_its_own_admin_write_at_once(pg_governor, postgres_url):
    """The admin API offers the directory it reloaded after its write: no wait for the notification
    (the watcher here never polls and misses nothing, but the offer comes first)."""
    gov = pg_governor
    with PgStore.open(postgres_url) as admin:
        admin.put_key(VirtualKey("vk-1", SECRET))
        gov.offer(*admin.load_versioned_directory())
        assert gov.identify(with_key(SECRET)).key.id == "vk-1"
        old = admin.load_versioned_directory()
        admin.delete_key("vk-1")
        gov.offer(*admin.load_versioned_directory())
        gov.offer(*old)                                     # an older directory offered late: ignored
        with pytest.raises(errors.GatewayError):
            gov.identify(with_key(SECRET))


def test_a_worker_started_while_postgres_is_down_refuses_with_503_until_it_has_the_keys(tmp_path,
                                                                                      monkeypatch):
    """Never an empty directory taken as "this key does not exist" (nor, in open mode, a known key
    served anonymously): 503 naming PostgreSQL until the first load, then the keys work, no restart."""
    monkeypatch.setattr(stores, "START_SECONDS", 0.5)
    with PostgresServer(port=free_port()) as pg:
        url = pg.create_database()
        with PgStore.open(url) as s:
            s.put_key(VirtualKey("vk-1", SECRET))
        pg.stop()
        for mode in ("enforced", "open"):
            gov = Governor(config(tmp_path, url, mode=mode))
            try:
                assert not gov.store.loaded
                with pytest.raises(errors.GatewayError) as e:
                    gov.identify(with_key(SECRET))
                assert e.value.code == "ServiceUnavailableException" and e.value.status == 503
                assert "PostgreSQL" in e.value.message and "Retry" in e.value.message
                assert url.split("@")[1] not in e.value.message       # nothing of the database's address
            finally:
                gov.close()
        gov = Governor(config(tmp_path, url, mode="enforced"))
        try:
            pg.start()
            until(lambda: gov.store.loaded)
            assert gov.identify(with_key(SECRET)).key.id == "vk-1"
        finally:
            gov.close()
