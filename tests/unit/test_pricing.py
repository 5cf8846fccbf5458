"""The pricing table and request cost (workers/governance/pricing.py)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finops.workers.governance import pricing
from finops.workers.governance.pricing import (SHIPPED, Price, PricingTable, cost, cost_micros, max_cost,
                                               max_cost_micros, normalize)

A = {"input": 1.0, "output": 2.0}
B = {"input": 3.0, "output": 4.0}
C = {"input": 5.0, "output": 6.0}


def p(raw: dict) -> Price:
    return Price(raw["input"], raw["output"], raw.get("cache_read"), raw.get("cache_write"), raw.get("cache_write_1h"))


# --- normalize -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id, expected", [
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-3-7-sonnet-20250219-v1:0"),
    ("apac.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("jp.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("ca.meta.llama3-3-70b-instruct-v1:0", "meta.llama3-3-70b-instruct-v1:0"),
    # ARNs: foundation model, system inference profile, application inference profile
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
     "anthropic.claude-3-haiku-20240307-v1:0"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
     "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1b2c3d4e5f6", "a1b2c3d4e5f6"),
    ("arn:aws-us-gov:bedrock:us-gov-west-1::foundation-model/amazon.titan-embed-text-v2:0",
     "amazon.titan-embed-text-v2:0"),
    # PROVIDER/ prefixes, only when the part before "/" has no "." or ":"
    ("openai/gpt-4o", "gpt-4o"),
    ("mistral/mistral-large-latest", "mistral-large-latest"),
    ("bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("openrouter/anthropic/claude-3-5-haiku", "claude-3-5-haiku"),
    ("example.com/gpt-4o", "example.com/gpt-4o"),
    ("ollama:latest/gpt-4o", "ollama:latest/gpt-4o"),
    ("openai/", "openai/"),
    # version suffixes kept; case, whitespace and URL-encoding folded
    ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5@20250929"),
    ("GPT-4o", "gpt-4o"),
    ("  gpt-4o\n", "gpt-4o"),
    ("anthropic.claude-3-haiku-20240307-v1%3A0", "anthropic.claude-3-haiku-20240307-v1:0"),
    # look-alikes of region prefixes are left alone
    ("usage-model", "usage-model"),
    ("us.", "us."),
    ("europe.model", "europe.model"),
])
def test_normalize(model_id, expected):
    assert normalize(model_id) == expected


def test_normalize_strips_one_region_prefix_only():
    assert normalize("us.eu.model") == "eu.model"


# --- lookup order --------------------------------------------------------------------------------

def test_exact_key_beats_glob():
    table = PricingTable({"my-*": A, "my-model": B})
    assert table.price_for("my-model") == p(B)
    assert table.price_for("my-other") == p(A)


def test_most_specific_glob_wins_whatever_the_order():
    keys = {"claude-*": A, "claude-3-5-*": B, "claude-3-5-sonnet-*": C}
    for overrides in (keys, dict(reversed(list(keys.items())))):
        table = PricingTable(overrides)
        assert table.price_for("claude-3-5-sonnet-20241022") == p(C)
        assert table.price_for("claude-3-5-haiku-20241022") == p(B)
        assert table.price_for("claude-2") == p(A)


def test_question_mark_is_a_wildcard_too():
    table = PricingTable({"model-?": A, "model-*": B})
    assert table.price_for("model-1") == p(A)           # as many literal characters, but no "*"
    assert table.price_for("model-12") == p(B)


def test_equally_specific_globs_are_ordered_by_their_text():
    for overrides in ({"a*c": A, "ab*": B}, {"ab*": B, "a*c": A}):
        assert PricingTable(overrides).price_for("abc") == p(A)      # "a*c" < "ab*"


def test_overrides_win_over_shipped():
    assert PricingTable({"gpt-4o": A}).price_for("gpt-4o") == p(A)
    # even an override glob beats a shipped exact key
    assert PricingTable({"gpt-*": A}).price_for("gpt-4o") == p(A)
    # and an override for any of the names beats a shipped price for an earlier one
    table = PricingTable({"my-upstream-model": A})
    assert table.price_for("anthropic.claude-3-haiku-20240307-v1:0", "my-upstream-model") == p(A)


def test_names_are_tried_in_order():
    table = PricingTable()
    assert table.price_for("gpt-4o", "claude-3-haiku-20240307") == SHIPPED["gpt-4o"]
    assert table.price_for("claude-3-haiku-20240307", "gpt-4o") == SHIPPED["claude-3-haiku*"]
    assert table.price_for("my-route", "gpt-4o") == SHIPPED["gpt-4o"]
    assert table.price_for("", "gpt-4o") == SHIPPED["gpt-4o"]


def test_default_prices_unknown_models_only():
    table = PricingTable({"default": A})
    assert table.default == p(A)
    assert table.price_for("some-new-model") == p(A)
    assert table.price_for() == p(A)
    assert table.price_for("gpt-4o") == SHIPPED["gpt-4o"]
    assert table.price_for("default-model") == p(A)       # only as the fallback, not as a key


def test_unknown_is_none_without_default():
    table = PricingTable()
    assert table.default is None
    assert table.price_for("some-new-model") is None
    assert table.price_for("anthropic.claude-opus-9-v1:0", "claude-opus-9") is None
    assert table.price_for() is None
    assert PricingTable(None).price_for("x") is None
    assert PricingTable({}).price_for("x") is None


def test_names_are_normalized_before_lookup():
    table = PricingTable({"my-model": A})
    assert table.price_for("openai/My-Model") == p(A)
    assert table.price_for("arn:aws:bedrock:us-east-1:1:inference-profile/us.my-model") == p(A)
    assert PricingTable().price_for("openai/gpt-4o") == SHIPPED["gpt-4o"]


def test_override_keys_are_case_insensitive():
    table = PricingTable({"My-Model": A, "Other-*": B})
    assert table.price_for("my-model") == p(A)
    assert table.price_for("OTHER-1") == p(B)


def test_override_cache_prices():
    table = PricingTable({"m": {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.25}})
    assert table.price_for("m") == Price(1.0, 2.0, 0.1, 1.25)
    assert PricingTable({"m": {"input": 1, "output": 2}}).price_for("m") == Price(1.0, 2.0)


def test_override_without_output_is_rejected():
    with pytest.raises(ValueError, match="input and output"):
        PricingTable({"m": {"input": 1.0}})


def test_region_qualified_names():
    table = PricingTable()
    sonnet_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert table.price_for(sonnet_45) == Price(3.0, 15.0, 0.3, 3.75, 6.0)
    assert table.price_for("global." + sonnet_45) == Price(3.0, 15.0, 0.3, 3.75, 6.0)
    for geo in ("us", "eu", "apac", "jp", "au", "ca"):
        assert table.price_for(f"{geo}.{sonnet_45}") == Price(3.3, 16.5, 0.33, 4.125, 6.6)
    assert table.price_for("us.anthropic.claude-haiku-4-5-20251001-v1:0") == Price(1.1, 5.5, 0.11, 1.375, 2.2)
    assert table.price_for("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-opus-4-5-20251101-v1:0") \
        == Price(5.5, 27.5, 0.55, 6.875, 11.0)
    # older models cost the same through every profile
    assert table.price_for("us.anthropic.claude-3-5-sonnet-20241022-v2:0") == Price(3.0, 15.0, 0.3, 3.75, 6.0)
    # an override on the bare name wins over the shipped geo price; one on a profile name is honoured
    assert PricingTable({"anthropic.claude-sonnet-4-5*": A}).price_for("us." + sonnet_45) == p(A)
    table = PricingTable({"eu.anthropic.claude-3-5-sonnet-*": A})
    assert table.price_for("eu.anthropic.claude-3-5-sonnet-20240620-v1:0") == p(A)
    assert table.price_for("us.anthropic.claude-3-5-sonnet-20240620-v1:0") == Price(3.0, 15.0, 0.3, 3.75, 6.0)


def test_answers_are_memoized_and_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(pricing, "_MEMO_MAX", 10)
    table = PricingTable({"default": A})
    first = table.price_for("gpt-4o")
    assert table.price_for("gpt-4o") is first
    for i in range(25):
        assert table.price_for(f"unknown-{i}") == p(A)
        assert len(table._memo) <= 10
    assert table.price_for("gpt-4o") == SHIPPED["gpt-4o"]


# --- the shipped table ----------------------------------------------------------------------------

def is_embedding(key: str) -> bool:
    return "embed" in key


def test_every_shipped_price_is_sane():
    assert len(SHIPPED) > 100
    for key, price in SHIPPED.items():
        assert isinstance(price, Price), key
        assert 0 < price.input < 100, key
        assert 0 <= price.output < 200, key
        if is_embedding(key):
            assert price.output == 0, key
        else:
            assert price.output >= price.input, key
        if price.cache_read is not None:
            assert 0 < price.cache_read < price.input, key
        if price.cache_write is not None:
            assert price.cache_write >= price.input, key


def test_shipped_keys_are_lowercase_normalized_names():
    for key in SHIPPED:
        assert key == key.lower() == key.strip()
        if key.split(".", 1)[0] in ("us", "eu", "apac", "jp", "au", "ca"):
            assert pricing._strip_outer(key) == key, key          # geo-profile entries
        else:
            assert normalize(key) == key, key


def test_anthropic_cache_prices_follow_the_published_ratios():
    for key, price in SHIPPED.items():
        if "claude" in key and "claude-3-haiku" not in key:
            assert price.cache_read == pytest.approx(price.input * 0.1), key
            assert price.cache_write == pytest.approx(price.input * 1.25), key


REAL_IDS = [
    # Bedrock Anthropic
    "anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-opus-4-20250514-v1:0",
    "anthropic.claude-opus-4-1-20250805-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-3-opus-20240229-v1:0",
    "anthropic.claude-3-sonnet-20240229-v1:0",
    # Amazon
    "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0", "amazon.nova-premier-v1:0",
    "amazon.titan-text-lite-v1", "amazon.titan-text-express-v1", "amazon.titan-text-premier-v1:0",
    "amazon.titan-embed-text-v1", "amazon.titan-embed-text-v2:0",
    # Meta
    "meta.llama3-8b-instruct-v1:0", "meta.llama3-70b-instruct-v1:0", "meta.llama3-1-8b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0", "meta.llama3-1-405b-instruct-v1:0", "meta.llama3-2-1b-instruct-v1:0",
    "meta.llama3-2-3b-instruct-v1:0", "meta.llama3-2-11b-instruct-v1:0", "meta.llama3-2-90b-instruct-v1:0",
    "meta.llama3-3-70b-instruct-v1:0", "meta.llama4-scout-17b-instruct-v1:0", "meta.llama4-maverick-17b-instruct-v1:0",
    # Mistral, Cohere, OpenAI on Bedrock
    "mistral.mistral-7b-instruct-v0:2", "mistral.mixtral-8x7b-instruct-v0:1", "mistral.mistral-large-2402-v1:0",
    "mistral.mistral-large-2407-v1:0", "mistral.mistral-small-2402-v1:0",
    "cohere.command-r-v1:0", "cohere.command-r-plus-v1:0", "cohere.embed-english-v3", "cohere.embed-multilingual-v3",
    "openai.gpt-oss-120b-1:0",
    # OpenAI
    "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4.1", "gpt-4.1-2025-04-14",
    "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o1-2024-12-17", "o3", "o3-mini", "o4-mini", "o4-mini-2025-04-16",
    "gpt-5", "gpt-5-2025-08-07", "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large",
    # Anthropic API, aliases and dated
    "claude-3-5-haiku-latest", "claude-3-5-haiku-20241022", "claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022",
    "claude-3-7-sonnet-latest", "claude-3-7-sonnet-20250219", "claude-sonnet-4-0", "claude-sonnet-4-20250514",
    "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-opus-4-0", "claude-opus-4-20250514",
    "claude-opus-4-1", "claude-opus-4-1-20250805", "claude-haiku-4-5", "claude-haiku-4-5-20251001",
    # Mistral API
    "mistral-large-latest", "mistral-medium-latest", "mistral-small-latest", "open-mistral-nemo",
    "codestral-latest", "ministral-8b-latest", "mistral-embed",
]


@pytest.mark.parametrize("model_id", REAL_IDS)
def test_common_models_are_priced(model_id):
    assert PricingTable().price_for(model_id) is not None
    assert PricingTable().price_for("us." + model_id) is not None


@pytest.mark.parametrize("model_id, inp, out, cache_read, cache_write, cache_write_1h", [
    ("anthropic.claude-3-haiku-20240307-v1:0", 0.25, 1.25, 0.03, 0.30, 0.5),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", 0.80, 4.00, 0.08, 1.00, 1.6),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", 3.00, 15.00, 0.30, 3.75, 6.0),
    ("claude-3-7-sonnet-latest", 3.00, 15.00, 0.30, 3.75, 6.0),
    ("claude-sonnet-4-20250514", 3.00, 15.00, 0.30, 3.75, 6.0),
    ("claude-opus-4-1", 15.00, 75.00, 1.50, 18.75, 30.0),
    ("anthropic.claude-opus-4-20250514-v1:0", 15.00, 75.00, 1.50, 18.75, 30.0),
    ("anthropic.claude-opus-4-5-20251101-v1:0", 5.00, 25.00, 0.50, 6.25, 10.0),       # not Opus 4's price
    ("claude-haiku-4-5-20251001", 1.00, 5.00, 0.10, 1.25, 2.0),
    ("amazon.nova-micro-v1:0", 0.035, 0.14, 0.00875, None, None),
    ("amazon.nova-pro-v1:0", 0.80, 3.20, 0.20, None, None),
    ("amazon.titan-embed-text-v2:0", 0.02, 0.0, None, None, None),
    ("meta.llama3-3-70b-instruct-v1:0", 0.72, 0.72, None, None, None),
    ("mistral.mistral-7b-instruct-v0:2", 0.15, 0.20, None, None, None),
    ("cohere.command-r-plus-v1:0", 3.00, 15.00, None, None, None),
    ("gpt-4o", 2.50, 10.00, 1.25, None, None),
    ("gpt-4o-2024-05-13", 5.00, 15.00, None, None, None),
    ("gpt-4o-mini-2024-07-18", 0.15, 0.60, 0.075, None, None),                         # not gpt-4o's price
    ("gpt-4.1-mini-2025-04-14", 0.40, 1.60, 0.10, None, None),                         # not gpt-4.1's price
    ("o3", 2.00, 8.00, 0.50, None, None),
    ("gpt-5", 1.25, 10.00, 0.125, None, None),
    ("gpt-5-nano-2025-08-07", 0.05, 0.40, 0.005, None, None),
    ("text-embedding-3-small", 0.02, 0.0, None, None, None),
    ("mistral-embed", 0.10, 0.0, None, None, None),
])
def test_well_known_list_prices(model_id, inp, out, cache_read, cache_write, cache_write_1h):
    assert PricingTable().price_for(model_id) == Price(inp, out, cache_read, cache_write, cache_write_1h)


def test_price_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SHIPPED["gpt-4o"].input = 0.0


# --- cost ----------------------------------------------------------------------------------------

def test_cost_of_no_price_is_zero():
    assert cost(None, 1_000_000, 1_000_000, 5, 5) == 0.0
    assert max_cost(None, 1_000_000, 4096) == 0.0


def test_cost_input_and_output():
    price = Price(3.0, 15.0)
    assert cost(price, 1_000_000, 0) == 3.0
    assert cost(price, 0, 1_000_000) == 15.0
    assert cost(price, 1000, 500) == pytest.approx(0.003 + 0.0075)
    assert cost(price, 0, 0) == 0.0
    assert isinstance(cost(price, 1, 1), float)


def test_cost_with_published_cache_prices():
    price = Price(3.0, 15.0, cache_read=0.3, cache_write=3.75)
    got = cost(price, 100, 200, cache_read=1000, cache_write=2000)
    assert got == pytest.approx((100 * 3.0 + 200 * 15.0 + 1000 * 0.3 + 2000 * 3.75) / 1e6)
    assert cost(price, 0, 0, cache_read=1_000_000) == pytest.approx(0.3)
    assert cost(price, 0, 0, cache_write=1_000_000) == pytest.approx(3.75)


def test_cache_tokens_without_a_cache_price_cost_the_input_price():
    price = Price(2.0, 8.0)
    assert cost(price, 0, 0, cache_read=1_000_000) == 2.0
    assert cost(price, 0, 0, cache_write=1_000_000) == 2.0
    openai = SHIPPED["gpt-4o"]                                   # cached reads priced, writes not
    assert cost(openai, 0, 0, cache_read=1_000_000) == pytest.approx(1.25)
    assert cost(openai, 0, 0, cache_write=1_000_000) == pytest.approx(2.5)


def test_a_zero_cache_price_is_a_price():
    assert cost(Price(1.0, 1.0, cache_read=0.0, cache_write=0.0), 0, 0, 1_000_000, 1_000_000) == 0.0


def test_max_cost_prices_every_input_token_at_the_dearest_input_price():
    price = Price(3.0, 15.0, cache_read=0.3, cache_write=3.75, cache_write_1h=4.5)    # a 1-hour write costs 1.5x
    assert max_cost(price, 10_000, 4096) == pytest.approx((10_000 * 4.5 + 4096 * 15.0) / 1e6)
    assert max_cost(price, 10_000, 4096) >= cost(price, 0, 4096, cache_write=10_000)
    named_5m_only = Price(3.0, 15.0, cache_read=0.3, cache_write=3.75)    # its 1-hour writes: 2x input
    assert max_cost(named_5m_only, 10_000, 4096) == pytest.approx((10_000 * 6.0 + 4096 * 15.0) / 1e6)
    assert max_cost(Price(3.0, 15.0), 10_000, 4096) == pytest.approx((10_000 * 3.0 + 4096 * 15.0) / 1e6)
    assert max_cost(price, 10_000, 4096) >= cost(price, 10_000, 100)
    plain = Price(3.0, 15.0)
    assert max_cost(plain, 10_000, 4096) == cost(plain, 10_000, 4096)


def test_cost_micros_is_tokens_times_price_per_million():
    price = Price(3.0, 15.0, cache_read=0.3, cache_write=3.75)
    # 12 in, 34 out, 5 read, 7 write: 36 + 510 + 1.5 + 26.25 = 573.75 micro-dollars -> 574
    assert cost_micros(price, 12, 34, 5, 7) == 574
    assert cost(price, 12, 34, 5, 7) == 0.000574
    assert cost_micros(None, 10, 10) == 0 and max_cost_micros(None, 10, 10) == 0


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**7), st.integers(0, 10**7),
       st.integers(0, 10**7), st.sampled_from([Price(3.0, 15.0, 0.3, 3.75), Price(0.15, 0.6, 0.075),
                                               Price(0.035, 0.14, 0.00875), Price(2.5, 10.0), Price(0.1, 0.0)]))
def test_no_usage_within_the_bounds_costs_more_than_the_reservation(in_bound, out_cap, a, b, c, price):
    """Split the input bound any way between input, cache reads and cache writes, produce at most
    the output cap: the charge never exceeds the reservation (settled spend <= budget)."""
    a, b = min(a, in_bound), min(b, in_bound)
    a, b = min(a, in_bound - b), b
    c = min(c, in_bound - a - b)
    assert cost_micros(price, a, out_cap, b, c) <= max_cost_micros(price, in_bound, out_cap)


def test_one_hour_cache_writes_cost_the_one_hour_write_price():
    price = PricingTable().price_for("anthropic.claude-3-5-sonnet-20241022-v2:0")
    assert price.cache_write_1h == 2 * price.input                      # Anthropic: 2x input
    # 1,000 writes, 400 of them 1-hour: 600 at 3.75, 400 at 6.00 per million
    assert cost_micros(price, 0, 0, 0, 1000, 400) == round(600 * 3.75 + 400 * 6.0)
    assert cost_micros(price, 0, 0, 0, 1000, 1000) == 6000              # all 1-hour: 2x input
    assert cost_micros(price, 0, 0, 0, 1000) == 3750                    # none: the 5-minute price
    assert cost_micros(price, 0, 0, 0, 1000, 5000) == 6000              # never more 1-hour than writes
    assert cost_micros(price, 0, 0, 0, 0, 500) == 0


def test_one_hour_writes_without_their_own_price_cost_anthropics_rule_at_least():
    """A price naming a 5-minute write but no 1-hour one (an override): 1-hour writes at the dearer
    of the write price and 2x input, never below what Anthropic bills them."""
    assert cost_micros(Price(1.0, 1.0, cache_write=1.25), 0, 0, 0, 1000, 1000) == 2000
    assert cost_micros(Price(1.0, 1.0, cache_write=2.5), 0, 0, 0, 1000, 1000) == 2500
    assert cost_micros(Price(1.0, 1.0, cache_write=1.25), 0, 0, 0, 1000, 400) == 600 * 1.25 + 400 * 2
    assert cost_micros(Price(2.0, 1.0), 0, 0, 0, 1000, 1000) == 2000            # no write price: input
    assert cost_micros(Price(1.0, 1.0, cache_write_1h=3.0), 0, 0, 0, 1000, 500) == 500 + 1500


def test_cache_write_1h_is_configurable_and_scaled_by_geo_profiles():
    table = PricingTable({"m*": {"input": 1, "output": 2, "cache_write": 1.5, "cache_write_1h": 2.5}})
    assert table.price_for("m1") == Price(1.0, 2.0, None, 1.5, 2.5)
    sonnet_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert PricingTable().price_for("us." + sonnet_45).cache_write_1h == 6.6


def test_the_reservation_prices_input_at_the_one_hour_write_price():
    price = PricingTable().price_for("claude-haiku-4-5-20251001")         # 1h write 2.0 > 5m write 1.25
    assert max_cost_micros(price, 10_000, 100) == 10_000 * 2 + 100 * 5
    assert max_cost_micros(price, 10_000, 100) == cost_micros(price, 0, 100, 0, 10_000, 10_000)
    assert max_cost_micros(Price(1.0, 1.0, cache_write_1h=4.0), 10, 0) == 40


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**7), st.integers(0, 10**7),
       st.integers(0, 10**7), st.integers(0, 10**7),
       st.sampled_from([Price(3.0, 15.0, 0.3, 3.75, 6.0), Price(0.25, 1.25, 0.03, 0.30, 0.50),
                        Price(1.0, 2.0, cache_write_1h=9.0), Price(2.5, 10.0)]))
def test_no_usage_with_one_hour_writes_costs_more_than_the_reservation(in_bound, out_cap, a, b, c, h, price):
    a, b = min(a, in_bound), min(b, in_bound)
    a, b = min(a, in_bound - b), b
    c = min(c, in_bound - a - b)
    assert cost_micros(price, a, out_cap, b, c, min(h, c)) <= max_cost_micros(price, in_bound, out_cap)


def test_real_request_cost():
    table = PricingTable()
    price = table.price_for("us.anthropic.claude-3-5-haiku-20241022-v1:0")
    # 12k fresh input, 800 output, 50k read from cache, 2k written to it
    expected = (12_000 * 0.8 + 800 * 4.0 + 50_000 * 0.08 + 2_000 * 1.0) / 1e6
    assert cost(price, 12_000, 800, cache_read=50_000, cache_write=2_000) == pytest.approx(expected)
