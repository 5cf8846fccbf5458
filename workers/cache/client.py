"""The workers' side of the cache actor (actor.py): get, search, put, stats and clear messages.

The sockets, discovery and reply matching are `finops.shared.actors.ActorClient`'s. A lookup the
actor does not answer within the timeout is a miss (service.py), never an error for the client.
"""
from __future__ import annotations

from finops.shared.actors import ActorClient


class CacheClient(ActorClient):
    """One worker's side of the cache actor (actor.py): lookups with a reply, stores without."""

    def __init__(self, run_dir: str, transport_kind: str = "ipc", timeout: float = 0.5):
        super().__init__(run_dir, "cache", transport_kind, timeout=timeout)

    async def get(self, exact: str, final: bool) -> dict:
        """`final`: no semantic search follows a miss (the actor counts the miss)."""
        return await self.request({"k": "get", "exact": exact, "final": final})

    async def search(self, scope: str, vec: bytes, emb: str, threshold: float) -> dict:
        return await self.request({"k": "search", "scope": scope, "vec": vec, "emb": emb, "threshold": threshold})

    def put(self, msg: dict) -> bool:
        msg["k"] = "put"
        return self.send(msg)

    async def stats(self) -> dict:
        return await self.request({"k": "stats"}, timeout=5.0, what="The cache actor did not answer; is it running?")

    async def clear(self, owner: str | None, model: str | None) -> dict:
        return await self.request({"k": "clear", "owner": owner, "model": model}, timeout=5.0,
                                  what="The cache actor did not answer; is it running?")
