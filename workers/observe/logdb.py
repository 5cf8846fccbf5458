"""The request log's SQLite database: schema, opening, retention. No request-path code here.

File: <data_dir>/requests.sqlite (WAL, mode 0600). One writer (the observer actor,
actor.py); any number of readers (`finops report`, the admin API's dashboard data).

One row per request. Times are epoch seconds; `day` is the request's calendar day in
`governance.timezone` (YYYY-MM-DD), so reports group by the same days budgets reset on.
Money is USD (float). Tokens are what the upstream reported (0 on a cache hit: `saved_usd` is
what the hit would have cost).
"""
from __future__ import annotations

import os
import sqlite3

from finops.shared import logrow

FILENAME = "requests.sqlite"

# the columns, in the order rows are built and sent: finops.shared.logrow (shared with the frontend)
COLUMNS, NAMES = logrow.COLUMNS, logrow.NAMES

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
    migrate(db)
    db.commit()
    return db


def migrate(db: sqlite3.Connection) -> list[str]:
    """Add the columns of logrow.COLUMNS a log written by an older gateway lacks (ALTER TABLE ADD
    COLUMN: old rows read NULL there, which every report treats as 0 / none). Returns the columns
    added. Columns are only ever added at the end of COLUMNS, never renamed or dropped."""
    have = {r[1] for r in db.execute("PRAGMA table_info(requests)")}
    added = []
    for name, sql_type in COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {sql_type}")
            added.append(name)
    return added


def prune(db: sqlite3.Connection, before_ts: float) -> int:
    """Delete rows older than `before_ts` (the retention setting); returns how many went."""
    cur = db.execute("DELETE FROM requests WHERE ts < ?", (before_ts,))
    db.commit()
    return cur.rowcount
