"""The workers' side of the observer actor (actor.py): this worker's gauges, and the scrape and
flush requests the admin API makes. The request-log rows themselves do not go this way: they ride
each request's final envelope to its frontend (finops.shared.logrow, frontend/outcomes.py).

The sockets, discovery and reply matching are `finops.shared.actors.ActorClient`'s.
"""
from __future__ import annotations

import os

import trio

from finops.shared.actors import ActorClient

GAUGE_SECONDS = 1.0


class ObserverClient(ActorClient):
    def __init__(self, run_dir: str, transport_kind: str = "ipc"):
        super().__init__(run_dir, "observer", transport_kind)

    async def run(self, gauges=lambda: {}) -> None:
        """Report `gauges()` every GAUGE_SECONDS, and take the observer's replies (scrape, flush);
        for the worker's lifetime."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().run)
            proc = f"worker-{os.getpid()}"
            while True:
                self.send({"k": "gauges", "proc": proc, "kind": "worker", "g": gauges()})
                await trio.sleep(GAUGE_SECONDS)

    async def scrape(self) -> tuple[str, bytes]:
        """(content type, /metrics) as the observer renders it, for the whole gateway. The observer
        names the content type, so a worker never imports prometheus_client."""
        out = await self.request({"k": "scrape"}, timeout=5.0,
                                 what="The gateway's observer did not answer; metrics are unavailable.")
        return out["type"], out["text"]

    async def sync(self) -> None:
        """Wait until the observer has written every row it has been sent (for reports)."""
        await self.request({"k": "flush"}, timeout=5.0,
                           what="The gateway's observer did not answer; the request log is unavailable.")
