"""The workers' side of the request log: the row of each request.

`row()` builds a request's row (finops.shared.logrow, about 5 µs) and packs it; the pipeline puts
it in the request's final envelope, and the frontend forwards it to the observer actor, which
writes SQLite and updates the metrics in its own process. Nothing here waits or buffers: the row
travels with the answer, so a worker that dies right after answering takes no row with it
(README: Request log).

Bodies are logged only on routes with `log_bodies = true`, cut at BODY_LIMIT bytes. Credentials
never are: they travel in headers, and no header but the user agent is logged.
"""
from __future__ import annotations

import logging
import time

from finops.shared import envelope, logrow

from . import tagging
from finops.shared.config import Config

log = logging.getLogger("finops.requestlog")

BODY_LIMIT = 1024 * 1024        # bytes of each body kept with log_bodies = true (README: Request log)
assert logrow.NAMES[0] == "id" and len(logrow.NAMES) == 36, "row() follows logrow.COLUMNS"


class RequestLog:
    def __init__(self, cfg: Config, customer_of=lambda team: ""):
        self.enabled = cfg.observability.request_log
        self.customer_of = customer_of
        self.days = logrow.Days(cfg.governance.timezone)

    def values(self, request, outcome, reply, request_body: bytes | None = None,
               response_body: bytes | None = None) -> tuple:
        """The row's values, in logrow.NAMES order: `request` and `outcome` are the records of
        workers/request.py; `reply` says whether the answer streamed and how many messages it took."""
        now = time.monotonic()
        ts = time.time() - (now - request.started)
        key = request.key
        team = key.team if key is not None else ""
        u = outcome.usage or {}
        progress = outcome.progress
        last = progress.last if progress is not None else None
        return (
            request.rid, round(ts, 3), self.days(ts),
            key.id if key is not None else request.key_label, key.name if key is not None else "", team,
            self.customer_of(team) if team else "", request.environment[:logrow.ENV_MAX], request.op,
            int(reply.stream), request.model_id, last.provider if last else "", last.upstream_model if last else "",
            last.target if last else "", progress.attempts if progress else 0, int(last.fallback) if last else 0,
            outcome.status, outcome.error, outcome.origin,
            round((now - request.started) * 1000, 2),
            progress.first_byte_ms if reply.stream and progress is not None else None,
            u.get("in", 0), u.get("out", 0), u.get("cr", 0), u.get("cw", 0),
            round(outcome.cost_usd, 6), outcome.cache, round(outcome.similarity, 4) if outcome.similarity else None,
            round(outcome.saved_usd, 8), request.headers.get("user-agent", "")[:logrow.USER_AGENT_MAX],
            request_body[:BODY_LIMIT] if request_body is not None else None,
            response_body[:BODY_LIMIT] if response_body is not None else None, reply.messages(),
            round(outcome.prompt_saved_usd, 6), tagging.dumps(outcome.tags), str(u.get("tier", "")))

    def row(self, request, outcome, reply, request_body: bytes | None = None,
            response_body: bytes | None = None) -> bytes | None:
        """The request's row, packed for its final envelope; None when the log is off."""
        if not self.enabled:
            return None
        return logrow.pack(self.values(request, outcome, reply, request_body, response_body))

    def refusal_row(self, env: envelope.Request, status: int, error: str) -> bytes | None:
        """The row of a request this worker refused before running it (at its concurrency limit)."""
        if not self.enabled:
            return None
        hdr = env.headers
        ts = time.time()
        return logrow.pack(logrow.gateway_row(env.rid, ts, self.days(ts), env.op, env.model,
                                              hdr.get("x-bf-env", ""), hdr.get("user-agent", ""), status, error, 0.0,
                                              messages=1))

