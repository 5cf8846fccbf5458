"""The request log, for now a JSON-lines file per worker: one line per request, off the hot path.

Each line: request id, time, operation, requested modelId, provider, upstream model, the
`x-bf-vk` virtual key and `x-bf-env` environment the client sent, outcome (`ok` or the AWS
error code), whether it streamed, latency, token usage and the client's user agent. Lines are
buffered in memory and written at most every `FLUSH_SECONDS` or `FLUSH_LINES`, so logging never
waits on the disk inside a request. Bodies and credentials are never written.

File: <data_dir>/requests/worker-<pid>.jsonl
"""
from __future__ import annotations

import json
import os
import time

from finops.shared.config import Config

FLUSH_LINES = 256
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
FLUSH_SECONDS = 0.5


class RequestLog:
    def __init__(self, cfg: Config):
        d = os.path.join(cfg.server.data_dir, "requests")
        os.makedirs(d, exist_ok=True)
        self.path = os.path.join(d, f"worker-{os.getpid()}.jsonl")
        self._f = open(self.path, "a", encoding="utf-8")
        self._buf: list[str] = []
        self._last_flush = time.monotonic()

    def record(self, call, provider: str, outcome: str, usage: dict, reply) -> None:
        now = time.monotonic()
        self._buf.append(_dumps({
            "id": call.rid, "time": round(time.time(), 3), "op": call.op, "model": call.model_id,
            "provider": provider, "upstream_model": call.upstream_model, "vk": call.virtual_key,
            "env": call.env, "outcome": outcome, "stream": reply.stream, "messages_sent": reply.n,
            "latency_ms": round((now - call.started) * 1000, 2), "usage": usage,
            "cost_usd": round(call.cost_usd, 8), "cache": call.cache, "saved_usd": round(call.saved_usd, 8),
            "cache_similarity": round(call.cache_similarity, 4),
            "user_agent": call.headers.get("user-agent", "")[:200]}))
        if len(self._buf) >= FLUSH_LINES or now - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._f.write("\n".join(self._buf) + "\n")
            self._f.flush()
            self._buf.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._f.close()
