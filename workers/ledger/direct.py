"""A worker's reserves straight to Redis (`[governance] ledger = "redis"`), not through the ledger actor.

    direct = DirectReserver(cfg, lambda: governor.index.directory)
    nursery.start_soon(direct.run)
    got = await direct.reserve(rid, key_id, env, max_usd, est_tokens, pid, release, uncounted)   # or None

Why. A reserve is the one ledger call a request waits for. Through the node's ledger actor it
costs two hops in series (worker -> actor over ZeroMQ, actor -> Redis), and on a quiet node each
request pays both alone; sent by the worker itself it is one round trip to Redis, pipelined with
the worker's other requests' reserves (redis_pipe.py). The script, its keys and its reply are
the actor's own (`RedisCodec`: redis_codec.py), so the counters cannot tell the two paths apart.
Settles still go through the actor (client.py batches them): they wait for no one, and the actor
writes each to PostgreSQL (the durable record the counters are rebuilt from) and keeps them while
Redis is away. README "Several nodes" has the measurements of both paths.

Everything but a plain answer goes to the actor, which knows what to do (its circuit, the
`redis_failure` policy, the rebuild after Redis lost its data):

* `None` (send the reserve to the actor): the circuit is open (a failure here less than
  CIRCUIT_SECONDS ago), the connection could not be made (nothing was sent), Redis lost its
  data (the script changed nothing) or did not know the script (NOSCRIPT: it did not run).
* A reserve that may have run without its reply coming back (the connection broke or timed out
  after the write; an error reply mid-script) cannot be sent again with the same id. With
  `redis_failure = "closed"` it is refused (503, retryable) and `release(rid)` asks the actor to
  free whatever it reserved (a settle of nothing, not written to PostgreSQL: the request never
  ran); with "open" it is served uncounted (`uncounted()`: the actor counts it in
  `finops_ledger_uncounted_total`), and its own settle settles it.
* A caller cancelled while waiting (the client went away): when the reply comes, a reservation
  it made is released (`release`), never left to be charged in full at its TTL.
"""
from __future__ import annotations

import logging
import math

import hiredis
import trio

from finops.shared import config as configmod

from .redis_codec import LedgerNotReady, RedisCodec
from .redis_pipe import PipeError, RedisPipe
from .state import served_uncounted, unreachable

log = logging.getLogger("finops.ledger.direct")

CIRCUIT_SECONDS = 1.0      # after a failure, reserves go through the actor for this long
WARN_SECONDS = 10.0


class DirectReserver:
    def __init__(self, cfg: configmod.Config, directory):
        """`directory()`: the Directory the worker admits with now (a reserve is planned on it)."""
        g = cfg.governance
        self.directory = directory
        self.pipe = RedisPipe(g.redis_url, ca_file=g.redis_ca_file or None, timeout=g.redis_timeout_seconds)
        self._dir = d = directory()
        self.codec = RedisCodec(d, tz=g.timezone, reservation_ttl=g.reservation_ttl_seconds, where=self.pipe.where)
        self.owner = cfg.server.node + "/"
        self.policy = g.redis_failure
        self.down_until = -math.inf
        self.warned = -math.inf

    async def run(self) -> None:
        await self.pipe.run()

    async def reserve(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int, pid: int,
                      release, uncounted) -> dict | None:
        """The ledger's reply to this reserve, or None: send it to the actor (module doc).
        `release(rid)`: free a reservation this call may have made and will not settle;
        `uncounted()`: this request is served uncounted (the actor counts it in its metrics)."""
        now = trio.current_time()
        if now < self.down_until:
            return None
        d = self.directory()
        if d is not self._dir:
            self._dir = d
            self.codec.set_directory(d)
        try:
            keys, args, ctx = self.codec.reserve_call(rid, key_id, env, max_cost_usd, est_tokens,
                                                      f"{self.owner}{pid}")
        except ValueError:
            return None                 # the actor says why (400)
        wire = self.codec.pack([("reserve", keys, args)])

        def orphan(replies):            # the caller went away; the reply came (or the connection broke)
            if replies is None or (isinstance(replies[0], list) and replies[0][:1] == [b"OK"]) \
                    or isinstance(replies[0], hiredis.ReplyError):
                release(rid)

        try:
            out = (await self.pipe.call(wire, 1, orphan))[0]
        except PipeError as e:
            self._trip(e)
            if not e.written:
                return None
            return self._maybe_applied(rid, release, uncounted)
        if isinstance(out, hiredis.ReplyError):
            if str(out).startswith("NOSCRIPT"):
                return None             # not run; the actor loads the scripts
            self._trip(out)
            return self._maybe_applied(rid, release, uncounted)
        try:
            return self.codec.reserve_reply(out, ctx)
        except (LedgerNotReady, ValueError):
            return None                 # lost data (nothing changed): the actor rebuilds; a duplicate id: it says so

    def _maybe_applied(self, rid: str, release, uncounted) -> dict:
        if self.policy == "open":
            uncounted()
            return served_uncounted()
        release(rid)
        return unreachable(self.pipe.where)

    def _trip(self, e) -> None:
        now = trio.current_time()
        self.down_until = now + CIRCUIT_SECONDS
        if now - self.warned >= WARN_SECONDS:
            self.warned = now
            log.warning("ledger: this worker's reserves go through the ledger actor for %g s: %s", CIRCUIT_SECONDS, e)
