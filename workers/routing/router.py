"""Which targets a request tries, in which order, and which failures move on to the next. Pure.

A route has targets `[{provider, model, weight}]`. The first target a request tries is drawn by
weight among the targets with weight > 0; after a retryable failure it tries the others in the
order the route lists them (weight-0 targets are fallback only). A target whose circuit is open is
skipped as if it had failed.

Retryable (another attempt, on this target or the next): throttling (429), a provider that is
unavailable or failed (5xx, ModelErrorException with an original status >= 500), timeouts,
connection errors, an open circuit; and, for the next target only, a provider that refused the
gateway's key, whose quota is exhausted, or whose answer could not be read (garbage, a cut
stream): another key or provider may be fine. A request's own
fault (ValidationException and the like) is never retried: every target would refuse it too.
"""
from __future__ import annotations

import random

from finops.shared.config import ProviderConfig, RouteConfig, TargetConfig
from finops.shared.errors import GatewayError

from .breaker import BreakerPolicy, Breakers

RETRY_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelTimeoutException",
                         "InternalServerException", "ModelNotReadyException"})
NEXT_TARGET_CODES = frozenset({"AccessDeniedException", "ServiceQuotaExceededException", "ModelErrorException",
                               "ModelStreamErrorException"})


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

    def snapshot(self) -> dict:
        out = {}
        for b in self.by_provider.values():
            out.update(b.snapshot())
        return out
