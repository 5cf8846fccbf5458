"""The admin API as a worker serves it (workers/admin/api.py): the one route table, the replies,
and that its blocking work (the governance store, the request log, the circuit files) runs off the
trio loop, so the requests on the same worker go on while an admin call waits on SQLite."""
from __future__ import annotations

import json
import threading

import pytest
import trio

from finops.shared import envelope
from finops.shared.config import build
from finops.workers.admin import api, circuits
from finops.workers.admin.routes import NoRoute, match
from finops.workers.governance import auth
from finops.workers.governance.store import Store


class FakeReply:
    def __init__(self):
        self.status = self.headers = self.data = self.err = None

    async def head(self, status, headers, stream):
        self.status, self.headers = status, dict(headers)

    async def body(self, data):
        self.data = data

    async def error(self, e):
        self.err = e

    def doc(self):
        return json.loads(self.data)


class FakeLedger:
    async def usage(self, key):
        return {"usage": [{"key": key}], "savings": []}


class FakeGovernor:
    def __init__(self):
        self.ledger = FakeLedger()
        self.index = None

    def reload(self, index=None):
        self.index = index


class FakeObserver:
    async def sync(self):
        pass

    async def scrape(self):
        return "text/plain; version=0.0.4; charset=utf-8", b"finops_up 1\n"


class FakeCircuits:
    def snapshot(self):
        return {"p1/m": {"state": "closed", "retry_in_s": 0.0}}


@pytest.fixture
def admin(tmp_path):
    cfg = build({"server": {"data_dir": str(tmp_path)}}, "test")
    a = api.Admin(cfg, FakeGovernor(), FakeObserver(), None, FakeCircuits())
    (tmp_path / "run").mkdir()
    yield a
    a.close()


def env(method: str, target: str, body: bytes = b"") -> envelope.Request:
    return envelope.Request(rid="r1", op="admin", model="", body=body, headers={":method": method}, reply="",
                            window=16, deadline=60.0, path=target)


async def call(admin, method, target, body=b"") -> FakeReply:
    reply = FakeReply()
    await admin.handle(env(method, target, body), reply)
    return reply


# --- the table -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,handler,id", [
    ("GET", "/metrics", api.Admin.metrics, None),
    ("get", "/admin/usage/", api.Admin.usage, None),
    ("DELETE", "/admin/cache?key=vk-1", api.Admin.cache_clear, None),
    ("PATCH", "/admin/teams/t%2F1", api.directory.TEAMS.update, "t/1"),
])
def test_each_request_matches_one_route(method, path, handler, id):
    m = match(api.ROUTES, method, path)
    assert m.route.handler == handler and m.request.id == id and m.request.method == method.upper()


def test_every_route_is_listed_once():
    seen = [(r.method, r.pattern) for r in api.ROUTES]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("method,path,status,needle", [
    ("GET", "/admin/nothing", 404, "routes: /metrics, /admin/usage, /admin/circuits, /admin/cache"),
    ("GET", "/admin/usage/x", 404, "no admin route '/admin/usage/x'"),
    ("POST", "/admin/dashboard", 405, "(allowed: GET)"),
    ("PUT", "/admin/cache", 405, "(allowed: GET, DELETE)"),
    ("POST", "/metrics", 405, "(allowed: GET)"),
])
def test_no_route_says_what_exists(method, path, status, needle):
    with pytest.raises(NoRoute) as e:
        match(api.ROUTES, method, path)
    assert e.value.status == status and needle in e.value.message


# --- replies ---------------------------------------------------------------------------------------

async def test_json_answers_and_aws_shaped_refusals(admin):
    r = await call(admin, "GET", "/admin/usage?key=vk-1")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.doc()["usage"] == [{"key": "vk-1"}]
    r = await call(admin, "GET", "/admin/nothing-here")
    assert r.err.status == 404 and r.err.code == "ResourceNotFoundException"
    assert "/admin/nothing-here" in r.err.message
    r = await call(admin, "DELETE", "/admin/usage")
    assert r.err.status == 405 and r.err.code == "MethodNotAllowedException"
    r = await call(admin, "GET", "/admin/cache")
    assert r.err.status == 404 and "response cache is off" in r.err.message
    r = await call(admin, "GET", "/admin/dashboard?days=0")
    assert r.err.code == "ValidationException" and r.err.message.startswith("days:")


async def test_metrics_are_prometheus_text(admin):
    r = await call(admin, "GET", "/metrics")
    assert r.status == 200 and r.data == b"finops_up 1\n" and "text/plain" in r.headers["content-type"]


async def test_a_change_reloads_this_workers_key_index(admin):
    r = await call(admin, "POST", "/admin/keys", b'{"id": "vk-new"}')
    assert r.status == 201 and r.doc()["secret"].startswith("fos-")
    assert isinstance(admin.gov.index, auth.KeyIndex) and "vk-new" in admin.gov.index.directory.keys
    admin.gov.index = None
    assert (await call(admin, "GET", "/admin/keys")).doc()["keys"][0]["id"] == "vk-new"
    assert admin.gov.index is None                      # a read reloads nothing
    assert (await call(admin, "POST", "/admin/keys", b'{"id": "vk-new"}')).err.status == 409
    assert admin.gov.index is None                      # nor does a refused change


async def test_circuits_report_this_worker_as_of_now(admin):
    doc = (await call(admin, "GET", "/admin/circuits")).doc()
    assert list(doc["workers"].values()) == [{"p1/m": {"state": "closed", "retry_in_s": 0.0}}]


# --- off the trio loop -----------------------------------------------------------------------------

@pytest.mark.parametrize("method,target,body,where,name", [
    ("GET", "/admin/keys", b"", Store, "list_keys"),                        # a store read
    ("POST", "/admin/keys", b'{"id": "vk-slow"}', Store, "put_key"),         # a store write
    ("GET", "/admin/report?by=key", b"", api, "read_log"),                 # the request log
    ("GET", "/admin/circuits", b"", circuits, "write_json"),               # the circuit files
])
async def test_a_slow_admin_call_does_not_stall_the_workers_requests(admin, monkeypatch, method, target,
                                                                      body, where, name):
    """The admin call's blocking step waits until a request on the same trio loop has made
    progress. Run on the loop, it would hold the loop, nothing else could run, and its wait would
    end unanswered; run in a thread, the request goes on meanwhile and releases it."""
    entered, request_done = threading.Event(), threading.Event()
    threads = []
    real = getattr(where, name)

    def slow(*args, **kw):
        threads.append(threading.get_ident())
        entered.set()
        assert request_done.wait(timeout=30), "no request ran on the trio loop during the admin call"
        return real(*args, **kw)
    monkeypatch.setattr(where, name, slow)
    if name == "read_log":      # no request log on disk here: the blocking step is what matters
        real = lambda data_dir, fn, *args: []                       # noqa: E731
    loop_thread = threading.get_ident()
    reply = FakeReply()
    progress = []

    async def request():
        """Another request on this worker: it runs its steps while the admin call is inside its
        blocking step (entered), then lets that step finish."""
        await trio.to_thread.run_sync(entered.wait)
        for step in range(3):
            await trio.sleep(0)
            progress.append(step)
        request_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(admin.handle, env(method, target, body), reply)
        nursery.start_soon(request)
    assert progress == [0, 1, 2]
    assert reply.err is None and reply.status in (200, 201)
    assert threads and loop_thread not in threads


# --- /admin/usage forecasts ------------------------------------------------------------------------

class BudgetLedger:
    """One month budget of key vk-1: $10, $3 spent (November 2026, UTC)."""
    async def usage(self, key):
        return {"usage": [
            {"level": "key", "owner": "vk-1", "kind": "budget", "period": "month", "env": "", "label": "key vk-1",
             "limit_usd": 10.0, "spent_usd": 3.0, "reserved_usd": 0.0, "remaining_usd": 7.0,
             "period_start": "2026-11-01T00:00:00Z", "resets_at": "2026-12-01T00:00:00Z"},
            {"level": "key", "owner": "vk-1", "kind": "requests", "period": "minute", "env": "", "label": "rpm",
             "limit": 5, "used": 0, "reserved": 0, "remaining": 5,
             "period_start": "2026-11-15T00:00:00Z", "resets_at": "2026-11-15T00:01:00Z"}], "savings": []}


async def test_usage_budgets_carry_a_forecast_from_the_request_log(admin, tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from finops.workers.observe import dashboard, logdb
    from tests.helpers.logrows import insert, row
    admin.gov.ledger = BudgetLedger()
    r = await call(admin, "GET", "/admin/usage?key=vk-1")       # no request logged yet: no forecast, no error
    assert r.status == 200 and "forecast_usd" not in r.doc()["usage"][0]
    start = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()
    db = logdb.open_db(str(tmp_path))
    insert(db, [row(ts=start + h * 3600 + 60, vk="vk-1", cost_usd=0.01) for h in range(300)])   # $0.24 a day
    db.close()
    now = start + 300 * 3600
    real = dashboard.usage_with_forecasts
    monkeypatch.setattr(dashboard, "usage_with_forecasts", lambda db, usage: real(db, usage, now))
    [budget, limit] = (await call(admin, "GET", "/admin/usage?key=vk-1")).doc()["usage"]
    assert budget["forecast_usd"] == pytest.approx(3.0 + 0.01 * (720 - 300), rel=0.01)    # ledger's $3 + the pace
    assert budget["forecast_crosses_at"] is None
    assert "forecast_usd" not in limit
