"""The admin API as a worker serves it: `Admin.handle(env, reply)` for an `admin` envelope.

The frontend has checked the admin token (and whether /metrics needs it) and sends every
/admin/... request and GET /metrics here; `ROUTES` below is the one table of what exists.

    GET    /metrics                       Prometheus text, the whole gateway's (the observer's)
    GET    /admin/usage[?key=ID]          the ledger's spend and limits; each budget's forecast
                                          (forecast_usd, from the request log when it is on)
    GET    /admin/circuits                every worker's circuit states (circuits.py)
    GET    /admin/cache                   the response cache's stats
    DELETE /admin/cache[?key=VK&model=M]  clear cache entries
    GET    /admin/dashboard[?days=N]      the /ui dashboard's data, from the request log
    GET    /admin/report?by=key,model&since=7d&until=&key=&team=&customer=&env=&model=&provider=
                                          `finops report` as JSON
    GET    /admin/alerts[?limit=N&kind=K] the alerts fired (newest first), their deliveries, and the
                                          counts sent / failed / pending (alerts/outbox.py: this
                                          node's, or the fleet's on PostgreSQL)
    keys, teams, customers                directory.py

Nothing here blocks the trio loop: the governance store's reads and writes, the request log's
queries and the circuit files run in a thread (trio.to_thread), so an admin call never stalls the
requests on its worker; the ledger, the observer and the cache actor are asked over their sockets.
A refusal is AWS-shaped like every other failure (errors.for_status: X-Amzn-ErrorType, JSON message).
"""
from __future__ import annotations

import json
import sqlite3

import trio

from finops.shared import errors
from finops.shared.config import Config

from ..alerts import outbox as alerts_outbox
from ..alerts.rules import KINDS as ALERT_KINDS
from ..cache import keys as cache_keys
from ..governance import auth
from ..governance.directory import load_directory
from ..governance.store import DirectoryStore, StoreError, StoreUnavailable
from ..governance.stores import open_store, watched
from ..observe import dashboard, pglog, report
from . import directory
from .circuits import CircuitFiles
from .routes import Match, NoRoute, Request, Route, match, split_target


JSON = "application/json"
RECENT_ALERTS = 10      # alerts the dashboard lists


class Raw:
    """A handler's answer that is not JSON (the metrics text)."""

    def __init__(self, content_type: str, data: bytes):
        self.content_type, self.data = content_type, data


class Admin:
    def __init__(self, cfg: Config, gov, observer, cache, circuits):
        self.cfg = cfg
        self.gov = gov                  # governance.Governor: the ledger client, the key index
        self.observer = observer        # observe.client.ObserverClient
        self.cache = cache              # cache.Cache, or None when no route caches
        self.circuit_files = CircuitFiles(circuits, cfg.run_dir)
        self._store: DirectoryStore | None = None   # this worker's admin connection, used in a thread
        self._store_lock = trio.Lock()      # ... by one thread at a time

    async def run(self) -> None:
        """Background work for the worker's lifetime: publish its circuit states."""
        await self.circuit_files.run()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def handle(self, msg, reply) -> None:
        """Answer one admin request (a finops.shared.envelope.Request): find its route, run its
        handler, reply (JSON, or the error)."""
        path, query = split_target(msg.path)
        method = msg.headers.get(":method", "GET")
        try:
            m = match(ROUTES, method, path, query, msg.body)
            status, doc = await (self.on_store(m) if m.route.on_store else m.route.handler(self, m.request))
        except NoRoute as e:
            status, doc = e.status, {"message": e.message}
        except errors.GatewayError as e:        # an actor (ledger, observer, cache) did not answer
            return await reply.error(e)
        if status >= 400:
            return await reply.error(errors.for_status(status, doc["message"]))
        if isinstance(doc, Raw):
            await reply.head(status, [["content-type", doc.content_type]], stream=False)
            return await reply.body(doc.data)
        await reply.head(status, [["content-type", JSON]], stream=False)
        await reply.body(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())

    # --- the governance store: in a thread, on this worker's own connection -----------------
    async def on_store(self, m: Match) -> tuple[int, dict]:
        """A directory route, in a thread (one at a time: the store's connection is not shared
        between threads at once). After a change, the thread also reloads the directory, which
        this worker then uses at once (the others notice within a second: SQLite's data_version,
        PostgreSQL's notification to every node's watcher)."""
        write = m.request.method != "GET"
        async with self._store_lock:
            status, doc, after = await trio.to_thread.run_sync(self._on_store, m.route.handler, m.request, write)
        if isinstance(after, auth.KeyIndex):        # SQLite: the key index, built in the thread
            self.gov.reload(after)
        elif after is not None:                     # PostgreSQL: (version, directory) for the watcher
            self.gov.offer(*after)
        return status, doc

    def _on_store(self, handler, req: Request, write: bool):
        """(status, doc, what the governor takes after a change, or None). In a worker thread."""
        if self._store is None:
            try:
                self._store = open_store(self.cfg, any_thread=True)
            except (StoreError, sqlite3.Error) as e:
                return 503, {"message": directory.unavailable(self.cfg.governance.store, e)}, None
        status, doc = directory.run(handler, self._store, req)
        if not (write and status < 400):
            return status, doc, None
        if watched(self.cfg):
            try:
                return status, doc, self._store.load_versioned_directory()
            except StoreError:                      # committed, then PostgreSQL went away: the watcher
                return status, doc, None            # brings the change when it is back
        return status, doc, auth.KeyIndex.of(load_directory(self._store, self.cfg))

    # --- the other routes -------------------------------------------------------------------
    async def metrics(self, req: Request) -> tuple[int, Raw]:
        return 200, Raw(*await self.observer.scrape())

    async def usage(self, req: Request) -> tuple[int, dict]:
        """The ledger's usage report; with the request log on, each budget entry also carries
        `forecast_usd` and `forecast_crosses_at` (observe/forecast.py, via dashboard.py)."""
        doc = await self.gov.ledger.usage(req.query.get("key"))
        if self.cfg.observability.request_log and any(u.get("kind") == "budget" for u in doc.get("usage", ())):
            try:
                doc = {**doc, "usage": await self.read_log(dashboard.usage_with_forecasts, doc["usage"])}
            except errors.GatewayError:          # no request logged yet: no shape to project from
                pass
        return 200, doc

    async def circuits(self, req: Request) -> tuple[int, dict]:
        return 200, await self.circuit_files.report()

    async def cache_stats(self, req: Request) -> tuple[int, dict]:
        if self.cache is None:
            return cache_off()
        out = await self.cache.client.stats()
        out["semantic"] = self.cache.embedder is not None
        if self.cache.semantic_off_reason:
            out["semantic_off_reason"] = self.cache.semantic_off_reason
        return 200, out

    async def cache_clear(self, req: Request) -> tuple[int, dict]:
        if self.cache is None:
            return cache_off()
        out = await self.cache.client.clear(cache_keys.owner_named(req.query.get("key")), req.query.get("model"))
        return 200, {"removed": out["removed"]}

    async def dashboard(self, req: Request) -> tuple[int, dict]:
        """The /ui dashboard's data over the last `days` days."""
        if not self.cfg.observability.request_log:
            return log_off()
        days = req.query.get("days", "30")
        if not (days.isdigit() and 1 <= int(days) <= 366):
            return 400, {"message": f"days: {days!r} is not a whole number of days from 1 to 366"}
        await self.observer.sync()        # the rows already answered are in the log
        usage = (await self.gov.ledger.usage(None))["usage"]
        doc = await self.read_log(dashboard.dashboard_data, usage, int(days), self.cfg.governance.timezone)
        try:
            recent = await trio.to_thread.run_sync(alerts_outbox.report, self.cfg, RECENT_ALERTS)
        except StoreError:                  # the fleet's outbox, unreachable: the rest of the dashboard stands
            recent = alerts_outbox.empty()
        doc["alerts"] = [{k: a[k] for k in ("id", "kind", "level", "owner", "created_at", "message")}
                         | {"delivered": all(d["status"] == "delivered" for d in a["deliveries"])}
                         for a in recent["alerts"]]
        return 200, doc

    async def alerts(self, req: Request) -> tuple[int, dict]:
        """The alerts fired, newest first, with their deliveries; and the delivery counts."""
        limit, kind = req.query.get("limit", "50"), req.query.get("kind") or None
        if not (limit.isdigit() and 1 <= int(limit) <= 10_000):
            return 400, {"message": f"limit: {limit!r} is not a whole number from 1 to 10000"}
        if kind is not None and kind not in ALERT_KINDS:
            return 400, {"message": f"kind: {kind!r} is not one of {', '.join(ALERT_KINDS)}"}
        try:
            doc = await trio.to_thread.run_sync(alerts_outbox.report, self.cfg, int(limit), kind)
        except StoreError as e:             # the fleet's outbox on PostgreSQL, unreachable
            return 503, {"message": f"{e}; try again in a few seconds"}
        return 200, {"webhooks": [w.name for w in self.cfg.alerts.webhooks], **doc}

    async def report(self, req: Request) -> tuple[int, dict]:
        """`finops report` as JSON: spend grouped `by` dimensions, over a period, filtered."""
        q = req.query
        if not self.cfg.observability.request_log:
            return log_off()
        try:
            by = [d for d in q.get("by", "model").split(",") if d]
            since, until = report.parse_period(q.get("since", ""), q.get("until", ""), self.cfg.governance.timezone)
            where = {k: q[k] for k in report.FILTERS if k in q}
            where.update({k: v for k, v in q.items() if k.startswith(report.TAG)})     # ?tag:team=ads
            await self.observer.sync()
            rows = await self.read_log(report.summarize, by, since, until, where)
        except ValueError as e:
            return 400, {"message": str(e)}
        return 200, {"by": by, "since": since, "until": until, "rows": rows, "total": report.total(rows)}

    async def read_log(self, fn, *args):
        """`fn(db, *args)` on a read-only connection to the request log, in a thread."""
        try:
            return await trio.to_thread.run_sync(read_log, self.cfg, fn, *args)
        except FileNotFoundError as e:          # no request logged yet
            raise errors.for_status(404, str(e)) from None
        except StoreUnavailable as e:           # the fleet's log on PostgreSQL, unreachable
            raise errors.for_status(503, f"{e}; try again in a few seconds") from None


def read_log(cfg, fn, *args):
    """`fn(db, *args)` on a read connection to the request log: this node's SQLite, or the
    fleet's PostgreSQL (observability.log_store)."""
    db = pglog.open_reader(cfg)
    try:
        return fn(db, *args)
    finally:
        db.close()


def cache_off() -> tuple[int, dict]:
    return 404, {"message": "The response cache is off: no route has an enabled [routes.cache] table "
                            "(a [cache.keys.\"ID\"] override only adjusts routes that have one)."}


def log_off() -> tuple[int, dict]:
    return 404, {"message": "The request log is off (observability.request_log = false)."}


K, T, C = directory, directory.TEAMS, directory.CUSTOMERS
ROUTES: tuple[Route, ...] = (
    Route("GET", "/metrics", Admin.metrics),
    Route("GET", "/admin/usage", Admin.usage),
    Route("GET", "/admin/circuits", Admin.circuits),
    Route("GET", "/admin/cache", Admin.cache_stats),
    Route("DELETE", "/admin/cache", Admin.cache_clear),
    Route("GET", "/admin/dashboard", Admin.dashboard),
    Route("GET", "/admin/report", Admin.report),
    Route("GET", "/admin/alerts", Admin.alerts),
    # the directory (directory.py): the governance store's rows, also run by the CLI (call_store)
    Route("GET", "/admin/keys", K.list_keys, on_store=True),
    Route("POST", "/admin/keys", K.create_key, on_store=True),
    Route("GET", "/admin/keys/{id}", K.get_key, on_store=True),
    Route("PATCH", "/admin/keys/{id}", K.update_key, on_store=True),
    Route("DELETE", "/admin/keys/{id}", K.delete_key, on_store=True),
    Route("GET", "/admin/teams", T.list, on_store=True),
    Route("POST", "/admin/teams", T.create, on_store=True),
    Route("GET", "/admin/teams/{id}", T.get, on_store=True),
    Route("PATCH", "/admin/teams/{id}", T.update, on_store=True),
    Route("DELETE", "/admin/teams/{id}", T.delete, on_store=True),
    Route("GET", "/admin/customers", C.list, on_store=True),
    Route("POST", "/admin/customers", C.create, on_store=True),
    Route("GET", "/admin/customers/{id}", C.get, on_store=True),
    Route("PATCH", "/admin/customers/{id}", C.update, on_store=True),
    Route("DELETE", "/admin/customers/{id}", C.delete, on_store=True),
)
del K, T, C


def call_store(store, method: str, path: str, query: dict | None, body: bytes | str | None) -> tuple[int, dict]:
    """A directory route on `store`, without a worker (the `finops keys|teams|customers` CLI):
    the same table, handlers and messages as the admin API."""
    try:
        m = match(ROUTES, method, path, query, body)
    except NoRoute as e:
        return e.status, {"message": e.message}
    if not m.route.on_store:
        return 404, {"message": f"{path}: only a running gateway serves it (ask it over HTTP)"}
    return directory.run(m.route.handler, store, m.request)
