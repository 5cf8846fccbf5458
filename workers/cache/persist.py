"""The cache's file: <data_dir>/cache.sqlite (WAL, mode 0600). Used by the cache actor only
(and by `finops cache` when no gateway is running).

    entries(id, scope, exact, ns, owner, model, question, answer, vector, created, expires, hits, saved_usd)
    meta(k, v)      embedding_model, dim: the model the stored vectors belong to;
                    stream_id: the last replication stream id applied (replication.py)

Writes are batched: the actor collects new entries and removed ids and writes them in one
transaction per tick. Loading restores every live entry with its vector, into an index of the
file's embedding model; when workers send vectors of another model, the actor drops the stored
ones (CacheActor._same_model) and the exact layer keeps every entry.
"""
from __future__ import annotations

import os
import sqlite3

import numpy as np

from .index import CacheIndex, Entry

FILENAME = "cache.sqlite"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        id INTEGER PRIMARY KEY, scope TEXT NOT NULL, exact TEXT NOT NULL, ns TEXT NOT NULL,
        owner TEXT NOT NULL, model TEXT NOT NULL, question TEXT NOT NULL, answer BLOB NOT NULL,
        vector BLOB, created REAL NOT NULL, expires REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0,
        saved_usd REAL NOT NULL DEFAULT 0)""",
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
)


def open_db(data_dir: str) -> sqlite3.Connection:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, FILENAME)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, timeout=5, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for stmt in SCHEMA:
        db.execute(stmt)
    return db


def load(db: sqlite3.Connection, now: float, max_total: int) -> CacheIndex:
    """The index the file holds: its embedding model and dimension (from `meta`), and every live
    entry with its vector. Expired entries are deleted on the way. A later change of embedding
    model is the actor's to handle (CacheActor._same_model)."""
    meta = dict(db.execute("SELECT k, v FROM meta"))
    index = CacheIndex(meta.get("embedding_model", ""), int(meta.get("dim", "0") or 0), max_total=max_total)
    db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
    for row in db.execute("SELECT id, scope, exact, ns, owner, model, question, answer, vector, created, expires, "
                          "hits, saved_usd FROM entries ORDER BY id"):
        e = Entry(id=row[0], scope=row[1], exact=row[2], ns=row[3], owner=row[4], model=row[5], question=row[6],
                  answer=row[7], created=row[9], expires=row[10], hits=row[11], saved_usd=row[12])
        index.put(e, np.frombuffer(row[8], dtype=np.float32) if row[8] is not None else None, max_total)
    index.stats["stores"] = 0
    return index


def save_meta(db: sqlite3.Connection, index: CacheIndex) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?), ('dim', ?)",
               (index.model_id, str(index.dim)))


def load_position(db: sqlite3.Connection) -> str:
    """The last replication stream id this node applied ("" = none yet: start from the beginning)."""
    row = db.execute("SELECT v FROM meta WHERE k = 'stream_id'").fetchone()
    return row[0] if row else ""


def save_position(db: sqlite3.Connection, stream_id: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('stream_id', ?)", (stream_id,))


def write(db: sqlite3.Connection, new: list[tuple[Entry, bytes | None]], removed: list[int],
          hits: list[tuple[int, int]]) -> None:
    """One transaction: new entries (with their vector bytes), removed ids, updated hit counts."""
    db.execute("BEGIN")
    try:
        if removed:
            db.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in removed])
        db.executemany(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.id, e.scope, e.exact, e.ns, e.owner, e.model, e.question, e.answer, vec, e.created, e.expires,
              e.hits, e.saved_usd) for e, vec in new])
        if hits:
            db.executemany("UPDATE entries SET hits = ? WHERE id = ?", [(h, i) for i, h in hits])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
