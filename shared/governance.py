"""Governance data: customers, teams, virtual keys, budgets and rate limits. Pure.

A virtual key belongs to a team, a team to a customer. Budgets (USD per calendar period) and rate
limits (requests and/or tokens per window) may sit at every level; a request is checked against
all that apply to it. A budget or limit with `env` applies only to requests whose `x-bf-env`
equals it; without `env` it applies to every environment.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

PERIODS = ("minute", "hour", "day", "week", "month", "year")
TAG_NAME = re.compile(r"^[A-Za-z0-9 _.:@$#=/+,\-]{1,256}$")    # as a requestMetadata key can be grouped by
TAG_VALUE = re.compile(r"^[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}$")  # Bedrock's requestMetadata value pattern
MAX_TAGS = 16


def tag_problem(tags) -> str | None:
    """What is wrong with a key's `tags` (a {name: value} table of strings), None when nothing."""
    if not isinstance(tags, dict):
        return "expected a table of names to string values, like {team = \"search\"}"
    if len(tags) > MAX_TAGS:
        return f"has {len(tags)} tags; at most {MAX_TAGS}"
    for k, v in tags.items():
        if not isinstance(k, str) or not TAG_NAME.match(k):
            return f"tag name {k!r}: 1 to 256 letters, digits, spaces or _.:@$#=/+,-"
        if not isinstance(v, str) or not TAG_VALUE.match(v):
            return f"tag {k!r}: the value must be a string of at most 256 letters, digits, spaces or :_@$#=/+,-."
    return None
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{3,128}$")


@dataclass(frozen=True, slots=True)
class Budget:
    amount_usd: float
    period: str                 # one of PERIODS, calendar-aligned
    env: str = ""               # "" = every environment
    alert_at: tuple[float, ...] = ()   # alert thresholds, % of amount_usd; () = [alerts] thresholds

    def label(self, level: str, owner: str) -> str:
        """How messages name it: `key vk-1 daily budget (env production)`."""
        adj = {"minute": "per-minute", "hour": "hourly", "day": "daily", "week": "weekly",
               "month": "monthly", "year": "yearly"}[self.period]
        return f"{level} {owner!r} {adj} budget of ${self.amount_usd:g}" + (f" (env {self.env})" if self.env else "")


@dataclass(frozen=True, slots=True)
class RateLimit:
    window: str                 # one of PERIODS (fixed windows aligned like budget periods)
    requests: int | None = None
    tokens: int | None = None   # input + output tokens
    env: str = ""


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str = ""
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str = ""
    customer: str = ""          # Customer.id, "" = none
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str                     # also the SigV4 access key id
    secret: str                 # the credential: x-bf-vk, Bearer, or the SigV4 secret access key
    name: str = ""
    team: str = ""              # Team.id, "" = none
    models: tuple[str, ...] = ("*",)      # globs over the modelId the client sent
    providers: tuple[str, ...] = ("*",)   # globs over provider names
    enabled: bool = True
    expires_at: float | None = None       # epoch seconds; None = never
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    created_at: float = 0.0
    source: str = "api"         # "config" (declared in the config file) | "api" (CLI / admin API)
    tags: dict[str, str] = field(default_factory=dict)   # cost-allocation tags every request of the key carries

    def allows_model(self, model_id: str, base_model: str = "") -> bool:
        """Whether a glob of `models` matches the modelId, or the base model of the inference
        profile it names (shared/profiles.py): a key allowed "anthropic.claude-3-5*" may call
        "us.anthropic.claude-3-5-haiku-…"."""
        return any(fnmatch.fnmatchcase(model_id, g) or (base_model and fnmatch.fnmatchcase(base_model, g))
                   for g in self.models)

    def allows_provider(self, provider: str) -> bool:
        return any(fnmatch.fnmatchcase(provider, g) for g in self.providers)


@dataclass(slots=True)
class Directory:
    """Everything the ledger and the workers need to know about keys, teams and customers."""
    keys: dict[str, VirtualKey] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)

    def scopes(self, key_id: str) -> list[tuple[str, str, tuple[Budget, ...], tuple[RateLimit, ...]]]:
        """[(level, owner id, budgets, rate limits)] that apply to requests with this key:
        the key, its team, the team's customer."""
        k = self.keys.get(key_id)
        if k is None:
            return []
        out = [("key", k.id, k.budgets, k.rate_limits)]
        t = self.teams.get(k.team) if k.team else None
        if t is not None:
            out.append(("team", t.id, t.budgets, t.rate_limits))
            c = self.customers.get(t.customer) if t.customer else None
            if c is not None:
                out.append(("customer", c.id, c.budgets, c.rate_limits))
        return out
