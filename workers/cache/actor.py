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

Several nodes (`[cache] replication = "redis"`; replication.py says why and how): every entry
this actor stores and every clear it makes is also queued for the other nodes, and what the
other nodes stored arrives from the replication reader thread, which wakes this actor with

    {"k": "replicated"}                                    (no reply; also applied every tick)

so the index keeps one owner, this thread. The last stream id applied is saved in the cache file
with the entries, so a restart reads on from there.
"""
from __future__ import annotations

import logging
import os
import sys
import time

import msgpack
import numpy as np

from finops.shared import actors, transport
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.transport import zmq

from . import persist, replication
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
        self.repl: replication.Replicator | None = None
        self.repl_counts = {"applied": 0, "expired_skipped": 0, "clears_applied": 0}
        self.position = self.saved_position = persist.load_position(self.db)
        self.observer = actors.Peer(self.run_dir, "observer")
        self.reported: dict[str, int] = {}      # replication counts the observer has been sent
        if cfg.cache.replication == "redis":
            url, ca = replication.redis_target(cfg)
            self.repl = replication.Replicator(
                replication.client_factory(url, ca), cfg.server.node, start_id=self.position or "0-0",
                maxlen=cfg.cache.replication_maxlen, wake=_Waker(cfg.run_dir), where=f"Redis at {replication.where(url)}")
            self.repl.start()
            log.info("cache: replicating with the other nodes through %s as node %s (%s)", self.repl.where,
                     cfg.server.node, f"from stream id {self.position}" if self.position else "warm start from the "
                     "beginning of the stream")

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
            ns_max = int(msg.get("ns_max") or self.index.max_total)
            self.index.put(e, np.frombuffer(vec, dtype=np.float32) if vec is not None else None, ns_max)
            self.new.append((e, vec if e.has_vector else None))
            if self.repl is not None:
                self.repl.publish({"t": "put", "scope": e.scope, "exact": e.exact, "ns": e.ns, "ns_max": ns_max,
                                   "owner": e.owner, "model": e.model, "question": e.question, "answer": e.answer,
                                   "created": e.created, "expires": e.expires, "saved": e.saved_usd,
                                   **({"vec": vec, "emb": self.index.model_id} if e.has_vector else {})})
            return None
        if k == "replicated":
            self.apply_replicated()
            return None
        if k == "stats":
            out = self.index.summary()
            if self.repl is not None:
                out["replication"] = {**self.repl.stats(), **self.repl_counts}
            return out
        if k == "clear":
            n = self.index.clear(msg.get("owner"), msg.get("model"))
            if self.repl is not None:
                self.repl.publish({"t": "clear", "owner": msg.get("owner"), "model": msg.get("model"), "at": now})
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

    # --- replication ------------------------------------------------------------------------
    def apply_replicated(self) -> int:
        """Apply what the other nodes stored or cleared, as the reader received it (in stream
        order). Returns how many records were applied."""
        if self.repl is None:
            return 0
        n = 0
        now = self.clock()
        for records, last in self.repl.take():
            for rec in records:
                try:
                    n += self._apply(rec, now)
                except (KeyError, TypeError, ValueError):
                    log.error("cache replication: a record from node %s cannot be applied; skipped", rec.get("from"))
            self.position = last
        return n

    def _apply(self, rec: dict, now: float) -> int:
        if rec.get("t") == "clear":
            self.index.clear(rec.get("owner"), rec.get("model"), before=float(rec["at"]))
            self.repl_counts["clears_applied"] += 1
            return 1
        if rec.get("t") != "put":
            return 0
        if float(rec["expires"]) <= now:
            self.repl_counts["expired_skipped"] += 1
            return 0
        vec = rec.get("vec")
        if vec is not None and not self._takes_vector(rec.get("emb", ""), len(vec) // 4):
            vec = None
        e = Entry(id=0, scope=rec["scope"], exact=rec["exact"], ns=rec["ns"], owner=rec["owner"], model=rec["model"],
                  question=rec.get("question", ""), answer=rec["answer"], created=float(rec["created"]),
                  expires=float(rec["expires"]), saved_usd=float(rec.get("saved", 0.0)))
        self.index.put(e, np.frombuffer(vec, dtype=np.float32) if vec is not None else None,
                       int(rec.get("ns_max") or self.index.max_total))
        self.new.append((e, vec if e.has_vector else None))
        self.repl_counts["applied"] += 1
        return 1

    def _takes_vector(self, emb: str, dim: int) -> bool:
        """A replicated vector goes into the index when it is of the index's model, or when the
        index has none yet (a new node adopts the fleet's); another node's different model never
        makes this one rebuild (its entry then answers exact matches only)."""
        if not emb or not dim:
            return False
        if not self.index.model_id:
            return self._same_model(emb, dim)
        return emb == self.index.model_id and dim == self.index.dim

    def flush(self) -> None:
        removed = self.index.take_removed()
        gone = set(removed)
        new = [(e, v) for e, v in self.new if e.id not in gone]
        hits = [(i, self.index.entries[i].hits) for i in self.touched if i in self.index.entries]
        self.new, self.touched = [], set()
        if new or removed or hits:
            persist.write(self.db, new, removed, hits)
        if self.position != self.saved_position:
            persist.save_position(self.db, self.position)
            self.saved_position = self.position

    def report(self) -> None:
        """The replication's metrics to the observer: counter increments since the last report
        (finops_cache_replication_records_total) and the queue's depth (finops_queue_depth)."""
        if self.repl is None:
            return
        now = {**self.repl_counts, "published": self.repl.counts["published"], "dropped": self.repl.counts["dropped"]}
        delta = {k: v - self.reported.get(k, 0) for k, v in now.items() if v != self.reported.get(k, 0)}
        sock = self.observer.socket()
        if sock is None:
            return
        try:
            if delta:
                sock.send(actors.pack({"k": "cache", "c": delta}), zmq.NOBLOCK)
                self.reported = now
            sock.send(actors.pack({"k": "gauges", "proc": f"cache-{os.getpid()}", "kind": "cache",
                                            "g": {"queues": {"cache_replication": self.repl.stats()["queued"]}}}),
                               zmq.NOBLOCK)
        except zmq.Again:
            pass

    def tick(self) -> None:
        self.apply_replicated()
        self.index.sweep(self.clock())
        self.flush()
        self.report()

    def close(self) -> None:
        if self.repl is not None:
            self.repl.close()
            self.apply_replicated()
        self.flush()
        if self.observer.sock is not None:
            self.report()
        self.observer.close()
        persist.save_meta(self.db, self.index)
        self.db.close()
        log.info("cache: %d entries saved", len(self.index.entries))


class _Waker:
    """Called by the replication reader thread when records arrived: one message to this actor's
    own socket, so they are applied within milliseconds rather than at the next tick. The socket
    is the reader thread's alone (ZeroMQ sockets are not shared between threads)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.sock = None

    def __call__(self) -> None:
        if self.sock is None:
            endpoint = transport.discover(self.run_dir, "cache").get(os.getpid())
            if endpoint is None:        # not serving yet: the next tick applies them
                return
            self.sock = transport.make_socket(zmq.PUSH)
            self.sock.connect(endpoint)
        try:
            self.sock.send(msgpack.packb({"k": "replicated"}), zmq.NOBLOCK)   # not actors.pack: its Packer is the actor thread's
        except zmq.Again:
            pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


if __name__ == "__main__":
    sys.exit(actors.main(CacheActor))
