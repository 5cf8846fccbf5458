"""The ledger on Redis: LedgerState's contract, with the state in Redis for several gateway nodes.

    led = RedisLedger.from_url("rediss://:secret@redis.internal:6380/0", directory, tz="Europe/Paris",
                               reservation_ttl=900, ca_file="ca.pem")
    led.rebuild(settled_rows)                 # once after Redis lost its data (or on a new Redis)
    led.reserve(rid, key_id, env, max_cost_usd, est_tokens, pid="node-a/1234")
    led.settle(rid, cost_usd, tokens, key_id, env, saved_usd)
    led.expire(dead_pids)                     # every second, from any node (each call is atomic)
    led.usage(key_id), led.savings(key_id), led.owners(), led.expired_charge(rid)
    led.reserve_many([...]), led.settle_many([...])   # one round trip for a batch (a pipeline)
    led.apply_many([("reserve", (...)), ("settle", (...)), ...])   # both kinds, in order, one round trip

The pure half (plans, script calls, reply meanings) is `RedisCodec` (redis_codec.py), which a
worker's own reserves share (direct.py): both paths run the same script on the same keys.

Same replies as `LedgerState` (state.py: its module docstring is the contract; the
conformance suite tests/unit/test_ledger_contract.py runs the same sequences on both), with
these differences, all due to the state being shared:

* Each operation is ONE Lua script (redis_lua.py) run with EVALSHA (loaded with SCRIPT LOAD,
  loaded again on NOSCRIPT), atomic over every counter it touches, so any number of nodes and
  workers calling at once get the single-owner guarantee: a refusal changes nothing, settled spend
  never exceeds a budget through reservations, a limit of N admits exactly N.
* The directory and the calendar stay in Python: for a (key, env) the applicable budgets and
  limits are `LedgerState._build_env`'s, and their current periods `periods.bounds(period, now,
  tz)`'s; the script gets the counter keys, limits and deadlines. `now` is this process's clock
  (nodes should run NTP: a skewed node counts its requests in its own idea of the period).
* Redis unreachable, timing out, loading, read-only (a failover in progress) or refusing the
  password: `LedgerUnavailable`, never a silent pass (the caller fails closed with a 503 or serves
  uncounted by its own policy). A reserve is not retried on a connection error (it may have been
  applied: a caller that gives up on it should `settle(rid, 0, 0)` later so it is not charged in
  full when it expires); reads, settles and expiry are retried once (they are idempotent).
* Lost data. Redis may come back empty (restart without persistence, FLUSHALL, failover to an
  empty replica). The ledger notices (its `ready` marker is gone) and refuses reserves with
  `LedgerNotReady` until `rebuild(rows)` has put back the current periods' counters from the
  durable record of settled charges, which the caller supplies (PostgreSQL or the request log).
  Settles are still applied meanwhile (as unknown rids: they charge the current periods) and the
  rebuild adds only the request of their rids, so nothing counts twice. One node rebuilds at a
  time (a lock with a fencing token); the others get `RebuildBusy` and keep failing closed until
  it is done.
* Money: integer micro-dollars, exact up to 2^53 (about $9 billion) per amount or counter: a
  larger reservation or cost raises ValueError, a larger limit is capped there.
* Reservation owners (`pid`) are opaque strings here: with several nodes give each node's pids a
  node prefix ("node-a/1234") and pass only your own dead ones to `expire`; `owners()` returns
  every node's (ints when they are digits, for the single-node callers).
* Redis Cluster: every key is in one slot, so the scripts run there as they are; `from_url`
  connects to one endpoint (a standalone Redis or Valkey, or a proxy): for a cluster, pass a
  `redis.cluster.RedisCluster` as the client (not tested here). One slot means one shard holds the
  whole ledger: a cluster gives it failover, not more throughput.
* No snapshot()/restore(): Redis is the store. Redis must keep what it is given: run it with
  `maxmemory-policy noeviction` (checked and logged at start when CONFIG is allowed).

Key layout (every key starts with `{NS}:`, NS = `namespace`, the Redis Cluster hash tag, so one
Lua script may touch them all):

    {NS}:ready                   string  present while the counters are complete (set by rebuild)
    {NS}:rebuild                 string  the rebuild lock (a random token, PX 60 s, renewed)
    {NS}:rebuilt                 set     rids and counter sums a rebuild in progress has applied
                                         (so one stopped half way is finished without counting
                                         twice; EXPIRE a day, deleted when the rebuild is done)
    {NS}:c:LEVEL:OWNER:KIND:PERIOD:ENV:START
                                 hash    u (used), t (used + reserved; budgets and tokens);
                                         KIND budget (micro-dollars), requests, tokens;
                                         ENV "*" for every env; START the
                                         period's start, epoch seconds; OWNER and ENV
                                         %-encoded; EXPIRE = period end + TTL + retention + 60 s
    {NS}:r:RID                   hash    open reservation: k key, e env, m max micros, t est
                                         tokens, c created, p pid, b / tk "counter deadline ..."
                                         of its budget and token counters; EXPIRE a day past
                                         TTL + retention (a net: `expire` closes it first)
    {NS}:x:RID                   hash    expired reservation (same fields, x expired at), kept
                                         for a late settle's correction
    {NS}:open                    zset    open rids by created time (TTL expiry)
    {NS}:expired                 zset    expired rids by expiry time (retention, settled_max)
    {NS}:settled                 zset    recently settled rids by settle time (idempotency;
                                         retention, settled_max)
    {NS}:pids                    set     pids that may hold open reservations
    {NS}:p:PID                   set     the open rids of a pid
    {NS}:saved                   hash    JSON [key, env] -> micro-dollars cache hits saved, all time
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Iterable, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from finops.shared.governance import Directory
from finops.workers.ledger.redis_codec import (MAX_EXACT, LedgerNotReady, LedgerUnavailable, RebuildBusy,
                                               RedisCodec, _exact)
from finops.workers.ledger.state import to_usd, usage_entry, usage_lines
from finops.workers.governance.periods import bounds

log = logging.getLogger("finops.ledger.redis")

EXPIRE_BATCH = 1000            # past-TTL reservations closed per expire script call
REBUILD_CHUNK = 500            # settled rows per rebuild script call
READ_CHUNK = 1000              # counters per read script call (usage)
LOCK_MS = 60_000               # the rebuild lock's lifetime, renewed by every chunk
REBUILT_TTL = 86_400           # what a stopped rebuild applied is remembered this long (seconds)
_UNAVAILABLE = ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "BUSY", "OOM", "NOAUTH", "WRONGPASS",
                "TRYAGAIN")


class SettledRow(NamedTuple):
    """One settled charge from the durable record, as `rebuild` reads it."""
    rid: str
    key: str
    env: str
    cost_micros: int
    tokens: int
    at: float                 # when it was settled (epoch seconds): it counts in the periods containing it


class RedisLedger(RedisCodec):
    """Budgets and rate limits for every key, team and customer, in Redis; see the module docstring."""

    def __init__(self, client: redis.Redis, directory: Directory, *, clock=time.time, tz: str = "UTC",
                 reservation_ttl: float = 900.0, settled_retention: float | None = None,
                 settled_max: int = 100_000, namespace: str = "finops", where: str = "Redis"):
        super().__init__(directory, clock=clock, tz=tz, reservation_ttl=reservation_ttl,
                         settled_retention=settled_retention, settled_max=settled_max, namespace=namespace,
                         where=where)
        self.r = client
        try:
            self.load_scripts()
            self._check_eviction()
        except LedgerUnavailable as e:      # not there yet: every call tries again
            log.warning("%s", e)

    @classmethod
    def from_config(cls, g, directory: Directory, *, clock=time.time) -> "RedisLedger":
        """The ledger `[governance]` (`g`) names: its redis_url, redis_ca_file, redis_timeout_seconds,
        timezone and reservation_ttl_seconds (the ledger actor, and `finops keys show` reading it)."""
        return cls.from_url(g.redis_url, directory, ca_file=g.redis_ca_file or None, timeout=g.redis_timeout_seconds,
                            clock=clock, tz=g.timezone, reservation_ttl=g.reservation_ttl_seconds)

    @classmethod
    def from_url(cls, url: str, directory: Directory, *, password: str | None = None, ca_file: str | None = None,
                 timeout: float = 1.0, **kw) -> "RedisLedger":
        """Connect with a `redis://` or `rediss://` (TLS) URL; a password in the URL or given
        separately; `ca_file` verifies the server's certificate (default: the system's CAs)."""
        opts: dict = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                      "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
        if password is not None:
            opts["password"] = password
        if ca_file:
            opts["ssl_ca_certs"] = ca_file
        client = redis.Redis.from_url(url, **opts)
        c = client.connection_pool.connection_kwargs
        where = f"Redis at {c.get('host', '?')}:{c.get('port', '?')}"
        return cls(client, directory, where=where, **kw)

    def close(self) -> None:
        self.r.close()

    # --- plumbing ----------------------------------------------------------------------------
    def _unavailable(self, e: Exception) -> LedgerUnavailable:
        return LedgerUnavailable(f"The governance ledger ({self.where}) is unavailable: {e}. The request was "
                                 f"not counted; retry shortly.")

    def _call(self, fn, idempotent: bool):
        """Run fn() mapping Redis' availability failures to LedgerUnavailable; idempotent calls
        are tried twice (a pooled connection may be stale after Redis restarted)."""
        for attempt in range(2 if idempotent else 1):
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                err = e
            except redis.ResponseError as e:
                if not str(e).startswith(_UNAVAILABLE):
                    raise
                err = e
        raise self._unavailable(err)

    def load_scripts(self) -> None:
        """SCRIPT LOAD every script (done at start and again whenever Redis says NOSCRIPT)."""
        def load():
            for s in self._scripts.values():
                sha = self.r.script_load(s.source)
                if sha != s.sha:
                    raise RuntimeError(f"Redis returned sha {sha} for the {s.name} script, expected {s.sha}")
        self._call(load, idempotent=True)

    def _eval(self, name: str, keys: list, args: list, idempotent: bool):
        """One script call: `_evalsha_many` of one, its error raised."""
        def run():
            out = self._evalsha_many([(name, keys, args)])[0]
            if isinstance(out, Exception):
                raise out
            return out
        return self._call(run, idempotent)

    def _check_eviction(self) -> None:
        try:
            policy = self.r.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:      # CONFIG disabled (managed Redis): nothing to check
            return
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise self._unavailable(e) from None
        if policy not in (None, "noeviction", b"noeviction"):
            log.warning("%s has maxmemory-policy %s: it may evict the ledger's counters under memory pressure; "
                        "set maxmemory-policy noeviction", self.where, policy)

    # --- reserve -----------------------------------------------------------------------------
    def reserve(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int, pid=0) -> dict:
        """LedgerState.reserve, atomically in Redis. Raises LedgerUnavailable / LedgerNotReady."""
        keys, args, ctx = self.reserve_call(rid, key_id, env, max_cost_usd, est_tokens, pid)
        return self.reserve_reply(self._eval("reserve", keys, args, idempotent=False), ctx)

    # --- settle ------------------------------------------------------------------------------
    def _settle_reply(self, out, ctx) -> dict:
        cost_m, key_id, env, p, now = ctx
        status = out[0]
        rkey, renv = out[1].decode(), out[2].decode()
        totals = out[3:]
        if status in (b"S", b"C") and (rkey, renv) != (key_id, env):
            # the reservation was another key's: remaining is over its key and env
            p = self._plan(rkey, renv, now)
            got = self._read(p.keys[:len(p.budgets)])
            totals = [got[i] + got[i + 1] for i in range(0, len(got), 2)]
        rem, label = self._tightest(p, totals)
        return {"cost_usd": to_usd(cost_m), "remaining_usd": rem, "budget": label, "charged": status != b"D",
                "corrected": status == b"C"}

    def settle(self, rid: str, cost_usd: float, tokens: int, key_id: str = "", env: str = "",
               saved_usd: float = 0.0) -> dict:
        """LedgerState.settle, atomically in Redis (idempotent by rid). Raises LedgerUnavailable."""
        keys, args, ctx = self.settle_call(rid, cost_usd, tokens, key_id, env, saved_usd)
        return self._settle_reply(self._eval("settle", keys, args, idempotent=True), ctx)

    # --- batches (one round trip) ------------------------------------------------------------
    def _evalsha_many(self, calls: list[tuple[str, list, list]]) -> list:
        """EVALSHA each (script name, keys, args) in one write and one read: a pipeline without
        redis-py's per-argument encoding, which cost more client CPU than the round trip (the
        arguments are bytes already: `_Plan`). Returns each call's reply, or the ResponseError it
        got; a NOSCRIPT call did not run, so it is loaded and run again. Connection errors and
        timeouts are raised (the connection is dropped: replies may still be on its socket)."""
        scripts = self._scripts
        wire = self.pack(calls)
        pool = self.r.connection_pool
        conn = pool.get_connection()    # the pool drops a connection Redis closed (a restart) first
        try:
            conn.send_packed_command([wire], check_health=False)
            outs: list = []
            for _ in calls:
                try:
                    outs.append(conn.read_response())
                except redis.ResponseError as e:
                    outs.append(e)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        for j, o in enumerate(outs):
            if isinstance(o, redis.exceptions.NoScriptError):
                n, k, a = calls[j]
                self.r.script_load(scripts[n].source)
                outs[j] = self.r.evalsha(scripts[n].sha, len(k), *k, *a)
        return outs

    def _batch(self, name: str, calls: list, idempotent: bool) -> list:
        return self._call(lambda: self._evalsha_many([(name, keys, args) for keys, args, _ in calls]), idempotent)

    def reserve_many(self, items: Iterable[tuple]) -> list:
        """Several reserves in one round trip (a pipeline; each is still its own atomic script):
        items are reserve()'s arguments as tuples; returns reserve()'s reply for each, or the
        ValueError it would have raised."""
        calls = [self.reserve_call(*it) for it in items]
        outs = self._batch("reserve", calls, idempotent=False)
        res = []
        for o, (_, _, ctx) in zip(outs, calls):
            if isinstance(o, Exception):
                raise self._unavailable(o) if str(o).startswith(_UNAVAILABLE) else o
            try:
                res.append(self.reserve_reply(o, ctx))
            except ValueError as e:
                res.append(e)
        return res

    def settle_many(self, items: Iterable[tuple]) -> list[dict]:
        """Several settles in one round trip; items are settle()'s arguments as tuples."""
        calls = [self.settle_call(*it) for it in items]
        outs = self._batch("settle", calls, idempotent=True)
        for o in outs:
            if isinstance(o, Exception):
                raise self._unavailable(o) if str(o).startswith(_UNAVAILABLE) else o
        return [self._settle_reply(o, ctx) for o, (_, _, ctx) in zip(outs, calls)]

    def apply_many(self, ops: Iterable[tuple]) -> list:
        """Reserves and settles in the order given, in one round trip (a pipeline; each is its own
        atomic script): ops are ("reserve", reserve()'s arguments) or ("settle", settle()'s
        arguments). Returns, per op, its reply or the exception it would have raised on its own
        (ValueError, LedgerNotReady), so one refusal does not hide the others' replies. Raises
        LedgerUnavailable when Redis cannot be used (then any reserve of the batch may have been
        applied or not: see the module docstring); a batch of settles only is tried twice."""
        ops = list(ops)
        calls: list = []
        res: list = [None] * len(ops)
        for i, (kind, args) in enumerate(ops):
            try:
                keys, argv, ctx = (self.reserve_call if kind == "reserve" else self.settle_call)(*args)
            except (ValueError, TypeError) as e:      # a malformed amount: that op's error only
                res[i] = e if isinstance(e, ValueError) else ValueError(str(e))
                continue
            calls.append((i, kind, keys, argv, ctx))
        if not calls:
            return res
        outs = self._call(lambda: self._evalsha_many([(kind, keys, argv) for _, kind, keys, argv, _ in calls]),
                          idempotent=all(c[1] == "settle" for c in calls))
        for o in outs:
            if isinstance(o, Exception) and str(o).startswith(_UNAVAILABLE):
                raise self._unavailable(o)
        for o, (i, kind, _, _, ctx) in zip(outs, calls):
            if isinstance(o, Exception):
                res[i] = o
                continue
            try:
                res[i] = self.reserve_reply(o, ctx) if kind == "reserve" else self._settle_reply(o, ctx)
            except (ValueError, LedgerNotReady) as e:
                res[i] = e
        return res

    def marker(self) -> bytes | None:
        """The ready marker's value (which rebuild set it, and when), or None while the counters
        are lost: a node that sees it change knows another node rebuilt them."""
        return self._call(lambda: self.r.get(self.k_ready), idempotent=True)

    # --- expire ------------------------------------------------------------------------------
    def expire(self, dead: Iterable = frozenset()) -> list[str]:
        """LedgerState.expire: charge at their maximum the reservations older than the TTL and
        those of the `dead` pids; forget settled / expired rids past retention. Returns the
        expired rids. Any node may call it at any time (each call is atomic)."""
        now = self._clock()
        dead_s = [str(d) for d in dead if d]
        keys = [self.k_open, self.k_expired, self.k_settled, self.k_pids]
        out: list[str] = []
        while True:
            args = [repr(now), repr(now - self._ttl), repr(now - self._retention), self._settled_max,
                    self.prefix, self._xrecord_ttl, EXPIRE_BATCH, *dead_s]
            r = self._eval("expire", keys, args, idempotent=True)
            out += [r[i].decode() for i in range(1, len(r), 4)]
            if r[0] < EXPIRE_BATCH:
                return out
            dead_s = []

    def expired_charge(self, rid: str) -> tuple[str, str, float] | None:
        """(key, env, USD charged) of a reservation `expire` closed, while it is remembered."""
        k, e, m = self._call(lambda: self.r.hmget(self.prefix + "x:" + rid, "k", "e", "m"), idempotent=True)
        return None if k is None else (k.decode(), e.decode(), to_usd(int(m)))

    def owners(self) -> set:
        """The pids holding open reservations, every node's (ints when they are digits)."""
        got = self._eval("owners", [self.k_pids], [self.prefix], idempotent=True)
        return {int(p) if p.isdigit() else p.decode() for p in got}

    # --- reporting ---------------------------------------------------------------------------
    def _read(self, keys: list[str]) -> list[int]:
        """[used, reserved] of each counter, READ_CHUNK counters per script call (so a report over
        every key does not hold Redis for long)."""
        out: list[int] = []
        for i in range(0, len(keys), READ_CHUNK):
            out += self._eval("read", keys[i:i + READ_CHUNK], [], idempotent=True)
        return out

    def usage(self, key_id: str | None = None) -> list[dict]:
        """LedgerState.usage, read in one consistent look at Redis."""
        now = self._clock()
        lines = usage_lines(self._dir, key_id)
        spans = [bounds(line.period, now, self._tz) for line in lines]
        vals = self._read([self.counter_key(line.base, span[0]) for line, span in zip(lines, spans)])
        return [usage_entry(line, vals[2 * i], vals[2 * i + 1], start, end)
                for i, (line, (start, end)) in enumerate(zip(lines, spans))]

    def savings(self, key_id: str | None = None) -> list[dict]:
        """What cache hits saved, all time: [{"key", "env", "saved_usd"}], for one key or all."""
        got = self._call(lambda: self.r.hgetall(self.k_saved), idempotent=True)
        rows = sorted((tuple(json.loads(f)), int(m)) for f, m in got.items())
        return [{"key": k, "env": e, "saved_usd": to_usd(m)} for (k, e), m in rows if key_id is None or k == key_id]

    # --- lost data ---------------------------------------------------------------------------
    def ready(self) -> bool:
        """False when Redis holds no complete set of counters (new, flushed, or restarted empty)."""
        return bool(self._call(lambda: self.r.exists(self.k_ready), idempotent=True))

    def rebuild(self, rows: Iterable, now: float | None = None, recent_seconds: float = 900.0) -> int | None:
        """Put back the counters of the current periods from the durable record of settled
        charges, then admit requests again.

        `rows`: SettledRow-like tuples (rid, key, env, cost_micros, tokens, at), streamed, covering
        at least the current periods (since the start of the longest budget or limit period in use;
        older rows are skipped). Each counts one request, its tokens and its cost in the periods
        containing `at`, on the key's budgets and limits as the directory says now.

        Rows of the last `recent_seconds` go to Redis one by one with their rid: a rid settled in
        Redis since the loss had its cost and tokens charged by that settle (as an unknown rid),
        so only its request is added, and these rids are remembered as settled (within the
        retention). Older rows cannot be such settles: they are summed here per counter and sent
        as one amount per counter, so a month of requests costs one entry per counter, not one
        per request.

        Returns the entries applied (recent rows and counter sums), or None when the ledger was
        ready already (nothing done). Raises RebuildBusy while another node holds the rebuild
        lock, LedgerUnavailable if Redis goes away; either way reserves keep failing closed and
        any node may call rebuild again (what a stopped rebuild applied is not applied twice).
        Reservations open when the data was lost are gone (their settles charge the current
        periods as unknown rids), and savings (all time) are not rebuilt."""
        if now is None:
            now = self._clock()
        if self.ready():
            return None
        token = secrets.token_hex(16)
        if not self._call(lambda: self.r.set(self.k_lock, token, nx=True, px=LOCK_MS), idempotent=False):
            raise RebuildBusy(f"The governance ledger ({self.where}) is being rebuilt by another node; "
                              f"retry shortly.")
        recent_after = now - recent_seconds
        keep = max(recent_after, now - self._retention)
        applied = 0
        chunk: list = []
        sums: dict[str, list] = {}            # counter key -> [kind flag, amount, deadline]
        for row in rows:
            rid, key, env, cost_m, tokens, at = row[:6]
            at = float(at)
            parts = self._row_parts(key, env, _exact(int(cost_m), "cost_micros"), int(tokens), at, now)
            if at >= recent_after:
                chunk.append(("r", rid, repr(at), parts))
                if len(chunk) >= REBUILD_CHUNK:
                    applied += self._rebuild_chunk(chunk, token, now, keep)
                    chunk = []
            else:
                for k, flag, n, d in parts:
                    s = sums.get(k)
                    if s is None:
                        sums[k] = [flag, n, d]
                    else:
                        s[1] += n
        for k, (flag, n, d) in sums.items():
            chunk.append(("a", "sum:" + k, "0", [(k, flag, _exact(n, "a counter's sum"), d)]))
            if len(chunk) >= REBUILD_CHUNK:
                applied += self._rebuild_chunk(chunk, token, now, keep)
                chunk = []
        if chunk:
            applied += self._rebuild_chunk(chunk, token, now, keep)
        marker = json.dumps({"rebuilt_at": now, "entries": applied})
        done = self._eval("rebuilt", [self.k_lock, self.k_ready, self.k_rebuilt], [token, marker], idempotent=False)
        if done != 1:
            raise RebuildBusy(f"The governance ledger ({self.where}) rebuild lost its lock; retry.")
        log.warning("%s: ledger counters rebuilt (%d entries)", self.where, applied)
        return applied

    def _row_parts(self, key: str, env: str, cost_m: int, tokens: int, at: float, now: float) -> list:
        """[(counter key, 'q' | 'm', amount, deadline)] a settled row adds to, current periods only."""
        sp, _ = self._env_specs(key, env)
        parts: list = []
        if sp is None:
            return parts
        for kind, specs in (("budget", sp.budgets), ("requests", sp.requests), ("tokens", sp.tokens)):
            for s in specs:
                start, end = bounds(s.period, at, self._tz)
                if start != bounds(s.period, now, self._tz)[0]:
                    continue           # a period that has ended: nothing enforces it any more
                n = cost_m if kind == "budget" else 1 if kind == "requests" else tokens
                if n:
                    parts.append((self.counter_key(s.base, start), "q" if kind == "requests" else "m", n,
                                  repr(end + self._grace)))
        return parts

    def _rebuild_chunk(self, entries: list, token: str, now: float, keep: float) -> int:
        keys = [self.k_lock, self.k_ready, self.k_settled, self.k_rebuilt]
        index: dict[str, int] = {}
        args: list = [token, repr(now), LOCK_MS, repr(keep), self._settled_max, REBUILT_TTL]
        for kind, ident, at, parts in entries:
            args += [kind, ident, at, len(parts)]
            for k, flag, n, d in parts:
                if k not in index:
                    index[k] = len(keys) + 1
                    keys.append(k)
                args += [index[k], flag, n, d]
        got = self._eval("rebuild", keys, args, idempotent=False)
        if got == -1:
            raise RebuildBusy(f"The governance ledger ({self.where}) rebuild lost its lock (it took over "
                              f"{LOCK_MS // 1000} s between chunks); retry.")
        if got == -2:
            raise RebuildBusy(f"The governance ledger ({self.where}) was rebuilt by another node meanwhile.")
        return got


__all__ = ["RedisLedger", "LedgerUnavailable", "LedgerNotReady", "RebuildBusy", "SettledRow", "MAX_EXACT"]
