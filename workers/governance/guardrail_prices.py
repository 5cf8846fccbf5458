"""What Bedrock guardrails cost: USD per 1,000 text units for each policy. Pure.

AWS meters a guardrail per policy (README "Guardrails"): one text unit is up to 1,000 characters of
one text block, and each policy the guardrail has counts its own units. ApplyGuardrail's answer says
how many each policy used (`usage`); the gateway charges exactly those.

Shipped prices: Amazon Bedrock pricing page (aws.amazon.com/bedrock/pricing, "Amazon Bedrock
Guardrails"), on-demand, as of 2024-12 (the price reduction of December 2024), checked 2026-12:

    content filters (text)            0.15 per 1,000 text units    contentPolicyUnits
    denied topics                     0.15                         topicPolicyUnits
    sensitive information (PII)       0.10                         sensitiveInformationPolicyUnits
    sensitive information (regex)     free                         sensitiveInformationPolicyFreeUnits
    word filters                      free                         wordPolicyUnits
    contextual grounding checks       0.10                         contextualGroundingPolicyUnits
    automated reasoning checks        0.17                         automatedReasoningPolicyUnits
    content filters (image)           0.00075 per image            contentPolicyImageUnits

A guardrail applied inside a Converse, ConverseStream or InvokeModel call is billed the same way;
Bedrock reports its units only in the guardrail trace (`invocationMetrics.usage` of each
assessment), which it returns when the request enabled the trace: the call is then charged those
units on top of its tokens. `call_max_micros` is the reservation's bound for such a call: the
input's units (formats/bedrock/guardrail.py `call_units`) plus the answer's, estimated at
OUTPUT_CHARS_PER_TOKEN characters per output token (twice the usual 3 to 4: an estimate, since a
token has no proven character bound), every text policy at its price.

VERIFY BEFORE BILLING; `[guardrails.prices]` in the config overrides any of them (same field names).
A unit field the table does not know is charged at the dearest text-unit price, so a budget holds.
Money is integer micro-dollars, as everywhere: USD per 1,000 units x units x 1,000.
"""
from __future__ import annotations

import math

# usage field -> USD per 1,000 units (contentPolicyImageUnits: per 1,000 images)
SHIPPED: dict[str, float] = {
    "contentPolicyUnits": 0.15,
    "topicPolicyUnits": 0.15,
    "sensitiveInformationPolicyUnits": 0.10,
    "sensitiveInformationPolicyFreeUnits": 0.0,
    "wordPolicyUnits": 0.0,
    "contextualGroundingPolicyUnits": 0.10,
    "automatedReasoningPolicyUnits": 0.17,
    "contentPolicyImageUnits": 0.75,
}
TEXT_FIELDS = tuple(k for k in SHIPPED if k != "contentPolicyImageUnits")
UNIT_CHARS = 1000               # one text unit: up to 1,000 characters of a text block
OUTPUT_CHARS_PER_TOKEN = 8      # the reservation's estimate of an answer's characters per token


class GuardrailPrices:
    def __init__(self, overrides: dict[str, float] | None = None):
        unknown = set(overrides or {}) - set(SHIPPED)
        if unknown:
            raise ValueError(f"guardrails.prices: unknown policy {sorted(unknown)[0]!r} "
                             f"(known: {', '.join(SHIPPED)})")
        self.per_1000 = {**SHIPPED, **{k: float(v) for k, v in (overrides or {}).items()}}
        self.dearest_text = max(self.per_1000[k] for k in TEXT_FIELDS)

    def cost_micros(self, units: dict[str, int]) -> int:
        """What the units ApplyGuardrail reported cost, in micro-dollars (rounded to the nearest)."""
        return round(sum(n * self.per_1000.get(k, self.dearest_text) for k, n in units.items()) * 1000)

    def max_cost_micros(self, text_units: int, images: int) -> int:
        """An upper bound for a request of `text_units` per policy and `images`: every text policy
        at its price for all of them (rounded up)."""
        per_unit = sum(self.per_1000[k] for k in TEXT_FIELDS)
        return math.ceil((text_units * per_unit + images * self.per_1000["contentPolicyImageUnits"]) * 1000)

    def call_max_micros(self, input_units: int, images: int, max_output: int) -> int:
        """An upper bound for the guardrail of a model call: `input_units` text units and `images`
        (its input, per policy) plus the units of an answer of `max_output` tokens (estimated,
        module docstring), every text policy at its price."""
        out_units = -(-max_output * OUTPUT_CHARS_PER_TOKEN // UNIT_CHARS) if max_output > 0 else 0
        return self.max_cost_micros(input_units + out_units, images)
