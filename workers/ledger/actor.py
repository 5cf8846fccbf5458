"""The ledger actor: one process that owns every budget and rate-limit counter.

    python -m finops.workers.ledger.actor      (started by `finops serve`, or the Procfile)

The loop and the sockets are `finops.shared.actors.BlockingActor`'s. Why an actor and not an atomic store: a single owner applies reserve and settle one message at a
time, so limits are exact across every worker process with no locks, no retries and no
read-modify-write races, and a check costs a ZeroMQ round trip (tens of microseconds) instead of
a SQLite write transaction (a write lock shared by every worker, and an fsync). Durability comes
from snapshots: the state is written to SQLite (WAL) every `SNAPSHOT_SECONDS` when it changed and
at shutdown, and restored at start. A crash (kill -9) loses the counter changes made since the last
snapshot (at most about a second), and the settles still queued for it; the frontends put the
settles back: each keeps the settles of the answers it relayed (the last few seconds before it
last saw the ledger alive), notices the restarted ledger (a new process announced in the run
directory) and sends them again, stamped with when it got them (`{"k": "replay"}`,
frontend/outcomes.py). `LedgerState.replay` counts each once: it settles the reservations the
snapshot has open (else charged in full at their TTL), charges the settles of requests reserved
after the snapshot, and skips those the snapshot already counted (its docstring has every case).
What stays lost: the request counts of the requests reserved after the snapshot (rate limits,
not money). Reservations in flight at a crash are settled by the workers anyway (settle of an
unknown reservation still charges).

Two backends, one protocol (backend.py): `[governance] ledger = "local"` keeps the counters in
this process (LedgerState, the snapshots above); `"redis"` keeps them in Redis, shared by every
gateway node (RedisLedger), with settled spend written to PostgreSQL to rebuild them if Redis
loses its data. The actor hands every reserve and settle queued at once to the backend in one
call (`handle_batch`): on Redis one pipelined round trip for all of the node's workers. On Redis a
worker sends its reserves straight to Redis itself (direct.py: the reserve is the one call a
request waits for, and that saves it the hop through this process), and sends here its settles,
its releases and the reserves it could not make (Redis unreachable, its data lost, a script to
load). Redis failures (refuse with 503 or serve uncounted, the circuit, kept settles, the
rebuild) are the backend's; see its docstring.

Protocol (msgpack maps; workers PUSH to the ledger's PULL socket, and the ledger PUSHes replies to
the PULL endpoint `r` each asking worker named; see client.py):

    {"k": "reserve", "i": n, "r", "rid", "key", "env", "max": usd, "tok": tokens, "pid"} -> {"i": n, ...LedgerState.reserve}
    {"k": "settle", "rid", "key", "env", "cost": usd, "tok": tokens}                (no reply)
    {"k": "settles", "s": [[rid, key, env, cost, tokens(, saved)], ...]}            (no reply)
    {"k": "release", "rids": [rid, ...]}                                          (no reply; reservations a
        worker made straight in Redis (direct.py) whose requests never ran: settled at nothing, and
        on Redis not written to PostgreSQL)
    {"k": "uncounted", "n": n}                                                    (no reply; requests a worker
        served uncounted when its own reserve got no answer: finops_ledger_uncounted_total)
    {"k": "replay", "p": [[stamp, rid, key, env, cost, tokens(, saved)], ...]}      (no reply; a frontend's
        settles sent again, each with the epoch time it got it: LedgerState.replay; on Redis, settles)
    any message may carry "s": settles riding along, applied before the message itself
    {"k": "usage", "i": n, "r", "key": id | None}                                 -> {"i": n, "usage": [...], "savings": [...]}
                                                                                     or {"i": n, "error": message} (Redis unreachable)

Reservations no worker will settle. A reservation remembers the worker process (`pid`) that made
it. Once a second the ledger looks at the workers holding reservations; one found dead at two
looks in a row (so its frontend has had a second to send its recent settles again:
frontend/outcomes.py) has its open reservations charged in full, as a reservation older than
`governance.reservation_ttl_seconds` is. Every charge the ledger makes on its own (those, and the
corrections when a late settle arrives for one) is sent to the observer as
`{"k": "charges", "c": [[rid, key, env, cost_usd], ...]}`, which puts it in the request log, so
the log's spend always equals the ledger's (workers/observe/actor.py); the backend's counts go
there too (`{"k": "ledger", "c": {"uncounted": n, ...}}`: finops_ledger_* metrics). On Redis,
owners are "node/pid" and this node expires only its own dead workers' reservations; any node
expires every reservation past the TTL (so a node that died for good is covered).
"""
from __future__ import annotations

import logging
import os
import sys
import time

from finops.shared import actors, transport
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.transport import zmq

from ..governance.directory import load_directory
from ..governance.stores import open_directory, open_store
from . import backend

log = logging.getLogger("finops.ledger")

SNAPSHOT_SECONDS = 1.0     # counters saved at least this often (what a crash of the ledger can lose)
MAX_CHARGES = 100_000      # charges kept while the observer is away


class LedgerActor(BlockingActor):
    kind = "ledger"
    TICK_SECONDS = SNAPSHOT_SECONDS

    def __init__(self, cfg: configmod.Config, clock=time.time):
        super().__init__(cfg, clock)
        self.store = open_store(cfg)                # SQLite, or PostgreSQL (snapshot per node)
        self.store.sync_config(cfg.governance)
        self.directory = open_directory(cfg, self.store)    # the store, or a DirectoryWatcher (PostgreSQL)
        self.version = self.directory.data_version()
        self.backend = backend.open_backend(cfg, load_directory(self.directory, cfg), clock)
        if self.backend.name == "local":
            snap = self.store.load_snapshot()
            if snap and self.backend.restore(snap):
                log.info("ledger restored its counters from %s", self.store.path)
        self.suspects: set[int] = set()     # workers holding reservations found dead at the last look
        self.charges = self.backend.charges  # [rid, key, env, cost_usd] for the observer
        self.observer = actors.Peer(self.run_dir, "observer")
        self.counts: dict[str, int] = {}    # metric increments not sent to the observer yet

    def handle(self, msg: dict) -> dict | None:
        return self.handle_batch([msg])[0]

    def handle_batch(self, msgs: list[dict]) -> list[dict | None]:
        """Every reserve and settle queued at once goes to the backend in one call (on Redis: one
        round trip), in the order received; a usage request sees everything before it. A change of
        keys, budgets or limits is taken first (a local read: SQLite's data_version, or the
        PostgreSQL watcher's copy), so a key a worker already admits is never reserved for under
        the directory it replaced."""
        self.maybe_reload()
        out: list = [None] * len(msgs)
        ops: list = []          # ("reserve" | "settle", args)
        at: list[int] = []      # the message each op answers (-1: a settle, no reply)
        for i, msg in enumerate(msgs):
            try:
                k = msg.get("k")
                for rid, key, env, cost, tokens, *saved in msg.get("s", ()):      # settles riding along
                    ops.append(("settle", (rid, cost, tokens, key, env, saved[0] if saved else 0.0)))
                    at.append(-1)
                if k == "reserve":
                    ops.append(("reserve", (msg["rid"], msg["key"], msg.get("env", ""), msg["max"], msg["tok"],
                                            msg.get("pid", 0))))
                    at.append(i)
                elif k == "settle":
                    ops.append(("settle", (msg["rid"], msg["cost"], msg["tok"], msg.get("key", ""),
                                           msg.get("env", ""), msg.get("saved", 0.0))))
                    at.append(-1)
                elif k == "release":
                    for rid in msg["rids"]:
                        ops.append(("release", (rid, 0.0, 0, "", "", 0.0)))
                        at.append(-1)
                elif k == "uncounted":
                    self.backend.uncounted(int(msg["n"]))
                elif k == "replay":
                    for stamp, rid, key, env, cost, tokens, *saved in msg["p"]:
                        ops.append(("replay", (stamp, rid, cost, tokens, key, env, saved[0] if saved else 0.0)))
                        at.append(-1)
                elif k == "usage":
                    self._apply(ops, at, out)
                    ops, at = [], []
                    out[i] = self.backend.usage(msg.get("key"))
                elif k != "settles":
                    log.warning("ledger: unknown message kind %r", k)
            except (KeyError, TypeError, ValueError):
                log.exception("ledger: bad message")
        self._apply(ops, at, out)
        return out

    def _apply(self, ops: list, at: list[int], out: list) -> None:
        if not ops:
            return
        try:
            replies = self.backend.run(ops)
        except Exception:       # a bug, not Redis (the backend maps that): these get no reply
            log.exception("ledger: a batch of %d reserves and settles failed", len(ops))
            return
        for i, r in zip(at, replies):
            if i >= 0:
                out[i] = r

    def expire(self) -> None:
        """Charge in full the reservations past their TTL and those of workers that died."""
        owners = self.backend.owners()
        dead = {pid for pid in owners if not transport.pid_alive(pid)}
        confirmed, self.suspects = dead & self.suspects, dead
        n = self.backend.expire(confirmed)
        if n:
            log.warning("ledger: %d reservations charged in full (past their TTL, or their worker died)", n)

    def send_charges(self) -> None:
        """The charges the ledger made on its own, to the observer (kept while it is away), and
        the backend's metrics (finops_ledger_*)."""
        for k, n in self.backend.take_counts().items():
            self.counts[k] = self.counts.get(k, 0) + n
        gauges = self.backend.gauges()
        if not (self.charges or self.counts or gauges):
            return
        sock = self.observer.socket()
        if sock is None:
            del self.charges[:-MAX_CHARGES]
            return
        try:
            if self.charges:
                sock.send(actors.pack({"k": "charges", "c": self.charges}), zmq.NOBLOCK)
                self.charges.clear()
            if self.counts:
                sock.send(actors.pack({"k": "ledger", "c": self.counts}), zmq.NOBLOCK)
                self.counts = {}
            if gauges:
                sock.send(actors.pack({"k": "gauges", "proc": f"ledger-{os.getpid()}", "kind": "ledger",
                                       "g": gauges}), zmq.NOBLOCK)
        except zmq.Again:
            del self.charges[:-MAX_CHARGES]

    def maybe_reload(self) -> None:
        v = self.directory.data_version()
        if v != self.version:
            self.version = v
            self.backend.set_directory(load_directory(self.directory, self.cfg))
            log.info("ledger: keys, teams or customers changed; reloaded")

    def save(self) -> None:
        snap = self.backend.snapshot()
        if snap is not None:
            self.store.save_snapshot(snap)

    def tick(self) -> None:
        self.maybe_reload()
        self.backend.tick()
        self.expire()
        self.send_charges()
        self.save()

    def close(self) -> None:
        log.info("ledger: saving its counters")
        self.save()
        self.backend.close()
        self.send_charges()
        self.observer.close()
        self.directory.close()
        self.store.close()


if __name__ == "__main__":
    sys.exit(actors.main(LedgerActor))
