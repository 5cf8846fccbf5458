"""Request-log rows for tests: a default for every column of logdb.NAMES, overridable by name.

    db = logdb.open_db(str(tmp_path))
    insert(db, [row(ts=t, vk="vk-1", cost_usd=0.25), row(ts=t, error="ThrottlingException")])

`day` defaults to the calendar day of `ts` in `tz` (UTC unless given), as the writer stores it;
`id` defaults to a fresh unique id.
"""
from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

from finops.workers.observe import logdb

DEFAULTS = {
    "id": None, "ts": 1_800_000_000.0, "day": None, "vk": "", "vk_name": "", "team": "", "customer": "",
    "env": "", "op": "converse", "stream": 0, "model": "anthropic.claude-3-haiku-20240307-v1:0",
    "provider": "bedrock", "upstream_model": "", "target": "", "attempts": 1, "fallback": 0,
    "status": 200, "error": "", "error_origin": "", "latency_ms": 100.0, "ttft_ms": None,
    "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
    "cost_usd": 0.0, "cache": "", "cache_similarity": None, "saved_usd": 0.0, "user_agent": "test",
    "request_body": None, "response_body": None, "messages": 2, "prompt_saved_usd": 0.0, "tags": "",
    "node": "", "service_tier": "",
}
assert set(DEFAULTS) == set(logdb.DB_NAMES), "logdb.COLUMNS changed: update tests/helpers/logrows.py"

_ids = itertools.count(1)


def row(tz: str = "UTC", **kw) -> dict:
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown log columns: {sorted(unknown)}")
    r = {**DEFAULTS, **kw}
    if r["id"] is None:
        r["id"] = f"req-{next(_ids)}"
    if r["day"] is None:
        r["day"] = datetime.fromtimestamp(r["ts"], ZoneInfo(tz)).date().isoformat()
    return r


def insert(db, rows: list[dict]) -> None:
    db.executemany(logdb.INSERT_NODE, [tuple(r[n] for n in logdb.DB_NAMES) for r in rows])
    db.commit()
