"""Which targets a request tries, in which order, and which failures move on to the next. Pure.

A route has targets `[{provider, model, weight}]`. The first target a request tries is drawn by
weight among the targets with weight > 0; after a retryable failure it tries the others in the
order the route lists them (weight-0 targets are fallback only). A target whose circuit is open is
skipped as if it had failed.

Retryable (another attempt, on this target or the next): throttling (429), a provider that is
unavailable or failed (5xx, ModelErrorException with an original status >= 500), timeouts,
connection errors, an open circuit: the same target again, `retries` times, then the next target.
A provider that refused the gateway's key or whose quota is exhausted is a failure of that key,
not of the target: the same target again with a key this request has not tried on it (without
using up `retries`), and the next target once no such key is left. An answer that could not be
read (garbage, a cut stream): the next target. A request's own fault (ValidationException and the
like) is never retried: every target would refuse it too; nor is a refusal by the gateway's own
governance (budget, rate limit, a key not allowed): it is about the client, not the target.
`after_failure` is the one decision; the pipeline carries it out.
"""
from __future__ import annotations

import random

from finops.shared.config import RouteConfig, TargetConfig
from finops.shared.provider_config import ProviderConfig
from finops.shared import errors
from finops.shared.errors import GatewayError

from .breaker import BreakerPolicy, Breakers

RETRY_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelTimeoutException",
                         "InternalServerException", "ModelNotReadyException"})
NEXT_TARGET_CODES = frozenset({"AccessDeniedException", "ServiceQuotaExceededException", "ModelErrorException",
                               "ModelStreamErrorException"})


KEY_CODES = frozenset({"AccessDeniedException", "ServiceQuotaExceededException"})

# what a request does after a failed attempt (`after_failure`)
OTHER_KEY = "other_key"   # the same target at once, with a key this request has not tried on it
RETRY = "retry"           # the same target after a backoff; uses up one of the route's `retries`
NEXT = "next"             # the next target
STOP = "stop"             # no further attempt: the client gets this error


def key_refused(e: GatewayError) -> bool:
    """The provider refused the gateway's key, or the key's quota or credit is exhausted: another
    key of the same provider may well be fine."""
    return e.code in KEY_CODES and e.origin != "governance"


def after_failure(e: GatewayError, retries_left: int, untried_key: bool) -> str:
    """The next step after an attempt failed with `e` (before any byte reached the client).
    `retries_left`: how many of the route's `retries` this target has left; `untried_key`: the
    target has a key that may serve the model, whose circuit is not open, and that this request
    has not tried on it yet."""
    if e.origin == "governance" or not try_next(e):
        return STOP
    if key_refused(e):
        return OTHER_KEY if untried_key else NEXT
    if retry_same(e) and retries_left > 0:
        return RETRY
    return NEXT


def retry_same(e: GatewayError) -> bool:
    """Worth another attempt on the same target."""
    if e.code in RETRY_CODES:
        return True
    if e.code in ("ModelErrorException", "ModelStreamErrorException"):
        return int(e.extra.get("originalStatusCode") or 0) >= 500
    return False


def try_next(e: GatewayError) -> bool:
    """Worth moving on to the next target (a provider failure, not the request's fault)."""
    return retry_same(e) or e.code in NEXT_TARGET_CODES


def target_name(t: TargetConfig) -> str:
    return f"{t.provider}/{t.model or '*'}"


def plan(route: RouteConfig, rng=random.random) -> list[TargetConfig]:
    """The targets in the order this request tries them."""
    targets = route.targets
    if len(targets) == 1:
        return targets
    live = [t for t in targets if t.weight > 0]
    total = sum(t.weight for t in live)
    x = rng() * total
    first = live[-1]
    for t in live:
        x -= t.weight
        if x < 0:
            first = t
            break
    return [first] + [t for t in targets if t is not first]


def guardrail_targets(targets: list[TargetConfig], can_guard, guardrail: str, route: RouteConfig) -> list[TargetConfig]:
    """The targets a request that asks for `guardrail` (its identifier; "" = none) may try: only
    those whose provider can apply a Bedrock guardrail (`can_guard(provider name)`: the `bedrock`
    kind), in the same order. A route with `allow_unguarded` keeps every target (the guardrail is
    dropped on those that cannot apply it). Raises ValidationException when none is left: the
    request is never sent where its guardrail would be silently ignored."""
    if not guardrail or route.allow_unguarded:
        return targets
    ok = [t for t in targets if can_guard(t.provider)]
    if ok or not targets:
        return ok
    names = ", ".join(dict.fromkeys(target_name(t) for t in targets))
    raise errors.validation(
        f"guardrail {guardrail!r}: route {route.name or route.models[0]!r} has no target that can apply it "
        f"(only bedrock providers apply guardrails; this request could go to {names}). Add a bedrock target "
        "to the route (a fallback with weight = 0 is enough), or set allow_unguarded = true on the route to "
        "send such requests to these targets WITHOUT the guardrail.")


def guardrail_provider(cfg) -> str:
    """The bedrock provider ApplyGuardrail goes to ("" = none configured): `[guardrails] provider`;
    else the first bedrock target of [default_route] (the account the gateway's unrouted traffic
    already uses); else the first bedrock provider declared. A guardrail is a resource of one AWS
    account and region, so the operator names it when there are several."""
    if cfg.guardrails.provider:
        return cfg.guardrails.provider
    bedrock = [name for name, p in cfg.providers.items() if p.kind == "bedrock"]
    if cfg.default_route is not None:
        for t in cfg.default_route.targets:
            if t.provider in bedrock:
                return t.provider
    return bedrock[0] if bedrock else ""


def policy_for(p: ProviderConfig) -> BreakerPolicy:
    return BreakerPolicy(consecutive_failures=p.circuit_failures, failure_rate=p.circuit_failure_rate,
                         open_seconds=p.circuit_open_seconds)


class Circuits:
    """Every circuit breaker of this worker: one registry per provider (its keys and its targets
    share the provider's policy)."""

    def __init__(self, providers: dict[str, ProviderConfig], clock=None):
        kw = {"clock": clock} if clock else {}
        self.by_provider = {name: Breakers(policy_for(p), **kw) for name, p in providers.items()}

    def for_provider(self, name: str) -> Breakers:
        return self.by_provider[name]

    def record(self, outcomes) -> None:
        """Apply `(provider, circuit name, ok)` outcomes (planner.AttemptPlan's decisions)."""
        for provider, name, ok in outcomes:
            b = self.by_provider[provider]
            (b.success if ok else b.failure)(name)

    def snapshot(self) -> dict:
        out = {}
        for b in self.by_provider.values():
            out.update(b.snapshot())
        return out
