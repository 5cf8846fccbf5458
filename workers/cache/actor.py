"""The cache actor: one process that owns the semantic cache's entries and FAISS index.

    python -m finops.workers.cache.actor        (started by `finops serve`, or the Procfile)

Workers embed (the model runs in every worker, off its event loop, so embedding scales with the
workers); this actor searches, inserts and evicts, one message at a time (`finops.shared.actors.BlockingActor`).
State lives in `index.CacheIndex`; the file is `persist.py`'s, written once per tick and at
shutdown, and read back at start, so entries survive a restart.

Protocol (msgpack maps; see service.py for the worker side). Times are the actor's clock.

    {"k": "get", "exact", "final"}                                 -> {"hit": "exact", "answer", "saved"} | {"hit": ""}
    {"k": "search", "scope", "vec": f32 bytes, "emb": model id, "threshold"}
                                                           -> {"hit": "semantic", "sim", "answer", "saved"} | {"hit": "", "best"}
    {"k": "put", "scope", "exact", "ns", "ns_max", "owner", "model", "question", "answer", "ttl",
     "saved", "vec"?: f32 bytes, "emb"?: model id}         (no reply)
    {"k": "stats"}                                         -> CacheIndex.summary()
    {"k": "clear", "owner"?, "model"?}                     -> {"removed": n}

A vector from another embedding model than the index's makes the actor rebuild: every stored
vector is dropped (entries keep answering exact matches) and the index adopts the new model.
"""
from __future__ import annotations

import logging
import sys
import time

import numpy as np

from finops.shared import actors
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor

from . import persist
from .index import Entry

log = logging.getLogger("finops.cache")


class CacheActor(BlockingActor):
    kind = "cache"
    TICK_SECONDS = 1.0

    def __init__(self, cfg: configmod.Config, clock=time.time):
        super().__init__(cfg, clock)
        self.db = persist.open_db(cfg.server.data_dir)
        self.index = persist.load(self.db, clock(), cfg.cache.max_entries)
        log.info("cache: %d entries restored (%d with vectors of %s)", len(self.index.entries),
                 self.index.index.ntotal if self.index.index is not None else 0,
                 self.index.model_id or "no embedding model")
        self.new: list[tuple[Entry, bytes | None]] = []
        self.touched: set[int] = set()

    def handle(self, msg: dict) -> dict | None:
        k = msg.get("k")
        now = self.clock()
        if k == "get":
            e = self.index.get_exact(msg["exact"], now)
            if e is None:
                if msg.get("final"):        # no semantic search follows
                    self.index.miss()
                return {"hit": ""}
            self.touched.add(e.id)
            return {"hit": "exact", "answer": e.answer, "saved": e.saved_usd}
        if k == "search":
            if not self._same_model(msg.get("emb", ""), len(msg["vec"]) // 4):
                self.index.miss()
                return {"hit": "", "best": 0.0}
            vec = np.frombuffer(msg["vec"], dtype=np.float32)
            e, sim = self.index.search(msg["scope"], vec, float(msg["threshold"]), now)
            if e is None:
                self.index.miss()
                return {"hit": "", "best": sim}
            self.touched.add(e.id)
            return {"hit": "semantic", "sim": sim, "answer": e.answer, "saved": e.saved_usd}
        if k == "put":
            vec = msg.get("vec")
            if vec is not None and not self._same_model(msg.get("emb", ""), len(vec) // 4):
                vec = None
            e = Entry(id=0, scope=msg["scope"], exact=msg["exact"], ns=msg["ns"], owner=msg["owner"],
                      model=msg["model"], question=msg.get("question", ""), answer=msg["answer"], created=now,
                      expires=now + float(msg["ttl"]), saved_usd=float(msg.get("saved", 0.0)))
            self.index.put(e, np.frombuffer(vec, dtype=np.float32) if vec is not None else None,
                           int(msg.get("ns_max") or self.index.max_total))
            self.new.append((e, vec if e.has_vector else None))
            return None
        if k == "stats":
            return self.index.summary()
        if k == "clear":
            n = self.index.clear(msg.get("owner"), msg.get("model"))
            self.flush()
            return {"removed": n}
        log.warning("cache: unknown message kind %r", k)
        return None

    def _same_model(self, emb: str, dim: int) -> bool:
        """Whether a vector of model `emb` and dimension `dim` belongs in the index; a new model
        (an operator changed the embedder) rebuilds the index for it."""
        if not emb or not dim:
            return False
        if emb == self.index.model_id and dim == self.index.dim:
            return True
        dropped = self.index.rebuild(emb, dim)
        self.new = [(e, None) for e, _ in self.new]     # unwritten puts lose their old-model vectors too
        log.warning("cache: the embedding model is now %s (dim %d); %d vectors of the previous model dropped, "
                    "the index is rebuilt from new answers (entries still answer exact matches)", emb, dim, dropped)
        self.db.execute("UPDATE entries SET vector = NULL")
        persist.save_meta(self.db, self.index)
        return True

    def flush(self) -> None:
        removed = self.index.take_removed()
        gone = set(removed)
        new = [(e, v) for e, v in self.new if e.id not in gone]
        hits = [(i, self.index.entries[i].hits) for i in self.touched if i in self.index.entries]
        self.new, self.touched = [], set()
        if new or removed or hits:
            persist.write(self.db, new, removed, hits)

    def tick(self) -> None:
        self.index.sweep(self.clock())
        self.flush()

    def close(self) -> None:
        self.flush()
        persist.save_meta(self.db, self.index)
        self.db.close()
        log.info("cache: %d entries saved", len(self.index.entries))


if __name__ == "__main__":
    sys.exit(actors.main(CacheActor))
