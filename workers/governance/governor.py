"""Governance as the pipeline sees it: identify the key, admit the request, settle its cost.

    ident = governor.identify(call, env)          # which key; raises the AWS error to refuse
    governor.authorize(ident, call, provider)     # model and provider allowed, key enabled, not expired
    await governor.admit(call, req)               # reserve the maximum cost and the rate-limit slots
    ... the provider call ...
    governor.settle(call, usage, produced)        # the actual cost, always (also on failure or cancel)

A request without a known key (open mode) and a key with no budget or rate limit never reach
the ledger: governance costs nothing where nothing is governed. The directory of keys is read
from the store (and the config file) at start, and re-read when another process changes the
store (checked at most once a second, from the request path, with SQLite's data_version).

Response headers (documented in the README):

    x-bf-cost-usd                       what this request cost (non-streaming answers; a stream's
                                        cost is known at its end: see the request log)
    x-bf-budget-remaining-usd           what is left of the tightest budget that applies
    x-bf-budget                         which budget that is
    x-bf-ratelimit-remaining-requests   requests left in the tightest request-rate window
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from finops.shared import errors
from finops.shared.config import Config
from finops.shared.model import EmbedRequest, estimate_tokens, request_tokens

from . import auth
from .client import LedgerClient
from .directory import load_directory
from .pricing import Price, PricingTable, cost, max_cost
from .store import Store

log = logging.getLogger("finops.governance")
RELOAD_EVERY = 1.0
UNPRICED = Price(input=15.0, output=75.0)   # USD per 1M tokens: Claude Opus list prices, the dearest common rate


@dataclass(slots=True)
class Admission:
    key_id: str
    env: str
    price: object
    max_cost: float
    est_tokens: int
    input_estimate: int
    remaining_usd: float | None = None
    budget: str | None = None
    requests_remaining: int | None = None
    reserved: bool = False


class Governor:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.g = cfg.governance
        self.pricing = PricingTable(cfg.pricing)
        self.store = Store.open(cfg.server.data_dir)
        self.version = self.store.data_version()
        self.index = auth.KeyIndex.of(load_directory(self.store, cfg))
        self.checked = time.monotonic()
        self.ledger = LedgerClient(cfg.run_dir, cfg.server.transport)
        self._unpriced: set[str] = set()

    def customer_of(self, team_id: str) -> str:
        """The customer a team belongs to ("" when none), for the request log."""
        team = self.index.directory.teams.get(team_id)
        return team.customer if team is not None else ""

    async def run(self) -> None:
        """Background work for the worker's lifetime: the ledger client's receiver."""
        await self.ledger.run()

    def close(self) -> None:
        self.ledger.close()
        self.store.close()

    # --- identity ----------------------------------------------------------------------------
    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self.checked < RELOAD_EVERY:
            return
        self.checked = now
        v = self.store.data_version()
        if v != self.version:
            self.version = v
            self.reload()

    def reload(self) -> None:
        """Re-read keys, teams and customers (this process changed the store, or another did)."""
        self.index = auth.KeyIndex.of(load_directory(self.store, self.cfg))

    def identify(self, call, env: dict) -> auth.Identity:
        self._fresh()
        if not self.index.directory.keys and self.g.mode == "open":
            vk = call.headers.get("x-bf-vk", "")
            return auth.Identity(None, "x-bf-vk" if vk else "", vk[:64])
        try:
            return auth.identify(self.index, self.g.mode, "POST", call.headers.get("host", ""), env.get("path", ""),
                                 call.headers, env["body"], time.time(), self.g.clock_skew_seconds)
        except errors.GatewayError as e:
            e.origin = "governance"
            raise

    def authorize(self, ident: auth.Identity, call, provider: str) -> None:
        if ident.key is not None:
            try:
                auth.authorize(ident.key, call.model_id, provider, time.time())
            except errors.GatewayError as e:
                e.origin = "governance"
                raise

    # --- budgets and rate limits --------------------------------------------------------------
    def _governed(self, key_id: str) -> bool:
        return any(budgets or limits for _, _, budgets, limits in self.index.directory.scopes(key_id))

    def price(self, call):
        """The price of the model the request names (or its upstream model). A model the table
        does not know is priced at UNPRICED, the dearest common rate, so that a budget still holds;
        say so in the log once per model, and set [pricing."default"] or a price for it."""
        p = self.pricing.price_for(call.model_id, call.upstream_model)
        if p is None:
            if call.model_id not in self._unpriced:
                self._unpriced.add(call.model_id)
                log.warning("no price for model %r (upstream %r): charging %s per million tokens; set "
                            "[pricing.\"...\"] in the config", call.model_id, call.upstream_model, UNPRICED)
            p = UNPRICED
        return p

    async def admit(self, call, req, body_len: int = 0) -> None:
        """Reserve the request's maximum cost (its input, and maxTokens of output) and its
        rate-limit slots before the upstream is called; raise the AWS error when refused.
        Once per request: a retry or a fallback to another target keeps the first reservation."""
        if call.admission is not None:
            return
        price = self.price(call)
        if isinstance(req, EmbedRequest):
            n_in = sum(estimate_tokens(t) for t in req.texts) or 1
            n_out = 0
        elif req is not None:
            n_in = request_tokens(req)
            n_out = req.max_tokens or self.g.default_max_tokens
        else:
            n_in = max(1, body_len // 4)
            n_out = self.g.default_max_tokens
        key = call.key
        adm = Admission(key.id if key else "", call.env, price, max_cost(price, n_in, n_out), n_in + n_out, n_in)
        call.admission = adm
        if key is None or not self._governed(key.id):
            return
        out = await self.ledger.reserve(call.rid, key.id, call.env, adm.max_cost, adm.est_tokens)
        if not out.get("ok"):
            e = errors.GatewayError(out.get("code", "ServiceQuotaExceededException"), out.get("message", ""),
                                    out.get("status"), retry_after_ms=out.get("retry_after_ms"))
            e.origin = "governance"     # the key's refusal: never retried or sent to another target (Pipeline.attempts)
            raise e
        adm.reserved = True
        adm.remaining_usd = out.get("remaining_usd")
        adm.budget = out.get("budget")
        adm.requests_remaining = out.get("requests_remaining")

    def cost_of(self, call, usage: dict | None) -> float:
        adm = getattr(call, "admission", None)
        if adm is None or not usage:
            return 0.0
        return cost(adm.price, usage.get("in", 0), usage.get("out", 0), usage.get("cr", 0), usage.get("cw", 0))

    def settle(self, call, usage: dict | None, produced_tokens: int = 0, started: bool = False) -> float:
        """Charge what the request cost. `usage` is the provider's report; without it (a stream cut
        or cancelled mid-way) the input estimate and the `produced_tokens` the client received are
        charged if the upstream had started answering, else nothing."""
        adm = getattr(call, "admission", None)
        if adm is None:
            return 0.0
        if usage:
            c = self.cost_of(call, usage)
            tokens = sum(usage.get(k, 0) for k in ("in", "out", "cr", "cw"))
        elif started:
            c = cost(adm.price, adm.input_estimate, produced_tokens)
            tokens = adm.input_estimate + produced_tokens
        else:
            c, tokens = 0.0, 0
        c = min(c, adm.max_cost) if adm.reserved else c
        if adm.reserved:
            self.ledger.settle(call.rid, adm.key_id, adm.env, c, tokens)
        return c

    def headers(self, call, usage: dict | None) -> list:
        adm = getattr(call, "admission", None)
        if adm is None:
            return []
        h = []
        if usage is not None:
            c = self.cost_of(call, usage)
            h.append(["x-bf-cost-usd", f"{c:.6f}"])
            if adm.remaining_usd is not None:
                # the reservation held the maximum; what is left after the actual cost
                h.append(["x-bf-budget-remaining-usd", f"{max(0.0, adm.remaining_usd + adm.max_cost - c):.6f}"])
        elif adm.remaining_usd is not None:
            h.append(["x-bf-budget-remaining-usd", f"{max(0.0, adm.remaining_usd):.6f}"])
        if adm.budget:
            h.append(["x-bf-budget", adm.budget])
        if adm.requests_remaining is not None:
            h.append(["x-bf-ratelimit-remaining-requests", str(adm.requests_remaining)])
        return h
