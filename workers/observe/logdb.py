"""The request log's SQLite database: schema, opening, retention. No request-path code here.

File: <data_dir>/requests.sqlite (WAL, mode 0600). One writer (the log writer actor,
logwriter.py); any number of readers (`finops report`, the admin API's dashboard data).

One row per request. Times are epoch seconds; `day` is the request's calendar day in
`governance.timezone` (YYYY-MM-DD), so reports group by the same days budgets reset on.
Money is USD (float). Tokens are what the upstream reported (0 on a cache hit: `saved_usd` is
what the hit would have cost).
"""
from __future__ import annotations

import os
import sqlite3

FILENAME = "requests.sqlite"

# (column, SQL type): the order rows are sent in by the workers (workers/observe/record.py)
COLUMNS = (
    ("id", "TEXT"),                 # request id (= x-amzn-requestid)
    ("ts", "REAL"),                 # when the request arrived, epoch seconds
    ("day", "TEXT"),                # YYYY-MM-DD in governance.timezone
    ("vk", "TEXT"),                 # virtual key id; in open mode an unknown x-bf-vk as sent (64 chars); "" = none
    ("vk_name", "TEXT"),
    ("team", "TEXT"),               # team id, "" = none
    ("customer", "TEXT"),           # customer id, "" = none
    ("env", "TEXT"),                # x-bf-env, "" = none
    ("op", "TEXT"),                 # converse | converse-stream | invoke | invoke-with-response-stream | count-tokens
    ("stream", "INTEGER"),          # 1 when the answer was an event stream
    ("model", "TEXT"),              # the modelId the client asked for
    ("provider", "TEXT"),           # the provider that served (or last tried) it, "" = none
    ("upstream_model", "TEXT"),
    ("target", "TEXT"),             # provider/model of the route target used
    ("attempts", "INTEGER"),        # upstream attempts (0 on a cache hit or a refusal)
    ("fallback", "INTEGER"),        # 1 when a target other than the route's first served it
    ("status", "INTEGER"),          # HTTP status the client got (200 for a stream that later failed)
    ("error", "TEXT"),              # AWS error code ("" = ok; "cancelled", "client_gone" for clients that left)
    ("error_origin", "TEXT"),       # "" | "upstream" | "governance" | "client" | "gateway"
    ("latency_ms", "REAL"),
    ("ttft_ms", "REAL"),            # time to first token (first stream event), NULL when not streamed
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("cache_read_tokens", "INTEGER"),
    ("cache_write_tokens", "INTEGER"),
    ("cost_usd", "REAL"),
    ("cache", "TEXT"),              # "" (cache off for the route) | miss | hit-exact | hit-semantic
    ("cache_similarity", "REAL"),   # on a semantic hit
    ("saved_usd", "REAL"),          # what a cache hit saved
    ("user_agent", "TEXT"),
    ("request_body", "BLOB"),       # only when the route sets log_bodies = true
    ("response_body", "BLOB"),
    ("messages", "INTEGER"),        # messages the worker sent the frontend for this answer (stream backpressure)
)
NAMES = tuple(c for c, _ in COLUMNS)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
    + ", PRIMARY KEY (id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
    "CREATE INDEX IF NOT EXISTS requests_day ON requests (day)",
)
INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"


def path_in(data_dir: str) -> str:
    return os.path.join(data_dir, FILENAME)


def open_db(data_dir: str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and for the writer, create) the request log. Readers never create it."""
    path = path_in(data_dir)
    if readonly:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no request log at {path}: the gateway has not logged a request yet "
                                    "(or server.data_dir points elsewhere)")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, timeout=5)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for stmt in SCHEMA:
        db.execute(stmt)
    db.commit()
    return db


def prune(db: sqlite3.Connection, before_ts: float) -> int:
    """Delete rows older than `before_ts` (the retention setting); returns how many went."""
    cur = db.execute("DELETE FROM requests WHERE ts < ?", (before_ts,))
    db.commit()
    return cur.rowcount
