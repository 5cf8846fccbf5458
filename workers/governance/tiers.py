"""Service-tier prices: what a request costs in the tier its upstream served it in. Pure.

Bedrock (`serviceTier.type`, X-Amzn-Bedrock-Service-Tier) and OpenAI (`service_tier`) both offer
`priority` (faster, dearer) and `flex` (slower, cheaper) next to `default`. The tier the upstream
*reported* (governance prices what was served, not what was asked) picks the price:

  1. `[pricing."GLOB".tiers.TIER]` in the config ({input, output, cache_read?, cache_write?,
     cache_write_1h?}, USD per 1M tokens), the first entry whose glob matches (as PricingTable matches names);
  2. the shipped per-model tier prices below (OpenAI's published priority and flex prices);
  3. for a Bedrock model id ("vendor.model…", or an inference profile's base model), Bedrock's
     tier rule applied to the Standard price:
     priority = 1.75 x, flex = 0.5 x (Amazon Bedrock pricing, "Service tiers", 2025-11);
  4. otherwise the model's Standard price (a tier the table does not know costs what default does).

`default` and `reserved` (provisioned capacity, billed apart by AWS) use the Standard price.

Sources (VERIFY BEFORE BILLING): OpenAI Priority processing page (openai.com/api-priority-processing,
checked 2026-12) and the OpenAI Flex processing guide (50% of Standard, checked 2026-12);
aws.amazon.com/bedrock/pricing "Priority" / "Flex" tiers, as of 2025-11.
"""
from __future__ import annotations

import fnmatch
import re

from .pricing import Price, normalize, price_of

TIERS = ("priority", "flex")
BEDROCK_RULE = {"priority": 1.75, "flex": 0.5}
_BEDROCK_ID = re.compile(r"^[a-z0-9-]+\.[a-z0-9]")     # anthropic.…, amazon.…, meta.…, openai.gpt-oss…

# OpenAI, USD per 1M tokens: (input, cached input, output)
_OPENAI = {
    "priority": {
        ("gpt-5", "gpt-5-20*", "gpt-5.1", "gpt-5.1-20*"): (2.50, 0.25, 20.00),
        ("gpt-5-mini", "gpt-5-mini-20*"): (0.45, 0.045, 3.60),
        ("gpt-4.1", "gpt-4.1-20*"): (3.50, 0.875, 14.00),
        ("gpt-4.1-mini", "gpt-4.1-mini-20*"): (0.70, 0.175, 2.80),
        ("gpt-4.1-nano", "gpt-4.1-nano-20*"): (0.20, 0.05, 0.80),
        ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"): (4.25, 2.125, 17.00),
        ("gpt-4o-mini", "gpt-4o-mini-20*"): (0.25, 0.125, 1.00),
        ("o3", "o3-20*"): (3.50, 0.875, 14.00),
        ("o4-mini", "o4-mini-20*"): (2.00, 0.50, 8.00),
    },
    "flex": {
        ("gpt-5", "gpt-5-20*"): (0.625, 0.0625, 5.00),
        ("gpt-5-mini", "gpt-5-mini-20*"): (0.125, 0.0125, 1.00),
        ("gpt-5-nano", "gpt-5-nano-20*"): (0.025, 0.0025, 0.20),
        ("o3", "o3-20*"): (1.00, 0.25, 4.00),
        ("o4-mini", "o4-mini-20*"): (0.55, 0.1375, 2.20),
    },
}
SHIPPED: dict[str, dict[str, Price]] = {
    tier: {glob: Price(i, o, cache_read=c) for globs, (i, c, o) in table.items() for glob in globs}
    for tier, table in _OPENAI.items()}




def _find(table: dict[str, Price], names) -> Price | None:
    for name in names:
        if name in table:
            return table[name]
    for glob in sorted(table, key=lambda g: (-len(g.replace("*", "")), g)):    # most specific first
        if any(fnmatch.fnmatchcase(name, glob) for name in names):
            return table[glob]
    return None


class TierPricing:
    def __init__(self, pricing: dict | None = None):
        """`pricing`: the config's [pricing."GLOB"] tables; their `tiers` sub-tables are read here."""
        self.overrides: dict[str, dict[str, Price]] = {}
        for glob, raw in (pricing or {}).items():
            for tier, p in (raw.get("tiers") or {}).items():
                self.overrides.setdefault(tier, {})[glob.lower()] = price_of(p)

    def price(self, tier: str, standard: Price, *names: str) -> Price:
        """The price of `names` (the first known wins, as in PricingTable) in `tier`; `standard`
        is their Standard price."""
        if tier not in TIERS and tier not in self.overrides:
            return standard
        forms = [normalize(n) for n in names if n]
        for table in (self.overrides.get(tier, {}), SHIPPED.get(tier, {})):
            found = _find(table, forms)
            if found is not None:
                return found
        if tier in BEDROCK_RULE and any(_BEDROCK_ID.match(f) for f in forms):
            return standard.scaled(BEDROCK_RULE[tier])
        return standard
