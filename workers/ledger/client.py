"""The workers' side of the ledger protocol (ledger.py): reserve with a reply, settle without.

Settles are batched: they ride along with the next reserve, or go together within 5 ms. With the
ledger on Redis, reserves go straight to Redis (`direct`: direct.py; through the actor when that
cannot answer) and settles through the actor, together within 5 ms.

The sockets, discovery and reply matching are `finops.shared.actors.ActorClient`'s. A ledger
that does not answer within `timeout` fails the request closed (503 ServiceUnavailableException,
which SDKs retry): a budget is never skipped because the ledger was restarting.

This class is the seam for other ledgers: anything with `reserve()`, `settle()` and `usage()` of
the same meaning (a Redis-backed ledger with Lua scripts, for several gateway nodes) can replace it.
"""
from __future__ import annotations

import logging
import os

import trio

from finops.shared import errors
from finops.shared.actors import ActorClient

log = logging.getLogger("finops.ledger.client")


SETTLE_DELAY = 0.005   # seconds a settle may wait for a reserve to ride along with
RESEND_DELAY = 0.05    # seconds between tries while the ledger cannot take settles (as `request` retries)


class LedgerClient(ActorClient):
    def __init__(self, run_dir: str, transport_kind: str = "ipc", timeout: float = 2.0, direct=None):
        """`direct`: a DirectReserver (direct.py) when the ledger is on Redis."""
        super().__init__(run_dir, "ledger", transport_kind, timeout)
        self.settles: list[list] = []           # settles not sent yet: [rid, key, env, cost, tokens]
        self.pid = os.getpid()                  # the ledger expires a dead worker's reservations
        self._settle_due = trio.Event()
        self.direct = direct
        self.releases: list[str] = []           # releases not sent yet

    async def run(self) -> None:
        """The receiver and the settle flusher: run it in the worker's nursery for its lifetime."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_settles)
            if self.direct is not None:
                nursery.start_soon(self.direct.run)
            await super().run()
            nursery.cancel_scope.cancel()

    async def _flush_settles(self) -> None:
        """Settles ride along with the next reserve; when none comes within SETTLE_DELAY they
        go on their own. Half the messages under load, and the ledger's counters are exact
        either way (the reservation holds the request's maximum until its settle arrives).
        What the ledger could not take (not connected yet, stopped, its queue full) is tried
        again every RESEND_DELAY until it goes: with reserves straight to Redis no reserve comes
        to carry it, and a worker's last settles would otherwise wait for its next request."""
        while True:
            await self._settle_due.wait()
            await trio.sleep(SETTLE_DELAY)
            self._settle_due = trio.Event()
            self.flush()
            if self.settles or self.releases:
                await trio.sleep(RESEND_DELAY)
                self._settle_due.set()

    def flush(self) -> None:
        if self.releases and self.send({"k": "release", "rids": self.releases}):
            self.releases = []
        if self.settles and self.send({"k": "settles", "s": self.settles}):
            self.settles = []

    async def reserve(self, rid: str, key_id: str, env: str, max_cost_usd: float, est_tokens: int) -> dict:
        if self.direct is not None:
            got = await self.direct.reserve(rid, key_id, env, max_cost_usd, est_tokens, self.pid, self.release,
                                           self.uncounted)
            if got is not None:
                return got
        msg = {"k": "reserve", "rid": rid, "key": key_id, "env": env, "max": max_cost_usd, "tok": est_tokens,
               "pid": self.pid}
        riding = self.settles
        if riding:
            msg["s"], self.settles = riding, []
        try:
            return await self.request(msg, what="The governance ledger did not answer in time; the request was "
                                                "not sent upstream. Retry shortly.")
        except BaseException:
            # No answer (the ledger is away) or cancelled (the client went away): the settles it
            # carried go again, and the reservation the ledger may have made is released with a
            # zero settle (sent after the reserve, on the same socket). A request id settled twice
            # counts once, so what the ledger did get is not counted again; a reservation left
            # open would be charged in full when it expired (or at once, as its worker's on the
            # next start of this node).
            self.settles[:0] = riding
            self.settles.append([rid, key_id, env, 0.0, 0])
            self._settle_due.set()
            raise

    def uncounted(self) -> None:
        """A request served uncounted (direct.py, `redis_failure = "open"`): the actor counts it."""
        self.send({"k": "uncounted", "n": 1})

    def release(self, rid: str) -> None:
        """Free a reservation made straight in Redis whose request will not run (direct.py)."""
        self.releases.append(rid)
        self.flush()
        self._settle_due.set()          # tried again until the actor takes it (`_flush_settles`)

    def settle(self, rid: str, key_id: str, env: str, cost_usd: float, tokens: int, saved_usd: float = 0.0) -> list:
        """Queue the settle; it goes with the next reserve, or within SETTLE_DELAY. `saved_usd`:
        what a cache hit saved (the ledger keeps it beside the spend). Returns the settle as it
        is sent (the request's final envelope carries it too: finops.shared.envelope)."""
        s = [rid, key_id, env, cost_usd, tokens, saved_usd] if saved_usd else [rid, key_id, env, cost_usd, tokens]
        self.settles.append(s)
        self._settle_due.set()
        return s

    async def usage(self, key_id: str | None) -> dict:
        """{"usage": [current period of every budget and limit], "savings": [what cache hits saved]}
        for one key's scopes, or for everyone (see LedgerState.usage and .savings)."""
        out = await self.request({"k": "usage", "key": key_id},
                                 what="The governance ledger did not answer in time.")
        if "error" in out:          # the ledger's Redis is unreachable
            raise errors.unavailable(out["error"])
        return {"usage": out["usage"], "savings": out.get("savings", [])}

    def close(self) -> None:
        self.flush()
        if self.settles:
            log.error("ledger unreachable at exit: %d settles could not be sent", len(self.settles))
        super().close()
