"""The cache's file: <data_dir>/cache.sqlite (WAL, mode 0600). Used by the cache actor only
(and by `finops cache` when no gateway is running).

    entries(id, scope, exact, ns, owner, model, question, answer, vector, created, expires, hits, saved_usd)
    meta(k, v)      embedding_model, dim: the model the stored vectors belong to

Writes are batched: the actor collects new entries and removed ids and writes them in one
transaction per tick. Loading restores every live entry, and its vector only when the file's
embedding model and dimension are the configured ones; otherwise the vectors are dropped (the
index is rebuilt from new answers) and the exact layer keeps every entry.
"""
from __future__ import annotations

import logging
import os
import sqlite3

import numpy as np

from .index import CacheIndex, Entry

log = logging.getLogger("finops.cache")

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


def load(db: sqlite3.Connection, index: CacheIndex, now: float, ns_max: dict | None = None) -> dict:
    """Fill `index` from the file; returns {"entries", "vectors", "dropped_vectors", "stored_model"}."""
    meta = dict(db.execute("SELECT k, v FROM meta"))
    stored_model, stored_dim = meta.get("embedding_model", ""), int(meta.get("dim", "0") or 0)
    same = stored_model == index.model_id and stored_dim == index.dim
    db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
    n = vectors = dropped = 0
    for row in db.execute("SELECT id, scope, exact, ns, owner, model, question, answer, vector, created, expires, "
                          "hits, saved_usd FROM entries ORDER BY id"):
        e = Entry(id=row[0], scope=row[1], exact=row[2], ns=row[3], owner=row[4], model=row[5], question=row[6],
                  answer=row[7], created=row[9], expires=row[10], hits=row[11], saved_usd=row[12])
        vec = None
        if row[8] is not None:
            if same:
                vec = np.frombuffer(row[8], dtype=np.float32)
                vectors += 1
            else:
                dropped += 1
        index.put(e, vec, (ns_max or {}).get(e.ns, index.max_total))
        n += 1
    index.stats["stores"] = 0
    if not same:
        if dropped:
            log.warning("cache: the stored vectors were made by %s (dim %d), the configured embedder is %s "
                        "(dim %d): %d vectors dropped; the index is rebuilt from new answers, and every "
                        "entry still answers exact matches", stored_model or "none", stored_dim,
                        index.model_id or "none", index.dim, dropped)
            db.execute("UPDATE entries SET vector = NULL")
        save_meta(db, index)
    return {"entries": n, "vectors": vectors, "dropped_vectors": dropped, "stored_model": stored_model}


def save_meta(db: sqlite3.Connection, index: CacheIndex) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?), ('dim', ?)",
               (index.model_id, str(index.dim)))


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
