"""The Redis ledger's requests and replies, without I/O: which counters a request touches, the
script calls that reserve and settle it, and what their replies mean.

    codec = RedisCodec(directory, tz="UTC", reservation_ttl=900)
    keys, args, ctx = codec.reserve_call(rid, key_id, env, max_cost_usd, est_tokens, pid="node/1234")
    wire = codec.pack([("reserve", keys, args)])     # EVALSHA commands, RESP-encoded, one write
    reply = codec.reserve_reply(redis_reply, ctx)     # LedgerState.reserve's dict, or raises

Two callers share it: `RedisLedger` (redis_state.py: the ledger actor's, on redis-py, with the
settles, expiry, reports and the rebuild) and `DirectReserver` (direct.py: a worker's reserves on
its own trio connection, so a request waits for one round trip to Redis, not for the actor's too).
The key layout, the plans and the conventions are in redis_state.py's and redis_lua.py's docstrings.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from urllib.parse import quote

import hiredis

from finops.shared.governance import Directory
from finops.workers.governance.periods import bounds
from finops.workers.ledger import redis_lua
from finops.workers.ledger.state import LedgerState, budget_refusal, limit_refusal, to_micros, to_usd

MAX_EXACT = 2**53 - 1          # the largest integer a Lua number (a double) holds exactly
RECORD_GRACE = 86_400          # how long past TTL + retention a record lives if no one expires it


class LedgerUnavailable(RuntimeError):
    """Redis cannot be used right now (unreachable, timing out, loading, read-only, refusing the
    password); the message says which Redis and why. The caller fails closed (503)."""


class LedgerNotReady(LedgerUnavailable):
    """Redis has lost the ledger's data and the counters have not been rebuilt yet."""


class RebuildBusy(LedgerUnavailable):
    """Another node holds the rebuild lock."""


def _exact(m: int, what: str) -> int:
    if m > MAX_EXACT:
        raise ValueError(f"{what} must be at most ${MAX_EXACT / 1e6:,.0f} in the Redis ledger, got ${m / 1e6:,.6f}")
    return m


def _q(s: str) -> str:
    """A key component: %-encoded so it holds no ':', space, brace or control character."""
    return quote(s, safe="-_.~*@+=,")


class _Plan:
    """Everything a request on (key, env) touches in the periods containing `lo <= now < hi`:
    the specs, their counter keys, and the script arguments (limit, deadline) per counter, encoded
    once (redis-py passes bytes through as they are)."""
    __slots__ = ("budgets", "requests", "tokens", "keys", "args", "skeys", "sargs", "lo", "hi", "ends",
                 "counts", "scounts")

    def __init__(self):
        self.budgets = self.requests = self.tokens = ()
        self.keys: list[bytes] = []
        self.args: list[bytes] = []
        self.skeys: list[bytes] = []    # budgets then tokens (what a settle may charge)
        self.sargs: list[bytes] = []    # their deadlines
        self.counts: list[bytes] = [b"0", b"0", b"0"]   # budgets, request limits, token limits
        self.scounts: list[bytes] = [b"0", b"0"]        # budgets, token limits
        self.ends: list[float] = []     # every counter's period end, in keys order
        self.lo, self.hi = 0.0, 0.0     # not resolved yet


_NO_PLAN = _Plan()                      # an unknown key: nothing applies, at any time
_NO_PLAN.lo, _NO_PLAN.hi = -math.inf, math.inf


class _Script:
    def __init__(self, name: str, source: str):
        self.name, self.source = name, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisCodec:
    """The pure half of the Redis ledger: plans, script calls and reply meanings (module doc)."""

    def __init__(self, directory: Directory, *, clock=time.time, tz: str = "UTC",
                 reservation_ttl: float = 900.0, settled_retention: float | None = None,
                 settled_max: int = 100_000, namespace: str = "finops", where: str = "Redis"):
        if not namespace or any(c in namespace for c in "{}: "):
            raise ValueError(f"namespace must be a non-empty word without braces, colons or spaces: {namespace!r}")
        self.where = where
        self._dir = directory
        self._clock = clock
        self._tz = tz
        self._ttl = float(reservation_ttl)
        self._retention = float(settled_retention if settled_retention is not None else 4 * reservation_ttl)
        self._settled_max = int(settled_max)
        self._grace = self._ttl + self._retention + 60.0      # how long a counter outlives its period
        self._record_ttl = int(math.ceil(self._ttl + self._retention)) + RECORD_GRACE
        self._xrecord_ttl = int(math.ceil(self._retention)) + RECORD_GRACE
        p = self.prefix = "{" + namespace + "}:"
        self.k_ready, self.k_lock, self.k_rebuilt = p + "ready", p + "rebuild", p + "rebuilt"
        self.k_open, self.k_expired, self.k_settled = p + "open", p + "expired", p + "settled"
        self.k_pids, self.k_saved = p + "pids", p + "saved"
        # the same, encoded once for the hot path (redis-py passes bytes through as they are)
        self.b_prefix, self.b_ready, self.b_open, self.b_pids = p.encode(), *(k.encode() for k in (
            self.k_ready, self.k_open, self.k_pids))
        self.b_expired, self.b_settled, self.b_saved = (k.encode() for k in (self.k_expired, self.k_settled,
                                                                              self.k_saved))
        self.b_record_ttl, self.b_settled_max = str(self._record_ttl).encode(), str(self._settled_max).encode()
        self._scripts = {n: _Script(n, s) for n, s in redis_lua.SCRIPTS.items()}
        self._specs: dict[str, tuple[dict, object] | None] = {}
        self._plans: dict[tuple[str, str], _Plan] = {}

    def pack(self, calls: list[tuple[str, list, list]]) -> bytes:
        """EVALSHA each (script name, keys, args), RESP-encoded in one buffer (one write). The
        arguments are bytes already (`_Plan`): nothing is encoded again per call."""
        scripts = self._scripts
        return b"".join(hiredis.pack_command((b"EVALSHA", scripts[n].sha, len(k), *k, *a)) for n, k, a in calls)

    # --- directory & plans -------------------------------------------------------------------
    def set_directory(self, directory: Directory) -> None:
        """Keys, teams or customers changed. Counters and reservations are kept."""
        self._dir = directory
        self._specs.clear()
        self._plans.clear()

    def _env_specs(self, key_id: str, env: str):
        ks = self._specs.get(key_id, False)
        if ks is False:
            scopes = self._dir.scopes(key_id)
            if not scopes:
                return None, ""          # unknown key: nothing applies (not cached: ids are unbounded)
            envs = {b.env for _, _, bs, _ in scopes for b in bs if b.env}
            envs |= {r.env for _, _, _, rs in scopes for r in rs if r.env}
            ks = self._specs[key_id] = ({e: LedgerState._build_env(scopes, e) for e in envs},
                                        LedgerState._build_env(scopes, ""))
        by_env, default = ks
        sp = by_env.get(env)
        return (sp, env) if sp is not None else (default, "")

    def counter_key(self, base: tuple, start: float) -> str:
        level, owner, kind, period, env = base
        return f"{self.prefix}c:{level}:{_q(owner)}:{kind}:{period}:{_q(env)}:{int(start)}"

    def _plan(self, key_id: str, env: str, now: float) -> _Plan:
        p = self._plans.get((key_id, env))
        if p is None:
            sp, env_key = self._env_specs(key_id, env)
            if sp is None:
                return _NO_PLAN
            p = self._plans.get((key_id, env_key))
            if p is None:
                p = _Plan()
                p.budgets, p.requests, p.tokens = sp.budgets, sp.requests, sp.tokens
                self._plans[(key_id, env_key)] = p
        if not (p.lo <= now < p.hi):
            self._resolve(p, now)
        return p

    def _resolve(self, p: _Plan, now: float) -> None:
        lo, hi = -math.inf, math.inf
        keys, args, ends, skeys, sargs = [], [], [], [], []
        nb, nr, nt = len(p.budgets), len(p.requests), len(p.tokens)
        for i, s in enumerate((*p.budgets, *p.requests, *p.tokens)):
            start, end = bounds(s.period, now, self._tz)
            lo, hi = max(lo, start), min(hi, end)
            k, d = self.counter_key(s.base, start).encode(), repr(end + self._grace).encode()
            keys.append(k)
            args += [str(min(s.limit, MAX_EXACT)).encode(), d]
            ends.append(end)
            if i < nb or i >= nb + nr:
                skeys.append(k)
                sargs.append(d)
        p.keys, p.args, p.ends, p.skeys, p.sargs, p.lo, p.hi = keys, args, ends, skeys, sargs, lo, hi
        p.counts = [str(nb).encode(), str(nr).encode(), str(nt).encode()]
        p.scounts = [p.counts[0], p.counts[2]]

    @staticmethod
    def _tightest(p: _Plan, totals: list) -> tuple[float | None, str | None]:
        """min over the budgets of limit - used - reserved (totals: used + reserved per budget
        counter, in p.budgets order), and its label."""
        best, at = None, 0
        for i, s in enumerate(p.budgets):
            left = s.limit - totals[i]
            if best is None or left < best:
                best, at = left, i
        return (None, None) if best is None else (to_usd(best), p.budgets[at].label)

    # --- reserve -----------------------------------------------------------------------------
    def reserve_call(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int, pid=0):
        max_m = _exact(to_micros(max_cost_usd, "max_cost_usd"), "max_cost_usd")
        est = int(est_tokens)
        if est < 0:
            raise ValueError(f"est_tokens must be >= 0, got {est_tokens!r}")
        now = self._clock()
        p = self._plan(key_id, env, now)
        pid_s = str(pid) if pid else ""
        rid_b = rid.encode()
        keys = [self.b_ready, self.b_prefix + b"r:" + rid_b, self.b_open, self.b_pids,
                self.b_prefix + b"p:" + pid_s.encode() if pid_s else self.b_pids, self.b_settled, *p.keys]
        args = [repr(now).encode(), rid_b, str(max_m).encode(), str(est).encode(), pid_s.encode(), key_id.encode(),
                env.encode(), *p.counts, self.b_record_ttl, *p.args]
        return keys, args, (rid, p, max_m, now)

    def reserve_reply(self, out, ctx) -> dict:
        rid, p, max_m, now = ctx
        status = out[0]
        if status == b"OK":
            vals = out[1:]          # per counter: used + reserved (budgets, tokens) or requests counted
            rem, label = self._tightest(p, vals)
            req = None
            nb = len(p.budgets)
            for j, s in enumerate(p.requests):
                left = s.limit - vals[nb + j]
                if req is None or left < req:
                    req = left
            return {"ok": True, "remaining_usd": rem, "budget": label, "requests_remaining": req}
        if status == b"DUP":
            raise ValueError(f"reservation {rid!r} already exists")
        if status == b"SETTLED":
            raise ValueError(f"request {rid!r} was settled already: it cannot be reserved again")
        if status == b"LOST":
            raise LedgerNotReady(f"The governance ledger ({self.where}) lost its counters and has not rebuilt "
                                 f"them yet; the request was not sent upstream. Retry shortly.")
        i, before = int(out[1]) - 1, int(out[2])
        specs = (*p.budgets, *p.requests, *p.tokens)
        s = specs[i]
        if status == b"BUDGET":
            return budget_refusal(s.label, s.limit - before, max_m, p.ends[i])
        return limit_refusal(s.label, p.ends[i], now)

    # --- settle ------------------------------------------------------------------------------
    def settle_call(self, rid: str, cost_usd: float, tokens: int, key_id: str = "", env: str = "",
                     saved_usd: float = 0.0):
        cost_m = _exact(to_micros(cost_usd, "cost_usd"), "cost_usd")
        saved_m = _exact(to_micros(saved_usd, "saved_usd"), "saved_usd") if saved_usd else 0
        tokens = int(tokens)
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        now = self._clock()
        p = self._plan(key_id, env, now)
        pf, rid_b = self.b_prefix, rid.encode()
        keys = [pf + b"r:" + rid_b, pf + b"x:" + rid_b, self.b_open, self.b_expired, self.b_settled, self.b_saved,
                *p.skeys]
        args = [repr(now).encode(), rid_b, str(cost_m).encode(), str(tokens).encode(), str(saved_m).encode(),
                json.dumps([key_id, env]).encode() if saved_m else b"", self.b_settled_max, *p.scounts, pf,
                *p.sargs]
        return keys, args, (cost_m, key_id, env, p, now)
