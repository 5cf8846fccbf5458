"""The only httpx user: one client per provider per worker, phase deadlines, httpx -> our errors.

`open_client()` builds an AsyncClient with connect/read/write/pool timeouts from the provider's
config and keep-alive pooling. `mapped_errors()` is the one boundary where httpx's exceptions
become AWS-shaped `GatewayError`s, with a message that names the provider and what to check.
"""
from __future__ import annotations

from contextlib import contextmanager

import httpx

from finops.shared import errors
from finops.shared.config import ProviderConfig


def open_client(cfg: ProviderConfig) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=cfg.connect_timeout_seconds, read=cfg.read_timeout_seconds,
                            write=cfg.read_timeout_seconds, pool=cfg.connect_timeout_seconds)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60)
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)


@contextmanager
def mapped_errors(cfg: ProviderConfig, url: str):
    """Turn httpx failures into AWS errors a Bedrock client understands (and its SDK retries)."""
    where = f"provider {cfg.name!r} ({cfg.kind}) at {url}"
    try:
        yield
    except httpx.ConnectTimeout:
        raise errors.unavailable(f"{where}: connect timed out after {cfg.connect_timeout_seconds:.0f}s "
                                 "(connect_timeout_seconds).") from None
    except httpx.PoolTimeout:
        raise errors.unavailable(f"{where}: no upstream connection free in time; retry.") from None
    except httpx.ReadTimeout:
        raise errors.model_timeout(f"{where}: no answer within {cfg.read_timeout_seconds:.0f}s "
                                   "(read_timeout_seconds).") from None
    except httpx.ConnectError as e:
        raise errors.unavailable(f"{where}: cannot connect ({e}). Check base_url and that the upstream is up.") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
        raise errors.unavailable(f"{where}: the connection failed mid-request ({e or type(e).__name__}).") from None
    except httpx.HTTPError as e:
        raise errors.unavailable(f"{where}: upstream request failed ({type(e).__name__}: {e}).") from None
