"""The ledger actor: one process that owns every budget and rate-limit counter.

    python -m finops.workers.governance.ledger      (started by `finops serve`, or the Procfile)

Why an actor and not an atomic store: a single owner applies reserve and settle one message at a
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

    {"k": "reserve", "i": n, "r", "rid", "key", "env", "max": usd, "tok": tokens} -> {"i": n, ...LedgerState.reserve}
    {"k": "settle", "rid", "key", "env", "cost": usd, "tok": tokens}                (no reply)
    {"k": "usage", "i": n, "r", "key": id | None}                                 -> {"i": n, "usage": [...]}
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

import msgpack
import trio

from finops.shared import config as configmod
from finops.shared import transport
from finops.shared.logs import setup_logging
from finops.shared.transport import zmq

from .directory import load_directory
from .ledger_state import LedgerState
from .store import Store

log = logging.getLogger("finops.ledger")

SNAPSHOT_SECONDS = 1.0
RELOAD_SECONDS = 1.0
_pack = msgpack.Packer(use_bin_type=True).pack


class LedgerActor:
    def __init__(self, cfg: configmod.Config, clock=time.time):
        self.cfg = cfg
        self.store = Store.open(cfg.server.data_dir)
        self.store.sync_config(cfg.governance)
        self.version = self.store.data_version()
        g = cfg.governance
        self.state = LedgerState(load_directory(self.store, cfg), clock=clock, tz=g.timezone,
                                 reservation_ttl=g.reservation_ttl_seconds)
        snap = self.store.load_snapshot()
        if snap:
            self.state.restore(snap)
            log.info("ledger restored its counters from %s", self.store.path)
        self.dirty = False
        self.replies: dict[str, transport.AsyncSocket] = {}

    def handle(self, msg: dict) -> dict | None:
        k = msg.get("k")
        if k == "reserve":
            self.dirty = True
            try:
                out = self.state.reserve(msg["rid"], msg["key"], msg.get("env", ""), msg["max"], msg["tok"])
            except ValueError as e:
                out = {"ok": False, "code": "ValidationException", "status": 400, "message": str(e)}
            out["i"] = msg["i"]
            return out
        if k == "settle":
            self.dirty = True
            self.state.settle(msg["rid"], msg["cost"], msg["tok"], key_id=msg.get("key", ""), env=msg.get("env", ""))
            return None
        if k == "usage":
            return {"i": msg["i"], "usage": self.state.usage(msg.get("key"))}
        log.warning("ledger: unknown message kind %r", k)
        return None

    def maybe_reload(self) -> None:
        v = self.store.data_version()
        if v != self.version:
            self.version = v
            self.state.set_directory(load_directory(self.store, self.cfg))
            log.info("ledger: keys, teams or customers changed; reloaded")

    def save(self) -> None:
        self.state.expire()
        if self.dirty:
            self.store.save_snapshot(self.state.snapshot())
            self.version = self.store.data_version()
            self.dirty = False

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        s = self.cfg.server
        pull = transport.make_socket(zmq.PULL)
        endpoint = transport.bind(pull, transport.endpoint_for("ledger", self.cfg.run_dir, s.transport))
        sock = transport.AsyncSocket(pull)
        announced = transport.announce(self.cfg.run_dir, "ledger", endpoint)
        log.info("ledger ready at %s", endpoint)
        unpackb = msgpack.unpackb
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._housekeeping)
                nursery.start_soon(self._signals, nursery.cancel_scope)
                task_status.started(endpoint)
                while True:
                    data = await sock.recv()
                    for d in [data] + sock.recv_batch_nowait():
                        try:
                            msg = unpackb(d, raw=False)
                            out = self.handle(msg)
                        except Exception:
                            log.exception("ledger: bad message")
                            continue
                        if out is not None:
                            self.reply_socket(msg["r"]).send_nowait(_pack(out))
        finally:
            transport.withdraw(announced)
            self.save()
            self.store.close()
            sock.close()
            for r in self.replies.values():
                r.close()

    def reply_socket(self, endpoint: str) -> transport.AsyncSocket:
        s = self.replies.get(endpoint)
        if s is None:
            if len(self.replies) > 1024:         # workers come and go; forget the oldest
                old = next(iter(self.replies))
                self.replies.pop(old).close()
            sock = transport.make_socket(zmq.PUSH)
            sock.connect(endpoint)
            s = self.replies[endpoint] = transport.AsyncSocket(sock)
        return s

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(SNAPSHOT_SECONDS)
            try:
                self.maybe_reload()
                self.save()
            except Exception:
                log.exception("ledger: snapshot or reload failed; retrying")

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                log.info("ledger: stopping (counters saved)")
                scope.cancel()
                return


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="finops-ledger")
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    setup_logging("ledger")
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"finops ledger: config error: {e}", file=sys.stderr)
        return 2
    trio.run(LedgerActor(cfg).serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
