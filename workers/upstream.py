"""The only HTTP client code: one connection pool per provider per worker, phase deadlines, and the
one boundary where transport failures become AWS-shaped errors.

It uses httpcore, the connection engine under httpx, directly: on the request path httpx's
request/response models, cookie and auth layers cost about 0.3 to 0.6 ms of CPU per call on this
machine (measured with scripts/bench.py, bedrock relay against the nginx fake), which is most of
our per-request budget, and we need none of them. Connections are kept alive and reused (HTTP/1.1).

`UpstreamClient.post()` returns a whole `UpstreamResponse`; `UpstreamClient.stream()` is an async
context manager whose response is read with `aiter_raw()`. `mapped_errors()` turns httpcore's
exceptions into `GatewayError`s whose message names the provider and what to check.
"""
from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager

import httpcore

from finops.shared import errors
from finops.shared.config import ProviderConfig

MAX_CONNECTIONS = 1000
MAX_KEEPALIVE = 256
KEEPALIVE_EXPIRY = 60.0   # seconds an idle upstream connection is kept


class UpstreamResponse:
    __slots__ = ("status_code", "headers", "content", "_stream")

    def __init__(self, status: int, headers: list, content: bytes = b"", stream=None):
        self.status_code = status
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
        self.content = content
        self._stream = stream

    async def aiter_raw(self):
        async for data in self._stream:
            yield data

    async def aread(self) -> bytes:
        if self._stream is not None:
            self.content = b"".join([d async for d in self._stream])
        return self.content


class UpstreamClient:
    def __init__(self, cfg: ProviderConfig):
        self.cfg = cfg
        self.timeouts = {"connect": cfg.connect_timeout_seconds, "read": cfg.read_timeout_seconds,
                         "write": cfg.read_timeout_seconds, "pool": cfg.connect_timeout_seconds}
        self.pool = httpcore.AsyncConnectionPool(max_connections=MAX_CONNECTIONS,
                                                 max_keepalive_connections=MAX_KEEPALIVE,
                                                 keepalive_expiry=KEEPALIVE_EXPIRY)

    def __repr__(self) -> str:
        return f"<UpstreamClient {self.cfg.name!r} {self.pool!r}>"

    async def post(self, url: str, headers: list, body: bytes) -> UpstreamResponse:
        with mapped_errors(self.cfg, url):
            r = await self.pool.request("POST", url, headers=headers, content=body,
                                        extensions={"timeout": self.timeouts})
        return UpstreamResponse(r.status, r.headers, r.content)

    @asynccontextmanager
    async def stream(self, url: str, headers: list, body: bytes):
        with mapped_errors(self.cfg, url):
            async with self.pool.stream("POST", url, headers=headers, content=body,
                                        extensions={"timeout": self.timeouts}) as r:
                yield UpstreamResponse(r.status, r.headers, stream=r.aiter_stream())

    async def aclose(self) -> None:
        await self.pool.aclose()


@contextmanager
def mapped_errors(cfg: ProviderConfig, url: str):
    """Turn transport failures into AWS errors a Bedrock client understands (and its SDK retries)."""
    where = f"provider {cfg.name!r} ({cfg.kind}) at {url}"
    try:
        yield
    except httpcore.ConnectTimeout:
        raise errors.unavailable(f"{where}: connect timed out after {cfg.connect_timeout_seconds:.0f}s "
                                 "(connect_timeout_seconds).") from None
    except httpcore.PoolTimeout:
        raise errors.unavailable(f"{where}: no upstream connection free in time; retry.") from None
    except httpcore.ReadTimeout:
        raise errors.model_timeout(f"{where}: no answer within {cfg.read_timeout_seconds:.0f}s "
                                   "(read_timeout_seconds).") from None
    except httpcore.ConnectError as e:
        raise errors.unavailable(f"{where}: cannot connect ({e or type(e).__name__}). "
                                 "Check base_url and that the upstream is up.") from None
    except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError, httpcore.WriteTimeout) as e:
        raise errors.unavailable(f"{where}: the connection failed mid-request ({e or type(e).__name__}).") from None
    except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError) as e:
        raise errors.validation(f"{where}: cannot send this request ({e}); check base_url.") from None
    except httpcore.NetworkError as e:
        raise errors.unavailable(f"{where}: upstream request failed ({type(e).__name__}: {e}).") from None
