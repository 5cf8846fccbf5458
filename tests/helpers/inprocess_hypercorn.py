"""A real Hypercorn (trio worker) serving an ASGI handler inside the test's own trio loop, on a
free loopback port: for tests of what the frontend changes in Hypercorn (frontend/keepalive.py,
frontend/h11_writes.py).

    async with serving(handler, include_date_header=False) as port:
        ...                                   # talk HTTP/1.1 to 127.0.0.1:port
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@contextlib.asynccontextmanager
async def serving(handler, **config) -> AsyncIterator[int]:
    """Serve `handler(scope, receive, send)` for HTTP scopes (the lifespan is answered here) with
    Hypercorn's defaults plus `config`; yields the port. The server stops when the block ends."""
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        return await handler(scope, receive, send)

    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    for name, value in config.items():
        setattr(cfg, name, value)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, cfg, shutdown_trigger=stop.wait,
                                                              task_status=task_status))
        try:
            yield int(binds[0].rsplit(":", 1)[1])
        finally:
            stop.set()
