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
# ... then what the observer adds as it writes: the node that served the request (server.node_name)
NODE_COLUMN = ("node", "TEXT NOT NULL DEFAULT ''")
DB_NAMES = NAMES + ("node",)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
    + f", {' '.join(NODE_COLUMN)}, PRIMARY KEY (id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
    "CREATE INDEX IF NOT EXISTS requests_day ON requests (day)",
)
# Migrations (PRAGMA user_version = how many have run): MIGRATIONS[i] takes version i to i + 1.
# A log made before a step was known gets it at the writer's next open; a fresh one is made at
# the last version. Version 1: the `node` column (rows already there were this node's: see open_db).
MIGRATIONS = (
    (f"ALTER TABLE requests ADD COLUMN {' '.join(NODE_COLUMN)}",),
)
VERSION = len(MIGRATIONS)
INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"
INSERT_NODE = f"INSERT OR REPLACE INTO requests ({', '.join(DB_NAMES)}) VALUES ({', '.join('?' * len(DB_NAMES))})"


def path_in(data_dir: str) -> str:
    return os.path.join(data_dir, FILENAME)


def open_db(data_dir: str, *, readonly: bool = False, node: str = "") -> sqlite3.Connection:
    """Open (and for the writer, create and migrate) the request log. Readers never create it.
    `node`: the writer's node name, given to rows a migration finds without one."""
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
    migrate(db, node)
    return db


def migrate(db: sqlite3.Connection, node: str = "") -> int:
    """Bring the log's schema to VERSION in one transaction; returns the version found."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        fresh = db.execute("SELECT name FROM sqlite_master WHERE name = 'requests'").fetchone() is None
        if fresh:
            for stmt in SCHEMA:
                db.execute(stmt)
        else:
            for steps in MIGRATIONS[found:]:
                for stmt in steps:
                    db.execute(stmt)
            if found < 1 and node:
                db.execute("UPDATE requests SET node = ? WHERE node = ''", (node,))
        if found != VERSION:
            db.execute(f"PRAGMA user_version = {VERSION}")
    return found


def prune(db: sqlite3.Connection, before_ts: float) -> int:
    """Delete rows older than `before_ts` (the retention setting); returns how many went."""
    cur = db.execute("DELETE FROM requests WHERE ts < ?", (before_ts,))
    db.commit()
    return cur.rowcount
