"""Governance as the pipeline sees it: identify the key, admit the request, settle its cost.

    ident = governor.identify(request)            # which key; raises the AWS error to refuse
    governor.authorize(ident, model_id, provider) # model and provider allowed, key enabled, not expired
    adm = await governor.admit(request, req, targets)   # reserve an upper bound of the cost, and rate-limit slots
    ... the provider calls ...
    charge = governor.charge(adm, usage, ...)     # exactly the reported usage, at the model's prices
    governor.settle(request, adm, charge)         # the same figure to the ledger (header and log show it too)

A request without a known key (open mode) and a key with no budget or rate limit never reach
the ledger: governance costs nothing where nothing is governed. The directory of keys is read
from the store (and the config file) at start, and re-read when another process changes the
store (stores.open_directory): with SQLite, checked at most once a second from the request path
(`PRAGMA data_version`); with PostgreSQL, on every request, from the DirectoryWatcher's copy in
memory (pg_watch.py: LISTEN/NOTIFY and a 0.5 s poll, in a thread), so a change made on any node is
in force here within a second. PostgreSQL down: requests go on with the last directory loaded;
never loaded yet (the worker started while PostgreSQL was unreachable): every request is refused
with a retryable 503 until it is, never judged against an empty directory.

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
from dataclasses import dataclass, replace

from finops.shared import errors
from finops.shared.config import Config
from finops.shared.model import EmbedRequest, request_tokens
from finops.shared.profiles import base_model

from . import auth, bounds, stores
from ..ledger.client import LedgerClient
from .directory import load_directory
from .guardrail_prices import GuardrailPrices
from .pricing import MICRO, Price, PricingTable, cost_micros, max_cost_micros, prompt_cache_saved_micros
from .tiers import TierPricing

log = logging.getLogger("finops.governance")
RELOAD_EVERY = 1.0      # SQLite: seconds between checks that keys changed elsewhere (README: in force within 1 s)
UNPRICED = Price(input=15.0, output=75.0)   # USD per 1M tokens: Claude Opus list prices, the dearest common rate
UNPRICED_NOTED_MAX = 1024   # unpriced model ids remembered (warned about once); they come from clients, so bounded


@dataclass(frozen=True, slots=True)
class Admission:
    """What governance decided for one request before its upstream calls."""
    key_id: str
    environment: str
    model_id: str                   # what the client asked for: the first name prices are looked up by
    reserved: bool = False          # the ledger holds a reservation for it (to settle)
    max_micros: int = 0             # the reservation: an upper bound of the request's cost
    input_bound: int = 0            # upper bound of its input tokens (cache reads and writes included)
    max_output: int = 0             # its output cap: maxTokens, or governance.default_max_tokens
    cap_output: bool = False        # the request had no maxTokens: the gateway sends max_output upstream
    embed: bool = False             # an embeddings request: priced as the model that embedded it (its target's)
    strict: bool = True             # False: part of the input had no proven bound (bounds.py)
    remaining_usd: float | None = None
    budget: str | None = None
    requests_remaining: int | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request is charged: the same figure in `x-bf-cost-usd`, the ledger and the log.

    `micros` is integer micro-dollars (the ledger's unit), so every place that shows it agrees
    to the micro-dollar. `usage` is the tokens charged ({"in", "out", "cr", "cw"}, "cw1h" the
    1-hour part of "cw", "gu" guardrail text units per policy): what the upstream reported, or,
    for a stream cut before its usage arrived, what governance assumed (`estimated`)."""
    micros: int = 0
    usage: dict | None = None
    estimated: bool = False
    prompt_saved_micros: int = 0     # what the provider's prompt cache saved (pricing.prompt_cache_saved_micros)

    @property
    def usd(self) -> float:
        return self.micros / MICRO

    @property
    def tokens(self) -> int:
        u = self.usage or {}
        return u.get("in", 0) + u.get("out", 0) + u.get("cr", 0) + u.get("cw", 0)


NO_CHARGE = Charge()


class Governor:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.g = cfg.governance
        self.pricing = PricingTable(cfg.pricing)
        self.guardrail_prices = GuardrailPrices(cfg.guardrails.prices)
        self.tiers = TierPricing(cfg.pricing)
        self.watched = stores.watched(cfg)     # PostgreSQL: a DirectoryWatcher, free to check every request
        self.store = stores.open_directory(cfg, must_load=False)
        if self.watched and not self.store.loaded:
            log.error("governance store %s: PostgreSQL unreachable at start (%s); every request is refused "
                      "with 503 ServiceUnavailableException until the keys are loaded (retrying every %gs)",
                      self.store.path, self.store.last_error or "no answer", self.store.retry_seconds)
        self.reload_every = 0.0 if self.watched else RELOAD_EVERY
        self.version = self.store.data_version()
        self.index = auth.KeyIndex.of(load_directory(self.store, cfg))
        self.checked = time.monotonic()
        direct = None
        if self.g.ledger == "redis":        # reserves straight to Redis (workers/ledger/direct.py)
            from ..ledger.direct import DirectReserver
            direct = DirectReserver(cfg, lambda: self.index.directory)
        self.ledger = LedgerClient(cfg.run_dir, cfg.server.transport, timeout=self.g.ledger_timeout_seconds,
                                   direct=direct)
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
        if self.reload_every:
            now = time.monotonic()
            if now - self.checked < self.reload_every:
                return
            self.checked = now
        v = self.store.data_version()           # SQLite: a PRAGMA; PostgreSQL: the watcher's, in memory
        if v != self.version:
            self.version = v
            self.reload()

    def reload(self, index: auth.KeyIndex | None = None) -> None:
        """Re-read keys, teams and customers (another process changed the store); or take `index`,
        which the admin API built in a thread after its own change (admin/api.py, SQLite)."""
        self.index = index if index is not None else auth.KeyIndex.of(load_directory(self.store, self.cfg))

    def offer(self, version: int, directory) -> None:
        """PostgreSQL: the directory this worker's admin API reloaded in a thread after its own
        change (`PgStore.load_versioned_directory`), so the next request here sees the change
        without waiting for the notification; ignored if the watcher already has a newer one."""
        self.store.offer(version, directory)
        self._fresh()

    def _unloaded(self) -> errors.GatewayError:
        """The refusal while the watcher has never loaded the keys (the reason is in the log, not
        told to clients: it names the database)."""
        e = errors.GatewayError(
            "ServiceUnavailableException",
            "The gateway has not loaded its virtual keys yet: its PostgreSQL governance store has not "
            "answered since this worker started. Retry in a few seconds.")
        e.origin = "governance"
        return e

    def identify(self, request) -> auth.Identity:
        """The key `request` presents; raises the AWS error (origin "governance") to refuse it."""
        self._fresh()
        if self.watched and not self.store.loaded:
            raise self._unloaded()
        if not self.index.directory.keys and self.g.mode == "open":
            vk = request.headers.get("x-bf-vk", "")
            return auth.Identity(None, "x-bf-vk" if vk else "", vk[:64])
        try:
            return auth.identify(self.index, self.g.mode, "POST", request.headers.get("host", ""),
                                 request.target_path, request.headers, request.body, time.time(),
                                 self.g.clock_skew_seconds)
        except errors.GatewayError as e:
            e.origin = "governance"
            raise

    def authorize(self, ident: auth.Identity, model_id: str, provider: str, check_model: bool = True) -> None:
        if ident.key is not None:
            try:
                auth.authorize(ident.key, model_id, provider, time.time(), base_model(self.cfg, model_id), check_model)
            except errors.GatewayError as e:
                e.origin = "governance"
                raise

    # --- budgets and rate limits --------------------------------------------------------------
    def _governed(self, key_id: str) -> bool:
        return any(budgets or limits for _, _, budgets, limits in self.index.directory.scopes(key_id))

    def price(self, model_id: str, upstream_model: str = "") -> Price:
        """The price of the model the request names (or its upstream model). A model the table
        does not know is priced at UNPRICED, the dearest common rate, so that a budget still holds;
        say so in the log once per model (of the last UNPRICED_NOTED_MAX: the ids come from clients),
        and set [pricing."default"] or a price for it."""
        p = self.pricing.price_for(model_id, base_model(self.cfg, model_id), upstream_model)
        if p is None:
            if model_id not in self._unpriced:
                if len(self._unpriced) >= UNPRICED_NOTED_MAX:
                    self._unpriced.clear()      # a model warned about before may be warned about again
                self._unpriced.add(model_id)
                log.warning("no price for model %r (upstream %r): charging %s per million tokens; set "
                            "[pricing.\"...\"] in the config", model_id, upstream_model, UNPRICED)
            p = UNPRICED
        return p

    async def admit(self, request, req, targets: list[tuple[str, str]] = (), body_len: int = 0,
                    bound_micros: int | None = None, guard_units: tuple[int, int] | None = None) -> Admission:
        """Reserve an upper bound of the request's cost and its rate-limit slots before the
        upstream is called; raise the AWS error (origin "governance") when refused. Once per
        request: every retry and fallback runs on this reservation.

        The bound (README: How budgets stay exact): input tokens at most `bounds.input_bound`
        (UTF-8 bytes of the text, the provider's image and document formulas, framing), every
        one of them at the dearest of the input, cache-read, cache-write and 1-hour cache-write
        prices; output at most maxTokens, or `governance.default_max_tokens` for a request without one (which the
        gateway then sends upstream as its cap: `cap_output`). `targets`: (provider kind,
        upstream model) of every target the request may try: the largest of their bounds, at
        each one's price, is reserved. `bound_micros`: the bound itself, for a request that is not
        priced by tokens (ApplyGuardrail: its text units, guardrail_prices.py). `guard_units`:
        (text units, images) per policy of the input of a call that asks Bedrock for a guardrail
        (formats/bedrock/guardrail.py `call_units`): its guardrail's bound is added
        (`GuardrailPrices.call_max_micros`, the answer's units included)."""
        key = request.key
        adm = Admission(key.id if key else "", request.environment, request.model_id,
                        embed=isinstance(req, EmbedRequest))
        if key is None or not self._governed(key.id):
            return adm              # nothing to reserve: the charge is computed from the usage alone
        if bound_micros is not None:
            adm = replace(adm, max_micros=bound_micros)
            return await self._reserve(request, key, adm, 0)
        if isinstance(req, EmbedRequest):
            out, cap = 0, False
        else:
            out = (req.max_tokens if req is not None else None) or self.g.default_max_tokens
            cap = req is not None and req.max_tokens is None
        worst = strict = None
        bound = 0
        for kind, model in (targets or [("", request.model_id)]):
            if req is not None:
                b = bounds.input_bound(req, bounds.vendor_of(kind, model), model)
                tokens, ok = b.tokens, b.strict
            else:                   # a body only Bedrock knows: its bytes, not a proven bound
                tokens, ok = max(1, body_len), False
            price = self.price(request.model_id, model)
            if adm.embed:           # charged at the embedding target's price: bound by the dearer of the two
                other = self.price(model, request.model_id)
                price = other if other.input > price.input else price
            tier = getattr(req, "service_tier", "")
            if tier:                # a tier asked for: bound by the dearer of its price and the standard one
                tp = self.tiers.price(tier, price, request.model_id, model, base_model(self.cfg, request.model_id))
                price = tp if max(tp.input, tp.output) > max(price.input, price.output) else price
            micros = max_cost_micros(price, tokens, out)
            worst = micros if worst is None else max(worst, micros)
            bound, strict = max(bound, tokens), (ok if strict is None else strict and ok)
        if guard_units is not None:
            worst += self.guardrail_prices.call_max_micros(*guard_units, out)
        adm = replace(adm, max_micros=worst, input_bound=bound, max_output=out, cap_output=cap, strict=strict)
        return await self._reserve(request, key, adm, bound + out)

    async def _reserve(self, request, key, adm: Admission, tokens: int) -> Admission:
        """Reserve `adm.max_micros` and `tokens` at the ledger, or raise its refusal."""
        got = await self.ledger.reserve(request.rid, key.id, request.environment, adm.max_micros / MICRO, tokens)
        if not got.get("ok"):
            e = errors.GatewayError(got.get("code", "ServiceQuotaExceededException"), got.get("message", ""),
                                    got.get("status"), retry_after_ms=got.get("retry_after_ms"))
            e.origin = "governance"     # the key's refusal: never retried or sent to another target
            raise e
        return replace(adm, reserved=True, remaining_usd=got.get("remaining_usd"), budget=got.get("budget"),
                       requests_remaining=got.get("requests_remaining"))

    @staticmethod
    def output_cap(adm: Admission | None) -> int | None:
        """The maxTokens the gateway must send upstream: the reservation's output bound when the
        client sent none on a reserved request (else None: the client's own cap stands)."""
        return adm.max_output if adm is not None and adm.reserved and adm.cap_output else None

    def charge(self, adm: Admission | None, usage: dict | None, upstream_model: str = "", req=None,
               produced_tokens: int = 0, started: bool = False) -> Charge:
        """What the request costs: exactly the usage the upstream reported, at the prices of the
        model that answered (`upstream_model`): its tokens (1-hour cache writes at the 1-hour
        write price), plus the guardrail text units it reported ("gu", guardrail_prices.py).

        Without reported usage (a stream cut or cancelled before its usage arrived), a request
        whose upstream had started answering is charged an estimate: its input at about 4
        characters per token (`request_tokens`) and the `produced_tokens` relayed to the client,
        at most its output cap; one that never started, nothing."""
        if adm is None:
            return NO_CHARGE
        guard = usage.get("gu") if usage else None     # guardrail text units per policy
        guard_micros = self.guardrail_prices.cost_micros(guard) if guard else 0
        if guard is not None and not any(usage.get(k) for k in ("in", "out", "cr", "cw")):
            # ApplyGuardrail (no model, no tokens): the text units each policy used
            return Charge(guard_micros, {"in": 0, "out": 0, "cr": 0, "cw": 0, "gu": dict(guard)})
        names = (upstream_model, adm.model_id) if adm.embed and upstream_model else (adm.model_id, upstream_model)
        price = self.price(*names)
        if usage and usage.get("tier"):     # the tier the upstream reported serving it in (tiers.py)
            price = self.tiers.price(usage["tier"], price, *names, base_model(self.cfg, adm.model_id))
        if usage:
            u = {"in": usage.get("in", 0), "out": usage.get("out", 0), "cr": usage.get("cr", 0),
                 "cw": usage.get("cw", 0)}
            if usage.get("cw1h"):           # the part of the cache writes with a 1-hour TTL
                u["cw1h"] = min(usage["cw1h"], u["cw"])
            if usage.get("tier"):
                u["tier"] = usage["tier"]
            if guard:                       # a guardrail applied inside the call (its trace's units)
                u["gu"] = dict(guard)
            tokens = (u["in"], u["out"], u["cr"], u["cw"], u.get("cw1h", 0))
            return Charge(cost_micros(price, *tokens) + guard_micros, u,
                          prompt_saved_micros=prompt_cache_saved_micros(price, *tokens))
        if not started:
            return NO_CHARGE
        n_in = request_tokens(req) if req is not None and not isinstance(req, EmbedRequest) else 0
        n_out = min(produced_tokens, adm.max_output) if adm.max_output else produced_tokens
        u = {"in": n_in, "out": n_out, "cr": 0, "cw": 0}
        return Charge(cost_micros(price, n_in, n_out), u, estimated=True)

    def settle(self, request, adm: Admission | None, charge: Charge) -> list | None:
        """Settle a reserved request at the ledger with `charge`; returns the settle as sent (the
        final envelope carries it: finops.shared.envelope), or None when nothing was reserved."""
        if adm is None or not adm.reserved:
            return None
        return self.ledger.settle(request.rid, adm.key_id, adm.environment, charge.usd, charge.tokens)

    def settle_hit(self, request, saved_usd: float) -> list:
        """A cache hit: no cost, and what it saved, kept per key and env by the ledger."""
        return self.ledger.settle(request.rid, request.key.id if request.key else "", request.environment, 0.0, 0,
                                  saved_usd)

    @staticmethod
    def headers(adm: Admission | None, charge: Charge | None) -> list:
        """Governance's response headers; `charge` for a complete non-streaming answer."""
        if adm is None:
            return []
        h = []
        if charge is not None:
            h.append(["x-bf-cost-usd", f"{charge.usd:.6f}"])
            if adm.remaining_usd is not None:
                # the reservation held the upper bound; what is left after the actual cost
                left = adm.remaining_usd + (adm.max_micros - charge.micros) / MICRO
                h.append(["x-bf-budget-remaining-usd", f"{max(0.0, left):.6f}"])
        elif adm.remaining_usd is not None:
            h.append(["x-bf-budget-remaining-usd", f"{max(0.0, adm.remaining_usd):.6f}"])
        if adm.budget:
            h.append(["x-bf-budget", adm.budget])
        if adm.requests_remaining is not None:
            h.append(["x-bf-ratelimit-remaining-requests", str(adm.requests_remaining)])
        return h
