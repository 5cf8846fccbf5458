"""`finops report`: spend and usage from the request log, grouped and filtered; FOCUS export;
chargeback.

    finops report [--by key,model,...] [--since X] [--until Y | --month YYYY-MM] [--key VK]
                  [--team T] [--customer C] [--env E] [--model M] [--provider P]
                  [--format table|csv|json] [--config PATH]
    finops report --format focus [--grain hour|day] [--output FILE.csv|FILE.parquet] [period, filters]
    finops report --chargeback [--month 2026-11] [--by customer,team] [--format table|csv|json]

--by takes dimensions separated by commas, grouped in that order: key (shows vk_name too), team,
customer, env, model, provider, day, op, status (HTTP status and AWS error code), and
tag:NAME (a request tag: Converse requestMetadata, the InvokeModel X-Amzn-Bedrock-Request-Metadata
header, an application inference profile's tags). Default: key (customer,team with --chargeback).
--since / --until: an ISO date or datetime, a relative time (7d, 24h, 30m) or today, yesterday,
this-month, last-month; calendar-aligned in governance.timezone. Default: the last 30 days.
A date or name given to --until includes that day or month (`--since last-month --until
last-month` is last month). --month YYYY-MM is that calendar month (instead of --since/--until).
The filters are equalities; "" matches none (anonymous for --key).

Rows are sorted by cost, highest first (by day when --by starts with day); the table ends with a
TOTAL line, which equals the sum of the rows. The log is opened read-only; only --output writes.
See report.py for what counts as an error and a cache hit, focus.py for the FOCUS dataset, and
chargeback.py for the chargeback's columns.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys

from finops.shared.config import default_data_dir

from . import chargeback as cb
from . import focus, logdb
from .report import (DIMENSIONS, TAG, TAG_HELP, columns_for, tag_sql, fmt_ts, parse_period, summarize, to_csv, to_json,
                     to_table, total)

FILTER_FLAGS = ("key", "team", "customer", "env", "model", "provider")


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="finops report",
                                 description="spend and usage from the request log, grouped and filtered")
    ap.add_argument("--by", default=None, metavar="DIM[,DIM...]",
                    help=f"group by these, in order: {', '.join(DIMENSIONS)}, tag:NAME (default: key; "
                         "customer,team with --chargeback)")
    ap.add_argument("--since", default="", metavar="WHEN",
                    help="start: 2026-11-01, 2026-11-01T08:00, 7d, 24h, 30m, today, yesterday, this-month, "
                         "last-month (default: 30d)")
    ap.add_argument("--until", default="", metavar="WHEN",
                    help="end, same forms; a date or a name includes that day or month (default: now)")
    ap.add_argument("--month", default="", metavar="YYYY-MM",
                    help="that calendar month in governance.timezone (instead of --since/--until)")
    for f in FILTER_FLAGS:
        ap.add_argument(f"--{f}", metavar=f[0].upper() if f != "key" else "VK",
                        help=f"only this {'virtual key id' if f == 'key' else f} (\"\" = none)")
    ap.add_argument("--format", choices=("table", "csv", "json", "focus"), default="table",
                    help="output (default: table); focus: a FinOps FOCUS 1.2 cost and usage dataset (CSV, "
                         "or Parquet with --output FILE.parquet)")
    ap.add_argument("--chargeback", action="store_true",
                    help="per customer and team (or --by): cost, cache savings, share; reconciled to the log")
    ap.add_argument("--grain", choices=focus.GRAINS, default="hour",
                    help="FOCUS rows per UTC hour (default) or per day in governance.timezone")
    ap.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output "
                    "(--format focus: FILE.parquet writes Parquet, needs pyarrow)")
    ap.add_argument("--config", metavar="PATH", help="TOML config file (read by `finops`: data_dir and governance.timezone)")
    return ap


def parse_by(text: str) -> list[str]:
    dims = [d.strip() for d in text.split(",") if d.strip()]
    if not dims:
        raise UsageError("--by: give at least one dimension, like --by key or --by team,model")
    for d in dims:
        if d.startswith(TAG):
            try:
                tag_sql(d)
            except ValueError as e:
                raise UsageError(f"--by {e}") from None
        elif d not in DIMENSIONS:
            raise UsageError(f"--by {d!r}: unknown dimension (known: {', '.join(DIMENSIONS)}, {TAG_HELP})")
    if len(set(dims)) != len(dims):
        raise UsageError(f"--by {text!r}: a dimension is repeated")
    return dims


def _period(args, tz: str) -> tuple[float, float]:
    if args.month:
        if args.since or args.until:
            raise UsageError("--month is a whole month: give it, or --since/--until, not both")
        return cb.month_period(args.month, tz)
    return parse_period(args.since, args.until, tz)


def _check(args) -> None:
    if args.chargeback and args.format == "focus":
        raise UsageError("--chargeback and --format focus are two outputs: pick one")
    if args.format == "focus" and args.by is not None:
        raise UsageError("--format focus has its own grain (--grain hour|day); --by does not apply")
    if args.output and args.format != "focus":
        raise UsageError("--output is for --format focus (redirect the other formats)")


def main(argv, cfg) -> int:
    """`argv` is what follows `finops report`. Returns the exit status: 0 done, 1 no log or the
    log cannot be read (or the output file cannot be written), 2 usage error (the message says
    what to fix)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:                        # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    tz = cfg.governance.timezone
    try:
        _check(args)
        by = parse_by(args.by if args.by is not None else ",".join(cb.DEFAULT_BY) if args.chargeback else "key")
        since, until = _period(args, tz)
        if args.output and args.output.endswith(".parquet"):
            focus.to_focus_parquet([])              # pyarrow missing: say so before reading anything
    except focus.ParquetUnavailable as e:
        print(f"finops report: {e}", file=sys.stderr)
        return 2
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
        if args.format == "focus":
            return _focus(db, args, since, until, tz, where)
        if args.chargeback:
            rows, totals = cb.chargeback(db, since, until, by, where)
        else:
            rows = summarize(db, by, since, until, where)
    except sqlite3.Error as e:
        print(f"finops report: cannot read the request log {logdb.path_in(data_dir)}: {e}", file=sys.stderr)
        return 1
    except cb.Unreconciled as e:
        print(f"finops report: {e}", file=sys.stderr)
        return 1
    finally:
        db.close()
    meta = {"since": fmt_ts(since, tz), "until": fmt_ts(until, tz), "since_ts": since, "until_ts": until,
            "timezone": tz, "group_by": by, "where": where, "log": logdb.path_in(data_dir)}
    if args.chargeback:
        return _chargeback_out(args, rows, totals, by, meta)
    columns = columns_for(by)
    if args.format == "csv":
        sys.stdout.write(to_csv(rows, columns))
    elif args.format == "json":
        print(to_json(rows, meta))
    else:
        print(_heading("Requests", since, until, tz, where))
        print(to_table(rows, columns, total(rows)) if rows else "No requests match.")
    return 0


def _heading(what: str, since: float, until: float, tz: str, where: dict) -> str:
    return (f"{what} from {fmt_ts(since, tz)} to {fmt_ts(until, tz)} ({tz})"
            + "".join(f", {k} = {v!r}" for k, v in where.items()))


def _chargeback_out(args, rows: list[dict], totals: dict, by: list[str], meta: dict) -> int:
    columns = cb.chargeback_columns(by)
    labels = [c for c in columns if c not in cb.CHARGEBACK_METRICS]
    if args.format == "csv":                       # for finance: the rows, then the TOTAL line
        last = {**{c: "" for c in labels}, labels[0]: "TOTAL", **totals}
        sys.stdout.write(to_csv(rows + [last], columns))
    elif args.format == "json":
        print(json.dumps({"meta": meta, "rows": rows, "total": totals}, indent=2))
    else:
        print(_heading("Chargeback", meta["since_ts"], meta["until_ts"], meta["timezone"], meta["where"]))
        if not rows:
            print("No requests match.")
            return 0
        print(to_table(rows, columns, totals, metrics=cb.CHARGEBACK_METRICS))
        print(f"Reconciled: {totals['requests']:,} requests and {totals['cost_usd']:.6f} USD, the request log's "
              f"total for the period; the gateway's caches saved {totals['saved_usd']:.6f} USD, providers' "
              f"prompt caches {totals['prompt_saved_usd']:.6f} USD.")
    return 0


def _focus(db, args, since: float, until: float, tz: str, where: dict) -> int:
    rows = focus.focus_rows(db, since, until, tz, where, grain=args.grain)
    if not args.output:
        sys.stdout.write(focus.to_focus_csv(rows))
        return 0
    data = (focus.to_focus_parquet(rows) if args.output.endswith(".parquet")
            else focus.to_focus_csv(rows).encode())
    try:
        with open(args.output, "wb") as f:
            f.write(data)
    except OSError as e:
        print(f"finops report: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    billed = sum(int(r["BilledCost"].replace(".", "")) for r in rows)
    print(f"finops report: wrote {len(rows)} FOCUS {focus.FOCUS_VERSION} rows ({focus.money(billed)} USD billed) "
          f"to {args.output}", file=sys.stderr)
    return 0
