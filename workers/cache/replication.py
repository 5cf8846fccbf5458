"""One cache for every node: each node's cache actor replicates its new entries through a Redis Stream.

    [cache]
    replication = "redis"        # "off" (default): this node's cache is its own
    redis_url = ""               # "" = governance.redis_url

    rep = Replicator(client_factory, node="gw-a", start_id="0-0", maxlen=100_000, wake=fn)
    rep.start()
    rep.publish({"t": "put", ...})       # the actor's thread: O(1), never blocks, never raises
    rep.take()                           # -> [(records of other nodes, last stream id read)], in order
    rep.stats()                          # published, dropped, received, connected, position ...
    rep.close()

**Design: a replication log, not a shared vector store.** Every node keeps its own FAISS index
(index.py) and the lookup stays where it is: in the node's cache actor, a ZeroMQ hop from the
worker, 0.04-0.3 ms, with no network call on the request path. What is shared is the *log of
changes*: a node's actor appends each entry it stores (exact-layer and semantic: scope, exact key,
namespace, owner, modelId, question, answer, created, expires, saving, and the embedding vector as
float32 bytes with its model id) and each clear (`finops cache clear`, `DELETE /admin/cache`) to
one Redis Stream with XADD, and a reader thread XREADs the others' records and hands them to the
actor, which applies them to its index as if they had been stored locally. Its own records are
skipped (each record carries the node name). A node remembers the last stream id it applied (in
its cache file), so after a restart or an outage it reads on from there; a new node starts from
the beginning of the stream, so it starts warm with every entry still in it. The stream is capped
(XADD MAXLEN ~ `cache.replication_maxlen`, approximate trimming) and a record past its `expires`
is not applied, so a warm start loads what is still live.

Why not a shared vector store (RediSearch/Redis Stack, pgvector, Qdrant) that every node queries:
(1) it puts a network round trip, and the store's availability, on every lookup: Redis down would
mean no cache at all, where here it means only that new entries of other nodes arrive late;
(2) the scope filter (an entry never crosses a virtual-key or context scope) would have to be
re-implemented as the store's tag filter, where here the same `IDSelectorBatch` code serves
replicated entries as local ones; (3) the Redis operators already run for the ledger has no vector
search (a plain `redis-server` or Valkey has no FT.SEARCH), and a new engine is one more thing to
run. The price of replication: every node holds every entry (memory x nodes: about 6 KB per
entry in the cache actor), and a new entry reaches the other nodes a moment later (measured with scripts/cache_replication_bench.py: README "One cache for every node").

**Off the request path, never blocking.** `publish()` appends to a bounded queue (MAX_QUEUE);
a writer thread sends what is queued as one pipeline of XADDs. Redis unreachable: the queue keeps
the newest MAX_QUEUE records (older ones are dropped and counted in `dropped`) and the writer
retries every RETRY_SECONDS; the reader retries as long, from the id it last read, so when Redis is
back both catch up. Lookups never wait for Redis: they are the local index's.

**Scoping.** The replicated record carries the entry's scope and exact keys, which are hashes of
the virtual key (or shared route), the modelId, the operation and the whole context (keys.py):
a replicated entry is found only by a request with the identical scope, exactly as a local one.

Every node should use the same embedding model: a record whose vectors come from another model
than the node's index is applied without its vector (it still answers exact matches).
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import msgpack

log = logging.getLogger("finops.cache")

STREAM = "finops:cache:log"   # the stream key (one per Redis database)
MAX_QUEUE = 10_000            # records waiting for Redis; past it the oldest are dropped (counted)
BATCH = 500                   # records per XADD pipeline and per XREAD
BLOCK_MS = 1000               # how long one XREAD waits for new records
RETRY_SECONDS = 1.0           # after a Redis error, the next try
WARN_SECONDS = 10.0           # at most one warning this often while Redis is down

_pack = msgpack.Packer(use_bin_type=True).pack


def redis_target(cfg) -> tuple[str, str]:
    """(URL, CA file) the cache replicates through: [cache]'s, else [governance]'s."""
    c, g = cfg.cache, cfg.governance
    return c.redis_url or g.redis_url, c.redis_ca_file or g.redis_ca_file


def client_factory(url: str, ca_file: str = "", timeout: float = 1.0):
    """A function making a redis-py client for `url` whose calls give up after `timeout` seconds
    (plus `extra` for a blocking XREAD), without redis-py's own retries: this module retries."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def make(extra: float = 0.0):
        opts: dict = {"socket_timeout": timeout + extra, "socket_connect_timeout": timeout,
                      "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
        if ca_file:
            opts["ssl_ca_certs"] = ca_file
        return redis.Redis.from_url(url, **opts)
    return make


def publish_clear(cfg, owner: str | None, model: str | None, node: str | None = None) -> None:
    """Tell the other nodes about a clear made without a running actor (`finops cache clear` with
    the gateway stopped): one XADD now; raises when Redis does not take it."""
    url, ca = redis_target(cfg)
    r = client_factory(url, ca)()
    try:
        rec = {"t": "clear", "owner": owner, "model": model, "at": time.time()}
        r.xadd(STREAM, {"n": (node or cfg.server.node).encode(), "e": _pack(rec)},
               maxlen=cfg.cache.replication_maxlen, approximate=True)
    finally:
        _close(r)


def where(url: str) -> str:
    """HOST:PORT of a Redis URL, never its password (for logs)."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0] or "?"


class Replicator:
    def __init__(self, make_client, node: str, *, start_id: str = "0-0", maxlen: int = 100_000,
                 wake=None, stream: str = STREAM, where: str = "Redis", queue_max: int = MAX_QUEUE,
                 clock=time.time):
        self.make_client = make_client
        self.node = node
        self.node_b = node.encode()
        self.position = start_id or "0-0"     # the last stream id read (own records included)
        self.maxlen = maxlen
        self.wake = wake
        self.stream = stream
        self.where = where
        self.queue_max = queue_max
        self.clock = clock
        self.out: collections.deque = collections.deque()
        self.inbox: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.counts = {"published": 0, "dropped": 0, "received": 0, "own_skipped": 0, "errors": 0, "gaps": 0}
        self.up = {"writer": False, "reader": False}
        self.last_error = ""
        self._warned = 0.0

    # --- the actor's side -------------------------------------------------------------------
    def start(self) -> None:
        for name, fn in (("writer", self._writer), ("reader", self._reader)):
            t = threading.Thread(target=fn, name=f"cache-replication-{name}", daemon=True)
            t.start()
            self.threads.append(t)

    def publish(self, rec: dict) -> None:
        """Queue one record for the other nodes (the caller's dict is not changed later)."""
        with self.cv:
            if len(self.out) >= self.queue_max:
                self.out.popleft()
                self.counts["dropped"] += 1
            self.out.append(rec)
            self.cv.notify()

    def take(self) -> list[tuple[list[dict], str]]:
        """What the reader received since the last call: [(records, last id)], in stream order."""
        got = []
        while True:
            try:
                got.append(self.inbox.popleft())
            except IndexError:
                return got

    def stats(self) -> dict:
        with self.cv:
            queued = len(self.out)
        return {"mode": "redis", "node": self.node, "redis": self.where, "connected": all(self.up.values()),
                "position": self.position, "queued": queued, **self.counts, "last_error": self.last_error}

    def close(self, timeout: float = 2.0) -> None:
        """Stop; the writer sends what is queued first if Redis answers within `timeout`."""
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        for t in self.threads:
            t.join(timeout)

    # --- threads ----------------------------------------------------------------------------
    def _failed(self, who: str, e: Exception) -> None:
        self.up[who] = False
        self.counts["errors"] += 1
        self.last_error = f"{type(e).__name__}: {e}"
        now = time.monotonic()
        if now - self._warned > WARN_SECONDS:
            self._warned = now
            log.warning("cache replication: %s unreachable (%s); this node's cache goes on locally, %d records "
                        "queued, %d dropped; retrying every %.0f s", self.where, self.last_error, len(self.out),
                        self.counts["dropped"], RETRY_SECONDS)

    def _recovered(self, who: str) -> None:
        if not self.up[who]:
            self.up[who] = True
            if self.counts["errors"]:
                log.info("cache replication: %s answers again (%s)", self.where, who)

    def _writer(self) -> None:
        r = None
        while True:
            with self.cv:
                while not self.out and not self.stopping:
                    self.cv.wait()
                if not self.out:
                    break
                batch = [self.out.popleft() for _ in range(min(BATCH, len(self.out)))]
                stopping = self.stopping
            try:
                if r is None:
                    r = self.make_client()
                p = r.pipeline(transaction=False)
                for rec in batch:
                    p.xadd(self.stream, {"n": self.node_b, "e": _pack(rec)}, maxlen=self.maxlen, approximate=True)
                p.execute()
                self.counts["published"] += len(batch)
                self._recovered("writer")
            except Exception as e:          # redis.RedisError, OSError: Redis away; keep the batch
                self._failed("writer", e)
                with self.cv:
                    room = self.queue_max - len(self.out)
                    if room < len(batch):
                        self.counts["dropped"] += len(batch) - max(room, 0)
                        batch = batch[len(batch) - max(room, 0):]
                    self.out.extendleft(reversed(batch))
                    if stopping:
                        break
                    self.cv.wait(RETRY_SECONDS)
                _close(r)
                r = None
        _close(r)

    def _reader(self) -> None:
        r = None
        try:
            while not self.stopping:
                try:
                    if r is None:
                        r = self.make_client(BLOCK_MS / 1000)
                        self._check_gap(r)
                    got = r.xread({self.stream: self.position}, count=BATCH, block=BLOCK_MS)
                    self._recovered("reader")
                except Exception as e:
                    self._failed("reader", e)
                    _close(r)
                    r = None
                    with self.cv:
                        if not self.stopping:
                            self.cv.wait(RETRY_SECONDS)
                    continue
                if got:
                    self._received(got[0][1])
        finally:
            _close(r)
            close = getattr(self.wake, "close", None)
            if close is not None:
                close()

    def _check_gap(self, r) -> None:
        """On (re)connecting: when the stream's oldest record is newer than the last one this node
        read, the records in between were trimmed (MAXLEN) or lost with Redis's data; say so (their
        entries are misses here until stored again). Counted in `gaps`."""
        if self.position == "0-0":
            return
        first = r.xrange(self.stream, count=1)
        if first and _sid(first[0][0]) > _sid(self.position):
            self.counts["gaps"] += 1
            log.warning("cache replication: records after stream id %s are no longer in the stream (trimmed at "
                        "replication_maxlen, or Redis lost its data); entries stored meanwhile on other nodes are "
                        "misses on this node until they are stored again", self.position)

    def _received(self, items: list) -> None:
        records, last = [], self.position
        for sid, fields in items:
            last = sid.decode() if isinstance(sid, bytes) else sid
            if fields.get(b"n") == self.node_b:
                self.counts["own_skipped"] += 1
                continue
            try:
                rec = msgpack.unpackb(fields[b"e"], raw=False)
            except Exception:
                log.error("cache replication: record %s cannot be read; skipped", last)
                continue
            rec["from"] = fields.get(b"n", b"").decode(errors="replace")
            records.append(rec)
        self.counts["received"] += len(records)
        self.position = last
        self.inbox.append((records, last))
        if records and self.wake is not None:
            try:
                self.wake()
            except Exception:
                log.exception("cache replication: waking the actor failed (the next tick applies)")


def _sid(sid) -> tuple[int, int]:
    """A stream id "ms-seq" as a comparable pair."""
    ms, _, seq = (sid.decode() if isinstance(sid, bytes) else sid).partition("-")
    return int(ms), int(seq or 0)


def _close(r) -> None:
    if r is not None:
        try:
            r.close()
        except Exception:
            pass
