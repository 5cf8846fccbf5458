"""The attempts of one request: which target and which provider key next, and what a failure
means. No I/O, no clock: the circuit breakers it reads carry their own (injected) clock.

    plan = AttemptPlan(targets, route, keys_of, circuits)
    step = plan.next()                     # a Step, or None: nothing left to try
    ... the pipeline makes the attempt ...
    decision = plan.failed(step, e, head_sent=...)   # what to do now, and the circuit outcomes
    outcomes = plan.succeeded(step)                  # the circuit outcomes of a success

The order of targets is the route's draw (`router.plan`: the first by weight, then the others as
listed). On a target, `failed` decides with `router.after_failure`: another key of the same target
(the key was refused or is out of quota, and the target has a key this request has not tried),
the same target again after a jittered exponential backoff (a retryable failure, `retries` not
used up), the next target, or stop (the request's own fault, a governance refusal, or a stream
whose first byte already reached the client). A target whose circuit is open is skipped as if it
had failed; so is one whose provider has no key that can serve the model now.

Circuits only matter where there is somewhere else to go: a lone target keeps getting the
requests (the client sees the upstream's own error, and its SDK retries it), and a lone key has
no breaker. A refused key fails its own circuit; the target's only when the request leaves it.
The decisions return the outcomes `((provider, circuit name, ok), ...)`; the pipeline records them.

Keys: drawn by weight among the provider's keys whose `models` globs allow the upstream model,
whose circuit is not open and that did not refuse this request on this target; keys not yet tried
on this target first.
"""
from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass

from finops.shared import errors
from finops.shared.config import RouteConfig, TargetConfig
from finops.shared.provider_config import KeyConfig

from . import backoff, router

OPEN = "open"


@dataclass(frozen=True, slots=True)
class Step:
    """One attempt to make: the target, and the key of its provider to use."""
    number: int                 # 1, 2, ... over the whole request
    target: TargetConfig
    name: str                   # "provider/model" (its circuit's name, and x-bf-target)
    fallback: bool              # not the first target this request tried
    key: int | None             # index into the provider's keys; None: the provider has none
    key_circuit: str            # the key's circuit name; "" when it has none (a lone key)
    target_circuit: str         # the target's circuit name; "" when it has none (a lone target)


@dataclass(frozen=True, slots=True)
class Decision:
    """After a failed attempt: `action` (router.OTHER_KEY, RETRY, NEXT or STOP), the backoff
    before a RETRY, and the circuit outcomes to record."""
    action: str
    delay: float = 0.0
    outcomes: tuple = ()


def key_circuit(provider: str, index: int) -> str:
    return f"{provider}#key{index}"


class AttemptPlan:
    def __init__(self, targets: list[TargetConfig], route: RouteConfig, model_id: str,
                 keys_of: dict[str, list[KeyConfig]], circuits, rng=random.random):
        """`targets`: in the order this request tries them (router.plan); `keys_of`: each
        provider's keys; `circuits`: router.Circuits (read and probed, never written here)."""
        self.targets = targets
        self.route = route
        self.model_id = model_id
        self.keys_of = keys_of
        self.circuits = circuits
        self.rng = rng
        self.guarded = len(targets) > 1
        self.index = -1                 # the current target
        self.number = 0                 # attempts handed out
        self.retried = 0                # retries used on the current target
        self.tried: set[int] = set()    # keys tried on the current target
        self.refused: set[int] = set()  # ... and those of them that were refused
        self.blocked: errors.GatewayError | None = None   # why the last target was skipped

    def __repr__(self) -> str:
        return (f"<AttemptPlan target {self.index + 1} of {len(self.targets)}, attempt {self.number}, "
                f"{self.retried} retries used>")

    # --- the next attempt --------------------------------------------------------------------
    def next(self, same_target: bool = False) -> Step | None:
        """The next attempt: on the current target when `same_target` (after OTHER_KEY or RETRY),
        else on the next target that can take it. None when no target is left; `blocked` then
        says why the last one was skipped (an open circuit, no key)."""
        if same_target and self.index >= 0:
            step = self._on(self.index)
            if step is not None:
                return step
        while self.index + 1 < len(self.targets):
            self.index += 1
            self.retried = 0
            self.tried, self.refused = set(), set()
            t = self.targets[self.index]
            name = router.target_name(t)
            if self.guarded and not self.circuits.for_provider(t.provider).allow(name):
                self.blocked = errors.unavailable(f"target {name}: its circuit is open after repeated failures; "
                                                  "it gets traffic again after circuit_open_seconds.")
                continue
            step = self._on(self.index)
            if step is not None:
                return step
        return None

    def _on(self, index: int) -> Step | None:
        t = self.targets[index]
        model = t.model or self.model_id
        try:
            key = self.choose_key(t.provider, model)
        except errors.GatewayError as e:
            self.blocked = e
            return None
        self.number += 1
        keys = self.keys_of.get(t.provider, ())
        name = router.target_name(t)
        return Step(self.number, t, name, index > 0, key,
                    key_circuit(t.provider, key) if key is not None and len(keys) > 1 else "",
                    name if self.guarded else "")

    def choose_key(self, provider: str, model: str) -> int | None:
        """Index of the key to use: see the module docstring. None when the provider has no keys;
        raises a retryable ServiceUnavailableException when no key can serve now."""
        keys = self.keys_of.get(provider, ())
        if not keys:
            return None
        allowed = [i for i, k in enumerate(keys) if any(fnmatch.fnmatchcase(model, g) for g in k.models)]
        breakers = self.circuits.for_provider(provider) if len(keys) > 1 else None
        usable = [i for i in allowed if i not in self.refused
                  and (breakers is None or breakers.state(key_circuit(provider, i)) != OPEN)]
        fresh = [i for i in usable if i not in self.tried]
        for pool in ((fresh, [i for i in usable if i in self.tried]) if self.tried else (usable,)):
            while pool:
                i = pool[0] if len(pool) == 1 else self._draw(pool, keys)
                if breakers is None or breakers.allow(key_circuit(provider, i)):
                    self.tried.add(i)
                    return i
                pool = [j for j in pool if j != i]
        why = ("no key of this provider may serve it (keys[].models)" if not allowed
               else "every key that may serve it was refused upstream or has an open circuit" if self.refused
               else "the circuit of every key that may serve it is open")
        raise errors.unavailable(f"provider {provider!r} cannot serve model {model!r} now: {why}.")

    def _draw(self, pool: list[int], keys) -> int:
        x = self.rng() * sum(keys[i].weight for i in pool)
        for i in pool:
            x -= keys[i].weight
            if x < 0:
                return i
        return pool[-1]

    def has_untried_key(self, step: Step) -> bool:
        """Whether a key this request has not tried on the step's target may serve its model."""
        keys = self.keys_of.get(step.target.provider, ())
        model = step.target.model or self.model_id
        breakers = self.circuits.for_provider(step.target.provider)
        return any(i not in self.tried and i not in self.refused
                   and any(fnmatch.fnmatchcase(model, g) for g in k.models)
                   and breakers.state(key_circuit(step.target.provider, i)) != OPEN
                   for i, k in enumerate(keys))

    # --- how it ended --------------------------------------------------------------------------
    def failed(self, step: Step, e: errors.GatewayError, head_sent: bool) -> Decision:
        """The next step after `step` failed with `e`, and the circuit outcomes to record."""
        refused = step.key is not None and router.key_refused(e)
        if refused:
            self.refused.add(step.key)
        if head_sent:
            action = router.STOP
        else:
            action = router.after_failure(e, self.route.retries - self.retried,
                                          refused and self.has_untried_key(step))
        ok = not router.try_next(e)
        provider = step.target.provider
        outcomes = tuple((provider, name, ok) for name in
                         ("" if action == router.OTHER_KEY else step.target_circuit, step.key_circuit) if name)
        delay = 0.0
        if action == router.RETRY:
            delay = backoff.delay(self.retried, base=self.route.retry_backoff_ms / 1000, rng=self.rng)
            self.retried += 1
        return Decision(action, delay, outcomes)

    @staticmethod
    def succeeded(step: Step) -> tuple:
        """The circuit outcomes of a successful attempt."""
        return tuple((step.target.provider, name, True) for name in (step.target_circuit, step.key_circuit) if name)
