"""PostgreSQL store: what only a shared database has (the common behaviour is in test_governance_store.py,
run against both backends). A real PostgreSQL (tests/helpers/postgres_server.py)."""
from __future__ import annotations

import json
import multiprocessing
import threading

import psycopg
import pytest

from finops.shared.config import build
from finops.shared.governance import Customer, Team, VirtualKey
from finops.workers.admin.api import call_store
from finops.workers.governance import pg_schema
from finops.workers.governance.pg_store import PgStore
from finops.workers.governance.store import Conflict, InvalidReference, NotFound, StoreError, StoreUnavailable
from tests.helpers.postgres_server import PostgresServer

SECRET = "s" * 20
CONFIG = {"governance": {"customers": [{"id": "acme"}], "teams": [{"id": "cfg-team", "customer": "acme"}],
                         "keys": [{"id": "cfg-1", "secret": SECRET, "team": "cfg-team"},
                                  {"id": "cfg-2", "secret": SECRET}]}}


def _start_node(url: str, barrier, results) -> None:
    """What a node does at start: open the store (migrations) and copy the config file's entries in."""
    try:
        barrier.wait(timeout=60)
        with PgStore.open(url) as s:
            out = s.sync_config(build(CONFIG, "t", environ={}).governance)
            results.put(("ok", s.schema_version(), out["upserted"]))
    except BaseException as e:           # noqa: BLE001 - reported to the test
        results.put(("error", repr(e), 0))


def test_nodes_starting_together_migrate_once_and_agree(postgres_url):
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_start_node, args=(postgres_url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
    assert got == [("ok", pg_schema.SCHEMA_VERSION, 4)] * n
    with PgStore.open(postgres_url) as s:
        assert sorted(k.id for k in s.list_keys()) == ["cfg-1", "cfg-2"]
        assert s.sources("teams") == {"cfg-team": "config"}
        with pg_schema.connect(postgres_url) as c:
            assert c.execute("SELECT count(*) FROM finops_schema_version").fetchone()[0] == 1
            tables = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_%'")}
            assert tables == {"finops_schema_version", "finops_customers", "finops_teams", "finops_keys",
                              "finops_directory_version", "finops_ledger_snapshots", "finops_settled"}
            # 6 config syncs, one write each: the version counts every write transaction
            assert c.execute("SELECT version FROM finops_directory_version").fetchone()[0] == n


def test_a_check_and_its_write_are_atomic_across_nodes(postgres_url):
    """Deleting a team while another node adds a key to it: never both (no key left on a missing team)."""
    a, b = PgStore.open(postgres_url), PgStore.open(postgres_url)
    try:
        for i in range(25):
            a.put_team(Team(f"t{i}"))
            go = threading.Barrier(2)
            out = {}

            def delete():
                go.wait()
                try:
                    a.delete_team(f"t{i}")
                    out["delete"] = "ok"
                except Conflict:
                    out["delete"] = "conflict"

            def add():
                go.wait()
                try:
                    b.put_key(VirtualKey(f"vk-{i}", SECRET, team=f"t{i}"))
                    out["add"] = "ok"
                except InvalidReference:
                    out["add"] = "invalid"

            ts = [threading.Thread(target=delete), threading.Thread(target=add)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert out in ({"delete": "ok", "add": "invalid"}, {"delete": "conflict", "add": "ok"})
            d = a.load_directory()
            assert all(k.team in d.teams for k in d.keys.values())
    finally:
        a.close()
        b.close()


def test_every_committed_write_notifies_with_the_new_version_and_a_failed_one_does_not(postgres_url):
    with PgStore.open(postgres_url) as s, psycopg.connect(postgres_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {pg_schema.CHANNEL}")
        s.put_customer(Customer("acme"))
        with pytest.raises(InvalidReference):
            s.put_team(Team("t1", customer="nope"))
        s.put_team(Team("t1", customer="acme"))
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        assert got == ["1", "2"]
        assert list(listener.notifies(timeout=0.2)) == []          # the rolled back write sent nothing


def test_the_url_password_is_never_in_a_message(postgres):
    url = postgres.create_database()
    user_pw = url.split("//", 1)[1].split("@", 1)[0]
    bad = url.replace(user_pw, user_pw.split(":")[0] + ":wrong-secret-pw")
    with pytest.raises(StoreUnavailable) as e:
        PgStore.open(bad)
    assert "wrong-secret-pw" not in str(e.value) and "password authentication failed" in str(e.value)
    assert pg_schema.redact("host=h password='a b' user=u") == "host=h password=*** user=u"
    with pytest.raises(StoreError, match="is not a PostgreSQL URL"):
        PgStore.open("postgresql://u:pw@h:notaport:x/db?=bad")


@pytest.fixture
def own_pg():
    """A PostgreSQL of the test's own: the test stops and starts it."""
    with PostgresServer() as pg:
        yield pg


def test_server_down_is_unavailable_and_the_store_recovers_without_reopening(own_pg):
    url = own_pg.create_database()
    s = PgStore.open(url)
    try:
        s.put_customer(Customer("acme"))
        own_pg.stop()
        for call in (lambda: s.get_customer("acme"), lambda: s.put_customer(Customer("b")), s.load_directory,
                     s.data_version, lambda: s.save_snapshot({"x": 1})):
            with pytest.raises(StoreUnavailable, match="governance store postgresql://.*:\\*\\*\\*@127.0.0.1"):
                call()
        assert call_store(s, "GET", "/admin/customers", {}, None)[0] == 503
        status, body = call_store(s, "POST", "/admin/customers", {}, json.dumps({"id": "cust-2"}))
        assert status == 503 and body["message"].startswith("governance store unavailable, try again")
        own_pg.start()
        assert s.get_customer("acme") == Customer("acme")        # the same object, a new connection
        s.put_customer(Customer("b"))
        assert [c.id for c in s.list_customers()] == ["acme", "b"]
    finally:
        s.close()


def test_a_cut_connection_is_replaced_transparently(own_pg):
    url = own_pg.create_database()
    dbname = url.rsplit("/", 1)[1]
    with PgStore.open(url) as s:
        s.put_customer(Customer("acme"))
        assert own_pg.terminate_connections(dbname) == 1
        assert s.get_customer("acme") == Customer("acme")        # a read: reconnected and run
        assert own_pg.terminate_connections(dbname) == 1
        s.put_team(Team("t1", customer="acme"))                    # a write: dead at BEGIN, reconnected
        assert own_pg.terminate_connections(dbname) == 1
        s.delete_team("t1")
        with pytest.raises(NotFound):
            s.delete_team("t1")
        assert own_pg.terminate_connections(dbname) == 1
        assert s.load_directory().customers == {"acme": Customer("acme")}


class _SocketClosedOnce:
    """A connection whose next statement finds the socket closed before libpq has read why: psycopg
    raises OperationalError("connection socket closed") with no SQLSTATE and the connection not yet
    marked broken (seen in CI when the server's goodbye and the statement crossed)."""

    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def execute(self, *args, **kwargs):
        self._conn.close()
        raise psycopg.OperationalError("connection socket closed")


def test_a_socket_found_closed_before_libpq_knows_is_replaced_too(own_pg):
    url = own_pg.create_database()
    with PgStore.open(url) as s:
        s.put_customer(Customer("acme"))
        s.link.conn = _SocketClosedOnce(s.link.conn)
        assert s.get_customer("acme") == Customer("acme")
        assert isinstance(s.link.conn, psycopg.Connection)         # a new one


def test_a_connection_lost_inside_a_transaction_is_not_silently_replaced(own_pg):
    """Re-sending the statement on a new connection would run it outside the caller's transaction,
    whose earlier statements are gone: the loss is reported, and the next call reconnects."""
    url = own_pg.create_database()
    dbname = url.rsplit("/", 1)[1]
    link = pg_schema.Link(url, what="governance store", application_name="test")
    try:
        link.open()
        link.begin()
        assert own_pg.terminate_connections(dbname) == 1
        with pytest.raises(StoreUnavailable):
            link.run("SELECT 1")
        assert link.run("SELECT 1").fetchone()[0] == 1
    finally:
        link.close()
