"""The ZeroMQ edge: socket setup, endpoints, the worker registry, and trio-friendly send/recv.

This is the only module that imports zmq. Topology (see README, Architecture)::

    frontend --DEALER (one per worker; request, credit, cancel, ping)--> worker ROUTER
    frontend <--PULL (one per frontend; head, body, chunk, end, error, pong)-- worker PUSH

Workers announce themselves by writing `worker-<pid>.addr` (their ROUTER endpoint) into the run
directory; frontends poll that directory, connect to new workers and learn liveness from pongs.
A worker's DEALER connection is watched with a socket monitor, so a worker that dies is noticed
at once (the peer's socket closes), not only when heartbeats stop.

pyzmq has no trio integration, so `AsyncSocket` waits on the socket's ZMQ_FD with
`trio.lowlevel.wait_readable`. That fd is edge-triggered: it signals only that ZMQ_EVENTS may
have changed, so every wait first re-reads ZMQ_EVENTS and every operation is non-blocking. A
short timeout on each wait is a safety net against a missed edge. Each socket is used in one
direction only (send or receive), and concurrent senders queue on a lock, so at most one task
waits on an fd.
"""
from __future__ import annotations

import glob
import os
import tempfile

import zmq

from . import envelope
from .lazy import lazy

# The blocking actors (ledger, observer, cache) use the sockets here but never trio: trio, with ssl and
# attrs, is about 15 MiB of RSS they need not carry. The trio processes import it anyway.
trio = lazy("trio", globals())

HWM = 100_000            # messages queued per socket before send waits (flow control is per stream)
_EDGE_SAFETY_TIMEOUT = 0.25  # seconds; re-check ZMQ_EVENTS even if no edge arrives

_ctx: zmq.Context | None = None


def context() -> zmq.Context:
    global _ctx
    if _ctx is None:
        _ctx = zmq.Context.instance()
    return _ctx


def short_socket_dir(run_dir: str) -> str:
    """A directory for ipc sockets whose paths fit the 107-byte sun_path limit."""
    if len(run_dir) + 32 < 100:
        return run_dir
    import hashlib      # here: hashlib loads OpenSSL (3.4 MiB RSS), which the actors otherwise never need
    d = os.path.join(tempfile.gettempdir(), "finops-" + hashlib.sha1(run_dir.encode()).hexdigest()[:12])
    os.makedirs(d, exist_ok=True)
    return d


def endpoint_for(kind: str, run_dir: str, transport: str) -> str:
    """The address a process binds: an ipc path, or tcp on loopback with a port chosen at bind."""
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{short_socket_dir(run_dir)}/{kind}-{os.getpid()}.sock"


def bind(sock: zmq.Socket, endpoint: str) -> str:
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def make_socket(kind: int, **opts) -> zmq.Socket:
    s = context().socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, HWM)
    s.setsockopt(zmq.RCVHWM, HWM)
    for k, v in opts.items():
        s.setsockopt(getattr(zmq, k), v)
    return s


class AsyncSocket:
    """A zmq socket driven from trio. Use each instance for sending or for receiving, not both."""

    __slots__ = ("sock", "_fd", "_send_lock", "closed")

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self._fd = sock.getsockopt(zmq.FD)
        self._send_lock = trio.Lock()
        self.closed = False

    async def _wait(self, flag: int) -> None:
        while not (self.sock.getsockopt(zmq.EVENTS) & flag):
            with trio.move_on_after(_EDGE_SAFETY_TIMEOUT):
                await trio.lowlevel.wait_readable(self._fd)

    def send_nowait(self, data) -> bool:
        """Send without waiting; False when the socket's queue is full or it has no peer."""
        try:
            self.sock.send(data, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    async def send(self, data) -> None:
        if not self._send_lock.locked() and self.send_nowait(data):
            return
        async with self._send_lock:
            while not self.send_nowait(data):
                await self._wait(zmq.POLLOUT)

    async def recv(self) -> bytes:
        while True:
            try:
                return self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                await self._wait(zmq.POLLIN)

    async def recv_multipart(self) -> list[bytes]:
        while True:
            try:
                return self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await self._wait(zmq.POLLIN)

    def recv_batch_nowait(self, limit: int = 256, multipart: bool = False) -> list:
        """Everything already queued (up to `limit` messages), without waiting."""
        out = []
        recv = self.sock.recv_multipart if multipart else self.sock.recv
        try:
            while len(out) < limit:
                out.append(recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        return out

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; a task waiting on it gets trio.ClosedResourceError. With
        `linger_ms`, messages still queued get that long to go out (zmq LINGER)."""
        if not self.closed:
            self.closed = True
            try:
                trio.lowlevel.notify_closing(self._fd)
            except RuntimeError:  # not inside trio (shutdown paths)
                pass
            self.sock.close(linger=linger_ms)


# --- the worker registry (files in the run directory) --------------------------------------

def announce(run_dir: str, kind: str, endpoint: str) -> str:
    """Publish this process's endpoint as <run_dir>/<kind>-<pid>.addr (atomic). Returns the path."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"{kind}-{os.getpid()}.addr")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(endpoint)
    os.replace(tmp, path)
    return path


def withdraw(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discover(run_dir: str, kind: str = "worker") -> dict[int, str]:
    """{pid: endpoint} of announced processes that are still alive; stale files are removed."""
    found: dict[int, str] = {}
    for path in glob.glob(os.path.join(run_dir, f"{kind}-*.addr")):
        try:
            pid = int(os.path.basename(path)[len(kind) + 1:-5])
        except ValueError:
            continue
        if not pid_alive(pid):
            withdraw(path)
            continue
        try:
            with open(path) as f:
                found[pid] = f.read().strip()
        except FileNotFoundError:
            continue
    return found


def monitor_socket(sock: zmq.Socket) -> AsyncSocket:
    """A PAIR socket that receives this socket's connect/disconnect events."""
    return AsyncSocket(sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED))


def parse_monitor_event(parts: list[bytes]) -> int:
    """The zmq event number of a monitor message."""
    return int.from_bytes(parts[0][:2], "little")


__all__ = ["AsyncSocket", "announce", "withdraw", "discover", "endpoint_for", "bind", "make_socket",
           "monitor_socket", "parse_monitor_event", "envelope", "zmq"]
