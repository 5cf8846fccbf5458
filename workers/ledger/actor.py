"""The ledger actor: one process that owns every budget and rate-limit counter.

    python -m finops.workers.ledger.actor      (started by `finops serve`, or the Procfile)

The loop and the sockets are `finops.shared.actors.BlockingActor`'s. Why an actor and not an atomic store: a single owner applies reserve and settle one message at a
time, so limits are exact across every worker process with no locks, no retries and no
read-modify-write races, and a check costs a ZeroMQ round trip (tens of microseconds) instead of
a SQLite write transaction (a write lock shared by every worker, and an fsync). Durability comes
from snapshots: the state is written to SQLite (WAL) every `SNAPSHOT_SECONDS` when it changed and
at shutdown, and restored at start. A crash (kill -9) loses at most the last second of counter
changes; reservations in flight at a crash are settled by the workers anyway (settle of an
unknown reservation still charges). The same request/reply protocol can be served by a Redis
implementation (`client.LedgerClient` is the seam) for multi-node deployments.

Protocol (msgpack maps; workers PUSH to the ledger's PULL socket, and the ledger PUSHes replies to
the PULL endpoint `r` each asking worker named; see client.py):

    {"k": "reserve", "i": n, "r", "rid", "key", "env", "max": usd, "tok": tokens, "pid"} -> {"i": n, ...LedgerState.reserve}
    {"k": "settle", "rid", "key", "env", "cost": usd, "tok": tokens}                (no reply)
    {"k": "settles", "s": [[rid, key, env, cost, tokens(, saved)], ...]}            (no reply)
    any message may carry "s": settles riding along, applied before the message itself
    {"k": "usage", "i": n, "r", "key": id | None}                                 -> {"i": n, "usage": [...], "savings": [...]}

Reservations no worker will settle. A reservation remembers the worker process (`pid`) that made
it. Once a second the ledger looks at the workers holding reservations; one found dead at two
looks in a row (so its frontend has had a second to send its recent settles again:
frontend/outcomes.py) has its open reservations charged in full, as a reservation older than
`governance.reservation_ttl_seconds` is. Every charge the ledger makes on its own (those, and the
corrections when a late settle arrives for one) is sent to the observer as
`{"k": "charges", "c": [[rid, key, env, cost_usd], ...]}`, which puts it in the request log, so
the log's spend always equals the ledger's (workers/observe/actor.py).
"""
from __future__ import annotations

import logging
import sys
import time

from finops.shared import actors, transport
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.transport import zmq

from ..governance.directory import load_directory
from ..governance.stores import open_directory, open_store
from .state import LedgerState

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
        g = cfg.governance
        self.state = LedgerState(load_directory(self.directory, cfg), clock=clock, tz=g.timezone,
                                 reservation_ttl=g.reservation_ttl_seconds)
        snap = self.store.load_snapshot()
        if snap:
            self.state.restore(snap)
            log.info("ledger restored its counters from %s", self.store.path)
        self.dirty = False
        self.suspects: set[int] = set()     # workers holding reservations found dead at the last look
        self.charges: list[list] = []       # [rid, key, env, cost_usd] for the observer
        self.observer: zmq.Socket | None = None
        self.observer_endpoint = ""

    def handle(self, msg: dict) -> dict | None:
        k = msg.get("k")
        for rid, key, env, cost, tokens, *saved in msg.get("s", ()):      # settles riding along
            self.settle(rid, key, env, cost, tokens, saved[0] if saved else 0.0)
        if k == "settles":
            return None
        if k == "reserve":
            self.dirty = True
            try:
                out = self.state.reserve(msg["rid"], msg["key"], msg.get("env", ""), msg["max"], msg["tok"],
                                         pid=msg.get("pid", 0))
            except ValueError as e:
                out = {"ok": False, "code": "ValidationException", "status": 400, "message": str(e)}
            return out
        if k == "settle":
            self.settle(msg["rid"], msg.get("key", ""), msg.get("env", ""), msg["cost"], msg["tok"],
                        msg.get("saved", 0.0))
            return None
        if k == "usage":
            return {"usage": self.state.usage(msg.get("key")),
                    "savings": self.state.savings(msg.get("key"))}
        log.warning("ledger: unknown message kind %r", k)
        return None

    def settle(self, rid: str, key: str, env: str, cost: float, tokens: int, saved: float) -> None:
        self.dirty = True
        out = self.state.settle(rid, cost, tokens, key_id=key, env=env, saved_usd=saved)
        if out["corrected"]:            # it had been charged in full: the log gets the real cost
            self.charges.append([rid, key, env, out["cost_usd"]])

    def expire(self) -> None:
        """Charge in full the reservations past their TTL and those of workers that died."""
        owners = self.state.owners()
        dead = {pid for pid in owners if not transport.pid_alive(pid)}
        confirmed, self.suspects = dead & self.suspects, dead
        expired = self.state.expire(confirmed)
        for rid in expired:
            key, env, usd = self.state.expired_charge(rid)
            self.charges.append([rid, key, env, usd])
        if expired:
            self.dirty = True
            log.warning("ledger: %d reservations charged in full (past their TTL, or their worker died)",
                        len(expired))

    def send_charges(self) -> None:
        """The charges the ledger made on its own, to the observer (kept while it is away)."""
        if not self.charges:
            return
        found = transport.discover(self.run_dir, "observer")
        if not found:
            del self.charges[:-MAX_CHARGES]
            return
        endpoint = found[max(found)]
        if endpoint != self.observer_endpoint:
            if self.observer is not None:
                self.observer.close(linger=0)
            self.observer = transport.make_socket(zmq.PUSH)
            self.observer.connect(endpoint)
            self.observer_endpoint = endpoint
        try:
            self.observer.send(actors.pack({"k": "charges", "c": self.charges}), zmq.NOBLOCK)
            self.charges = []
        except zmq.Again:
            del self.charges[:-MAX_CHARGES]

    def maybe_reload(self) -> None:
        v = self.directory.data_version()
        if v != self.version:
            self.version = v
            self.state.set_directory(load_directory(self.directory, self.cfg))
            log.info("ledger: keys, teams or customers changed; reloaded")

    def save(self) -> None:
        if self.dirty:
            self.store.save_snapshot(self.state.snapshot())
            self.dirty = False

    def tick(self) -> None:
        self.maybe_reload()
        self.expire()
        self.send_charges()
        self.save()

    def close(self) -> None:
        log.info("ledger: saving its counters")
        self.save()
        self.send_charges()
        if self.observer is not None:
            self.observer.close(linger=1000)
        self.directory.close()
        self.store.close()


if __name__ == "__main__":
    sys.exit(actors.main(LedgerActor))
