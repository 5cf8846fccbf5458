"""The ledger's state: reserve / settle over budgets and rate limits, exact and in memory. Pure.

One process (the ledger actor) owns a `LedgerState` and calls it one message at a time, so there
are no locks here and no I/O: the clock is injected, persistence goes through `snapshot()` /
`restore()`.

Counters. A counter is identified by (level, owner id, kind, period, env or "*", period start),
kind being "budget" (money), "requests" or "tokens". Money is kept as integer micro-dollars so
that sums never drift; it is reported as USD floats rounded to 6 decimals. The table holds one
counter per (level, owner, kind, period, env): when the calendar period rolls over (per
`periods.bounds(period, now, tz)`) the next access replaces it with a fresh counter for the new
period, so old counters are dropped. Two budgets (or two limits) of one owner with the same
period and env share a counter; the tighter one is enforced.

Reserve checks every applicable budget and limit before changing anything (a refusal changes
nothing), then reserves the request's maximum cost and estimated tokens and counts the request.
Settle replaces the reservation by the real cost and tokens on the very counters it reserved
against, even if their period has ended meanwhile (the spend belongs to the period the request
started in). A counter whose period has ended and that was dropped from the table stays alive
only through the reservations that hold it: settling charges it and nothing sees it any more
(there is nothing left to enforce for a past period), which is the "ignore" choice.

A settle for a rid the ledger does not know (restart without the reservation in the snapshot)
charges the current periods of the key and env it names; a rid settled twice is charged once
(recently settled rids are remembered, bounded by count and age), and a reserve of a rid settled
already is refused (ValueError): it is a reserve that arrived after its own release (a settle of
nothing for a reserve whose reply never came), whose reservation no one would settle. After a crash, the settles a
frontend sends again (`replay`, stamped with when it got them) put back what the ledger did
after its last snapshot, and skip what the snapshot already counted (its docstring has the cases). A reservation older than the
TTL is expired: charged at its maximum. If its real settle arrives later, the charge is corrected
to the real cost on the same counters (so nothing is lost and nothing double-counted).

Choices worth knowing:
* When several budgets and limits refuse, the reply names the first: budgets before rate limits
  (a budget refusal is final until its reset, a throttle is retried), in scope order key, team,
  customer.
* `remaining_usd` is amount - spent - reserved, unclamped: negative means overspent (possible
  only through costs above the reservation, or settles of unknown rids).
* A settle of an unknown rid charges cost and tokens, not a request (the request count is only
  taken at reserve).
* Settled rids are remembered for `settled_retention` (default 4 x reservation_ttl) and at most
  `settled_max`; expired reservations likewise, for their late settle. Past that a duplicate
  settle would be charged again, as an unknown rid.
* Every reservation is recorded, even one that touched no counter (unknown key, no budgets), so
  a duplicate rid is always an error and its settle is always recognised.
* Speed: per key the applicable counters are computed once per env mentioned by its scopes (any
  other env shares the env-less set; client-chosen envs cannot grow the cache) and cached until
  `set_directory`; their current counters are resolved once per shortest window.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from typing import NamedTuple

from finops.shared.errors import AWS_ERRORS
from finops.shared.governance import Directory, RateLimit
from finops.workers.governance.money import MICRO, micros, usd
from finops.workers.governance.periods import bounds, iso

SNAPSHOT_VERSION = 1
_QUOTA = "ServiceQuotaExceededException"
_THROTTLE = "ThrottlingException"
_UNAVAILABLE = "ServiceUnavailableException"


def to_micros(amount: float, what: str) -> int:
    """USD -> micro-dollars; a ValueError naming `what` for anything but a finite amount >= 0."""
    if not (amount >= 0.0) or amount > 1e12:   # also refuses NaN and inf
        raise ValueError(f"{what} must be a finite amount of USD >= 0, got {amount!r}")
    return micros(amount)


to_usd = usd


def fmt_usd(micros: int) -> str:
    whole, frac = f"{micros / MICRO:.6f}".rstrip("0").split(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def limit_label(level: str, owner: str, limit: RateLimit, kind: str) -> str:
    """How messages name a rate limit: `key 'vk-1' limit of 10 requests per minute (env prod)`."""
    n = limit.requests if kind == "requests" else limit.tokens
    return (f"{level} {owner!r} limit of {n} {kind} per {limit.window}"
            + (f" (env {limit.env})" if limit.env else ""))


def budget_refusal(label: str, left_m: int, max_m: int, end: float) -> dict:
    """The reply refusing a reservation of `max_m` micro-dollars on a budget with `left_m` left
    (limit - spent - reserved) until `end` (shared by every ledger backend)."""
    when = iso(end)
    left = max(0, left_m)
    msg = (f"Budget exceeded: the {label} has {fmt_usd(left)} left until it resets at {when}, "
           f"and this request may cost up to {fmt_usd(max_m)}. Retry after {when}, or ask an "
           f"administrator to raise the budget.")
    return {"ok": False, "code": _QUOTA, "status": AWS_ERRORS[_QUOTA][0], "message": msg,
            "budget": label, "resets_at": when, "remaining_usd": to_usd(left)}


def limit_refusal(label: str, end: float, now: float) -> dict:
    """The reply refusing a request on a rate limit used up until `end`."""
    when = iso(end)
    ms = max(1, math.ceil((end - now) * 1000))
    msg = (f"Rate limit exceeded: the {label} is used up for this window, which resets at "
           f"{when}. Retry after {ms} ms.")
    return {"ok": False, "code": _THROTTLE, "status": AWS_ERRORS[_THROTTLE][0],
            "retry_after_ms": ms, "message": msg, "limit": label, "resets_at": when}


def refusal(message: str) -> dict:
    """The reply refusing a reservation the ledger could not make (503, retryable)."""
    return {"ok": False, "code": _UNAVAILABLE, "status": AWS_ERRORS[_UNAVAILABLE][0], "message": message}


def unreachable(where: str) -> dict:
    """The refusal while the Redis ledger cannot be used (redis_failure = "closed")."""
    return refusal(f"The budget ledger ({where}) is unreachable, so the request was not sent upstream "
                   f"(it would not be counted against its budgets and rate limits). Retry shortly.")


def served_uncounted() -> dict:
    """The admission of a request served uncounted while the Redis ledger cannot be used
    (redis_failure = "open")."""
    return {"ok": True, "remaining_usd": None, "budget": None, "requests_remaining": None, "uncounted": True}


def invalid(e: ValueError) -> dict:
    """The reply refusing a reserve or settle whose figures are wrong (400)."""
    return {"ok": False, "code": "ValidationException", "status": 400, "message": str(e)}


class UsageLine(NamedTuple):
    """One budget or limit of a usage report, before its counter is read: `limit` is the budget's
    amount in micro-dollars, or the number of requests or tokens."""
    level: str
    owner: str
    kind: str               # "budget", "requests" or "tokens"
    period: str
    env: str
    limit: int
    label: str

    @property
    def base(self) -> tuple:
        """The counter's identity without its period start: (level, owner, kind, period, env or "*")."""
        return (self.level, self.owner, self.kind, self.period, self.env or "*")


def usage_lines(directory: Directory, key_id: str | None) -> list[UsageLine]:
    """Every budget and limit of a key's scopes (key, team, customer), or of every key, team and
    customer in `directory` (shared by every ledger backend: each reads the counters its way)."""
    if key_id is not None:
        scopes = directory.scopes(key_id)
    else:
        d = directory
        scopes = ([("key", k.id, k.budgets, k.rate_limits) for k in d.keys.values()]
                  + [("team", t.id, t.budgets, t.rate_limits) for t in d.teams.values()]
                  + [("customer", c.id, c.budgets, c.rate_limits) for c in d.customers.values()])
    lines: list[UsageLine] = []
    for level, owner, budgets, limits in scopes:
        for b in budgets:
            lines.append(UsageLine(level, owner, "budget", b.period, b.env, to_micros(b.amount_usd, "amount_usd"),
                                   b.label(level, owner)))
        for r in limits:
            for kind, n in (("requests", r.requests), ("tokens", r.tokens)):
                if n is not None:
                    lines.append(UsageLine(level, owner, kind, r.window, r.env, n, limit_label(level, owner, r, kind)))
    return lines


def usage_entry(line: UsageLine, used: int, reserved: int, start: float, end: float) -> dict:
    """A usage report's entry for `line`, whose current counter holds `used` and `reserved` for the
    period [start, end) (see `LedgerState.usage`)."""
    if line.kind == "budget":
        n = line.limit
        return {"level": line.level, "owner": line.owner, "kind": "budget", "period": line.period,
                "env": line.env, "label": line.label, "limit_usd": to_usd(n), "spent_usd": to_usd(used),
                "reserved_usd": to_usd(reserved), "remaining_usd": to_usd(n - used - reserved),
                "period_start": iso(start), "resets_at": iso(end)}
    return {"level": line.level, "owner": line.owner, "kind": line.kind, "period": line.period, "env": line.env,
            "label": line.label, "limit": line.limit, "used": used, "reserved": reserved,
            "remaining": line.limit - used - reserved, "period_start": iso(start), "resets_at": iso(end)}


class _Counter:
    __slots__ = ("base", "start", "used", "reserved")

    def __init__(self, base: tuple, start, used: int = 0, reserved: int = 0):
        self.base = base          # (level, owner, kind, period, env or "*")
        self.start = start        # period start, epoch seconds as bounds() returned it
        self.used = used          # budget: spent micro-dollars; requests: count; tokens: used
        self.reserved = reserved  # budget: reserved micro-dollars; tokens: reserved; requests: 0

    def ref(self) -> list:
        return [*self.base, self.start]


class _Spec:
    """One applicable counter for a (key, env): what it is and its limit."""
    __slots__ = ("base", "period", "limit", "label")

    def __init__(self, base: tuple, period: str, limit: int, label: str):
        self.base, self.period, self.limit, self.label = base, period, limit, label


class _Specs:
    """Everything that applies to one (key, env), and the current counters for it, resolved once
    and reused while `lo <= now < hi` (inside every period involved) and no counter has been
    replaced or dropped from the table since (`gen`)."""
    __slots__ = ("budgets", "requests", "tokens", "lo", "hi", "gen", "cb", "cr", "ct", "bpairs",
                 "rpairs", "tpairs")

    def __init__(self, budgets: tuple, requests: tuple, tokens: tuple):
        self.budgets, self.requests, self.tokens = budgets, requests, tokens
        self.lo, self.hi, self.gen = 0.0, 0.0, -1
        self.cb = self.cr = self.ct = ()
        self.bpairs = self.rpairs = self.tpairs = ()


class _KeySpecs:
    __slots__ = ("by_env", "default")

    def __init__(self, by_env: dict, default: _Specs):
        self.by_env, self.default = by_env, default


class _Res:
    __slots__ = ("key", "env", "max_m", "est", "created", "budgets", "tokens", "expired_at", "pid")

    def __init__(self, key, env, max_m, est, created, budgets, tokens, expired_at=None, pid=0):
        self.key, self.env, self.max_m, self.est, self.created = key, env, max_m, est, created
        self.budgets: tuple[_Counter, ...] = budgets
        self.tokens: tuple[_Counter, ...] = tokens
        self.expired_at = expired_at
        self.pid = pid            # the worker process that holds it (0: unknown)


_EMPTY = _Specs((), (), ())


SNAPSHOT_SETTLED_SECONDS = 2.0    # settled rids a snapshot lists (`replay`: must exceed REPLAY_LAG + a settle's delay)
REPLAY_LAG = 0.5                  # a replayed settle's stamp is at most this much later than its first settle


class LedgerState:
    """Budgets and rate limits for every key, team and customer; see the module docstring."""

    def __init__(self, directory: Directory, *, clock=time.time, tz: str = "UTC",
                 reservation_ttl: float = 900.0, settled_retention: float | None = None,
                 settled_max: int = 100_000):
        self._dir = directory
        self._clock = clock
        self._tz = tz
        self._ttl = float(reservation_ttl)
        # how long settled / expired rids are remembered (duplicate and late settles)
        self._retention = float(settled_retention if settled_retention is not None
                                else 4 * reservation_ttl)
        self._settled_max = int(settled_max)
        self._table: dict[tuple, _Counter] = {}
        self._open: dict[str, _Res] = {}
        self._expired: OrderedDict[str, _Res] = OrderedDict()
        self._settled: dict[str, float] = {}       # rid -> when settled
        self._settled_q: deque[tuple[str, float]] = deque()   # (rid, when), oldest first
        self._known_after = -math.inf    # every rid settled after this time is in _settled (see `replay`)
        self._specs: dict[str, _KeySpecs] = {}
        self._pb: dict[str, tuple] = {}          # period -> current (start, end)
        self._gen = 0                            # bumped when a table counter is replaced / dropped
        self._saved: dict[tuple, int] = {}       # (key id, env) -> micro-dollars cache hits saved, all time

    # --- directory & specs -------------------------------------------------------------------
    def set_directory(self, directory: Directory) -> None:
        """Keys, teams or customers changed. Counters and reservations are kept."""
        self._dir = directory
        self._specs.clear()

    def _build(self, key_id: str) -> _KeySpecs | None:
        scopes = self._dir.scopes(key_id)
        if not scopes:
            return None
        envs = {b.env for _, _, bs, _ in scopes for b in bs if b.env}
        envs |= {r.env for _, _, _, rs in scopes for r in rs if r.env}
        return _KeySpecs({e: self._build_env(scopes, e) for e in envs},
                         self._build_env(scopes, ""))

    @staticmethod
    def _build_env(scopes, env: str) -> _Specs:
        kinds: dict[str, dict[tuple, _Spec]] = {"budget": {}, "requests": {}, "tokens": {}}

        def add(kind: str, level: str, owner: str, period: str, e: str, limit: int, label: str):
            base = (level, owner, kind, period, e or "*")
            d = kinds[kind]
            old = d.get(base)
            if old is None or limit < old.limit:   # a shared counter: the tighter limit wins
                d[base] = _Spec(base, period, limit, label)

        for level, owner, budgets, limits in scopes:
            for b in budgets:
                if b.env == "" or b.env == env:
                    add("budget", level, owner, b.period, b.env, to_micros(b.amount_usd, "amount_usd"),
                        b.label(level, owner))
            for r in limits:
                if r.env == "" or r.env == env:
                    if r.requests is not None:
                        add("requests", level, owner, r.window, r.env, int(r.requests),
                            limit_label(level, owner, r, "requests"))
                    if r.tokens is not None:
                        add("tokens", level, owner, r.window, r.env, int(r.tokens),
                            limit_label(level, owner, r, "tokens"))
        return _Specs(tuple(kinds["budget"].values()), tuple(kinds["requests"].values()),
                      tuple(kinds["tokens"].values()))

    def _specs_for(self, key_id: str, env: str, now: float) -> _Specs:
        """What applies to (key, env), with its counters resolved for `now`."""
        ks = self._specs.get(key_id)
        if ks is None:
            ks = self._build(key_id)
            if ks is None:          # unknown key: nothing applies (not cached: ids are unbounded)
                return _EMPTY
            self._specs[key_id] = ks
        sp = ks.by_env.get(env, ks.default)
        if not (sp.lo <= now < sp.hi and sp.gen == self._gen):
            self._resolve(sp, now)
        return sp

    def _resolve(self, sp: _Specs, now: float) -> None:
        lo, hi = -math.inf, math.inf
        for s in (*sp.budgets, *sp.requests, *sp.tokens):
            b = self._bounds(s.period, now)
            lo, hi = max(lo, b[0]), min(hi, b[1])
        counter = self._counter
        sp.cb = tuple(counter(s, now) for s in sp.budgets)
        sp.cr = tuple(counter(s, now) for s in sp.requests)
        sp.ct = tuple(counter(s, now) for s in sp.tokens)
        sp.bpairs = tuple((s.limit, c) for s, c in zip(sp.budgets, sp.cb))
        sp.rpairs = tuple((s.limit, c) for s, c in zip(sp.requests, sp.cr))
        sp.tpairs = tuple((s.limit, c) for s, c in zip(sp.tokens, sp.ct))
        sp.lo, sp.hi, sp.gen = lo, hi, self._gen

    # --- periods & counters ------------------------------------------------------------------
    def _bounds(self, period: str, now: float) -> tuple:
        b = self._pb.get(period)
        if b is None or not (b[0] <= now < b[1]):
            b = self._pb[period] = tuple(bounds(period, now, self._tz))
        return b

    def _counter(self, s: _Spec, now: float) -> _Counter:
        """The counter of the current period for spec `s` (created, or rolled over, on demand)."""
        start = self._bounds(s.period, now)[0]
        c = self._table.get(s.base)
        if c is None or c.start != start:
            if c is not None:       # rolled over: whoever resolved the old one must look again
                self._gen += 1
            c = self._table[s.base] = _Counter(s.base, start)
        return c

    def _peek(self, base: tuple, period: str, now: float) -> tuple[_Counter | None, tuple]:
        """The current counter for `base` without creating one (None if none), and the bounds."""
        b = self._bounds(period, now)
        c = self._table.get(base)
        return (c if c is not None and c.start == b[0] else None), b

    # --- reserve -----------------------------------------------------------------------------
    def reserve(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int, pid: int = 0) -> dict:
        """Reserve `max_cost_usd` and `est_tokens` and count one request against every budget and
        limit that applies to (key, env), or refuse (changing nothing) if any would be exceeded.

        ok:      {"ok": True, "remaining_usd": float|None, "budget": str|None,
                  "requests_remaining": int|None}
        budget:  {"ok": False, "code": "ServiceQuotaExceededException", "status": 400, "message",
                  "budget": label, "resets_at": iso, "remaining_usd": left before this request}
        limit:   {"ok": False, "code": "ThrottlingException", "status": 429, "retry_after_ms",
                  "message", "limit": label, "resets_at": iso}
        """
        if rid in self._open:
            raise ValueError(f"reservation {rid!r} already exists")
        if rid in self._settled:    # a reserve arriving after its own release: no one would settle it
            raise ValueError(f"request {rid!r} was settled already: it cannot be reserved again")
        max_m = to_micros(max_cost_usd, "max_cost_usd")
        est = int(est_tokens)
        if est < 0:
            raise ValueError(f"est_tokens must be >= 0, got {est_tokens!r}")
        now = self._clock()
        sp = self._specs_for(key_id, env, now)
        # check everything first
        for i, (lim, c) in enumerate(sp.bpairs):
            if c.used + c.reserved + max_m > lim:
                return self._refuse_budget(sp.budgets[i], c, max_m, now)
        for i, (lim, c) in enumerate(sp.rpairs):
            if c.used >= lim:
                return self._refuse_limit(sp.requests[i], now)
        for i, (lim, c) in enumerate(sp.tpairs):
            if c.used + c.reserved + est > lim:
                return self._refuse_limit(sp.tokens[i], now)
        # then apply
        for c in sp.cb:
            c.reserved += max_m
        for c in sp.cr:
            c.used += 1
        for c in sp.ct:
            c.reserved += est
        self._open[rid] = _Res(key_id, env, max_m, est, now, sp.cb, sp.ct, pid=pid)
        rem, label = self._tightest(sp)
        req = None
        for lim, c in sp.rpairs:
            left = lim - c.used
            if req is None or left < req:
                req = left
        return {"ok": True, "remaining_usd": rem, "budget": label, "requests_remaining": req}

    @staticmethod
    def _tightest(sp: _Specs) -> tuple[float | None, str | None]:
        """min over the budgets of amount - spent - reserved (micro-dollars -> USD), and its label."""
        best = None
        at = 0
        for i, (lim, c) in enumerate(sp.bpairs):
            left = lim - c.used - c.reserved
            if best is None or left < best:
                best, at = left, i
        return (None, None) if best is None else (to_usd(best), sp.budgets[at].label)

    def _refuse_budget(self, s: _Spec, c: _Counter, max_m: int, now: float) -> dict:
        return budget_refusal(s.label, s.limit - c.used - c.reserved, max_m, self._bounds(s.period, now)[1])

    def _refuse_limit(self, s: _Spec, now: float) -> dict:
        return limit_refusal(s.label, self._bounds(s.period, now)[1], now)

    # --- settle ------------------------------------------------------------------------------
    def settle(self, rid: str, cost_usd: float, tokens: int, key_id: str = "", env: str = "",
               saved_usd: float = 0.0) -> dict:
        """Replace reservation `rid` by the real cost and tokens, on the counters it reserved.

        Returns {"cost_usd", "remaining_usd", "budget", "charged", "corrected"}: remaining /
        budget as in reserve, over the current periods of the key and env; `charged` is False
        when `rid` was already settled (nothing charged again); `corrected` is True when `rid` had
        expired (charged at its maximum) and is now charged its real cost instead. For a rid the ledger never saw (or forgot),
        the cost and tokens go to the current periods of `key_id` / `env`. `saved_usd` is what a
        cache hit saved; it is kept per key and env (`savings()`), outside every budget.
        """
        cost_m = to_micros(cost_usd, "cost_usd")
        if saved_usd and rid not in self._settled:
            k = (key_id, env)
            self._saved[k] = self._saved.get(k, 0) + to_micros(saved_usd, "saved_usd")
        tokens = int(tokens)
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        now = self._clock()
        charged = True
        corrected = False
        r = self._open.pop(rid, None)
        if r is not None:
            max_m, est = r.max_m, r.est
            for c in r.budgets:
                c.reserved -= max_m
                c.used += cost_m
            for c in r.tokens:
                c.reserved -= est
                c.used += tokens
            key_id, env = r.key, r.env
            self._remember(rid, now)
        elif rid in self._settled:
            charged = False
        elif rid in self._expired:
            # already charged at its max when it expired: correct to the real cost
            r = self._expired.pop(rid)
            d_m, d_t = cost_m - r.max_m, tokens - r.est
            for c in r.budgets:
                c.used += d_m
            for c in r.tokens:
                c.used += d_t
            key_id, env = r.key, r.env
            self._remember(rid, now)
            corrected = True
        else:
            sp = self._specs_for(key_id, env, now)
            for c in sp.cb:
                c.used += cost_m
            for c in sp.ct:
                c.used += tokens
            self._remember(rid, now)
        rem, label = self._tightest(self._specs_for(key_id, env, now))
        return {"cost_usd": to_usd(cost_m), "remaining_usd": rem, "budget": label, "charged": charged,
                "corrected": corrected}

    def _remember(self, rid: str, now: float) -> None:
        self._settled[rid] = now
        q = self._settled_q
        q.append((rid, now))
        if len(q) > self._settled_max:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        rid, t = self._settled_q.popleft()
        if self._settled.get(rid) == t:     # not settled again since (a re-used rid)
            del self._settled[rid]
        if t > self._known_after:
            self._known_after = t

    # --- replay ------------------------------------------------------------------------------
    def replay(self, stamp: float, rid: str, cost_usd: float, tokens: int, key_id: str = "", env: str = "",
               saved_usd: float = 0.0) -> dict | None:
        """A settle sent again by the process that relayed its answer (frontend/outcomes.py), to a
        ledger that restarted or because the worker that sent it died. `stamp` is when that process
        got it (epoch seconds, this node's clock), at most REPLAY_LAG after the worker sent it.
        Returns `settle`'s reply, or None when it was skipped as already counted.

        After a crash (kill -9) the ledger restores its last snapshot: the changes of the last
        moments before the crash are gone, and the replays put them back. Each case of a replayed
        settle of `rid`, by when the request was reserved and settled relative to the snapshot:

        1. reserved before the snapshot, settled after: the snapshot has its reservation open;
           the replay settles it (without it, the reservation was charged its maximum at its TTL).
        2. reserved and settled after the snapshot: the ledger does not know the rid; the replay
           charges its cost to the current periods of its key and env, as any settle of an unknown
           rid (its request count, taken at reserve, is lost: rate limits only, never money).
        3. settled before the snapshot, and listed in it (the snapshot lists the rids settled in
           its last SNAPSHOT_SETTLED_SECONDS): a duplicate, nothing changes.
        4. settled before the snapshot and not listed (settled earlier than that): its cost is in
           the snapshot's counters, and the rid is unknown, as in case 2. The snapshot records
           the time after which its list is complete (`settled_after`, restored as
           `_known_after`). The ledger settled it no earlier than the worker sent it, so no
           earlier than `stamp - REPLAY_LAG`: an unknown rid stamped at or before `settled_after +
           REPLAY_LAG` may be case 4 and is skipped; one stamped later cannot be, it is case 2.
        5. expired before or after the snapshot (charged its maximum): corrected to its cost, as
           any late settle.
        6. still open, or settled since the restart (the worker's own settle, or another replay,
           got there first): as a settle: settles it, or nothing.

        A settle of a request never reserved (a cache hit, the zero settle of a reserve that got no
        answer) is case 2 or 4 alike. A ledger that restored no snapshot knows every rid it
        settled (`_known_after` = -inf; so does one that restored a snapshot written before
        snapshots recorded `settled_after`): an unknown rid is charged, as by `settle`.

        Where this can be wrong, both needing a stall of a second or more at the moment of a
        crash: a settle the relaying process got more than REPLAY_LAG after the worker sent it
        (the frontend stalled), settled just before the snapshot's list begins, is counted twice;
        one the ledger applied more than SNAPSHOT_SETTLED_SECONDS - REPLAY_LAG after the relaying
        process got it (the ledger stalled) and then lost in the crash is skipped."""
        if (stamp - REPLAY_LAG <= self._known_after and rid not in self._open and rid not in self._settled
                and rid not in self._expired):
            return None
        return self.settle(rid, cost_usd, tokens, key_id, env, saved_usd)

    # --- expire ------------------------------------------------------------------------------
    def owners(self) -> set[int]:
        """The worker processes holding open reservations (0, unknown, left out)."""
        return {r.pid for r in self._open.values() if r.pid}

    def expire(self, dead: frozenset[int] | set[int] = frozenset()) -> list[str]:
        """Charge reservations older than the TTL, and those held by the `dead` worker processes,
        at their maximum and close them; also forget settled / expired rids past retention and
        drop counters whose period has ended. Returns the expired rids (`expired_charge` says
        what each was charged)."""
        now = self._clock()
        cutoff = now - self._ttl
        out = [rid for rid, r in self._open.items() if r.created < cutoff or r.pid in dead]
        for rid in out:
            r = self._open.pop(rid)
            for c in r.budgets:
                c.reserved -= r.max_m
                c.used += r.max_m
            for c in r.tokens:
                c.reserved -= r.est
                c.used += r.est
            r.expired_at = now
            self._expired[rid] = r
            if len(self._expired) > self._settled_max:
                self._expired.popitem(last=False)
        old = now - self._retention
        q, ex = self._settled_q, self._expired
        while q and q[0][1] < old:
            self._forget_oldest()
        while ex and next(iter(ex.values())).expired_at < old:
            ex.popitem(last=False)
        self._prune(now)
        return out

    def expired_charge(self, rid: str) -> tuple[str, str, float] | None:
        """(key, env, USD charged) of a reservation `expire` closed, while it is remembered."""
        r = self._expired.get(rid)
        return None if r is None else (r.key, r.env, to_usd(r.max_m))

    def _prune(self, now: float) -> None:
        ended = [b for b, c in self._table.items() if self._bounds(b[3], now)[0] != c.start]
        for base in ended:
            del self._table[base]
        if ended:
            self._gen += 1

    # --- persistence -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to resume: counters, open and expired reservations, settled rids (of
        the last SNAPSHOT_SETTLED_SECONDS: every rid settled after `settled_after`; see `replay`).
        JSON-able; money in integer micro-dollars."""
        def res(rid: str, r: _Res) -> dict:
            return {"rid": rid, "key": r.key, "env": r.env, "max_micros": r.max_m, "est_tokens": r.est,
                    "created": r.created, "expired_at": r.expired_at, "pid": r.pid,
                    "budgets": [c.ref() for c in r.budgets], "tokens": [c.ref() for c in r.tokens]}
        settled, after = self._recently_settled()
        return {"version": SNAPSHOT_VERSION,
                "counters": [[*c.base, c.start, c.used, c.reserved] for c in self._table.values()],
                "reservations": [res(rid, r) for rid, r in self._open.items()],
                "expired": [res(rid, r) for rid, r in self._expired.items()],
                "settled": settled, "settled_after": after,
                "saved": [[k, e, m] for (k, e), m in self._saved.items()]}

    def _recently_settled(self) -> tuple[list, float]:
        """Settled rids of the last SNAPSHOT_SETTLED_SECONDS, oldest first, and the time after
        which the list is complete. A settle that could arrive twice arrives within moments;
        keeping every remembered rid in each snapshot would make the snapshot grow with the
        request rate (tens of thousands of rids a minute)."""
        after = max(self._clock() - SNAPSHOT_SETTLED_SECONDS, self._known_after)
        out = []
        for rid, t in reversed(self._settled_q):
            if t < after:       # those settled at `after` itself may be incomplete: listed anyway
                break
            if self._settled.get(rid) == t:
                out.append([rid, t])
        out.reverse()
        return out, after

    def restore(self, snap: dict) -> None:
        """Replace the state by a snapshot's; counters whose period has ended are dropped (the
        reservations holding them keep private copies, as for a rollover)."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown ledger snapshot version {snap.get('version')!r}")
        now = self._clock()
        self._table = {}
        self._specs.clear()
        self._pb.clear()
        self._gen += 1
        for level, owner, kind, period, env, start, used, reserved in snap["counters"]:
            if self._bounds(period, now)[0] == start:
                base = (level, owner, kind, period, env)
                self._table[base] = _Counter(base, start, int(used), int(reserved))
        detached: dict[tuple, _Counter] = {}

        def resolve(ref: list) -> _Counter:
            base, start = tuple(ref[:5]), ref[5]
            c = self._table.get(base)
            if c is not None and c.start == start:
                return c
            c = detached.get((base, start))
            if c is None:
                c = detached[(base, start)] = _Counter(base, start)
            return c

        def res(d: dict) -> _Res:
            return _Res(d["key"], d["env"], int(d["max_micros"]), int(d["est_tokens"]), d["created"],
                        tuple(resolve(x) for x in d["budgets"]), tuple(resolve(x) for x in d["tokens"]),
                        d.get("expired_at"), d.get("pid", 0))
        self._open = {d["rid"]: res(d) for d in snap["reservations"]}
        self._expired = OrderedDict((d["rid"], res(d)) for d in snap.get("expired", ()))
        settled = sorted(((rid, t) for rid, t in snap.get("settled", ())), key=lambda x: x[1])
        self._settled = dict(settled)
        self._settled_q = deque(settled)
        after = snap.get("settled_after")      # None: an older snapshot (its unknown rids are charged)
        self._known_after = -math.inf if after is None else float(after)
        self._saved = {(k, e): int(m) for k, e, m in snap.get("saved", ())}

    def savings(self, key_id: str | None = None) -> list[dict]:
        """What cache hits saved, all time: [{"key", "env", "saved_usd"}], for one key or all."""
        return [{"key": k, "env": e, "saved_usd": to_usd(m)} for (k, e), m in sorted(self._saved.items())
                if key_id is None or k == key_id]

    # --- reporting ---------------------------------------------------------------------------
    def usage(self, key_id: str | None = None) -> list[dict]:
        """Current period of every budget and limit of a key's scopes (key, team, customer), or of
        every key, team and customer in the directory. Read-only (creates no counter).

        budget:  {"level", "owner", "kind": "budget", "period", "env", "label", "limit_usd",
                  "spent_usd", "reserved_usd", "remaining_usd", "period_start", "resets_at"}
        limit:   {"level", "owner", "kind": "requests"|"tokens", "period", "env", "label",
                  "limit", "used", "reserved", "remaining", "period_start", "resets_at"}
        (remaining = limit - used - reserved, negative when overspent)
        """
        now = self._clock()
        out: list[dict] = []
        for line in usage_lines(self._dir, key_id):
            c, (start, end) = self._peek(line.base, line.period, now)
            used, res = (c.used, c.reserved) if c else (0, 0)
            out.append(usage_entry(line, used, res, start, end))
        return out
