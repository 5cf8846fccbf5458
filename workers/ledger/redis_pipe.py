"""One connection to Redis for a trio process, shared by its tasks: their commands are pipelined.

    pipe = RedisPipe("rediss://:secret@redis.internal:6380/0", ca_file="ca.pem", timeout=1.0)
    nursery.start_soon(pipe.run)                   # the reader, for the process's lifetime
    replies = await pipe.call(wire, n)             # wire: n RESP commands (hiredis.pack_command)

Why not redis-py: its asyncio client does not run under trio, and its blocking one would stall
the worker's event loop. This is the least a worker needs to send its reserves itself (direct.py):
one TCP (or TLS) connection, AUTH and SELECT from the URL, writes in the order calls are made,
replies handed back in that order by one reader task, hiredis parsing them.

* Each call's commands go out in one write, after those of the calls before it, together with
  those of the calls made while the previous write was on its way; while Redis answers one
  task's commands another task's are on the wire already (a pipeline, not a pool).
* An error reply (`-ERR ...`, `-NOSCRIPT ...`) is returned in the list as a `hiredis.ReplyError`,
  not raised: the caller decides what it means.
* `PipeError`: no connection could be made, it broke, or the replies did not come within
  `timeout` seconds. `written` on it says whether this call's commands may have reached Redis
  (then they may have run). A timeout or a broken connection fails every call waiting on it
  (their replies can no longer be matched) and closes it; the next call connects again.
* A caller cancelled while it waits for its replies does not desynchronise the connection: the
  reader still reads them, and hands them to the call's `orphan(replies)` hook (`orphan(None)`
  if the connection broke first), so the caller can undo what its commands did.
"""
from __future__ import annotations

import ssl
from collections import deque
from urllib.parse import unquote, urlsplit

import hiredis
import trio

__all__ = ["RedisPipe", "PipeError", "parse_url"]


class PipeError(Exception):
    """The connection failed; `written`: this call's commands may have reached Redis."""

    def __init__(self, message: str, written: bool):
        super().__init__(message)
        self.written = written


def parse_url(url: str) -> dict:
    """host, port, db, username, password and tls of a `redis://` or `rediss://` URL (the forms
    redis-py accepts for one server: `redis://[[user]:password@]host[:port][/db]`)."""
    u = urlsplit(url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, got {url.split('://')[0]!r}")
    path = u.path.strip("/")
    return {"host": u.hostname or "localhost", "port": u.port or 6379, "db": int(path) if path else 0,
            "username": unquote(u.username) if u.username else None,
            "password": unquote(u.password) if u.password is not None else None, "tls": u.scheme == "rediss"}


class _Call:
    __slots__ = ("n", "replies", "done", "error", "orphan")

    def __init__(self, n: int):
        self.n = n
        self.replies: list = []
        self.done = trio.Event()
        self.error: str | None = None
        self.orphan = None          # set when the caller stopped waiting (cancelled)


class RedisPipe:
    def __init__(self, url: str, *, ca_file: str | None = None, timeout: float = 1.0):
        self.opts = parse_url(url)
        self.ca_file = ca_file
        self.timeout = timeout
        self.where = f"Redis at {self.opts['host']}:{self.opts['port']}"
        self._lock = trio.Lock()               # one task connects
        self._stream: trio.abc.Stream | None = None
        self._sock = None                      # the stream's socket, closed synchronously on failure
        self._pending: deque[_Call] = deque()  # queued or written, replies not all read, in order
        self._out: list[bytes] = []            # what the pending calls have not written yet
        self._writing = False                  # a task is writing (it writes what others queue)
        self._connected = trio.Event()         # set while a connection is up (the reader waits on it)

    # --- calls -----------------------------------------------------------------------------
    async def call(self, wire: bytes, n: int, orphan=None) -> list:
        """Send `wire` (n commands) and return their n replies, in order; see the module doc."""
        c = _Call(n)
        if self._stream is None:
            async with self._lock:
                if self._stream is None:
                    await self._connect()
        stream = self._stream
        if stream is None:              # broken again since it was connected
            raise PipeError(f"{self.where}: the connection broke", written=False)
        self._pending.append(c)
        self._out.append(wire)
        if not self._writing:           # else the task writing now sends it with its next write
            await self._write()
        try:
            with trio.move_on_after(self.timeout):
                await c.done.wait()
        except BaseException:           # cancelled: the reader still reads its replies
            if c.done.is_set():
                if orphan is not None:
                    orphan(c.replies if c.error is None else None)
            else:
                c.orphan = orphan or _ignore
            raise
        if not c.done.is_set():
            self._broken(stream, f"no reply within {self.timeout:g} s")
        if c.error is not None:
            raise PipeError(f"{self.where}: {c.error}", written=True)
        return c.replies

    async def _write(self) -> None:
        """Write what the calls queued, in order, until nothing is queued: calls made while a
        write is on its way go out together in the next one (one system call for many under
        load). What is queued is always the current connection's (a broken one's is dropped
        with it). Shielded: half a write would desynchronise the connection."""
        self._writing = True
        stream = self._stream
        try:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.timeout) as t:
                    while self._out and self._stream is not None:
                        stream = self._stream
                        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
                        self._out.clear()
                        try:
                            await stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                            self._broken(stream, f"writing failed: {e}")
                            return
            if t.cancelled_caught:
                self._broken(stream, f"writing timed out after {self.timeout:g} s")
        finally:
            self._writing = False

    # --- the connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        o = self.opts
        try:
            with trio.fail_after(self.timeout):
                tcp = await trio.open_tcp_stream(o["host"], o["port"])
                stream: trio.abc.Stream = tcp
                if o["tls"]:
                    ctx = ssl.create_default_context(cafile=self.ca_file)
                    stream = trio.SSLStream(tcp, ctx, server_hostname=o["host"])
                    await stream.do_handshake()
                hello = []
                if o["password"] is not None:
                    hello.append((b"AUTH", o["username"], o["password"]) if o["username"] else (b"AUTH", o["password"]))
                if o["db"]:
                    hello.append((b"SELECT", str(o["db"])))
                if hello:
                    await stream.send_all(b"".join(hiredis.pack_command(h) for h in hello))
                    reader = hiredis.Reader()
                    got = []
                    while len(got) < len(hello):
                        data = await stream.receive_some(4096)
                        if not data:
                            raise OSError("the connection was closed")
                        reader.feed(data)
                        while (r := reader.gets()) is not False:
                            got.append(r)
                    for r in got:
                        if isinstance(r, hiredis.ReplyError):
                            await stream.aclose()
                            raise OSError(str(r))
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError) as e:
            why = "connecting timed out" if isinstance(e, trio.TooSlowError) else f"cannot connect: {e}"
            raise PipeError(f"{self.where}: {why}", written=False) from None
        self._stream, self._sock = stream, tcp.socket
        self._connected.set()

    def _broken(self, stream, why: str) -> None:
        """The connection `stream` is unusable: close it and fail every call waiting on it."""
        if stream is not self._stream:
            return                      # an older connection, already dealt with
        self._stream = None
        self._connected = trio.Event()
        self._sock.close()              # wakes the reader (trio notifies the tasks waiting on it)
        pending, self._pending = self._pending, deque()
        self._out.clear()
        for c in pending:
            c.error = why
            if c.orphan is not None:
                c.orphan(None)
            c.done.set()

    async def run(self) -> None:
        """The reader: hands each reply to the call it answers, for the process's lifetime."""
        while True:
            await self._connected.wait()
            stream = self._stream
            if stream is None:
                await trio.sleep(0)
                continue
            reader = hiredis.Reader()
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise OSError("Redis closed the connection")
                    reader.feed(data)
                    while (r := reader.gets()) is not False:
                        if not self._pending:
                            raise OSError("a reply that no call was waiting for")
                        c = self._pending[0]
                        c.replies.append(r)
                        if len(c.replies) == c.n:
                            self._pending.popleft()
                            if c.orphan is not None:
                                c.orphan(c.replies)
                            c.done.set()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, hiredis.ProtocolError) as e:
                self._broken(stream, f"the connection broke: {e}")

    async def aclose(self) -> None:
        if self._stream is not None:
            self._broken(self._stream, "closed")


def _ignore(replies) -> None:
    pass
