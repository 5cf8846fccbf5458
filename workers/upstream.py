"""The only HTTP client code: keep-alive connections to upstreams, phase deadlines, and the one
boundary where transport failures become AWS-shaped errors.

Why not httpx or httpcore here: on the request path httpx's models cost about 0.5 ms of CPU per
call on this machine, and httpcore's pool scans every pooled connection, with a readability
syscall each, on every request, so its cost grows with concurrency (measured with
scripts/bench.py: worker CPU 1.3 ms/req at 16 connections, 2.0 at 64). This client is h11 (the
same HTTP/1.1 engine httpcore drives) over trio streams, with an O(1) pool: a LIFO stack of idle
connections per origin.

Theory of operation
-------------------
`UpstreamClient.stream(url, headers, body)` is an async context manager yielding an
`UpstreamResponse` once the status line and headers are in; its body is read with `aiter_raw()`
(or `aread()`). `post()` reads the whole body. On exit a connection whose exchange completed
cleanly goes back on the idle stack; any other is closed.

A connection taken from the idle stack may have been closed by the server meanwhile. If sending
the request or reading the response head fails on such a reused connection before any response
byte arrived, the server never handled the request, so it is sent once more on a new connection.
Idle connections older than `KEEPALIVE_EXPIRY` are dropped instead of reused.

Deadlines: connect (`connect_timeout_seconds`, TLS handshake included); time to the response
head (`first_byte_timeout_seconds`, default `read_timeout_seconds`), so a silent upstream fails
before its first byte (the deadline Bifrost's timeout misses, its issue #7034); and idle
(`read_timeout_seconds`) for every read of the body, so a stalled stream fails between chunks.
The total time of an attempt (`total_timeout_seconds`) is the pipeline's to enforce.
"""
from __future__ import annotations

import ssl
import time
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import trio

from finops.shared import errors
from finops.shared.provider_config import HTTPProviderConfig

MAX_IDLE_PER_ORIGIN = 256    # idle keep-alive connections kept per upstream origin
KEEPALIVE_EXPIRY = 55.0      # seconds; under the 60 s idle timeout common to AWS and nginx
READ_SIZE = 65536            # bytes asked of the socket per read (one TCP window)


class _Failure(Exception):
    """Internal: a transport failure, classified for `_map()`."""

    def __init__(self, kind: str, detail: str, retryable_on_reuse: bool = False):
        super().__init__(detail)
        self.kind = kind
        self.retryable_on_reuse = retryable_on_reuse


class Connection:
    __slots__ = ("stream", "h11", "idle_since", "received")

    def __init__(self, stream):
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.received = False   # any response byte on the current exchange

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class UpstreamResponse:
    __slots__ = ("status_code", "headers", "content", "_body")

    def __init__(self, status: int, headers: dict, body=None):
        self.status_code = status
        self.headers = headers
        self.content = b""
        self._body = body

    async def aiter_raw(self):
        async for data in self._body:
            yield data

    async def aread(self) -> bytes:
        self.content = b"".join([d async for d in self._body])
        return self.content


class UpstreamClient:
    def __init__(self, cfg: HTTPProviderConfig):
        self.cfg = cfg
        self.idle: dict[tuple, list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.first_byte_timeout = cfg.first_byte_timeout_seconds or cfg.read_timeout_seconds

    def __repr__(self) -> str:
        return f"<UpstreamClient {self.cfg.name!r} idle={sum(map(len, self.idle.values()))}>"

    async def post(self, url: str, headers: list, body: bytes) -> UpstreamResponse:
        async with self.stream(url, headers, body) as resp:
            await resp.aread()
        return resp

    @asynccontextmanager
    async def stream(self, url: str, headers: list, body: bytes):
        u = urlsplit(url)
        https = u.scheme == "https"
        origin = (u.scheme, u.hostname, u.port or (443 if https else 80))
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host = u.netloc.rsplit("@", 1)[-1]
        hdrs = [(k, v) for k, v in headers if k.lower() != b"host"]
        hdrs.insert(0, (b"host", host.encode()))
        hdrs.append((b"content-length", str(len(body)).encode()))
        where = f"provider {self.cfg.name!r} ({self.cfg.kind}) at {url}"
        conn = None
        try:
            for attempt in (1, 2):
                conn, reused = await self._acquire(origin, where)
                try:
                    status, resp_headers = await self._exchange(conn, target, hdrs, body)
                    break
                except _Failure as f:
                    await conn.aclose()
                    conn = None
                    if not (reused and f.retryable_on_reuse and attempt == 1):
                        raise
            resp = UpstreamResponse(status, resp_headers, self._body(conn))
            yield resp
            if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                conn.h11.start_next_cycle()
                if self._release(origin, conn):
                    conn = None
        except _Failure as f:
            raise _map(f, self.cfg, where) from None
        finally:
            if conn is not None:
                await conn.aclose()

    # --- pieces ----------------------------------------------------------------------------
    async def _acquire(self, origin: tuple, where: str) -> tuple[Connection, bool]:
        stack = self.idle.get(origin)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            if now - conn.idle_since < KEEPALIVE_EXPIRY:
                return conn, True
            await conn.aclose()
        return await self._connect(origin), False

    def _release(self, origin: tuple, conn: Connection) -> bool:
        """Keep `conn` for reuse; False when the origin already has enough idle connections."""
        stack = self.idle.setdefault(origin, [])
        if len(stack) >= MAX_IDLE_PER_ORIGIN:
            return False
        conn.idle_since = time.monotonic()
        stack.append(conn)
        return True

    async def _connect(self, origin: tuple) -> Connection:
        scheme, host, port = origin
        try:
            with trio.fail_after(self.cfg.connect_timeout_seconds):
                stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context()
                    stream = trio.SSLStream(stream, self._ssl, server_hostname=host, https_compatible=True)
                    await stream.do_handshake()
        except trio.TooSlowError:
            raise _Failure("connect_timeout", f"connect took over {self.cfg.connect_timeout_seconds:g}s") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as e:
            raise _Failure("connect", str(e) or type(e).__name__) from None
        return Connection(stream)

    async def _exchange(self, conn: Connection, target: str, headers: list, body: bytes):
        h = conn.h11
        try:
            data = h.send(h11.Request(method="POST", target=target, headers=headers))
            data += h.send(h11.Data(data=body)) + h.send(h11.EndOfMessage())
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise _Failure("io", f"sending failed ({e or type(e).__name__})", retryable_on_reuse=True) from None
        conn.received = False
        while True:
            ev = await self._next_event(conn, "response head", self.first_byte_timeout)
            if isinstance(ev, h11.Response):
                return ev.status_code, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in ev.headers}
            if isinstance(ev, h11.ConnectionClosed):
                raise _Failure("io", "the server closed the connection before answering",
                               retryable_on_reuse=not conn.received)
            # InformationalResponse (1xx): keep reading

    async def _body(self, conn: Connection):
        while True:
            ev = await self._next_event(conn, "body", self.cfg.read_timeout_seconds)
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                return
            elif isinstance(ev, h11.ConnectionClosed):
                raise _Failure("io", "the connection closed before the body ended")

    async def _next_event(self, conn: Connection, what: str, timeout: float):
        """The next h11 event, reading from the socket under the read deadline as needed.
        A failure before any response byte on this exchange is marked retryable on reuse."""
        h = conn.h11
        while True:
            try:
                ev = h.next_event()
            except h11.RemoteProtocolError as e:
                raise _Failure("protocol", f"invalid HTTP {what} ({e})") from None
            if ev is not h11.NEED_DATA:
                return ev
            with trio.move_on_after(timeout) as scope:
                try:
                    chunk = await conn.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    raise _Failure("io", f"reading the {what} failed ({e or type(e).__name__})",
                                   retryable_on_reuse=not conn.received) from None
            if scope.cancelled_caught:
                setting = "first_byte_timeout_seconds" if what == "response head" and \
                    self.cfg.first_byte_timeout_seconds else "read_timeout_seconds"
                raise _Failure("read_timeout", f"the {what} did not arrive within {timeout:g}s ({setting})")
            if not chunk and not conn.received:
                raise _Failure("io", "the server closed the connection before answering", retryable_on_reuse=True)
            conn.received = conn.received or bool(chunk)
            try:
                h.receive_data(chunk)
            except h11.RemoteProtocolError as e:
                raise _Failure("protocol", f"invalid HTTP {what} ({e})") from None

    async def aclose(self) -> None:
        for stack in self.idle.values():
            for conn in stack:
                await conn.aclose()
        self.idle.clear()


def _map(f: _Failure, cfg: HTTPProviderConfig, where: str) -> errors.GatewayError:
    """The one place transport failures become AWS errors (and so SDK retry decisions)."""
    if f.kind == "connect_timeout":
        return errors.unavailable(f"{where}: {f} (connect_timeout_seconds).")
    if f.kind == "connect":
        return errors.unavailable(f"{where}: cannot connect ({f}). Check base_url and that the upstream is up.")
    if f.kind == "read_timeout":
        return errors.model_timeout(f"{where}: {f}.")
    return errors.unavailable(f"{where}: the connection failed mid-request: {f}.")
