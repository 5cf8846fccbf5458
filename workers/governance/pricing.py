"""The pricing table and the cost of a request. Pure: no I/O.

Prices are USD per 1,000,000 tokens: vendor list prices, on-demand (Bedrock: Standard tier,
us-east-1, the global / in-region rate), as of 2025-11; the Mistral API "-latest" aliases as of
2026-07, since those aliases move to new models. VERIFY BEFORE BILLING: list prices change, and an
operator's negotiated prices belong in the config's [pricing."GLOB"] tables, which win over these.

What is deliberately not modelled (override per model if it matters to you):
  * long-context surcharges (e.g. Claude Sonnet 4/4.5 above 200k input tokens: 2x input, 1.5x output);
  * batch, flex, priority and provisioned-throughput prices; other AWS regions' prices.

Cache prices. `Price.cache_read` / `cache_write` / `cache_write_1h` hold the vendor's published
price where there is one: Anthropic (read 0.1x input, 5-minute write 1.25x input, 1-hour write 2x
input), OpenAI (cached input; OpenAI charges nothing extra to write), Amazon Nova (cache read 0.25x
input). None means "no separate price": cache reads and writes are then charged at the input
price (exact for OpenAI and Nova cache writes, and never lower than a read for everything else),
and 1-hour writes, when `cache_write` is named, at the dearer of it and 2x input
(`Price.write_1h_price`: Anthropic's rule; only Anthropic's models report 1-hour writes), so an
override that names its input and `cache_write` but not `cache_write_1h` never charges them below
what Anthropic bills.

Which cache writes are 1-hour ones is what the upstream reports (Bedrock's `cacheDetails`,
Anthropic's `usage.cache_creation`; `Usage.cache_write_1h_tokens`, the usage dict's "cw1h");
writes it does not split by TTL are 5-minute writes. Guardrail text units, which a call may be
charged beside its tokens, are priced in guardrail_prices.py.

Bedrock's geographic cross-region inference profiles (us., eu., apac., jp., au., ca.) of Claude
Sonnet 4.5, Haiku 4.5 and Opus 4.5 cost 10% more than the global profile and are priced so
(matched on the name before its region prefix is stripped); other profiles cost what the model does.
Source: AWS Bedrock user guide, "Global cross-Region inference" (global profiles "approximately 10%
savings on both input and output token pricing compared to geographic cross-Region inference"),
checked 2026-12-06. Application inference profile ARNs are priced as the model their
[[inference_profiles]] entry names (shared/profiles.py; the governor passes that name).

Guarantees:
  * `normalize(model_id)` returns the lowercase bare model name: no ARN, no "PROVIDER/" prefix (only
    when the part before "/" has no "." or ":"), no inference-profile region prefix; version
    suffixes are kept ("anthropic.claude-3-5-sonnet-20241022-v2:0").
  * `PricingTable(overrides).price_for(*names)` returns the Price of the first name that matches,
    trying the configured overrides (every name) before SHIPPED (every name); within a table and a
    name, an exact key before the most specific glob (most non-wildcard characters, then fewest
    "*", then the pattern's text: no answer depends on insertion order). Failing all, the override
    "default" if configured, else None. Keys are matched, case-insensitively, against the name as
    normalized, and first against the name with its region prefix kept (so "us.anthropic.…" keys
    can price a profile). Answers are memoized, in a bounded memo.
  * `cost_micros` is a request's cost in integer micro-dollars, the unit the ledger, the cost
    header and the request log share; `max_cost_micros` an upper bound for a reservation (every
    input token at the dearest of the input, cache-read, cache-write and 1-hour cache-write
    prices). `cost` / `max_cost` are the same in USD. 0 when the price is None.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote

from .money import MICRO

__all__ = ["Price", "SHIPPED", "PricingTable", "normalize", "MICRO", "cost_micros", "max_cost_micros", "cost",
           "max_cost", "prompt_cache_saved_micros", "price_of", "CACHE_KEYS"]

_MEMO_MAX = 4096          # price_for answers kept; the names come from clients, so it is bounded
_REGION = re.compile(r"^(?:us-gov|us|eu|apac|global|jp|au|ca)\.(?=.)")
_GEO = ("us", "eu", "apac", "jp", "au", "ca")     # Bedrock geographic inference profiles
_WILD = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. A None cache price means cache tokens are charged at the input price;
    a None `cache_write_1h`, that 1-hour cache writes are charged as `write_1h_price` says."""
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None

    @property
    def write_price(self) -> float:
        """What a (5-minute) cache-write token costs."""
        return self.input if self.cache_write is None else self.cache_write

    @property
    def write_1h_price(self) -> float:
        """What a 1-hour cache-write token costs: `cache_write_1h`; else, for a price that names a
        (5-minute) `cache_write`, the dearer of it and Anthropic's rule, 2x input (only Anthropic's
        models report 1-hour writes: an override naming its input and 5-minute prices does not
        undercharge them); else the input price, as every cache write without a price."""
        if self.cache_write_1h is not None:
            return self.cache_write_1h
        if self.cache_write is None:
            return self.input
        return max(self.cache_write, round(self.input * 2, 6))

    def scaled(self, k: float) -> "Price":
        """Every price times `k` (rounded to 6 decimals); None stays None."""
        def s(x):
            return None if x is None else round(x * k, 6)
        return Price(s(self.input), s(self.output), s(self.cache_read), s(self.cache_write), s(self.cache_write_1h))


def _anthropic(inp: float, out: float) -> Price:
    """Anthropic's published cache prices: read 0.1x input, 5-minute write 1.25x, 1-hour write 2x."""
    return Price(inp, out, cache_read=round(inp * 0.1, 6), cache_write=round(inp * 1.25, 6),
                 cache_write_1h=round(inp * 2, 6))


def _geo_premium(price: Price) -> Price:
    """The +10% of Bedrock's geographic (non-global) inference profiles for Claude 4.5 models."""
    return price.scaled(1.1)


def _with_geo(price: Price, *bedrock_globs: str) -> list[tuple[Price, tuple[str, ...]]]:
    """Geo-profile entries ("us.anthropic.claude-…") for Bedrock globs, at the premium price."""
    return [(_geo_premium(price), tuple(f"{geo}.{g}" for geo in _GEO for g in bedrock_globs))]


_SONNET = _anthropic(3.00, 15.00)
_OPUS = _anthropic(15.00, 75.00)
_SONNET_4_5 = _SONNET
_HAIKU_4_5 = _anthropic(1.00, 5.00)
_OPUS_4_5 = _anthropic(5.00, 25.00)

# (price, keys) groups; keys are exact names or fnmatch globs over normalized names.
_GROUPS: list[tuple[Price, tuple[str, ...]]] = [
    # --- Anthropic Claude: Bedrock ids (anthropic.…), Anthropic API names and aliases, Vertex (…@date)
    (Price(0.25, 1.25, cache_read=0.03, cache_write=0.30, cache_write_1h=0.50),   # as published (not exactly 0.1x / 1.25x)
     ("anthropic.claude-3-haiku-*", "claude-3-haiku*")),
    (_SONNET, ("anthropic.claude-3-sonnet-*", "claude-3-sonnet*")),
    (_OPUS, ("anthropic.claude-3-opus-*", "claude-3-opus*")),
    (_anthropic(0.80, 4.00), ("anthropic.claude-3-5-haiku-*", "claude-3-5-haiku*")),
    (_SONNET, ("anthropic.claude-3-5-sonnet-*", "claude-3-5-sonnet*")),          # v1 (2024-06) and v2
    (_SONNET, ("anthropic.claude-3-7-sonnet-*", "claude-3-7-sonnet*")),
    (_SONNET, ("anthropic.claude-sonnet-4-2*",
               "claude-sonnet-4-0", "claude-sonnet-4-2*", "claude-sonnet-4@*")),
    (_SONNET_4_5, ("anthropic.claude-sonnet-4-5*", "claude-sonnet-4-5*")),
    (_OPUS, ("anthropic.claude-opus-4-2*", "claude-opus-4-0", "claude-opus-4-2*", "claude-opus-4@*")),
    (_OPUS, ("anthropic.claude-opus-4-1*", "claude-opus-4-1*")),
    (_OPUS_4_5, ("anthropic.claude-opus-4-5*", "claude-opus-4-5*")),
    (_HAIKU_4_5, ("anthropic.claude-haiku-4-5*", "claude-haiku-4-5*")),
    *_with_geo(_SONNET_4_5, "anthropic.claude-sonnet-4-5*"),
    *_with_geo(_HAIKU_4_5, "anthropic.claude-haiku-4-5*"),
    *_with_geo(_OPUS_4_5, "anthropic.claude-opus-4-5*"),
    # --- Amazon Nova (cache read 0.25x input; cache writes are charged as input) and Titan
    (Price(0.035, 0.14, cache_read=0.00875), ("amazon.nova-micro-v1*",)),
    (Price(0.06, 0.24, cache_read=0.015), ("amazon.nova-lite-v1*",)),
    (Price(0.80, 3.20, cache_read=0.20), ("amazon.nova-pro-v1*",)),
    (Price(2.50, 12.50, cache_read=0.625), ("amazon.nova-premier-v1*",)),
    (Price(0.15, 0.20), ("amazon.titan-text-lite-v1*",)),
    (Price(0.20, 0.60), ("amazon.titan-text-express-v1*",)),
    (Price(0.50, 1.50), ("amazon.titan-text-premier-v1*",)),
    (Price(0.10, 0.0), ("amazon.titan-embed-text-v1*",)),
    (Price(0.02, 0.0), ("amazon.titan-embed-text-v2*",)),
    # --- Meta Llama on Bedrock
    (Price(0.30, 0.60), ("meta.llama3-8b-instruct-v1*",)),
    (Price(2.65, 3.50), ("meta.llama3-70b-instruct-v1*",)),
    (Price(0.22, 0.22), ("meta.llama3-1-8b-instruct-v1*",)),
    (Price(0.72, 0.72), ("meta.llama3-1-70b-instruct-v1*",)),
    (Price(2.40, 2.40), ("meta.llama3-1-405b-instruct-v1*",)),
    (Price(0.10, 0.10), ("meta.llama3-2-1b-instruct-v1*",)),
    (Price(0.15, 0.15), ("meta.llama3-2-3b-instruct-v1*",)),
    (Price(0.16, 0.16), ("meta.llama3-2-11b-instruct-v1*",)),
    (Price(0.72, 0.72), ("meta.llama3-2-90b-instruct-v1*",)),
    (Price(0.72, 0.72), ("meta.llama3-3-70b-instruct-v1*",)),
    (Price(0.17, 0.66), ("meta.llama4-scout-17b-instruct-v1*",)),
    (Price(0.24, 0.97), ("meta.llama4-maverick-17b-instruct-v1*",)),
    # --- Mistral on Bedrock
    (Price(0.15, 0.20), ("mistral.mistral-7b-instruct-v0*",)),
    (Price(0.45, 0.70), ("mistral.mixtral-8x7b-instruct-v0*",)),
    (Price(4.00, 12.00), ("mistral.mistral-large-2402-v1*",)),
    (Price(2.00, 6.00), ("mistral.mistral-large-2407-v1*",)),
    (Price(1.00, 3.00), ("mistral.mistral-small-2402-v1*",)),
    (Price(2.00, 6.00), ("mistral.pixtral-large-2502-v1*",)),
    # --- Cohere on Bedrock
    (Price(0.50, 1.50), ("cohere.command-r-v1*",)),
    (Price(3.00, 15.00), ("cohere.command-r-plus-v1*",)),
    (Price(0.10, 0.0), ("cohere.embed-english-v3*", "cohere.embed-multilingual-v3*")),
    (Price(0.12, 0.0), ("cohere.embed-v4*",)),
    # --- OpenAI open-weight models on Bedrock
    (Price(0.15, 0.60), ("openai.gpt-oss-120b-1*",)),
    (Price(0.07, 0.30), ("openai.gpt-oss-20b-1*",)),
    # --- OpenAI API (cache_read = cached input; dated snapshots priced like their alias)
    (Price(2.50, 10.00, cache_read=1.25), ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20")),
    (Price(5.00, 15.00), ("gpt-4o-2024-05-13",)),
    (Price(0.15, 0.60, cache_read=0.075), ("gpt-4o-mini", "gpt-4o-mini-20*")),
    (Price(2.00, 8.00, cache_read=0.50), ("gpt-4.1", "gpt-4.1-20*")),
    (Price(0.40, 1.60, cache_read=0.10), ("gpt-4.1-mini", "gpt-4.1-mini-20*")),
    (Price(0.10, 0.40, cache_read=0.025), ("gpt-4.1-nano", "gpt-4.1-nano-20*")),
    (Price(15.00, 60.00, cache_read=7.50), ("o1", "o1-20*")),
    (Price(2.00, 8.00, cache_read=0.50), ("o3", "o3-20*")),
    (Price(1.10, 4.40, cache_read=0.55), ("o3-mini", "o3-mini-20*")),
    (Price(1.10, 4.40, cache_read=0.275), ("o4-mini", "o4-mini-20*")),
    (Price(1.25, 10.00, cache_read=0.125), ("gpt-5", "gpt-5-20*", "gpt-5-chat-latest")),
    (Price(0.25, 2.00, cache_read=0.025), ("gpt-5-mini", "gpt-5-mini-20*")),
    (Price(0.05, 0.40, cache_read=0.005), ("gpt-5-nano", "gpt-5-nano-20*")),
    (Price(0.02, 0.0), ("text-embedding-3-small",)),
    (Price(0.13, 0.0), ("text-embedding-3-large",)),
    (Price(0.10, 0.0), ("text-embedding-ada-002",)),
    # --- Mistral API (La Plateforme). "-latest" aliases follow Mistral's newest model of the line.
    (Price(0.50, 1.50), ("mistral-large-latest", "mistral-large-2512")),              # Large 3
    (Price(2.00, 6.00), ("mistral-large-2411", "mistral-large-2407")),                # Large 2.x
    (Price(4.00, 12.00), ("mistral-large-2402",)),
    (Price(1.50, 7.50), ("mistral-medium-latest",)),                                 # Medium 3.5
    (Price(0.40, 2.00), ("mistral-medium-2505", "mistral-medium-2508")),             # Medium 3 / 3.1
    (Price(0.10, 0.30), ("mistral-small-latest", "mistral-small-25*")),              # Small 3.x
    (Price(0.15, 0.15), ("open-mistral-nemo", "open-mistral-nemo-2407")),
    (Price(0.30, 0.90), ("codestral-latest", "codestral-25*")),
    (Price(1.00, 3.00), ("codestral-2405",)),
    (Price(0.15, 0.15), ("ministral-8b-latest", "ministral-3-8b*")),                  # Ministral 3 8B
    (Price(0.10, 0.10), ("ministral-8b-2410",)),
    (Price(0.10, 0.0), ("mistral-embed",)),
]


def _build_shipped() -> dict[str, Price]:
    table: dict[str, Price] = {}
    for price, keys in _GROUPS:
        for key in keys:
            if key in table:
                raise AssertionError(f"pricing: {key!r} is listed twice")
            table[key] = price
    return table


SHIPPED: dict[str, Price] = _build_shipped()


# --- names --------------------------------------------------------------------------------------

def normalize(model_id: str) -> str:
    """The bare, lowercase model name that table keys are matched against.

    "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
    -> "anthropic.claude-3-5-haiku-20241022-v1:0"; "openai/gpt-4o" -> "gpt-4o".
    """
    return _strip_region(_strip_outer(model_id))


def _strip_outer(model_id: str) -> str:
    """Lowercase; without URL-encoding, ARN (keep its last path segment), or PROVIDER/ prefixes."""
    s = model_id.strip()
    if "%" in s:
        s = unquote(s)
    s = s.lower()
    if s.startswith("arn:"):
        s = s.rsplit("/", 1)[-1]
    while "/" in s:
        head, rest = s.split("/", 1)
        if "." in head or ":" in head or not rest:
            break
        s = rest
    return s


def _strip_region(s: str) -> str:
    """Without a Bedrock inference profile's region prefix (us., eu., apac., global., …)."""
    return _REGION.sub("", s, count=1)


def _forms(name: str) -> tuple[str, ...]:
    """The forms a name is looked up as: with its profile region prefix (if any), then without."""
    outer = _strip_outer(name)
    bare = _strip_region(outer)
    return (outer, bare) if bare != outer else (bare,)


# --- tables --------------------------------------------------------------------------------------

def _is_glob(key: str) -> bool:
    return not _WILD.isdisjoint(key)


def _specificity(pattern: str) -> tuple[int, int]:
    """A sort key, most specific first: more non-wildcard characters, then fewer "*"."""
    return -sum(1 for ch in pattern if ch not in "*?"), pattern.count("*")


class _Index:
    """One table (overrides or shipped): exact keys in a dict, globs most specific first."""

    def __init__(self, table: dict[str, Price]):
        self.exact: dict[str, Price] = {}
        globs = []
        for key, price in table.items():
            key = key.lower()
            if _is_glob(key):
                globs.append((_specificity(key), key, re.compile(fnmatch.translate(key)).match, price))
            else:
                self.exact[key] = price
        globs.sort(key=lambda g: (g[0], g[1]))
        self.globs = [(match, price) for _, _, match, price in globs]

    def find(self, name: str) -> Price | None:
        price = self.exact.get(name)
        if price is not None:
            return price
        for match, price in self.globs:
            if match(name):
                return price
        return None


CACHE_KEYS = ("cache_read", "cache_write", "cache_write_1h")     # a price table's optional keys


def price_of(raw: dict) -> Price:
    """A Price from a config table {input, output, cache_read?, cache_write?, cache_write_1h?}."""
    try:
        inp, out = float(raw["input"]), float(raw["output"])
    except KeyError as e:
        raise ValueError(f"a price needs input and output, got {sorted(raw)}") from e
    opt = {k: float(raw[k]) for k in CACHE_KEYS if raw.get(k) is not None}
    return Price(inp, out, **opt)



_SHIPPED_INDEX = _Index(SHIPPED)
_MISS = object()


class PricingTable:
    """Shipped prices, with the config's [pricing."GLOB"] overrides (and "default") on top."""

    def __init__(self, overrides: dict[str, dict] | None = None):
        parsed = {key: price_of(raw) for key, raw in (overrides or {}).items()}
        self.default: Price | None = parsed.pop("default", None)
        self._tiers = (_Index(parsed), _SHIPPED_INDEX)
        self._memo: dict[tuple[str, ...], Price | None] = {}

    def price_for(self, *names: str) -> Price | None:
        """The price of the first name known, overrides first; else "default"; else None."""
        found = self._memo.get(names, _MISS)
        if found is _MISS:
            found = self._lookup(names)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[names] = found
        return found

    def _lookup(self, names: tuple[str, ...]) -> Price | None:
        forms = [form for name in names if name for form in _forms(name)]
        for index in self._tiers:
            for form in forms:
                price = index.find(form)
                if price is not None:
                    return price
        return self.default


# --- cost ----------------------------------------------------------------------------------------
# Money is charged in integer micro-dollars (the ledger's unit): with prices in USD per million
# tokens, tokens x price IS micro-dollars, so a request's charge is one sum and one rounding.


def cost_micros(price: Price | None, input_tokens: int, output_tokens: int,
                cache_read: int = 0, cache_write: int = 0, cache_write_1h: int = 0) -> int:
    """What a request costs, in micro-dollars (rounded to the nearest). `input_tokens` excludes
    the cache tokens (as Bedrock's inputTokens does; for OpenAI pass prompt_tokens minus
    cached_tokens). `cache_write` counts every cache write, `cache_write_1h` the part of them with
    a 1-hour TTL (at most `cache_write`): those cost the 1-hour write price, the others the write
    price. Cache tokens without a price of their own cost the input price. 0 when the price is
    None."""
    if price is None:
        return 0
    read = price.input if price.cache_read is None else price.cache_read
    one_hour = min(max(0, cache_write_1h), cache_write)
    return round(input_tokens * price.input + output_tokens * price.output + cache_read * read
                 + (cache_write - one_hour) * price.write_price + one_hour * price.write_1h_price)


def prompt_cache_saved_micros(price: Price | None, input_tokens: int, output_tokens: int,
                              cache_read: int = 0, cache_write: int = 0, cache_write_1h: int = 0) -> int:
    """What the provider's prompt cache saved a request, in micro-dollars: its cost had its
    cache-read tokens been charged at the input price, minus its cost (both `cost_micros`, so the
    saving is exactly the difference of the two charges). 0 without a separate cache-read price.
    Cache writes are a cost of the request, in both figures; they are not counted against it."""
    if price is None or price.cache_read is None or not cache_read:
        return 0
    return (cost_micros(price, input_tokens + cache_read, output_tokens, 0, cache_write, cache_write_1h)
            - cost_micros(price, input_tokens, output_tokens, cache_read, cache_write, cache_write_1h))


def max_cost_micros(price: Price | None, input_tokens: int, max_output_tokens: int) -> int:
    """An upper bound of a request's cost, in micro-dollars: `input_tokens` (a bound of input,
    cache-read and cache-write tokens together) each at the dearest of the input, cache-read,
    cache-write and 1-hour cache-write prices (a cachePoint may ask for either TTL), plus
    `max_output_tokens` at the output price; rounded up, so it is never below `cost_micros` of
    any usage within those bounds."""
    if price is None:
        return 0
    dearest = max(price.input, price.cache_read or 0.0, price.write_price, price.write_1h_price)
    return math.ceil(input_tokens * dearest + max_output_tokens * price.output)


def cost(price: Price | None, input_tokens: int, output_tokens: int,
         cache_read: int = 0, cache_write: int = 0, cache_write_1h: int = 0) -> float:
    """USD for a request: `cost_micros` in dollars."""
    return cost_micros(price, input_tokens, output_tokens, cache_read, cache_write, cache_write_1h) / MICRO


def max_cost(price: Price | None, input_tokens: int, max_output_tokens: int) -> float:
    """USD of `max_cost_micros`."""
    return max_cost_micros(price, input_tokens, max_output_tokens) / MICRO
