"""Single-owner actor processes and the workers' side of talking to them.

The gateway has a few pieces of state that must have exactly one owner across every worker
process: the governance ledger (budgets and rate limits), the semantic cache's index, and the
request log's writer. Each is an actor: one process that applies messages one at a time, so it
needs no locks, and that answers over ZeroMQ.

    worker ──PUSH──▶ actor's PULL        requests (msgpack maps)
    worker's PULL ◀──PUSH── actor        replies, to the endpoint named in the request's "r"

`BlockingActor` is the actor loop: plain blocking ZeroMQ, no event loop. An actor does one thing
at a time by design, and a blocking poll costs a few microseconds per message where an async
loop's wake-up costs tens (measured with the harness on the ledger: 0.13 ms of ledger CPU per
request under trio, most of it scheduling). A subclass gives `handle(msg)` (return a reply map, which
goes back carrying the request's number `i`, or None), or `handle_batch(msgs)` to take every
message queued at once (the ledger applies them in one Redis round trip), `tick()` (called every `TICK_SECONDS`: snapshots, expiry) and `close()` (final save).

`ActorClient` is the trio side, one per worker per actor: a PUSH socket to the actor found in
the run directory (re-discovered when the actor restarts) and one PULL socket for replies, shared
by every request of the worker; each request carries a number `i` and waits for the reply with
the same number, within a timeout.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

import msgpack

from . import config as configmod
from . import errors, transport
from .logs import setup_logging
from .lazy import lazy
from .transport import zmq

trio = lazy("trio", globals())     # only `ActorClient` (workers, frontends) uses trio; the actors never do

log = logging.getLogger("finops.actors")
_pack = msgpack.Packer(use_bin_type=True).pack
pack = _pack      # how every actor message is encoded

MAX_REPLY_SOCKETS = 1024      # reply endpoints an actor keeps open; workers come and go, the oldest is closed


class BlockingActor:
    kind = "actor"          # the name it announces in the run directory
    TICK_SECONDS = 1.0

    def __init__(self, cfg: configmod.Config, clock=time.time):
        """`clock`: the time the actor's state is kept in (tests inject one)."""
        self.cfg = cfg
        self.clock = clock
        self.run_dir = cfg.run_dir
        self.transport_kind = cfg.server.transport
        self.replies: dict[str, zmq.Socket] = {}
        self._pull: zmq.Socket | None = None
        self._draining = False

    def handle(self, msg: dict) -> dict | None:
        raise NotImplementedError

    def handle_batch(self, msgs: list[dict]) -> list[dict | None]:
        """The messages queued at once, in the order received (each sender's in its own order):
        one reply (or None) per message. The default handles them one by one; an actor that can
        do a batch in one go (the ledger: one pipelined Redis round trip) overrides it. An actor
        that overrides it gets every queued message here, so `drain()` from inside is not for it."""
        return [self.handle(m) for m in msgs]

    def tick(self) -> None:
        """Periodic work (snapshots, expiry); called between messages."""

    def close(self) -> None:
        """Final work at shutdown (save state)."""

    def serve(self) -> None:
        """Run until SIGTERM or SIGINT."""
        pull = transport.make_socket(zmq.PULL)
        endpoint = transport.bind(pull, transport.endpoint_for(self.kind, self.run_dir, self.transport_kind))
        announced = transport.announce(self.run_dir, self.kind, endpoint)
        log.info("%s ready at %s", self.kind, endpoint)
        stop = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(True))
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        self._pull = pull
        next_tick = time.monotonic() + self.TICK_SECONDS
        try:
            while not stop:
                if poller.poll(timeout=min(200, int(self.TICK_SECONDS * 1000))):
                    self._receive(1024)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.TICK_SECONDS
                    try:
                        self.tick()
                    except Exception:
                        log.exception("%s: periodic work failed; retrying", self.kind)
            log.info("%s: stopping", self.kind)
        finally:
            transport.withdraw(announced)
            try:
                self.close()
            finally:
                pull.close(linger=0)
                for r in self.replies.values():
                    r.close(linger=2000)

    def _receive(self, at_most: int) -> None:
        """Handle the messages already queued, up to `at_most`; replies go out as they are made
        (one by one, or all at once through `handle_batch` when the actor overrides it)."""
        if type(self).handle_batch is not BlockingActor.handle_batch:
            return self._receive_batch(at_most)
        pull, unpackb = self._pull, msgpack.unpackb
        for _ in range(at_most):
            try:
                data = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = unpackb(data, raw=False)
                out = self.handle(msg)
            except Exception:
                log.exception("%s: bad message", self.kind)
                continue
            if out is not None and msg.get("r"):
                out["i"] = msg.get("i")
                self.reply_socket(msg["r"]).send(_pack(out), zmq.NOBLOCK)

    def _receive_batch(self, at_most: int) -> None:
        pull, unpackb = self._pull, msgpack.unpackb
        msgs = []
        for _ in range(at_most):
            try:
                data = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msgs.append(unpackb(data, raw=False))
            except Exception:
                log.exception("%s: bad message", self.kind)
        if not msgs:
            return
        try:
            outs = self.handle_batch(msgs)
        except Exception:
            log.exception("%s: a batch of %d messages failed", self.kind, len(msgs))
            return
        for msg, out in zip(msgs, outs):
            if out is not None and msg.get("r"):
                out["i"] = msg.get("i")
                self.reply_socket(msg["r"]).send(_pack(out), zmq.NOBLOCK)

    def drain(self) -> None:
        """From inside `handle`: handle every message already queued first (ZeroMQ queues each
        sender apart, so a message another process sent earlier may still be waiting). A
        request that must see everything sent before it (the observer's flush) calls this."""
        if self._pull is None or self._draining:
            return
        self._draining = True
        try:
            self._receive(100_000)
        finally:
            self._draining = False

    def reply_socket(self, endpoint: str) -> zmq.Socket:
        sock = self.replies.get(endpoint)
        if sock is None:
            if len(self.replies) > MAX_REPLY_SOCKETS:   # workers come and go; forget the oldest
                self.replies.pop(next(iter(self.replies))).close(linger=0)
            sock = self.replies[endpoint] = transport.make_socket(zmq.PUSH)
            sock.connect(endpoint)
        return sock


def main(actor_cls, argv=None) -> int:
    """`python -m <an actor's module> [--config PATH]`: load the config, run the actor until
    SIGTERM. Exit 2 on a config error."""
    ap = argparse.ArgumentParser(prog=f"finops-{actor_cls.kind}")
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    setup_logging(actor_cls.kind)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"finops {actor_cls.kind}: config error: {e}", file=sys.stderr)
        return 2
    actor_cls(cfg).serve()
    return 0


CONNECT_WAIT_MS = 100      # a new connection to an actor is given this long to complete before the first send


def push_to_actor(endpoint: str) -> zmq.Socket:
    """A PUSH socket connected to an actor's endpoint, with ZMQ_IMMEDIATE: a message is queued
    only on a live connection. Without it ZeroMQ keeps queueing messages for an actor that died
    (for the endpoint it had, which its replacement does not reuse), reports them sent, and drops
    them when the sender switches to the replacement's endpoint: request-log rows sent in the
    second after the observer died, and settles sent in the second after the ledger died, were
    lost that way (scripts/soak.py found it). With it a send to a dead actor fails (zmq.Again),
    and every sender keeps what it could not send: the frontend its rows, the ledger client its
    settles, the ledger its charges. The connection is waited for (at most CONNECT_WAIT_MS; on a
    loopback or ipc endpoint it takes well under a millisecond), so the first send after a
    (re)connect goes out as before; past that wait, senders retry as when the actor is away."""
    sock = transport.make_socket(zmq.PUSH, IMMEDIATE=1)
    sock.connect(endpoint)
    sock.poll(CONNECT_WAIT_MS, zmq.POLLOUT)
    return sock


class Peer:
    """A blocking actor's PUSH socket to another actor: the newest one of `kind` announced in the
    run directory, reconnected when a restarted actor announces a new endpoint. (The ledger and
    the cache send their counts to the observer through one; the alerts actor asks the ledger.)
    The trio side's equivalent is `ActorClient`."""

    def __init__(self, run_dir: str, kind: str):
        self.run_dir = run_dir
        self.kind = kind
        self.sock: zmq.Socket | None = None
        self.endpoint = ""

    def socket(self) -> zmq.Socket | None:
        """The socket to the actor, or None while none is announced."""
        found = transport.discover(self.run_dir, self.kind)
        if not found:
            return None
        endpoint = found[max(found)]
        if endpoint != self.endpoint:
            self.close(linger=0)
            self.sock = push_to_actor(endpoint)
            self.endpoint = endpoint
        return self.sock

    def close(self, linger: int = 1000) -> None:
        """`linger`: ms to keep sending what is queued (0: drop it, for a stale endpoint)."""
        if self.sock is not None:
            self.sock.close(linger=linger)
            self.sock = None


class ActorClient:
    """The trio side of one actor. Run `run()` in the worker's nursery for its lifetime."""

    def __init__(self, run_dir: str, kind: str, transport_kind: str = "ipc", timeout: float = 2.0, *,
                 replies: bool = True):
        """`replies=False`: a client that only sends (no reply socket is bound; `request` and
        `run` are not available)."""
        self.run_dir = run_dir
        self.kind = kind
        self.timeout = timeout
        self.sock: transport.AsyncSocket | None = None       # PUSH to the actor
        self.endpoint = ""
        os.makedirs(run_dir, exist_ok=True)
        self.reply_endpoint = ""
        self.replies: transport.AsyncSocket | None = None
        if replies:
            pull = transport.make_socket(zmq.PULL)
            self.reply_endpoint = transport.bind(pull, transport.endpoint_for(f"{kind}-reply", run_dir, transport_kind))
            self.replies = transport.AsyncSocket(pull)
        self.n = 0
        self.discovered_at = 0.0
        self.waiting: dict[int, list] = {}     # n -> [trio.Event, reply]

    def connect(self) -> bool:
        """(Re)connect to the actor announced in the run directory (a restarted actor has a new
        endpoint). Looks at most once a second."""
        now = time.monotonic()
        if self.sock is not None and now - self.discovered_at < 1.0:
            return True
        self.discovered_at = now
        found = transport.discover(self.run_dir, self.kind)
        if not found:
            return False
        endpoint = found[max(found)]
        if endpoint != self.endpoint:
            if self.sock is not None:
                self.sock.close()
            self.sock = transport.AsyncSocket(push_to_actor(endpoint))
            self.endpoint = endpoint
            log.info("connected to the %s at %s", self.kind, endpoint)
        return True

    def rediscover(self) -> None:
        """Look for the actor again at the next send (it is known to have restarted)."""
        self.discovered_at = 0.0

    async def run(self) -> None:
        """Hand each reply to the request waiting for it. Connects early, so the first request
        does not wait for the connection."""
        for _ in range(50):
            if self.connect():
                break
            await trio.sleep(0.1)
        while True:
            try:
                data = await self.replies.recv()
            except trio.ClosedResourceError:
                return
            for d in [data] + self.replies.recv_batch_nowait():
                msg = msgpack.unpackb(d, raw=False)
                w = self.waiting.pop(msg.pop("i", None), None)
                if w is not None:
                    w[1] = msg
                    w[0].set()

    def send(self, msg: dict) -> bool:
        """Send without waiting for a reply; False when the actor is not there (or its queue is full)."""
        if not self.connect():
            return False
        return self.sock.send_nowait(_pack(msg))

    async def request(self, msg: dict, timeout: float | None = None, what: str = "") -> dict:
        """Send `msg` and wait for its reply. When the actor does not answer in time (it is
        restarting, or not running), raise 503 ServiceUnavailableException saying `what` failed."""
        self.n += 1
        n = self.n
        w = self.waiting[n] = [trio.Event(), None]
        msg["i"], msg["r"] = n, self.reply_endpoint
        try:
            with trio.move_on_after(self.timeout if timeout is None else timeout):
                while not self.send(msg):
                    await trio.sleep(0.05)
                await w[0].wait()
                return w[1]
        finally:
            self.waiting.pop(n, None)
        raise errors.unavailable(what or f"The gateway's {self.kind} did not answer in time. Retry shortly.")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger_ms=2000)
        if self.replies is not None:
            self.replies.close()
