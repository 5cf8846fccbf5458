"""The ledger actor's two backends, one interface: this node's memory, or Redis shared by every node.

    b = open_backend(cfg, directory, clock)       # [governance] ledger = "local" | "redis"
    replies = b.run([("reserve", (rid, key, env, max_usd, est_tokens, pid)),
                     ("settle", (rid, cost_usd, tokens, key, env, saved_usd)),
                     ("replay", (stamp, rid, cost_usd, tokens, key, env, saved_usd)),
                     ("release", (rid, 0.0, 0, "", "", 0.0)), ...])
    b.usage(key_id) -> {"usage": [...], "savings": [...]} (or {"error": message})
    b.owners() -> this node's worker pids holding reservations;  b.expire(dead_pids)
    b.charges                                 # [rid, key, env, usd] the ledger charged on its own
    b.snapshot() / b.restore(snap)            # local only (None / False on Redis)
    b.tick(), b.close(), b.take_counts(), b.gauges()

`run` gets every reserve and settle the actor found queued at once, in the order received (a
worker's settles riding along before its reserve), and returns one reply per reserve (None for a
settle). A replay is a settle a frontend sent again after the ledger or a worker died
(`LedgerState.replay`; on Redis an ordinary settle). A release is a settle of nothing for a
reservation whose request never ran (a worker's own reserve in Redis that may have run: direct.py),
not written to PostgreSQL. `LocalBackend` applies them to `LedgerState` one by one;
`RedisBackend` sends them to Redis in ONE pipelined round trip (`RedisLedger.apply_many`): the
settles of all the node's workers, and the reserves a worker could not make itself (with the
ledger on Redis each worker reserves straight in Redis, direct.py, and hands the actor only what
needs it: Redis unreachable, its data lost, a script to load). README "Ledger on Redis".

Redis failures (`RedisBackend`):

* Redis unreachable or timing out (`LedgerUnavailable`): the circuit opens: for CIRCUIT_SECONDS
  no call is made to Redis (so a stalled Redis costs one `redis_timeout_seconds`, not one per
  request); then the next batch or tick is the probe. Meanwhile reserves are refused with 503
  ServiceUnavailableException (`redis_failure = "closed"`, the default: never a free request)
  or served uncounted (`"open"`: counted in `finops_ledger_uncounted_total`, and logged at most
  every WARN_SECONDS with the counts). Settles are kept (at most MAX_KEPT; the oldest dropped
  and counted) and applied when Redis answers again (settle is idempotent by rid). A batch that
  failed mid-way may have applied some reserves; with "closed" each refused one is released
  later by a zero settle (so it is not charged in full at its TTL); with "open" the worker's own
  settle does it.
* Redis lost its data (`LedgerNotReady`: FLUSHALL, restart or failover to an empty replica):
  the node rebuilds the current periods' counters from the settled spend in PostgreSQL
  (`RedisLedger.rebuild`), then retries the refused reserves once; while it cannot (PostgreSQL
  unreachable, or `RebuildBusy`: another node rebuilds) reserves get a 503 saying so. A tick
  also rebuilds as soon as it sees the ready marker gone, before a request needs it.

Durable truth and why nothing is lost. Every settle, and every charge the ledger makes on its own
(expired reservations, late-settle corrections), is written to PostgreSQL
(`pg_spend.SettledSpend`) by `SpendWriter`, a thread with a bounded queue, batched, off the reply
path: a PostgreSQL outage never blocks admission; rows wait and are written when it returns
(counted in `finops_ledger_dropped_total{what="spend_row"}` if the queue overflows). We write to
Redis first and PostgreSQL just after (not PostgreSQL first: that would hold every settle, and so
every reservation's budget, hostage to PostgreSQL's latency and availability). The window where a
settle is in Redis but not yet in PostgreSQL is closed two ways:
  1. before this node rebuilds it waits for its own queue to reach PostgreSQL (no rebuild while
     it cannot: reserves fail closed), so its rows are in what the rebuild reads;
  2. when a node sees that ANOTHER node rebuilt (the ready marker changed), it settles again in
     Redis what it settled in the last RESETTLE_SECONDS and whatever still waits for PostgreSQL.
     Settle is idempotent by rid and a rebuild remembers the rids of its recent rows as settled,
     so a settle the rebuild already counted changes nothing, and one it missed is charged.
What a loss still forgets: reservations open at the loss (their settles charge the current
periods as unknown rids), the request count of a settle the rebuild missed, and savings.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

from finops.shared import config as configmod
from finops.shared.governance import Directory

from ..governance.money import micros
from ..governance.periods import bounds
from ..governance.pg_schema import redact
from ..governance.pg_spend import SettledCharge, SettledSpend
from ..governance.store import StoreError
from .state import LedgerState, invalid, refusal, served_uncounted, unreachable, usage_lines

log = logging.getLogger("finops.ledger")

CIRCUIT_SECONDS = 1.0       # after a Redis failure, no call to Redis for this long (then one probe)
WARN_SECONDS = 10.0         # "served uncounted" / "Redis down" warnings at most this often
MAX_KEPT = 100_000          # settles kept while Redis is away
RESETTLE_SECONDS = 30.0     # settles sent again after another node's rebuild (see the module doc)
MAX_RECENT = 200_000
FLUSH_SECONDS = 1.0         # a rebuild waits this long for this node's rows to reach PostgreSQL
RETRY_WITHIN = 1.0          # reserves refused for the rebuild are retried if it took less than this
                            # (the workers wait governance.ledger_timeout_seconds, 2 s, for a reply: a
                            # reservation whose reply came too late would be charged in full at its TTL)
MAX_SPEND_ROWS = 200_000    # settled rows waiting for PostgreSQL
SPEND_BATCH = 2000          # rows per PostgreSQL write
SPEND_RETRY_SECONDS = 1.0
SPEND_LINGER_SECONDS = 0.2  # a write waits this long for more rows: at low load one transaction per settle
                            # cost the ledger and PostgreSQL more CPU than the settle (scripts/bench.py governed-redis)


def open_backend(cfg: configmod.Config, directory: Directory, clock=time.time):
    """The backend `[governance] ledger` names."""
    if cfg.governance.ledger == "redis":
        return RedisBackend(cfg, directory, clock)
    g = cfg.governance
    return LocalBackend(LedgerState(directory, clock=clock, tz=g.timezone, reservation_ttl=g.reservation_ttl_seconds))


class LocalBackend:
    """This node's counters in memory (`LedgerState`), saved by the actor as snapshots."""
    name = "local"

    def __init__(self, state: LedgerState):
        self.state = state
        self.dirty = False
        self.charges: list[list] = []

    def run(self, ops: list) -> list:
        out: list = [None] * len(ops)
        st = self.state
        self.dirty = True
        for i, (kind, a) in enumerate(ops):
            if kind == "reserve":
                try:
                    out[i] = st.reserve(a[0], a[1], a[2], a[3], a[4], pid=a[5])
                except ValueError as e:
                    out[i] = invalid(e)
                except Exception:           # one bad message costs its own reply only
                    log.exception("ledger: bad reserve %r", a[:2])
                continue
            if kind == "replay":        # a settle sent again, stamped: (stamp, *settle args)
                stamp, a = a[0], a[1:]
            try:
                if kind == "replay":
                    r = st.replay(stamp, a[0], a[1], a[2], key_id=a[3], env=a[4], saved_usd=a[5])
                    if r is None:       # counted before the snapshot it restored
                        continue
                else:
                    r = st.settle(a[0], a[1], a[2], key_id=a[3], env=a[4], saved_usd=a[5])
            except ValueError as e:
                log.error("ledger: settle of %s refused: %s", a[0], e)
                continue
            except Exception:
                log.exception("ledger: bad settle %r", a[:2])
                continue
            if r["corrected"]:          # it had been charged in full: the log gets the real cost
                self.charges.append([a[0], a[3], a[4], r["cost_usd"]])
        return out

    def usage(self, key_id: str | None) -> dict:
        return {"usage": self.state.usage(key_id), "savings": self.state.savings(key_id)}

    def set_directory(self, directory: Directory) -> None:
        self.state.set_directory(directory)

    def owners(self) -> set[int]:
        return self.state.owners()

    def expire(self, dead: set[int]) -> int:
        expired = self.state.expire(dead)
        for rid in expired:
            key, env, usd = self.state.expired_charge(rid)
            self.charges.append([rid, key, env, usd])
        if expired:
            self.dirty = True
        return len(expired)

    def snapshot(self) -> dict | None:
        """The state to save, when it changed since the last call."""
        if not self.dirty:
            return None
        self.dirty = False
        return self.state.snapshot()

    def restore(self, snap: dict) -> bool:
        self.state.restore(snap)
        return True

    def tick(self) -> None:
        pass

    def uncounted(self, n: int) -> None:
        pass                            # only a worker reserving in Redis serves uncounted

    def take_counts(self) -> dict:
        return {}

    def gauges(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class SpendWriter:
    """Settled charges to PostgreSQL from a thread: a bounded queue, written in batches in order
    (a correction after the charge it corrects), kept and written again while PostgreSQL is away."""

    def __init__(self, url: str, *, max_rows: int = MAX_SPEND_ROWS):
        self.url = url
        self.max_rows = max_rows
        self.cv = threading.Condition()
        self.rows: deque = deque()      # (SettledCharge, replace)
        self.inflight: list = []
        self.ready = False              # connected once and the schema migrated
        self.stopping = False
        self.kick = False
        self.written = 0
        self.dropped = 0
        self.error = ""
        self.thread = threading.Thread(target=self._run, name="finops-spend-writer", daemon=True)
        self.thread.start()

    def add(self, row: SettledCharge, replace: bool = False) -> None:
        with self.cv:
            if len(self.rows) >= self.max_rows:
                self.rows.popleft()
                self.dropped += 1
            self.rows.append((row, replace))
            if len(self.rows) == 1 or len(self.rows) >= SPEND_BATCH:   # what the writer waits for
                self.cv.notify()

    def pending(self) -> list[SettledCharge]:
        """The rows not known to be written yet."""
        with self.cv:
            return [r for r, _ in self.inflight] + [r for r, _ in self.rows]

    def depth(self) -> int:
        return len(self.rows) + len(self.inflight)

    def flush(self, timeout: float) -> bool:
        """Wait until every row added so far is written (False after `timeout`); a writer waiting
        to retry after a failure retries at once."""
        with self.cv:
            self.kick = True
            self.cv.notify_all()
            return self.cv.wait_for(lambda: self.ready and not self.rows and not self.inflight, timeout)

    def close(self, timeout: float = 5.0) -> None:
        if not self.flush(timeout):
            log.error("ledger: %d settled charges could not be written to PostgreSQL (%s) before exit: %s",
                      self.depth(), redact(self.url), self.error)
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.thread.join(timeout)

    def _run(self) -> None:
        spend = SettledSpend(self.url)
        warned = 0.0
        while True:
            with self.cv:
                if self.ready:
                    self.cv.wait_for(lambda: self.rows or self.stopping)
                    self.cv.wait_for(lambda: len(self.rows) >= SPEND_BATCH or self.stopping or self.kick,
                                     SPEND_LINGER_SECONDS)     # flush() kicks: it does not wait
                    self.kick = False
                if self.stopping:
                    break
                n = min(len(self.rows), SPEND_BATCH)
                self.inflight = batch = [self.rows.popleft() for _ in range(n)]
            try:
                if not self.ready:
                    spend.link.open()           # connect and migrate (safe with several nodes)
                i = 0
                while i < len(batch):           # runs of plain rows and corrections, in order
                    j = i
                    while j < len(batch) and batch[j][1] == batch[i][1]:
                        j += 1
                    spend.write([r for r, _ in batch[i:j]], replace=batch[i][1])
                    i = j
            except StoreError as e:
                spend.close()
                with self.cv:
                    self.rows.extendleft(reversed(batch))
                    while len(self.rows) > self.max_rows:
                        self.rows.popleft()
                        self.dropped += 1
                    self.inflight = []
                    self.error = str(e)
                    self.cv.notify_all()
                    if time.monotonic() - warned >= WARN_SECONDS:
                        warned = time.monotonic()
                        log.warning("ledger: settled spend cannot be written to PostgreSQL (%s); %d rows wait "
                                    "and will be written when it is back", e, len(self.rows))
                    self.kick = False
                    self.cv.wait_for(lambda: self.stopping or self.kick, SPEND_RETRY_SECONDS)
                continue
            except Exception:
                log.exception("ledger: writing settled spend failed; %d rows dropped", len(batch))
                with self.cv:
                    self.dropped += len(batch)
                    self.inflight = []
                    self.cv.notify_all()
                continue
            with self.cv:
                if not self.ready or self.error:
                    if self.error:
                        log.warning("ledger: settled spend reaches PostgreSQL again")
                    self.ready, self.error = True, ""
                self.inflight = []
                self.written += len(batch)
                self.cv.notify_all()
        spend.close()


class RedisBackend:
    """Every node's counters in Redis (`RedisLedger`), settled spend in PostgreSQL; see the module doc."""
    name = "redis"

    def __init__(self, cfg: configmod.Config, directory: Directory, clock=time.time, *, monotonic=time.monotonic):
        from .redis_state import RedisLedger
        g = cfg.governance
        self.node = cfg.server.node
        self.prefix = self.node + "/"        # reservation owners: "node/pid"
        self.policy = g.redis_failure
        self.clock = clock
        self.mono = monotonic
        self.tz = g.timezone
        self.dir = directory
        self.led = RedisLedger.from_config(g, directory, clock=clock)
        self.where = self.led.where          # "Redis at HOST:PORT": no password
        self.pg_where = redact(g.postgres_url)
        self.spend = SpendWriter(g.postgres_url)
        self.reader = SettledSpend(g.postgres_url)      # the rebuild's reads (this thread's connection)
        self.charges: list[list] = []
        self.kept: deque = deque()           # settle args not applied to Redis yet
        self.kept_spend: set = set()
        self.recent: deque = deque()         # (monotonic, settle args) applied lately (re-settled after a rebuild)
        self.down_until = 0.0                # the circuit: no Redis call before this (monotonic)
        self.down_since = 0.0
        self.why = ""
        self.marker: bytes | None = None     # the ready marker last seen
        self.next_rebuild = 0.0
        self.rebuild_msg = ""
        self.counts = {"uncounted": 0, "settles_dropped": 0}
        self.totals = {"uncounted": 0, "refused": 0}
        self.warn_at, self.warn_uncounted = 0.0, 0
        self.reported = {"uncounted": 0, "settles_dropped": 0, "spend_dropped": 0}
        log.info("ledger on %s (node %s, redis_failure = %s); settled spend to PostgreSQL %s", self.where,
                 self.node, self.policy, self.pg_where)
        try:
            self.tick()
        except Exception:               # Redis or PostgreSQL not there yet: the next tick tries again
            log.exception("ledger: first look at Redis failed")

    # --- messages ----------------------------------------------------------------------------
    def run(self, ops: list) -> list:
        out: list = [None] * len(ops)
        if not ops:
            return out
        # a replayed settle is a settle here: Redis remembers every rid it settled for the retention
        # (a crash of this actor loses no counter, only what it had not sent to Redis yet)
        ops = [("settle", a[1:]) if kind == "replay" else (kind, a) for kind, a in ops]
        now = self.clock()
        for kind, a in ops:                  # the durable record first in the queue, whatever Redis does
            if kind == "settle":
                self._record(a[0], a[3], a[4], a[1], a[2], a[5], now)
        # a release frees a reservation whose request never ran (a worker's reserve that may
        # have run, direct.py): a settle of nothing, with no row in PostgreSQL
        ops = [("settle", a) if kind == "release" else (kind, a) for kind, a in ops]
        if self.mono() < self.down_until:
            self._down(ops, out, maybe_applied=False)
            return out
        kept = list(self.kept)
        batch = [("settle", a) for a in kept] + [(k, self._owned(k, a)) for k, a in ops]
        try:
            res = self.led.apply_many(batch)
        except self._unavailable as e:
            self._trip(e)
            self._down(ops, out, maybe_applied=True)
            return out
        self._healthy()
        self.kept.clear()
        self._settled(batch[:len(kept)], res[:len(kept)])
        res = res[len(kept):]
        retry = []
        for i, ((kind, a), r) in enumerate(zip(ops, res)):
            if kind == "settle":
                self._settled([("settle", a)], [r])
            elif isinstance(r, self._not_ready):
                retry.append(i)
            elif isinstance(r, ValueError):
                out[i] = invalid(r)
            elif isinstance(r, Exception):
                log.error("ledger: Redis refused reserve %s: %s", a[0], r)
                out[i] = refusal(f"The budget ledger ({self.where}) failed: {r}. Retry shortly.")
            else:
                out[i] = r
        if retry:
            started = time.monotonic()
            msg = self._rebuild()
            if not msg and time.monotonic() - started > RETRY_WITHIN:
                msg = (f"The budget ledger ({self.where}) has just rebuilt its counters; the request was not "
                       f"sent upstream. Retry.")
            if msg:
                for i in retry:
                    out[i] = refusal(msg)
            else:
                again = [ops[i] for i in retry]
                try:
                    res = self.led.apply_many([(k, self._owned(k, a)) for k, a in again])
                except self._unavailable as e:
                    self._trip(e)
                    sub: list = [None] * len(again)
                    self._down(again, sub, maybe_applied=True)
                    res = sub
                for i, r in zip(retry, res):
                    out[i] = (invalid(r) if isinstance(r, ValueError) else
                              refusal(self._lost_msg()) if isinstance(r, Exception) else r)
        return out

    @property
    def _unavailable(self):
        from .redis_state import LedgerUnavailable
        return LedgerUnavailable

    @property
    def _not_ready(self):
        from .redis_state import LedgerNotReady
        return LedgerNotReady

    def _owned(self, kind: str, a: tuple) -> tuple:
        """A reserve's owner is node-prefixed: `expire` passes only this node's dead pids."""
        if kind == "reserve" and a[5]:
            return (*a[:5], f"{self.prefix}{a[5]}")
        return a

    def _record(self, rid: str, key: str, env: str, cost_usd: float, tokens: int, saved_usd: float, at: float,
                replace: bool = False) -> None:
        try:
            cost_m, saved_m = micros(cost_usd), micros(saved_usd or 0.0)
        except (TypeError, ValueError):
            return                           # Redis refuses it too, and says why in the log
        team = customer = ""
        k = self.dir.keys.get(key)
        if k is not None and k.team:
            team = k.team
            t = self.dir.teams.get(team)
            customer = t.customer if t is not None and t.customer else ""
        self.spend.add(SettledCharge(rid, key, env, cost_m, int(tokens), saved_m, at, team, customer), replace)

    def _settled(self, calls: list, results: list) -> None:
        """After settles reached Redis: corrections to the log and to PostgreSQL, and remembered
        for a re-settle after another node's rebuild."""
        now_m = self.mono()
        for (_, a), r in zip(calls, results):
            if isinstance(r, Exception):
                log.error("ledger: Redis refused the settle of %s: %s", a[0], r)
                continue
            self.recent.append((now_m, a))
            if r["corrected"]:
                self.charges.append([a[0], a[3], a[4], r["cost_usd"]])
                self._record(a[0], a[3], a[4], a[1], a[2], a[5], self.clock(), replace=True)
        if len(self.recent) > MAX_RECENT:
            for _ in range(len(self.recent) - MAX_RECENT):
                self.recent.popleft()

    def _keep(self, a: tuple) -> None:
        if len(self.kept) >= MAX_KEPT:
            self.kept.popleft()
            self.counts["settles_dropped"] += 1
        self.kept.append(a)

    def _down(self, ops: list, out: list, maybe_applied: bool) -> None:
        """Redis cannot be used: settles kept, reserves refused or served uncounted (redis_failure)."""
        for i, (kind, a) in enumerate(ops):
            if kind == "settle":
                self._keep(a)
            elif self.policy == "open":
                out[i] = served_uncounted()
                self.counts["uncounted"] += 1
                self.warn_uncounted += 1
            else:
                out[i] = unreachable(self.where)
                self.totals["refused"] += 1
                if maybe_applied:            # it may have been reserved: release it when Redis is back
                    self._keep((a[0], 0.0, 0, a[1], a[2], 0.0))
        self._warn()

    def uncounted(self, n: int) -> None:
        """`n` requests a worker served uncounted on its own (direct.py): counted and warned of."""
        self.counts["uncounted"] += n
        self.warn_uncounted += n
        self._warn()

    def _trip(self, e: Exception) -> None:
        now = self.mono()
        if not self.down_since:
            self.down_since = now
            self.warn_at = 0.0
        self.down_until = now + CIRCUIT_SECONDS
        self.why = str(e)
        self._warn()

    def _healthy(self) -> None:
        if self.down_since:
            log.warning("ledger: %s answers again after %.1f s; %d kept settles applied", self.where,
                        self.mono() - self.down_since, len(self.kept))
            self.down_since = 0.0
            self.down_until = 0.0
        self._warn()

    def _warn(self) -> None:
        now = self.mono()
        if now - self.warn_at < WARN_SECONDS or not (self.down_since or self.warn_uncounted):
            return
        self.warn_at = now
        n, self.warn_uncounted = self.warn_uncounted, 0
        self.totals["uncounted"] += n
        if self.down_since:
            what = ("serving requests uncounted (redis_failure = \"open\")" if self.policy == "open" else
                    "refusing requests with 503 (redis_failure = \"closed\")")
            log.warning("ledger: %s unreachable for %.0f s: %s; %s; %d served uncounted lately (%d in all), "
                        "%d refused in all, %d settles kept: %s", self.where, now - self.down_since, what,
                        "probing every %.0f s" % CIRCUIT_SECONDS, n, self.totals["uncounted"],
                        self.totals["refused"], len(self.kept), self.why)
        elif n:
            log.warning("ledger: %d requests served uncounted lately (%d in all) while %s was unreachable", n,
                        self.totals["uncounted"], self.where)

    # --- lost data ---------------------------------------------------------------------------
    def _lost_msg(self) -> str:
        return (f"The budget ledger ({self.where}) lost its counters and is rebuilding them from the settled "
                f"spend in PostgreSQL; the request was not sent upstream. Retry shortly.")

    def earliest(self, now: float) -> float:
        """The earliest current period start of any budget or limit in the directory."""
        starts = {bounds(line.period, now, self.tz)[0] for line in usage_lines(self.dir, None)}
        return min(starts, default=now)

    def _rebuild(self) -> str:
        """Rebuild the counters after Redis lost them; '' when they are there again, else the
        503 message for the reserves meanwhile (tried again at most every CIRCUIT_SECONDS)."""
        from .redis_state import LedgerUnavailable, RebuildBusy, SettledRow
        now_m = self.mono()
        if now_m < self.next_rebuild:
            return self.rebuild_msg
        self.next_rebuild = now_m + CIRCUIT_SECONDS
        msg = self._lost_msg()
        try:
            # this node's settles first (module doc); not long when PostgreSQL is known to be away
            if not self.spend.flush(FLUSH_SECONDS / 2 if self.spend.error else FLUSH_SECONDS):
                raise StoreError(self.spend.error or "its settled charges are not written yet")
            now = self.clock()
            rows = self.reader.since(self.earliest(now))
            n = self.led.rebuild((SettledRow(r.request_id, r.key_id, r.env, r.cost_micro, r.tokens, r.settled_at)
                                  for r in rows), now)
            self.marker = self.led.marker()
        except RebuildBusy:
            msg = (f"The budget ledger ({self.where}) lost its counters and another gateway node is rebuilding "
                   f"them; the request was not sent upstream. Retry shortly.")
        except LedgerUnavailable as e:
            self._trip(e)
            msg = unreachable(self.where)["message"]
        except (StoreError, ValueError) as e:
            self.reader.close()
            log.error("ledger: cannot rebuild the counters %s lost: settled spend in PostgreSQL: %s", self.where, e)
            msg = (f"The budget ledger ({self.where}) lost its counters and cannot rebuild them until PostgreSQL "
                   f"({self.pg_where}) is reachable; the request was not sent upstream. Retry shortly.")
        else:
            if n is not None:
                log.warning("ledger: %s had lost its counters; rebuilt from %d settled charges in PostgreSQL",
                            self.where, len(rows))
            self.rebuild_msg, self.next_rebuild = "", 0.0
            return ""
        self.rebuild_msg = msg
        return msg

    def _resettle(self) -> None:
        """Another node rebuilt the counters: settle again what may have reached Redis before the
        loss but PostgreSQL only after that rebuild read it (module doc)."""
        seen = set()
        again = []
        for _, a in self.recent:
            if a[0] not in seen:
                seen.add(a[0])
                again.append(a)
        for r in self.spend.pending():
            if r.request_id not in seen:
                seen.add(r.request_id)
                again.append((r.request_id, r.cost_micro / 1e6, r.tokens, r.key_id, r.env, r.saved_micro / 1e6))
        log.warning("ledger: another node rebuilt the counters on %s; settling %d recent charges again "
                    "(those it already counted are recognised)", self.where, len(again))
        for a in again:
            self._keep(a)

    # --- the actor's other calls -------------------------------------------------------------
    def usage(self, key_id: str | None) -> dict:
        if self.mono() < self.down_until:
            msg = unreachable(self.where)["message"]
            return {"error": msg.replace("the request was not sent upstream", "no usage to show")}
        try:
            return {"usage": self.led.usage(key_id), "savings": self.led.savings(key_id)}
        except self._unavailable as e:
            self._trip(e)
            return {"error": f"The budget ledger ({self.where}) is unreachable; no usage to show. Retry shortly."}

    def set_directory(self, directory: Directory) -> None:
        self.dir = directory
        self.led.set_directory(directory)

    def owners(self) -> set[int]:
        """This node's worker pids holding reservations (others' are their nodes' to expire)."""
        if self.mono() < self.down_until:
            return set()
        n = len(self.prefix)
        try:
            got = self.led.owners()
        except self._unavailable as e:
            self._trip(e)
            return set()
        return {int(p[n:]) for p in got if isinstance(p, str) and p.startswith(self.prefix) and p[n:].isdigit()}

    def expire(self, dead: set[int]) -> int:
        """Charge in full the reservations past their TTL (any node's: a node that died for good
        is expired by the others) and those of this node's dead workers."""
        if self.mono() < self.down_until:
            return 0
        try:
            rids = self.led.expire([f"{self.prefix}{p}" for p in dead])
            now, now_m = self.clock(), self.mono()
            for rid in rids:
                got = self.led.expired_charge(rid)
                if got is None:
                    continue
                key, env, usd = got
                self.charges.append([rid, key, env, usd])
                self._record(rid, key, env, usd, 0, 0.0, now)
                self.recent.append((now_m, (rid, usd, 0, key, env, 0.0)))
        except self._unavailable as e:
            self._trip(e)
            return 0
        return len(rids)

    def snapshot(self) -> dict | None:
        return None                          # Redis is the store

    def restore(self, snap: dict) -> bool:
        return False

    def tick(self) -> None:
        now_m = self.mono()
        while self.recent and now_m - self.recent[0][0] > RESETTLE_SECONDS:
            self.recent.popleft()
        self._warn()
        if now_m < self.down_until:
            return
        try:
            m = self.led.marker()                # also the circuit's probe
            if m is not None and m != self.marker:
                if self.marker is not None:
                    self._resettle()
                self.marker = m
            self._healthy()
            if m is None:
                self._rebuild()
            if self.kept:
                kept = list(self.kept)
                res = self.led.apply_many([("settle", a) for a in kept])
                self.kept.clear()
                self._settled([("settle", a) for a in kept], res)
        except self._unavailable as e:
            self._trip(e)

    def take_counts(self) -> dict:
        """Increments since the last call, for the observer's metrics."""
        cur = {"uncounted": self.counts["uncounted"], "settles_dropped": self.counts["settles_dropped"],
               "spend_dropped": self.spend.dropped}
        out = {k: v - self.reported[k] for k, v in cur.items() if v != self.reported[k]}
        self.reported = cur
        return out

    def gauges(self) -> dict:
        return {"queues": {"ledger_settles_kept": len(self.kept), "ledger_spend_rows": self.spend.depth()}}

    def close(self) -> None:
        try:
            if self.kept and self.mono() >= self.down_until:
                self.tick()
        except Exception:
            log.exception("ledger: applying the kept settles at exit failed")
        if self.kept:
            log.error("ledger: %d settles could not be applied to %s before exit (they are in PostgreSQL's "
                      "settled spend unless listed as dropped)", len(self.kept), self.where)
        self.spend.close()
        self.reader.close()
        self.led.close()


__all__ = ["open_backend", "LocalBackend", "RedisBackend", "SpendWriter", "refusal", "CIRCUIT_SECONDS"]
