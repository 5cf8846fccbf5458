"""The directory watcher (pg_watch.py): a change of keys committed through any connection reaches
every watcher by NOTIFY, by the version poll when a notification is lost, and after an outage.
A real PostgreSQL (tests/helpers/postgres_server.py)."""
from __future__ import annotations

import dataclasses
import queue
import time

import pytest

from finops.shared.config import build
from finops.shared.governance import Team, VirtualKey
from finops.workers.governance import pg_schema
from finops.workers.governance.directory import load_directory
from finops.workers.governance.pg_store import PgStore
from finops.workers.governance.pg_watch import DirectoryWatcher
from finops.workers.governance.store import StoreUnavailable
from tests.helpers.postgres_server import PostgresServer, free_port

SECRET = "s" * 20
NO_POLL = 3600.0            # a watcher that never polls: only a notification can tell it


class Changes:
    """The (version, directory) pairs a watcher reports, for the test to wait on."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, version, directory):
        self.q.put((version, directory))

    def until(self, pred, timeout: float = 15.0):
        """The first reported directory for which pred(directory) holds (the test fails if none comes)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                version, d = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("the watcher did not report the change")
            if pred(d):
                return version, d


def test_a_key_created_disabled_rotated_deleted_on_one_node_reaches_a_watcher_by_notification(postgres_url):
    """The watcher never polls here: each change can only have come by LISTEN/NOTIFY, which
    PostgreSQL delivers at commit (milliseconds on a LAN)."""
    changes = Changes()
    with PgStore.open(postgres_url) as node_a, \
            DirectoryWatcher(postgres_url, poll_seconds=NO_POLL, on_change=changes) as w:
        assert w.load_directory().keys == {} and w.data_version() == 0
        k = VirtualKey("vk-1", SECRET, name="alice")
        node_a.put_key(k)
        v1, d = changes.until(lambda d: "vk-1" in d.keys)
        assert d.keys["vk-1"].enabled and w.data_version() >= v1 and "vk-1" in w.load_directory().keys
        node_a.put_key(dataclasses.replace(k, enabled=False))
        changes.until(lambda d: not d.keys["vk-1"].enabled)
        node_a.put_key(dataclasses.replace(k, enabled=False, secret="t" * 20))
        changes.until(lambda d: d.keys["vk-1"].secret == "t" * 20)
        node_a.delete_key("vk-1")
        v, d = changes.until(lambda d: "vk-1" not in d.keys)
        assert v == 4 == w.data_version() and w.load_directory().keys == {}


def test_a_lost_notification_is_caught_by_the_version_poll(postgres_url):
    """A change whose notification never comes (a pooler that drops LISTEN, a reconnect): the
    watcher still reads the version every poll_seconds and reloads."""
    with PgStore.open(postgres_url) as s:
        s.put_team(Team("t1"))
    changes = Changes()
    with DirectoryWatcher(postgres_url, poll_seconds=0.2, on_change=changes) as w, \
            pg_schema.connect(postgres_url) as c:
        assert set(w.load_directory().teams) == {"t1"}
        with c.transaction():                        # a write with no NOTIFY
            c.execute("INSERT INTO finops_teams (id) VALUES ('t2')")
            c.execute("UPDATE finops_directory_version SET version = version + 1")
        changes.until(lambda d: set(d.teams) == {"t1", "t2"})


def test_the_watcher_is_what_the_governor_reads(postgres_url):
    """data_version() and load_directory() with no I/O: directory.load_directory(watcher, cfg) puts
    the config file's entries on top, as with the SQLite store."""
    cfg = build({"governance": {"keys": [{"id": "cfg-1", "secret": SECRET}]}}, "t", environ={})
    with PgStore.open(postgres_url) as s:
        s.put_key(VirtualKey("vk-db", SECRET))
    with DirectoryWatcher(postgres_url, poll_seconds=NO_POLL) as w:
        assert set(load_directory(w, cfg).keys) == {"cfg-1", "vk-db"}
        v = w.data_version()
    assert not w.connected                                   # the thread and its connection are gone
    assert set(load_directory(w, cfg).keys) == {"cfg-1", "vk-db"} and w.data_version() == v


def test_start_fails_clearly_when_the_database_is_unreachable():
    url = f"postgresql://u:secret-pw@127.0.0.1:{free_port()}/db"
    with pytest.raises(StoreUnavailable, match=r"could not load the keys within 2s \(.*cannot connect") as e:
        DirectoryWatcher(url, retry_seconds=0.1).start(timeout=2)
    assert "secret-pw" not in str(e.value)


def test_during_an_outage_the_watcher_keeps_its_keys_and_catches_up_after(tmp_path):
    with PostgresServer() as pg:
        url = pg.create_database()
        with PgStore.open(url) as s:
            s.put_key(VirtualKey("vk-1", SECRET))
        changes = Changes()
        with DirectoryWatcher(url, poll_seconds=NO_POLL, retry_seconds=0.1, on_change=changes) as w:
            pg.stop()
            with pytest.raises(StoreUnavailable):
                PgStore.open(url)
            assert set(w.load_directory().keys) == {"vk-1"}      # requests go on with what it had
            pg.start()
            with PgStore.open(url) as s:
                s.put_key(VirtualKey("vk-2", SECRET))
                # no poll: the reconnect's reload or the notification brings it
                changes.until(lambda d: set(d.keys) == {"vk-1", "vk-2"})
                pg.terminate_connections(url.rsplit("/", 1)[1])
                s.delete_key("vk-1")
                changes.until(lambda d: set(d.keys) == {"vk-2"})


def test_a_worker_that_made_the_change_can_take_it_at_once(postgres_url):
    """After an admin write in a worker, its next request must see the change: the worker offers
    the directory it reloaded itself; an older one offered late is ignored (versions only move forward)."""
    with PgStore.open(postgres_url) as s, DirectoryWatcher(postgres_url, poll_seconds=NO_POLL) as w:
        old = s.load_versioned_directory()
        s.put_key(VirtualKey("vk-1", SECRET))
        new = s.load_versioned_directory()
        if w.data_version() < new[0]:                   # the notification may have been quicker
            assert w.offer(*new)
        assert "vk-1" in w.load_directory().keys and w.data_version() == new[0]
        assert not w.offer(*old) and "vk-1" in w.load_directory().keys
