"""Run a test body beside a background task (a connection's reader) under trio.

    value = await beside(pipe.run, lambda: pipe.call(wire, 1))

The background task is cancelled when the body ends; the body's exception is raised as itself,
not inside the nursery's ExceptionGroup, so `pytest.raises` sees it."""
from __future__ import annotations

import trio


async def beside(background, body):
    """`await body()` while `background()` runs; its value, or its exception."""
    out: dict = {}
    async with trio.open_nursery() as n:
        n.start_soon(background)
        try:
            out["value"] = await body()
        except Exception as e:
            out["error"] = e
        n.cancel_scope.cancel()
    if "error" in out:
        raise out["error"]
    return out["value"]
