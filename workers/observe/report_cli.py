"""`finops report`: spend and usage from the request log, grouped and filtered.

    finops report [--by key,model,...] [--since X] [--until Y] [--key VK] [--team T]
                  [--customer C] [--env E] [--model M] [--provider P]
                  [--format table|csv|json] [--config PATH]

--by takes dimensions separated by commas, grouped in that order: key (shows vk_name too), team,
customer, env, model, provider, day, op, status (HTTP status and AWS error code). Default: key.
--since / --until: an ISO date or datetime, a relative time (7d, 24h, 30m) or today, yesterday,
this-month, last-month; calendar-aligned in governance.timezone. Default: the last 30 days.
A date or name given to --until includes that day or month (`--since last-month --until
last-month` is last month). The filters are equalities; "" matches none (anonymous for --key).

Rows are sorted by cost, highest first (by day when --by starts with day); the table ends with a
TOTAL line, which equals the sum of the rows. The log is opened read-only; nothing is written.
See report.py for what counts as an error and a cache hit.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys

from finops.shared.config import default_data_dir

from . import logdb
from .report import (DIMENSIONS, columns_for, fmt_ts, parse_period, summarize, to_csv, to_json,
                     to_table, total)

FILTER_FLAGS = ("key", "team", "customer", "env", "model", "provider")


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="finops report",
                                 description="spend and usage from the request log, grouped and filtered")
    ap.add_argument("--by", default="key", metavar="DIM[,DIM...]",
                    help=f"group by these, in order: {', '.join(DIMENSIONS)} (default: key)")
    ap.add_argument("--since", default="", metavar="WHEN",
                    help="start: 2026-11-01, 2026-11-01T08:00, 7d, 24h, 30m, today, yesterday, this-month, "
                         "last-month (default: 30d)")
    ap.add_argument("--until", default="", metavar="WHEN",
                    help="end, same forms; a date or a name includes that day or month (default: now)")
    for f in FILTER_FLAGS:
        ap.add_argument(f"--{f}", metavar=f[0].upper() if f != "key" else "VK",
                        help=f"only this {'virtual key id' if f == 'key' else f} (\"\" = none)")
    ap.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default: table)")
    ap.add_argument("--config", metavar="PATH", help="TOML config file (read by `finops`: data_dir and governance.timezone)")
    return ap


def parse_by(text: str) -> list[str]:
    dims = [d.strip() for d in text.split(",") if d.strip()]
    if not dims:
        raise UsageError("--by: give at least one dimension, like --by key or --by team,model")
    for d in dims:
        if d not in DIMENSIONS:
            raise UsageError(f"--by {d!r}: unknown dimension (known: {', '.join(DIMENSIONS)})")
    if len(set(dims)) != len(dims):
        raise UsageError(f"--by {text!r}: a dimension is repeated")
    return dims


def main(argv, cfg) -> int:
    """`argv` is what follows `finops report`. Returns the exit status: 0 done, 1 no log or the
    log cannot be read, 2 usage error (the message says what to fix)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:                        # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    tz = cfg.governance.timezone
    try:
        by = parse_by(args.by)
        since, until = parse_period(args.since, args.until, tz)
    except (UsageError, ValueError) as e:
        print(f"finops report: {e}", file=sys.stderr)
        return 2
    where = {f: getattr(args, f) for f in FILTER_FLAGS if getattr(args, f) is not None}
    data_dir = cfg.server.data_dir or default_data_dir(os.environ)
    try:
        db = logdb.open_db(data_dir, readonly=True)
    except FileNotFoundError as e:
        print(f"finops report: {e}", file=sys.stderr)
        return 1
    try:
        rows = summarize(db, by, since, until, where)
    except sqlite3.Error as e:
        print(f"finops report: cannot read the request log {logdb.path_in(data_dir)}: {e}", file=sys.stderr)
        return 1
    finally:
        db.close()
    columns = columns_for(by)
    if args.format == "csv":
        sys.stdout.write(to_csv(rows, columns))
    elif args.format == "json":
        meta = {"since": fmt_ts(since, tz), "until": fmt_ts(until, tz), "since_ts": since, "until_ts": until,
                "timezone": tz, "group_by": by, "where": where, "log": logdb.path_in(data_dir)}
        print(to_json(rows, meta))
    else:
        print(f"Requests from {fmt_ts(since, tz)} to {fmt_ts(until, tz)} ({tz})"
              + "".join(f", {k} = {v!r}" for k, v in where.items()))
        print(to_table(rows, columns, total(rows)) if rows else "No requests match.")
    return 0
