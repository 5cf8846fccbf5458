"""Spend and usage reports over the request log (logdb.py). Pure: a sqlite3 connection in, rows
and strings out; no printing, no files.

    summarize(db, ["key", "model"], since, until, where={"env": "prod"})  -> [row dict, ...]
    total(rows)                                                           -> the TOTAL line
    parse_period("7d", "", "Europe/Paris")                                -> (since_ts, until_ts)
    to_table(rows, columns) / to_csv(rows) / to_json(rows, meta)          -> str

Grouping and filtering happen in SQL (GROUP BY over the `ts` index), so a log of millions of rows
is read once and never loaded. Column names come from the fixed DIMENSIONS mapping, values are
always bound parameters.

Choices worth knowing:
* Money is summed as integer micro-dollars (each request's cost rounded to the micro-dollar, as
  the ledger charges it), then reported as USD rounded to 6 decimals. So a total is exactly the
  sum of its rows, whatever the grouping, and matches the ledger's arithmetic.
* An error is a request whose `error` is not "" and not one of CLIENT_LEFT ("cancelled",
  "client_gone": the client went away; the gateway did nothing wrong). Those count as requests,
  not errors.
* A cache hit is a request whose `cache` is "hit-exact" or "hit-semantic".
* Grouping by `key` groups by the key id (`vk`, "" = anonymous) and shows `vk_name`, the
  greatest name the key had in the period (a renamed key stays one group).
* Grouping by `tag:NAME` groups by the value of request tag NAME (the `tags` column: Converse
  requestMetadata, the X-Amzn-Bedrock-Request-Metadata header, an application inference
  profile's tags); requests without that tag form the "" group, so the groups still add up to
  the untagged total. `where` takes tag:NAME too.
* `prompt_saved_usd` is what providers' prompt caches saved (cache-read tokens at the input price
  minus at the cache-read price), next to `saved_usd`, what the gateway's own cache saved.
* Grouping by `status` gives two columns: `status` (HTTP) and `error` (AWS error code, "" = ok).
* No p95 latency: SQLite has no percentile aggregate, and a window-function percentile sorts
  every row of the period, which is not cheap on a large log. `avg_latency_ms` is given.
* Periods are half-open, [since, until), in epoch seconds; see `parse_period` for the syntax.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from finops.workers.governance.money import MICRO, micros, usd
from finops.workers.governance.periods import bounds

CLIENT_LEFT = ("cancelled", "client_gone")

# SQL fragments shared with dashboard.py (constants: never built from input)
ERROR_SQL = "(IFNULL(error, '') NOT IN ('', " + ", ".join(f"'{c}'" for c in CLIENT_LEFT) + "))"
HIT_SQL = "(cache IN ('hit-exact', 'hit-semantic'))"


def micros_sql(column: str) -> str:
    """SUM of a USD column as integer micro-dollars (`column` is one of ours, never input)."""
    return f"IFNULL(SUM(CAST(ROUND(IFNULL({column}, 0) * {MICRO}) AS INTEGER)), 0)"




# --- grouping ------------------------------------------------------------------------------------

# dimension -> ((output column, SQL expression, part of GROUP BY), ...)
DIMENSIONS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "key": (("key", "IFNULL(vk, '')", True), ("vk_name", "IFNULL(MAX(vk_name), '')", False)),
    "team": (("team", "IFNULL(team, '')", True),),
    "customer": (("customer", "IFNULL(customer, '')", True),),
    "env": (("env", "IFNULL(env, '')", True),),
    "model": (("model", "IFNULL(model, '')", True),),
    "provider": (("provider", "IFNULL(provider, '')", True),),
    "day": (("day", "IFNULL(day, '')", True),),
    "op": (("op", "IFNULL(op, '')", True),),
    "status": (("status", "IFNULL(status, 0)", True), ("error", "IFNULL(error, '')", True)),
}

TAG = "tag:"
_TAG_NAME = re.compile(r"[A-Za-z0-9 _.:@$#=/+,\-]{1,256}")
TAG_HELP = "tag:NAME (a request tag: requestMetadata, or an application inference profile's tags)"


def tag_sql(dim: str) -> str:
    """The SQL value of tag dimension "tag:NAME": the tag's value in the row's `tags` JSON, ""
    when the row has no such tag. NAME is checked against _TAG_NAME (no quote can get through),
    so it is written into the JSON path literally."""
    name = dim[len(TAG):]
    if not _TAG_NAME.fullmatch(name):
        raise ValueError(f"{dim!r}: a tag name is 1 to 256 letters, digits, spaces or _.:@$#=/+,- "
                         "(the requestMetadata key), e.g. tag:team")
    return f"(CASE WHEN IFNULL(tags, '') = '' THEN '' ELSE IFNULL(json_extract(tags, '$.\"{name}\"'), '') END)"


def dimension(d: str) -> tuple[tuple[str, str, bool], ...]:
    """The (output column, SQL expression, grouped) entries of dimension `d`: one of DIMENSIONS,
    or "tag:NAME"."""
    if d.startswith(TAG):
        return ((d, tag_sql(d), True),)
    return DIMENSIONS[d]


# dimension -> the column `where` compares (status: see _status_filter)
FILTERS = {"key": "vk", "team": "team", "customer": "customer", "env": "env", "model": "model",
           "provider": "provider", "day": "day", "op": "op"}

# (output column, SQL aggregate); money as micro-dollars, converted in _row
METRICS: tuple[tuple[str, str], ...] = (
    ("requests", "COUNT(*)"),
    ("errors", f"IFNULL(SUM({ERROR_SQL}), 0)"),
    ("input_tokens", "IFNULL(SUM(input_tokens), 0)"),
    ("output_tokens", "IFNULL(SUM(output_tokens), 0)"),
    ("cache_read_tokens", "IFNULL(SUM(cache_read_tokens), 0)"),
    ("cost_usd", micros_sql("cost_usd")),
    ("saved_usd", micros_sql("saved_usd")),
    ("prompt_saved_usd", micros_sql("prompt_saved_usd")),
    ("cache_hits", f"IFNULL(SUM({HIT_SQL}), 0)"),
    ("avg_latency_ms", "AVG(latency_ms)"),
)
METRIC_NAMES = tuple(m for m, _ in METRICS)
MONEY = ("cost_usd", "saved_usd", "prompt_saved_usd")
ADDITIVE = tuple(m for m in METRIC_NAMES if m != "avg_latency_ms")


def columns_for(group_by: list[str]) -> list[str]:
    """The columns of `summarize`'s rows, in order: the group values, then the metrics."""
    return [out for d in group_by for out, _, _ in dimension(d)] + list(METRIC_NAMES)


def _check_dims(names, what: str) -> None:
    for d in names:
        if d.startswith(TAG):
            tag_sql(d)
        elif d not in DIMENSIONS:
            raise ValueError(f"{what} {d!r}: unknown (known: {', '.join(DIMENSIONS)}, {TAG_HELP})")


def _status_filter(value) -> tuple[str, object]:
    """`status` filters on the HTTP status when given a number, else on the error code
    ("ok" or "" = no error)."""
    text = str(value).strip()
    if text.isdigit():
        return "IFNULL(status, 0) = ?", int(text)
    return "IFNULL(error, '') = ?", "" if text.lower() == "ok" else text


def where_sql(since: float, until: float, where: dict | None) -> tuple[str, list]:
    """` WHERE ...` and its parameters: the period plus equality on each `where` dimension."""
    _check_dims(where or (), "filter")
    clauses, params = ["ts >= ?", "ts < ?"], [float(since), float(until)]
    for dim, value in (where or {}).items():
        if dim == "status":
            clause, value = _status_filter(value)
        elif dim.startswith(TAG):
            clause = f"{tag_sql(dim)} = ?"
        else:
            clause = f"IFNULL({FILTERS[dim]}, '') = ?"
        clauses.append(clause)
        params.append(value)
    return " WHERE " + " AND ".join(clauses), params


def summarize(db: sqlite3.Connection, group_by: list[str], since: float, until: float,
              where: dict | None = None) -> list[dict]:
    """Requests in [since, until) matching `where`, grouped by `group_by` (in that order).

    Each row: the group values (see DIMENSIONS), then METRIC_NAMES. Sorted by cost, highest first
    (ties by the group values); by day, oldest first, when `day` is the first grouping. No
    grouping gives one row (or none when nothing matched).
    """
    _check_dims(group_by, "group by")
    if len(set(group_by)) != len(group_by):
        raise ValueError(f"group by {','.join(group_by)}: a dimension is repeated")
    dims = [c for d in group_by for c in dimension(d)]
    select = [expr for _, expr, _ in dims] + [agg for _, agg in METRICS]
    keys = [str(i + 1) for i, (_, _, grouped) in enumerate(dims) if grouped]
    cost = str(len(dims) + METRIC_NAMES.index("cost_usd") + 1)
    order = [f"{cost} DESC", *[f"{k} ASC" for k in keys]]
    if group_by and group_by[0] == "day":
        order.insert(0, "1 ASC")
    where_clause, params = where_sql(since, until, where)
    sql = f"SELECT {', '.join(select)} FROM requests{where_clause}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    sql += f" ORDER BY {', '.join(order)}"
    names = [out for out, _, _ in dims] + list(METRIC_NAMES)
    rows = [_row(names, r) for r in db.execute(sql, params)]
    return [r for r in rows if r["requests"]]


def _row(names: list[str], values) -> dict:
    row = dict(zip(names, tuple(values)))
    for m in MONEY:
        row[m] = usd(row[m])
    if row["avg_latency_ms"] is not None:
        row["avg_latency_ms"] = round(row["avg_latency_ms"], 3)
    return row


def total(rows: list[dict]) -> dict:
    """The metrics over all `rows`: sums (money summed as micro-dollars, so exact), and
    avg_latency_ms weighted by requests."""
    out: dict = {m: 0 for m in ADDITIVE}
    lat_sum, lat_n = 0.0, 0
    for r in rows:
        for m in ADDITIVE:
            out[m] += micros(r[m]) if m in MONEY else r[m]
        if r.get("avg_latency_ms") is not None:
            lat_sum += r["avg_latency_ms"] * r["requests"]
            lat_n += r["requests"]
    for m in MONEY:
        out[m] = usd(out[m])
    out["avg_latency_ms"] = round(lat_sum / lat_n, 3) if lat_n else None
    return {m: out[m] for m in METRIC_NAMES}


# --- periods -------------------------------------------------------------------------------------

NAMED = ("today", "yesterday", "this-month", "last-month", "now")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([wdhm])$")
_UNIT = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}
DEFAULT_SINCE = "30d"
_HELP = ("an ISO date (2026-11-01), an ISO datetime (2026-11-01T08:00, 2026-11-01T08:00:00Z), "
         "a relative time (7d, 24h, 30m, 2w: that long ago) or one of today, yesterday, "
         "this-month, last-month, now")


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (e.g. \"UTC\", \"Europe/Paris\")") from None


def day_bounds(d: date, tz: str) -> tuple[float, float]:
    """[start, end) of calendar day `d` in `tz` (23 or 25 hours across a DST change)."""
    noon = datetime(d.year, d.month, d.day, 12, tzinfo=zone(tz)).timestamp()
    return bounds("day", noon, tz)


def _named(name: str, now: float, tz: str) -> tuple[float, float]:
    if name == "now":
        return now, now
    if name in ("today", "yesterday"):
        start, end = bounds("day", now, tz)
        return bounds("day", start - 1, tz) if name == "yesterday" else (start, end)
    start, end = bounds("month", now, tz)
    return bounds("month", start - 1, tz) if name == "last-month" else (start, end)


def parse_time(text: str, tz: str, now: float, *, end: bool, flag: str = "--since") -> float:
    """One end of a period as epoch seconds. A date or a name is a calendar interval in `tz`:
    its start when `end` is false (--since), its end when true (--until, so `--until 2026-11-30`
    includes that day). A naive datetime is wall-clock time in `tz`."""
    s = text.strip()
    low = s.lower()
    if low in NAMED:
        return _named(low, now, tz)[1 if end else 0]
    m = _RELATIVE.match(low)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    if len(s) == 10:
        try:
            d = date.fromisoformat(s)
        except ValueError:
            pass
        else:
            return day_bounds(d, tz)[1 if end else 0]
    try:
        t = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected {_HELP}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=zone(tz))
    return t.timestamp()


def parse_period(since: str, until: str, tz: str, now: float | None = None) -> tuple[float, float]:
    """(since_ts, until_ts) for --since / --until, calendar-aligned in `tz` (the governance
    timezone). Empty `since` = 30 days ago; empty `until` = now.

    `--since last-month --until last-month` is exactly last month; `--since yesterday` is from
    yesterday's start until now. Raises ValueError naming the flag to fix."""
    zone(tz)
    now = time.time() if now is None else float(now)
    a = parse_time(since or DEFAULT_SINCE, tz, now, end=False, flag="--since")
    b = parse_time(until or "now", tz, now, end=True, flag="--until")
    if not a < b:
        raise ValueError(f"--since {since or DEFAULT_SINCE!r} is not before --until {until or 'now'!r} "
                         f"({fmt_ts(a, tz)} >= {fmt_ts(b, tz)})")
    return a, b


def fmt_ts(t: float, tz: str) -> str:
    """`t` as local ISO time in `tz`, to the second: 2026-11-01T00:00:00+01:00."""
    return datetime.fromtimestamp(t, zone(tz)).isoformat(timespec="seconds")


def days_between(first: date, last: date) -> list[str]:
    """Every calendar day from `first` to `last` inclusive, as YYYY-MM-DD."""
    n = (last - first).days
    return [(first + timedelta(days=i)).isoformat() for i in range(n + 1)]


# --- formatting ----------------------------------------------------------------------------------

def usd_decimals(values) -> int:
    """Decimals to show a money column with: as many as its values need, 4 to 6."""
    need = [len(f"{v:.6f}".split(".")[1].rstrip("0")) for v in values if v is not None]
    return min(6, max([4, *need]))


def fmt_usd(x: float, decimals: int | None = None) -> str:
    """USD to `decimals` places (default: as many as x needs, 4 to 6): 1.5 -> 1.5000."""
    return f"{x:.{usd_decimals([x]) if decimals is None else decimals}f}"


def is_money(col: str) -> bool:
    """USD columns: cost_usd, saved_usd, and any other column named *_usd."""
    return col in MONEY or col.endswith("_usd")


def _cell(col: str, v, decimals: int) -> tuple[str, bool]:
    """(text, right-aligned) for one table cell."""
    if v is None:
        return "-", True
    if is_money(col):
        return fmt_usd(v, decimals), True
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return (str(v) if v != "" else "-"), False
    if isinstance(v, float):
        return f"{v:,.1f}", True
    return f"{v:,}", True


def to_table(rows: list[dict], columns: list[str], totals: dict | None = None,
             metrics: tuple[str, ...] = METRIC_NAMES) -> str:
    """Aligned text: a header, one line per row, a rule, and a TOTAL line (`totals`, default
    total(rows)) under the `metrics` columns (the others are labels). Numbers right-aligned,
    thousands separated; money (is_money) with the same 4 to 6 decimals down a column; "" shows
    as "-"."""
    totals = total(rows) if totals is None else totals
    tot = {c: totals.get(c) for c in columns if c in metrics}
    labels = [c for c in columns if c not in metrics]
    if labels:
        tot[labels[0]] = "TOTAL"
    dec = {c: usd_decimals([r.get(c) for r in rows] + [tot.get(c)]) for c in columns if is_money(c)}
    body = [[_cell(c, r.get(c), dec.get(c, 4)) for c in columns] for r in rows]
    last = [_cell(c, tot[c], dec.get(c, 4)) if c in tot else ("", False) for c in columns]
    header = [(c.upper(), c in metrics) for c in columns]
    widths = [max(len(line[i][0]) for line in [header, *body, last]) for i in range(len(columns))]

    def render(line):
        return "  ".join(t.rjust(w) if right else t.ljust(w) for (t, right), w in zip(line, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), *map(render, body), rule, render(last)])


def to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    """CSV with a header line (`columns`, default the first row's keys); money as written."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


def to_json(rows: list[dict], meta: dict) -> str:
    """{"meta": meta, "rows": rows, "total": total(rows)}, indented."""
    return json.dumps({"meta": meta, "rows": rows, "total": total(rows)}, indent=2)
