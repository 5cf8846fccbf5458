"""Money as the gateway counts it: integer micro-dollars. Pure.

Every figure a request is charged by (x-bf-cost-usd, the ledger, the request log, reports) is
one integer of micro-dollars, shown as USD with 6 decimals, so they agree to the micro-dollar and
sums never drift. With prices in USD per million tokens, tokens x price is micro-dollars
(pricing.py).
"""
from __future__ import annotations

MICRO = 1_000_000       # micro-dollars in a dollar


def micros(usd: float) -> int:
    """USD -> integer micro-dollars, rounded to the nearest."""
    return round(usd * MICRO)


def usd(micros_: int) -> float:
    """Integer micro-dollars -> USD, to the micro-dollar."""
    return round(micros_ / MICRO, 6)
