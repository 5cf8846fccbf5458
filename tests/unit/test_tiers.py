"""Service-tier prices (workers/governance/tiers.py)."""
from __future__ import annotations

import pytest

from finops.workers.governance.pricing import Price, PricingTable
from finops.workers.governance.tiers import TierPricing

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def std(name):
    return PricingTable().price_for(name)


def test_openai_published_priority_and_flex_prices():
    t = TierPricing()
    assert t.price("priority", std("gpt-5"), "gpt-5") == Price(2.50, 20.00, cache_read=0.25)
    assert t.price("flex", std("gpt-5"), "gpt-5-2025-08-07") == Price(0.625, 5.00, cache_read=0.0625)
    # the first name known wins, as in PricingTable: a client alias routed to gpt-4o
    assert t.price("priority", std("gpt-4o"), "my-alias", "gpt-4o").input == 4.25


def test_bedrock_rule_on_the_standard_price():
    t = TierPricing()
    base = std(CLAUDE)
    assert t.price("priority", base, CLAUDE) == Price(5.25, 26.25, cache_read=0.525, cache_write=6.5625,
                                                             cache_write_1h=10.5)
    assert t.price("flex", base, "us." + CLAUDE).output == 7.5


@pytest.mark.parametrize("tier", ["default", "reserved", "", "bogus"])
def test_other_tiers_cost_the_standard_price(tier):
    base = std(CLAUDE)
    assert TierPricing().price(tier, base, CLAUDE) is base


def test_a_tier_without_a_price_on_a_non_bedrock_model_costs_standard():
    base = std("mistral-large-latest")
    assert TierPricing().price("priority", base, "mistral-large-latest") is base


def test_config_tiers_win():
    t = TierPricing({"anthropic.claude-3-5*": {"input": 3.0, "output": 15.0,
                                                "tiers": {"flex": {"input": 1.0, "output": 2.0}}}})
    assert t.price("flex", std(CLAUDE), CLAUDE) == Price(1.0, 2.0)
    assert t.price("priority", std(CLAUDE), CLAUDE).input == 5.25     # not configured: the rule


def test_tier_overrides_and_the_bedrock_rule_keep_the_one_hour_write_price():
    t = TierPricing({"claude*": {"input": 3, "output": 15,
                                 "tiers": {"flex": {"input": 1.5, "output": 7.5, "cache_write_1h": 3.0}}}})
    assert t.price("flex", std(CLAUDE), "claude-x").cache_write_1h == 3.0
    assert TierPricing().price("flex", std(CLAUDE), CLAUDE).cache_write_1h == std(CLAUDE).cache_write_1h * 0.5
