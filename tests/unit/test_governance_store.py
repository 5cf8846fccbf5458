"""The governance store, one suite over both backends: SQLite in the data dir (store.py, the embedded
default) and PostgreSQL (pg_store.py, shared by several nodes; a real server, tests/helpers/
postgres_server.py). Tests taking `store` (tests/unit/conftest.py) or `backend` run against both; the
others are one backend's own (SQLite's file and pragmas; PostgreSQL's per-node snapshot)."""
import os
import sqlite3
import stat

import pytest

from finops.shared.config import build
from finops.shared.governance import Budget, Customer, RateLimit, Team, VirtualKey
from finops.workers.governance import pg_schema
from finops.workers.governance import store as storemod
from finops.workers.governance.pg_store import PgStore
from finops.workers.governance.store import (Conflict, InvalidReference, NotFound, Store, StoreError,
                                             generate_key, new_key_id, new_secret)

SECRET = "s" * 20


def gov(customers=(), teams=(), keys=()):
    return build({"governance": {"customers": list(customers), "teams": list(teams), "keys": list(keys)}},
                 "t", environ={}).governance


class Backend:
    """Where a store lives, and how to open another connection to the same one."""

    def __init__(self, name: str, where: str):
        self.name = name
        self.where = where            # the data dir (SQLite) or the database URL (PostgreSQL)

    def open(self, **kw):
        return Store.open(self.where) if self.name == "sqlite" else PgStore.open(self.where, **kw)

    def set_schema_version(self, v: int) -> None:
        if self.name == "sqlite":
            db = sqlite3.connect(os.path.join(self.where, "governance.sqlite"))
            db.execute("UPDATE schema_version SET version = ?", (v,))
            db.commit()
            db.close()
        else:
            with pg_schema.connect(self.where) as c:
                c.execute("UPDATE finops_schema_version SET version = %s", (v,))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path))
    return Backend("postgres", request.getfixturevalue("postgres_url"))


def test_open_creates_a_private_wal_file_with_the_pragmas(tmp_path):
    d = tmp_path / "data"
    s = Store.open(str(d))
    try:
        assert s.path == str(d / "governance.sqlite")
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        db = s._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1          # NORMAL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert s.schema_version() == storemod.SCHEMA_VERSION == 2
        s.put_customer(Customer("acme"))
        assert stat.S_IMODE(os.stat(s.path + "-wal").st_mode) == 0o600      # SQLite copies the mode
    finally:
        s.close()
    with Store.open(str(d)) as s2:                                          # reopening migrates nothing
        assert s2.schema_version() == 2 and s2.get_customer("acme") == Customer("acme")


def test_an_existing_world_readable_file_is_made_private(tmp_path):
    p = tmp_path / "governance.sqlite"
    p.touch(mode=0o644)
    os.chmod(p, 0o644)
    Store.open(str(tmp_path)).close()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_reopening_migrates_nothing_and_a_newer_schema_is_refused(backend):
    with backend.open() as s:
        assert s.schema_version() == 2
        s.put_customer(Customer("acme"))
    with backend.open() as s:
        assert s.schema_version() == 2 and s.get_customer("acme") == Customer("acme")
    backend.set_schema_version(99)
    with pytest.raises(StoreError, match="schema version 99 was written by a newer finops"):
        backend.open()


def test_round_trips(store):
    c = Customer("acme", "Acme Inc", (Budget(1000, "month"),), (RateLimit("minute", requests=1000),))
    t = Team("research", "R&D", "acme", (Budget(100.5, "week", "prod"),),
             (RateLimit("hour", tokens=50000, env="dev"), RateLimit("day", requests=5, tokens=6)))
    k = VirtualKey("vk-1abc", SECRET, name="alice", team="research", models=("anthropic.*", "amazon.*"),
                   providers=("bedrock",), enabled=False, expires_at=1800000000.0,
                   budgets=(Budget(10, "day"), Budget(2.5, "month", "dev")),
                   rate_limits=(RateLimit("minute", requests=100),), created_at=1700000000.0, source="api",
                   tags={"cost_center": "cc-42", "team": "research"})
    store.put_customer(c)
    store.put_team(t)
    store.put_key(k)
    assert store.get_customer("acme") == c
    assert store.get_team("research") == t
    assert store.get_key("vk-1abc") == k
    assert store.get_key("nope") is None and store.get_team("nope") is None and store.get_customer("x") is None
    assert store.list_keys() == [k] and store.list_teams() == [t] and store.list_customers() == [c]
    d = store.load_directory()
    assert d.keys == {"vk-1abc": k} and d.teams == {"research": t} and d.customers == {"acme": c}
    assert [s[:2] for s in d.scopes("vk-1abc")] == [("key", "vk-1abc"), ("team", "research"), ("customer", "acme")]
    assert store.sources("teams") == {"research": "api"} and store.source_of("customers", "acme") == "api"
    assert store.source_of("keys", "nope") is None


def test_upsert_keeps_created_at_and_sets_it_when_zero(store):
    store.put_key(VirtualKey("vk-1abc", SECRET, name="a"))
    first = store.get_key("vk-1abc")
    assert first.created_at > 0
    store.put_key(VirtualKey("vk-1abc", SECRET + "x", name="b", created_at=5.0))
    again = store.get_key("vk-1abc")
    assert again.name == "b" and again.secret == SECRET + "x" and again.created_at == first.created_at


def test_create_refuses_an_existing_id_and_references_must_exist(store):
    store.put_customer(Customer("acme"), create=True)
    with pytest.raises(Conflict, match="customer 'acme' already exists"):
        store.put_customer(Customer("acme"), create=True)
    with pytest.raises(InvalidReference, match="customer: no customer 'nope'"):
        store.put_team(Team("t1", customer="nope"))
    store.put_team(Team("t1", customer="acme"))
    with pytest.raises(InvalidReference, match="team: no team 'nope'"):
        store.put_key(VirtualKey("vk-1abc", SECRET, team="nope"))
    store.put_key(VirtualKey("vk-1abc", SECRET, team="t1"), create=True)
    with pytest.raises(Conflict, match="key 'vk-1abc' already exists"):
        store.put_key(VirtualKey("vk-1abc", SECRET), create=True)


def test_deletes_refused_while_in_use(store):
    store.put_customer(Customer("acme"))
    store.put_team(Team("t1", customer="acme"))
    store.put_key(VirtualKey("vk-1", SECRET, team="t1"))
    store.put_key(VirtualKey("vk-2", SECRET, team="t1"))
    with pytest.raises(Conflict, match=r"team 't1' still has 2 keys \(vk-1, vk-2\): delete them or move them"):
        store.delete_team("t1")
    with pytest.raises(Conflict, match=r"customer 'acme' still has 1 team \(t1\): delete it or move it"):
        store.delete_customer("acme")
    store.delete_key("vk-1")
    store.delete_key("vk-2")
    store.delete_team("t1")
    store.delete_customer("acme")
    assert store.load_directory().keys == {} and store.list_teams() == [] and store.list_customers() == []
    for f, what in ((store.delete_key, "key"), (store.delete_team, "team"), (store.delete_customer, "customer")):
        with pytest.raises(NotFound, match=f"no {what} 'gone'"):
            f("gone")


def test_a_failed_write_leaves_nothing_behind(store):
    with pytest.raises(InvalidReference):
        store.put_team(Team("t1", customer="nope"))
    assert store.list_teams() == []
    store.put_customer(Customer("acme"))                # the connection is usable again


def test_sync_config_upserts_and_removes_only_config_rows(store):
    store.put_key(VirtualKey("vk-api", SECRET, name="mine"))
    store.put_team(Team("api-team"))
    store.put_key(VirtualKey("cfg-2", SECRET, name="taken over"))   # the file will declare this id
    g = gov(customers=[{"id": "acme", "budgets": [{"amount_usd": 100, "period": "month"}]}],
            teams=[{"id": "cfg-team", "customer": "acme"}],
            keys=[{"id": "cfg-1", "secret": SECRET, "team": "cfg-team", "expires": "2030-01-01"},
                  {"id": "cfg-2", "secret": "t" * 16}])
    assert store.sync_config(g) == {"upserted": 4, "removed": [], "adopted": []}
    keys = {k.id: k for k in store.list_keys()}
    assert keys["cfg-1"].source == "config" and keys["cfg-1"].team == "cfg-team"
    assert keys["cfg-1"].expires_at == 1893456000.0
    assert keys["cfg-2"].source == "config" and keys["cfg-2"].secret == "t" * 16
    assert keys["vk-api"].source == "api"
    assert store.get_customer("acme").budgets == (Budget(100.0, "month"),)
    assert store.sources("teams") == {"api-team": "api", "cfg-team": "config"}
    # the same file again changes nothing; a smaller file removes what it no longer declares
    store.sync_config(g)
    g2 = gov(keys=[{"id": "cfg-1", "secret": SECRET}])
    assert store.sync_config(g2) == {"upserted": 1, "removed": ["key:cfg-2", "team:cfg-team", "customer:acme"],
                                     "adopted": []}
    assert sorted(k.id for k in store.list_keys()) == ["cfg-1", "vk-api"]
    assert store.get_key("cfg-1").team == ""
    assert [t.id for t in store.list_teams()] == ["api-team"] and store.list_customers() == []


def test_sync_config_keeps_a_removed_team_that_api_keys_still_use(store):
    g = gov(customers=[{"id": "acme"}], teams=[{"id": "cfg-team", "customer": "acme"}])
    store.sync_config(g)
    store.put_key(VirtualKey("vk-api", SECRET, team="cfg-team"))
    out = store.sync_config(gov())
    assert out["adopted"] == ["team:cfg-team", "customer:acme"] and out["removed"] == []
    assert store.sources("teams") == {"cfg-team": "api"} and store.sources("customers") == {"acme": "api"}
    assert store.get_key("vk-api").team == "cfg-team"


def test_data_version_changes_when_another_connection_writes(backend):
    a = backend.open()
    b = backend.open()
    try:
        v = a.data_version()
        a.put_customer(Customer("mine"))
        a.put_team(Team("mine"))
        a.delete_team("mine")
        assert a.data_version() == v                    # own writes do not count
        b.put_customer(Customer("theirs"))
        v2 = a.data_version()
        assert v2 != v
        assert {c.id for c in a.list_customers()} == {"mine", "theirs"}
        assert a.data_version() == v2                   # reading changes nothing
        with pytest.raises(NotFound):
            b.delete_key("nope")                        # a failed write changes nothing either
        assert a.data_version() == v2
        b.delete_customer("theirs")
        assert a.data_version() != v2
    finally:
        a.close()
        b.close()


def test_a_snapshot_saved_by_another_process_changes_the_sqlite_data_version(tmp_path):
    a = Store.open(str(tmp_path))
    b = Store.open(str(tmp_path))
    try:
        v = a.data_version()
        b.save_snapshot({"x": 1})
        assert a.data_version() != v                    # SQLite counts any commit to the file
    finally:
        a.close()
        b.close()


def test_snapshot_round_trip(backend):
    with backend.open() as s:
        assert s.load_snapshot() is None and s.snapshot_saved_at() is None
        s.save_snapshot({"counters": {"key:vk-1": [1.5, 2]}, "v": 1})
        s.save_snapshot({"counters": {"key:vk-1": [3.0, 4]}, "v": 1})
        assert s.snapshot_saved_at() > 0
    with backend.open() as s:
        assert s.load_snapshot() == {"counters": {"key:vk-1": [3.0, 4]}, "v": 1}


def test_sqlite_keeps_one_snapshot_row(tmp_path):
    with Store.open(str(tmp_path)) as s:
        s.save_snapshot({"v": 1})
        s.save_snapshot({"v": 2})
        assert s._db.execute("SELECT count(*) FROM ledger_snapshot").fetchone()[0] == 1


def test_postgres_keeps_a_snapshot_per_node_outside_the_directory_version(postgres_url):
    """Each node's local ledger has its own counters; saving them (every second) is no change of
    keys, teams or customers, so no worker anywhere reloads for it."""
    with PgStore.open(postgres_url, node="a") as a, PgStore.open(postgres_url, node="b") as b, \
            PgStore.open(postgres_url) as watcher:
        v = watcher.data_version()
        a.save_snapshot({"node": "a"})
        b.save_snapshot({"node": "b"})
        a.save_snapshot({"node": "a", "again": True})
        assert a.load_snapshot() == {"node": "a", "again": True} and b.load_snapshot() == {"node": "b"}
        assert watcher.load_snapshot() is None          # node "" saved nothing
        assert watcher.data_version() == v


def test_generated_ids_and_secrets():
    ids = {new_key_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 19 and i.startswith("vk-") and i[3:].isalnum() and i[3:] == i[3:].lower() for i in ids)
    s = new_secret()
    assert s.startswith("fos-") and len(s) == 44
    assert set(s[4:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    k = generate_key("alice", team="t1", budgets=[Budget(1, "day")], models=["a*"])
    assert k.name == "alice" and k.team == "t1" and k.source == "api" and k.created_at > 0
    assert k.models == ("a*",) and k.budgets == (Budget(1, "day"),) and k.id.startswith("vk-")
    assert generate_key(id="my-key", secret=SECRET).id == "my-key"


def test_a_version_1_file_gains_key_tags_and_keeps_its_keys(tmp_path):
    # a store written before key tags (schema 1): its keys read back with no tags, and take tags after
    db = sqlite3.connect(tmp_path / "governance.sqlite")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (1)")
    for stmt in storemod.MIGRATIONS[0]:
        db.execute(stmt)
    db.execute("INSERT INTO keys (id, secret, created_at) VALUES ('vk-old', ?, 1.0)", (SECRET,))
    db.commit()
    db.close()
    with Store.open(str(tmp_path)) as s:
        assert s.schema_version() == 2 and s.get_key("vk-old").tags == {}
        s.put_key(VirtualKey("vk-old", SECRET, tags={"team": "x"}))
        assert s.get_key("vk-old").tags == {"team": "x"}
