"""The request log as a FinOps FOCUS 1.2 cost and usage dataset (`finops report --format focus`).
Pure like report.py: a sqlite3 connection in, rows and bytes out; no files.

    focus_rows(db, since, until, tz, where={...}, grain="hour")  -> [row dict, ...] (COLUMN_NAMES)
    to_focus_csv(rows)                                            -> str
    to_focus_parquet(rows)                                        -> bytes (needs pyarrow: the
                                                                     `parquet` extra)

Grain: one row per charge period (a UTC hour by default; `grain="day"`: a calendar day in
governance.timezone) x virtual key x team x customer x env x model x provider x cache result
(served upstream, exact hit, semantic hit), aggregated in SQL. Why not one row per request: a
FOCUS consumer (a cost tool, a warehouse) wants charges, not traffic; hourly rows are the grain
cloud providers' own FOCUS exports use, keep a month of a busy gateway to thousands of rows instead
of millions, and lose nothing a cost tool groups by. The request counts are in x_Requests.

Money is exact: each request's cost is rounded to the micro-dollar as the ledger charges it and
summed as integers (report.micros_sql), so BilledCost over the dataset equals `finops report`'s
cost_usd total to the micro-dollar over the same period and filters, and ListCost - BilledCost
equals its saved_usd. Decimals are written from the integer micro-dollars (never via a float).

How the gateway fills the columns (FOCUS_COLUMNS lists every one with its spec type and level):

* A served request is a Usage charge of the model (ResourceId) from the upstream provider that
  served it: BilledCost = EffectiveCost = ListCost = ContractedCost = its cost.
* A cache hit costs nothing and saved what the upstream would have charged: BilledCost =
  EffectiveCost = 0; ListCost = ContractedCost = the saving (the price the provider's rates put on
  it); x_CacheSavedCost = the saving. So ListCost - EffectiveCost is what caching saved, which is
  how cost tools compute savings. Its provider, service and invoice issuer are the gateway itself
  (no upstream was called); ConsumedQuantity is 0 tokens (none were consumed).
* Tokens: ConsumedQuantity = PricingQuantity = input + output + prompt-cache read + write tokens,
  unit "Tokens"; the split is in x_InputTokens, x_OutputTokens, x_CacheReadTokens,
  x_CacheWriteTokens. No unit prices are given (input and output tokens are priced apart, and the
  log keeps one cost per request), which FOCUS allows: ListUnitPrice and ContractedUnitPrice are
  Conditional and left out.
* BillingAccount = the customer ("unassigned" when the key has none), SubAccount = the team
  (null when none). The billing period is the calendar month in governance.timezone (budgets
  reset on it), written in UTC; an hour that straddles a month boundary (a half-hour time zone) is
  cut at it, so a charge period never leaves its billing period.
* Tags (JSON) carry the gateway's dimensions under the "finops/" prefix (the gateway sets them):
  finops/virtual-key, finops/virtual-key-name, finops/team, finops/customer, finops/env; the
  empty ones are left out, and Tags is null when none is set. A request's own tags (the log's
  `tags`: Converse requestMetadata, the InvokeModel request-metadata header, an application
  inference profile's tags) are added under their own names (user-defined tags, no prefix; a
  name that collides with a finops/ one is left out); requests with different tags are different
  rows.
* Datetimes are ISO 8601 UTC, "2026-11-01T00:00:00Z"; ChargePeriodEnd and BillingPeriodEnd are
  exclusive.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from datetime import date, datetime, timezone
from typing import NamedTuple

from finops.workers.governance.periods import bounds

from .report import ERROR_SQL, HIT_SQL, day_bounds, micros_sql, where_sql, zone

FOCUS_VERSION = "1.2"
GATEWAY = "FinOps gateway"
CURRENCY = "USD"
UNIT = "Tokens"
NO_CUSTOMER = "unassigned"
TAG_PREFIX = "finops/"
GRAINS = ("hour", "day")


class Column(NamedTuple):
    name: str
    type: str           # FOCUS data type: Decimal, String, Date/Time, JSON
    level: str          # Mandatory, Conditional, Recommended; "Custom" for x_ columns
    nullable: bool      # the spec's "Allows nulls" (what we write may be stricter)
    allowed: tuple = ()     # the spec's allowed values, when it has a list (only those we use are listed)


# Every column we write, in order. The 21 Mandatory columns of FOCUS 1.2 (specification/columns in
# the FOCUS_Spec repository, tag v1.2) come first; then the Conditional and Recommended ones the
# gateway can fill; then custom columns (x_ prefix, as FOCUS requires).
FOCUS_COLUMNS: tuple[Column, ...] = (
    Column("BilledCost", "Decimal", "Mandatory", False),
    Column("BillingAccountId", "String", "Mandatory", False),
    Column("BillingAccountName", "String", "Mandatory", True),
    Column("BillingCurrency", "String", "Mandatory", False, ("USD",)),          # ISO 4217
    Column("BillingPeriodEnd", "Date/Time", "Mandatory", False),
    Column("BillingPeriodStart", "Date/Time", "Mandatory", False),
    Column("ChargeCategory", "String", "Mandatory", False, ("Usage", "Purchase", "Tax", "Credit", "Adjustment")),
    Column("ChargeClass", "String", "Mandatory", True, ("Correction",)),        # null: not a correction
    Column("ChargeDescription", "String", "Mandatory", True),
    Column("ChargePeriodEnd", "Date/Time", "Mandatory", False),
    Column("ChargePeriodStart", "Date/Time", "Mandatory", False),
    Column("ContractedCost", "Decimal", "Mandatory", False),
    Column("EffectiveCost", "Decimal", "Mandatory", False),
    Column("InvoiceIssuerName", "String", "Mandatory", False),
    Column("ListCost", "Decimal", "Mandatory", False),
    Column("PricingQuantity", "Decimal", "Mandatory", True),      # not null for Usage (always, here)
    Column("PricingUnit", "String", "Mandatory", True),           # null exactly when PricingQuantity is
    Column("ProviderName", "String", "Mandatory", False),
    Column("PublisherName", "String", "Mandatory", False),
    Column("ServiceCategory", "String", "Mandatory", False, ("AI and Machine Learning",)),   # one of 19
    Column("ServiceName", "String", "Mandatory", False),
    # Conditional / Recommended
    Column("BillingAccountType", "String", "Conditional", False),
    Column("ChargeFrequency", "String", "Recommended", False, ("One-Time", "Recurring", "Usage-Based")),
    Column("ConsumedQuantity", "Decimal", "Conditional", True),
    Column("ConsumedUnit", "String", "Conditional", True),
    Column("ResourceId", "String", "Conditional", True),
    Column("ResourceName", "String", "Conditional", True),
    Column("ResourceType", "String", "Conditional", True),
    Column("ServiceSubcategory", "String", "Recommended", False, ("Generative AI",)),
    Column("SubAccountId", "String", "Conditional", True),
    Column("SubAccountName", "String", "Conditional", True),
    Column("SubAccountType", "String", "Conditional", True),
    Column("Tags", "JSON", "Conditional", True),
    # custom
    Column("x_Requests", "Decimal", "Custom", False),
    Column("x_Errors", "Decimal", "Custom", False),
    Column("x_CacheHits", "Decimal", "Custom", False),
    Column("x_CacheSavedCost", "Decimal", "Custom", False),
    Column("x_InputTokens", "Decimal", "Custom", False),
    Column("x_OutputTokens", "Decimal", "Custom", False),
    Column("x_CacheReadTokens", "Decimal", "Custom", False),
    Column("x_CacheWriteTokens", "Decimal", "Custom", False),
)
COLUMN_NAMES = tuple(c.name for c in FOCUS_COLUMNS)
MANDATORY = tuple(c.name for c in FOCUS_COLUMNS if c.level == "Mandatory")
COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "x_CacheSavedCost")

_CACHE_SQL = f"CASE WHEN {HIT_SQL} THEN cache ELSE '' END"
_VENDOR = re.compile(r"[a-z0-9-]+")
_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")


def money(micros: int) -> str:
    """Integer micro-dollars as an exact decimal string: 1234 -> "0.001234", -5 -> "-0.000005"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(int(micros)), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def utc(t: float) -> str:
    """Epoch seconds as FOCUS's date/time: "2026-11-01T00:00:00Z"."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def publisher(model: str, provider: str) -> str:
    """Who made the model: the vendor prefix of a Bedrock-style modelId ("anthropic.claude-...",
    "us.anthropic.claude-...", an inference-profile ARN ending in one -> "anthropic"), else the
    provider that served it."""
    m = model.rsplit("/", 1)[-1] if model.startswith("arn:") else model
    for p in _REGION_PREFIXES:
        if m.startswith(p):
            m = m[len(p):]
            break
    head, dot, _ = m.partition(".")
    return head if dot and _VENDOR.fullmatch(head) else provider


def _month_bounds(day: str, tz: str) -> tuple[float, float]:
    d = date.fromisoformat(day)
    return bounds("month", day_bounds(d, tz)[0] + 3600, tz)


def focus_rows(db: sqlite3.Connection, since: float, until: float, tz: str, where: dict | None = None,
               grain: str = "hour") -> list[dict]:
    """The requests in [since, until) matching `where` (report.py's filters), as FOCUS rows (see
    the module doc), ordered by charge period, then customer, team, key, env, model, provider."""
    if grain not in GRAINS:
        raise ValueError(f"grain {grain!r}: expected one of {', '.join(GRAINS)}")
    zone(tz)
    period = "CAST(ts / 3600 AS INTEGER)" if grain == "hour" else "IFNULL(day, '')"
    where_clause, params = where_sql(since, until, where)
    sql = (f"SELECT {period}, IFNULL(day, ''), IFNULL(vk, ''), IFNULL(MAX(vk_name), ''), IFNULL(team, ''), "
           f"IFNULL(customer, ''), IFNULL(env, ''), IFNULL(model, ''), IFNULL(provider, ''), {_CACHE_SQL}, "
           f"COUNT(*), IFNULL(SUM({ERROR_SQL}), 0), IFNULL(SUM({HIT_SQL}), 0), "
           f"{micros_sql('cost_usd')}, {micros_sql('saved_usd')}, IFNULL(SUM(input_tokens), 0), "
           f"IFNULL(SUM(output_tokens), 0), IFNULL(SUM(cache_read_tokens), 0), IFNULL(SUM(cache_write_tokens), 0), "
           f"IFNULL(tags, '') "
           f"FROM requests{where_clause} "
           f"GROUP BY 1, substr(IFNULL(day, ''), 1, 7), 3, 5, 6, 7, 8, 9, 10, 20 "
           f"ORDER BY 1, 6, 5, 3, 7, 8, 9, 10, 20")
    months: dict[str, tuple[float, float]] = {}
    out = []
    for (p, day, vk, vk_name, team, customer, env, model, provider, cache, n, errs, hits, cost, saved,
         tin, tout, tread, twrite, tags) in db.execute(sql, params):
        month = day[:7]
        if month not in months:
            months[month] = _month_bounds(day, tz) if day else (float(p) * 3600, float(p) * 3600 + 3600)
        b0, b1 = months[month]
        c0, c1 = (p * 3600.0, p * 3600.0 + 3600) if grain == "hour" else day_bounds(date.fromisoformat(day), tz)
        c0, c1 = max(c0, b0), min(c1, b1)
        out.append(_row(c0, c1, b0, b1, vk, vk_name, team, customer, env, model, provider, cache,
                        n, errs, hits, cost, saved, (tin, tout, tread, twrite), _request_tags(tags)))
    return out


def _request_tags(text: str) -> dict:
    """The request tags of a log row's `tags` JSON ({} when none or unreadable)."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, str)} if isinstance(doc, dict) else {}


def _row(c0, c1, b0, b1, vk, vk_name, team, customer, env, model, provider, cache,
         n, errs, hits, cost, saved, tokens, request_tags: dict | None = None) -> dict:
    hit = cache.startswith("hit-")
    served_by = provider if provider and not hit else GATEWAY
    quantity = sum(tokens)
    if hit:
        kind = "exact" if cache == "hit-exact" else "semantic"
        desc = (f"{n} request{'s' if n != 1 else ''} for {model or 'a model'} answered from the gateway's "
                f"{kind} cache: no charge, {money(saved)} USD saved")
    else:
        desc = f"{n} request{'s' if n != 1 else ''} to {model or 'no model'} via {served_by}, {quantity} tokens"
    tags = {TAG_PREFIX + k: v for k, v in (("virtual-key", vk), ("virtual-key-name", vk_name), ("team", team),
                                           ("customer", customer), ("env", env)) if v}
    for k, v in (request_tags or {}).items():
        tags.setdefault(k, v)
    return {
        "BilledCost": money(cost), "BillingAccountId": customer or NO_CUSTOMER,
        "BillingAccountName": customer or NO_CUSTOMER, "BillingCurrency": CURRENCY,
        "BillingPeriodEnd": utc(b1), "BillingPeriodStart": utc(b0),
        "ChargeCategory": "Usage", "ChargeClass": None, "ChargeDescription": desc,
        "ChargePeriodEnd": utc(c1), "ChargePeriodStart": utc(c0),
        "ContractedCost": money(cost + saved), "EffectiveCost": money(cost),
        "InvoiceIssuerName": served_by, "ListCost": money(cost + saved),
        "PricingQuantity": str(quantity), "PricingUnit": UNIT,
        "ProviderName": served_by, "PublisherName": publisher(model, served_by) if model else served_by,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": "LLM response cache" if hit else "LLM inference",
        "BillingAccountType": "Customer", "ChargeFrequency": "Usage-Based",
        "ConsumedQuantity": str(quantity), "ConsumedUnit": UNIT,
        "ResourceId": model or None, "ResourceName": model or None, "ResourceType": "Model" if model else None,
        "ServiceSubcategory": "Generative AI",
        "SubAccountId": team or None, "SubAccountName": team or None, "SubAccountType": "Team" if team else None,
        "Tags": json.dumps(tags, ensure_ascii=False, separators=(",", ":")) if tags else None,
        "x_Requests": str(n), "x_Errors": str(errs), "x_CacheHits": str(hits), "x_CacheSavedCost": money(saved),
        "x_InputTokens": str(tokens[0]), "x_OutputTokens": str(tokens[1]),
        "x_CacheReadTokens": str(tokens[2]), "x_CacheWriteTokens": str(tokens[3]),
    }


def to_focus_csv(rows: list[dict]) -> str:
    """CSV, header = COLUMN_NAMES; null is an empty cell; money and quantities as exact decimals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMN_NAMES)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in COLUMN_NAMES])
    return buf.getvalue()


class ParquetUnavailable(RuntimeError):
    pass


def to_focus_parquet(rows: list[dict]) -> bytes:
    """The same dataset as Parquet: Decimal columns as decimal128(38, 6), Date/Time as UTC
    timestamps, String and JSON as strings. Needs pyarrow (`pip install 'finops-gateway[parquet]'`)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ParquetUnavailable("Parquet needs pyarrow: pip install 'finops-gateway[parquet]' "
                                 "(or write CSV: --output FILE.csv)") from None
    from decimal import Decimal
    types = {"Decimal": pa.decimal128(38, 6), "Date/Time": pa.timestamp("s", tz="UTC"),
             "String": pa.string(), "JSON": pa.string()}

    def value(c: Column, v):
        if v is None:
            return None
        if c.type == "Decimal":
            return Decimal(v)
        if c.type == "Date/Time":
            return datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        return v
    schema = pa.schema([pa.field(c.name, types[c.type], nullable=c.nullable) for c in FOCUS_COLUMNS],
                       metadata={"focus_version": FOCUS_VERSION, "generator": GATEWAY})
    table = pa.table({c.name: pa.array([value(c, r[c.name]) for r in rows], type=types[c.type])
                      for c in FOCUS_COLUMNS}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
