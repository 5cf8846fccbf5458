"""The workers' side of the request log: one row per request, sent off the request path.

`record()` builds the row (logdb.COLUMNS, in order) and appends it to a buffer; `run()` sends the
buffer to the observer actor every FLUSH_SECONDS as one message, and reports this worker's gauges
every GAUGE_SECONDS. Nothing here waits: a row costs a tuple and an append inside the request,
and the observer writes SQLite and updates the metrics in its own process.

While the observer is away (restarting), rows wait here; past MAX_BUFFERED the oldest are dropped
and counted (`dropped`, logged), so a stuck observer cannot eat a worker's memory.

Bodies are logged only on routes with `log_bodies = true`, cut at BODY_LIMIT bytes. Credentials
never are: they travel in headers, and no header but the user agent is logged.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import trio

from finops.shared.actors import ActorClient
from finops.shared.config import Config

from . import logdb

log = logging.getLogger("finops.requestlog")

FLUSH_SECONDS = 0.1
GAUGE_SECONDS = 1.0
MAX_BUFFERED = 200_000
BODY_LIMIT = 1024 * 1024
assert logdb.NAMES[0] == "id" and len(logdb.NAMES) == 33, "record() follows logdb.COLUMNS"


class Days:
    """The calendar day (YYYY-MM-DD in the governance timezone) of a timestamp, cached per day."""

    def __init__(self, tz: str):
        self.tz = ZoneInfo(tz)
        self.start = self.end = 0.0
        self.day = ""

    def __call__(self, ts: float) -> str:
        if not self.start <= ts < self.end:
            d = datetime.fromtimestamp(ts, self.tz)
            midnight = d.replace(hour=0, minute=0, second=0, microsecond=0)
            nxt = (midnight + timedelta(days=1, hours=3)).replace(hour=0)      # DST-safe next midnight
            self.start, self.end = midnight.timestamp(), nxt.timestamp()
            self.day = midnight.strftime("%Y-%m-%d")
        return self.day


class RequestLog:
    def __init__(self, cfg: Config, customer_of=lambda team: ""):
        self.enabled = cfg.observability.request_log
        self.client = ActorClient(cfg.run_dir, "observer", cfg.server.transport)
        self.customer_of = customer_of
        self.days = Days(cfg.governance.timezone)
        self.rows: list[tuple] = []
        self.dropped = 0
        self.sent = 0

    def record(self, call, status: int, error: str, origin: str, usage: dict, reply,
               request_body: bytes | None = None, response_body: bytes | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        ts = time.time() - (now - call.started)
        key = call.key
        team = key.team if key is not None else ""
        u = usage or {}
        self.rows.append((
            call.rid, round(ts, 3), self.days(ts),
            key.id if key is not None else call.virtual_key, key.name if key is not None else "", team,
            self.customer_of(team) if team else "", call.env[:64], call.op, int(reply.stream),
            call.model_id, call.provider, call.upstream_model if call.provider else "", call.target,
            call.attempts, int(call.fallback), status, error, origin,
            round((now - call.started) * 1000, 2), call.first_byte_ms if reply.stream else None,
            u.get("in", 0), u.get("out", 0), u.get("cr", 0), u.get("cw", 0),
            round(call.cost_usd, 8), call.cache, round(call.cache_similarity, 4) if call.cache_similarity else None,
            round(call.saved_usd, 8), call.headers.get("user-agent", "")[:200],
            request_body[:BODY_LIMIT] if request_body is not None else None,
            response_body[:BODY_LIMIT] if response_body is not None else None, reply.n))

    def flush(self) -> None:
        """Send what is buffered (one message); keep it when the observer is not there."""
        if not self.rows:
            return
        if self.client.send({"k": "rows", "rows": self.rows}):
            self.sent += len(self.rows)
            self.rows = []
        elif len(self.rows) > MAX_BUFFERED:
            n = len(self.rows) - MAX_BUFFERED
            del self.rows[:n]
            self.dropped += n
            log.error("request log: the observer has not taken rows for a while; %d dropped (%d in all)",
                      n, self.dropped)

    async def run(self, gauges=lambda: {}) -> None:
        """Flush every FLUSH_SECONDS; report `gauges()` every GAUGE_SECONDS; take the observer's
        replies (scrape, sync)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.client.run)
            await self._periodic(gauges)

    async def _periodic(self, gauges) -> None:
        proc = f"worker-{os.getpid()}"
        next_gauges = 0.0
        while True:
            await trio.sleep(FLUSH_SECONDS)
            self.flush()
            if trio.current_time() >= next_gauges:
                next_gauges = trio.current_time() + GAUGE_SECONDS
                g = gauges()
                g.setdefault("queues", {})["requestlog_rows"] = len(self.rows)
                self.client.send({"k": "gauges", "proc": proc, "kind": "worker", "g": g})

    async def scrape(self) -> bytes:
        out = await self.client.request({"k": "scrape"}, timeout=5.0,
                                        what="The gateway's observer did not answer; metrics are unavailable.")
        return out["text"]

    async def sync(self) -> None:
        """Send what is buffered and wait until the observer has written it (for reports)."""
        self.flush()
        await self.client.request({"k": "flush"}, timeout=5.0,
                                  what="The gateway's observer did not answer; the request log is unavailable.")

    def close(self) -> None:
        self.flush()
        if self.rows:
            log.error("request log: observer unreachable at exit; %d rows lost", len(self.rows))
        self.client.close()
