"""Chargeback: what each customer and team spent in a month, with what the caches saved them,
reconciled to the request log (`finops report --chargeback --month 2026-11`). Pure, over
report.py's `summarize`.

    month_period("2026-11", tz)                         -> (since_ts, until_ts) of that local month
    chargeback(db, since, until, by=["customer", "team"], where=None)
                                                        -> (rows, total); raises Unreconciled

Each row: the group values, then CHARGEBACK_METRICS:
    requests, cache_hits, input_tokens, output_tokens,
    cost_usd        what was charged (the ledger's figures, summed as micro-dollars)
    saved_usd       what the exact and semantic caches saved
    prompt_saved_usd  what providers' prompt caches saved (cache reads below the input price)
    list_usd        cost_usd + saved_usd: what it would have cost without the gateway's caches
    cost_share_pct  this row's share of the period's cost_usd, in percent (2 decimals)
Rows by cost, highest first. `total` sums every row exactly (micro-dollars); it is checked
against the log's own ungrouped total for the same period and filters (so a row lost in the
grouping cannot go unnoticed), and equals `finops report`'s TOTAL line.

`by` may name request tags (`tag:NAME`, see report.py), e.g. --by customer,tag:project.
"""
from __future__ import annotations

import re
import sqlite3
from datetime import date

from finops.workers.governance.money import micros, usd
from finops.workers.governance.periods import bounds

from .report import day_bounds, dimension, summarize, total

DEFAULT_BY = ("customer", "team")
CHARGEBACK_METRICS = ("requests", "cache_hits", "input_tokens", "output_tokens", "cost_usd", "saved_usd",
                      "prompt_saved_usd", "list_usd", "cost_share_pct")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class Unreconciled(RuntimeError):
    pass


def month_period(text: str, tz: str) -> tuple[float, float]:
    """[start, end) of calendar month YYYY-MM in `tz` (governance.timezone, where budgets reset)."""
    m = _MONTH.match(text.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"--month {text!r}: expected a month like 2026-11")
    first = date(int(m.group(1)), int(m.group(2)), 1)
    return bounds("month", day_bounds(first, tz)[0] + 3600, tz)


def chargeback_columns(by: list[str]) -> list[str]:
    return [out for d in by for out, _, _ in dimension(d)] + list(CHARGEBACK_METRICS)


def chargeback(db: sqlite3.Connection, since: float, until: float, by: list[str] | tuple = DEFAULT_BY,
               where: dict | None = None) -> tuple[list[dict], dict]:
    """(rows, total) for [since, until) grouped by `by` (see the module doc)."""
    by = list(by)
    rows = summarize(db, by, since, until, where)
    whole = summarize(db, [], since, until, where)
    t = total(rows)
    log_total = whole[0] if whole else total([])
    for m in ("requests", "cost_usd", "saved_usd", "prompt_saved_usd", "cache_hits"):
        if t[m] != log_total[m]:
            raise Unreconciled(f"chargeback {m} {t[m]} != the request log's {log_total[m]} for the same period")
    all_cost = micros(t["cost_usd"])
    labels = [out for d in by for out, _, _ in dimension(d)]
    out = []
    for r in rows:
        row = {c: r[c] for c in labels}
        row.update({m: r[m] for m in CHARGEBACK_METRICS[:7]})
        row["list_usd"] = usd(micros(r["cost_usd"]) + micros(r["saved_usd"]))
        row["cost_share_pct"] = round(100 * micros(r["cost_usd"]) / all_cost, 2) if all_cost else 0.0
        out.append(row)
    tot = {m: t[m] for m in CHARGEBACK_METRICS[:7]}
    tot["list_usd"] = usd(micros(t["cost_usd"]) + micros(t["saved_usd"]))
    tot["cost_share_pct"] = 100.0 if all_cost else 0.0
    return out, tot
