"""`finops alerts list [--limit N] [--kind budget|forecast|anomaly] [--format table|json]`: the
alerts fired, newest first, with each webhook's delivery, from the outbox, read-only (the gateway
need not run): <data_dir>/alerts.sqlite, or a fleet's on PostgreSQL (outbox.shared: the same list
from any node). The admin API has the same: GET /admin/alerts.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from finops.shared.config import Config

from ..governance.store import StoreError
from . import outbox
from .rules import KINDS


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def table(doc: dict) -> str:
    lines = []
    head = ("CREATED", "ID", "KIND", "SCOPE", "DELIVERY", "MESSAGE")
    rows = []
    for a in doc["alerts"]:
        scope = f"{a['level']}:{a['owner']}" + (f"@{a['env']}" if a["env"] else "")
        delivery = ", ".join(
            f"{d['webhook']} {d['status']}"
            + (f" by {d['node']}" if d.get("node") and d["status"] != "pending" else "")
            + (f" ({d['attempts']} tries: {d['last_error']})" if d["status"] != "delivered" and d["attempts"] else "")
            for d in a["deliveries"]) or "-"
        rows.append((_when(a["created_at"]), a["id"], a["kind"], scope, delivery, a["message"]))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head[:-1])]
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    c = doc["counts"]
    lines.append(f"deliveries: {sum(c['sent'].values())} sent, {sum(c['failed'].values())} failed, "
                 f"{c['pending']} pending")
    return "\n".join(lines)


def main(argv: list[str], cfg: Config) -> int:
    ap = argparse.ArgumentParser(prog="finops alerts", description="alerts fired and their deliveries")
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("list", help="the latest alerts, newest first")
    lp.add_argument("--limit", type=int, default=50)
    lp.add_argument("--kind", choices=KINDS)
    lp.add_argument("--format", choices=("table", "json"), default="table")
    args = ap.parse_args(argv)
    if args.limit < 1:
        print("finops alerts: --limit must be >= 1", file=sys.stderr)
        return 2
    try:
        doc = outbox.report(cfg, args.limit, args.kind)
    except StoreError as e:                  # the fleet's outbox, PostgreSQL unreachable
        print(f"finops alerts: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    elif not doc["alerts"]:
        print(f"no alerts (outbox: {outbox.describe(cfg)})")
    else:
        print(table(doc))
    return 0
