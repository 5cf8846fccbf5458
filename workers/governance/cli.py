"""`finops keys|teams|customers ...`: manage virtual keys, teams and customers in the governance
store the config names (`--config PATH` or FINOPS_CONFIG): the SQLite file in the data dir, or
PostgreSQL with `[governance] store = "postgres"` (then every node sharing it sees the change).

    finops keys create [--id ID] [--name N] [--team T] [--model GLOB]... [--provider GLOB]...
                       [--budget AMOUNT/PERIOD[@ENV]]... [--rate N{r|t}/WINDOW[@ENV]]...
                       [--expires ISO] [--disabled]
    finops keys list [--team T]
    finops keys show|disable|enable|rotate|delete ID
    finops keys update ID [--name N] [--team T|""] [--model GLOB]... [--provider GLOB]...
                          [--budget ...]... [--no-budgets] [--rate ...]... [--no-rates] [--expires ISO|never]
    finops teams create ID [--name N] [--customer C] [--budget ...]... [--rate ...]...
    finops teams list [--customer C] | show ID | update ID [...] | delete ID
    finops customers create ID [--name N] [--budget ...]... [--rate ...]...
    finops customers list | show ID | update ID [...] | delete ID

Every command takes --json (the admin API's JSON document instead of text). Budgets are USD per
calendar period: `10/day`, `2.5/month@dev` (only requests with x-bf-env: dev). Rate limits are
requests (r) or tokens (t) per window: `100r/minute`, `50000t/hour@prod`. Periods and windows:
minute, hour, day, week, month, year. Repeating --model/--provider/--budget/--rate gives several;
on `update` they replace the current list.

The commands run the admin API's own routes and code on the store (admin/api.py: call_store),
so the rules and messages are the same. `keys show` adds the spend of every budget that applies to
the key (its own, its team's, its customer's) in the current period, from the ledger's counters
(this node's last snapshot, or Redis; read only), and, with the request log on, each budget's forecast: the
projected spend at the reset and when it crosses the limit (observe/dashboard.py
usage_with_forecasts, the function `/admin/usage` uses). Entries declared in the config file are listed but read-only (edit the file).
A running gateway (every node, on PostgreSQL) picks changes up within a second.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from urllib.parse import quote

from finops.shared.config import default_data_dir
from finops.shared.governance import PERIODS

from ..admin.api import call_store
from ..ledger.redis_state import LedgerUnavailable
from ..ledger.state import LedgerState
from ..observe import dashboard, pglog
from .directory import load_directory
from .store import DirectoryStore, StoreError
from .stores import open_store

_BUDGET = re.compile(r"^\$?(\d+(?:\.\d*)?|\.\d+)/([a-z]+)(?:@(.+))?$")
_RATE = re.compile(r"^(\d+)([rt])/([a-z]+)(?:@(.+))?$")


class UsageError(Exception):
    pass


# --- flag values ---------------------------------------------------------------------------------

def parse_budget(text: str) -> dict:
    """`10/day`, `$2.5/month@dev` -> {"amount_usd": 2.5, "period": "month", "env": "dev"}."""
    m = _BUDGET.match(text.strip())
    if not m:
        raise UsageError(f"--budget {text!r}: expected AMOUNT/PERIOD[@ENV], like 10/day or 2.5/month@dev")
    amount, period, env = m.groups()
    if period not in PERIODS:
        raise UsageError(f"--budget {text!r}: the period must be one of {', '.join(PERIODS)}")
    return {"amount_usd": float(amount), "period": period, "env": env or ""}


def parse_rate(text: str) -> dict:
    """`100r/minute` (requests), `50000t/hour@prod` (tokens) -> a rate-limit dict."""
    m = _RATE.match(text.strip())
    if not m:
        raise UsageError(f"--rate {text!r}: expected N{{r|t}}/WINDOW[@ENV], like 100r/minute or 50000t/hour "
                         "(r = requests, t = tokens)")
    n, unit, window, env = m.groups()
    if window not in PERIODS:
        raise UsageError(f"--rate {text!r}: the window must be one of {', '.join(PERIODS)}")
    return {"window": window, "requests" if unit == "r" else "tokens": int(n), "env": env or ""}


def fmt_budgets(budgets: list[dict]) -> str:
    return ", ".join(f"{b['amount_usd']:g}/{b['period']}" + (f"@{b['env']}" if b.get("env") else "")
                     for b in budgets) or "-"


def fmt_rates(limits: list[dict]) -> str:
    out = []
    for r in limits:
        n = "+".join(f"{r[f]}{f[0]}" for f in ("requests", "tokens") if r.get(f) is not None)
        out.append(f"{n}/{r['window']}" + (f"@{r['env']}" if r.get("env") else ""))
    return ", ".join(out) or "-"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


# --- the parser ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="finops", description="manage virtual keys, teams and customers")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the JSON document instead of text")
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument("--name", help="a human-readable name")
    limits.add_argument("--budget", action="append", metavar="AMOUNT/PERIOD[@ENV]",
                        help="USD per calendar period, e.g. 10/day or 2.5/month@dev (repeatable)")
    limits.add_argument("--rate", action="append", metavar="N{r|t}/WINDOW[@ENV]",
                        help="requests (r) or tokens (t) per window, e.g. 100r/minute (repeatable)")
    clear = argparse.ArgumentParser(add_help=False)
    clear.add_argument("--no-budgets", action="store_true", help="remove every budget")
    clear.add_argument("--no-rates", action="store_true", help="remove every rate limit")
    keyf = argparse.ArgumentParser(add_help=False)
    keyf.add_argument("--team", help="the team the key belongs to")
    keyf.add_argument("--model", action="append", metavar="GLOB", help="allowed modelIds (repeatable; default *)")
    keyf.add_argument("--provider", action="append", metavar="GLOB", help="allowed providers (repeatable; default *)")
    keyf.add_argument("--expires", metavar="ISO", help="expiry, e.g. 2027-01-01T00:00:00Z (naive = UTC)")

    top = ap.add_subparsers(dest="noun", required=True, metavar="{keys,teams,customers}")

    k = top.add_parser("keys", help="virtual keys").add_subparsers(dest="verb", required=True)
    p = k.add_parser("create", parents=[common, limits, keyf], help="create a key (prints its secret once)")
    p.add_argument("--id", help="the key id (default: a generated vk-...)")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p = k.add_parser("list", parents=[common], help="list keys")
    p.add_argument("--team", help="only this team's keys")
    for verb, what in (("show", "show a key (secret masked)"), ("disable", "disable a key"),
                       ("enable", "enable a key"), ("rotate", "give a key a new secret (printed once)"),
                       ("delete", "delete a key")):
        k.add_parser(verb, parents=[common], help=what).add_argument("id")
    p = k.add_parser("update", parents=[common, limits, keyf, clear], help="change a key")
    p.add_argument("id")

    for noun, ref in (("teams", "--customer"), ("customers", None)):
        s = top.add_parser(noun, help=noun).add_subparsers(dest="verb", required=True)
        extra = argparse.ArgumentParser(add_help=False)
        if ref:
            extra.add_argument(ref, help="the customer the team belongs to")
        p = s.add_parser("create", parents=[common, limits, extra], help=f"create a {noun[:-1]}")
        p.add_argument("id")
        p = s.add_parser("list", parents=[common], help=f"list {noun}")
        if ref:
            p.add_argument(ref, help="only this customer's teams")
        s.add_parser("show", parents=[common], help=f"show a {noun[:-1]}").add_argument("id")
        s.add_parser("update", parents=[common, limits, extra, clear], help=f"change a {noun[:-1]}").add_argument("id")
        s.add_parser("delete", parents=[common], help=f"delete a {noun[:-1]}").add_argument("id")
    return ap


def _body(args, *, update: bool) -> dict:
    """The admin API body for create/update from the flags that were given."""
    b: dict = {}
    if args.name is not None:
        b["name"] = args.name
    for flag in ("team", "customer"):
        if getattr(args, flag, None) is not None:
            b[flag] = getattr(args, flag)
    if getattr(args, "model", None):
        b["models"] = args.model
    if getattr(args, "provider", None):
        b["providers"] = args.provider
    if getattr(args, "expires", None) is not None:
        b["expires"] = None if args.expires.lower() in ("", "never", "none") else args.expires
    if args.budget:
        b["budgets"] = [parse_budget(x) for x in args.budget]
    elif update and args.no_budgets:
        b["budgets"] = []
    if args.rate:
        b["rate_limits"] = [parse_rate(x) for x in args.rate]
    elif update and args.no_rates:
        b["rate_limits"] = []
    if update and args.budget and args.no_budgets:
        raise UsageError("--budget and --no-budgets: give one or the other")
    if update and args.rate and args.no_rates:
        raise UsageError("--rate and --no-rates: give one or the other")
    if getattr(args, "id", None) and not update:
        b["id"] = args.id
    if getattr(args, "disabled", False):
        b["enabled"] = False
    return b


# --- output --------------------------------------------------------------------------------------

def _endpoint(cfg) -> str:
    host = cfg.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}"


def _boto3_hint(cfg, doc: dict) -> str:
    return (f"boto3: boto3.client(\"bedrock-runtime\", endpoint_url=\"{_endpoint(cfg)}\", region_name=\"us-east-1\", "
            f"aws_access_key_id=\"{doc['id']}\", aws_secret_access_key=\"{doc['secret']}\")")


def _show(noun: str, doc: dict) -> str:
    rows = [("id", doc["id"]), ("name", doc["name"] or "-")]
    if noun == "keys":
        rows += [("team", doc["team"] or "-"), ("enabled", "yes" if doc["enabled"] else "no"),
                 ("expires", (doc["expires"] or "never") + (" (expired)" if doc["expired"] else "")),
                 ("models", ", ".join(doc["models"])), ("providers", ", ".join(doc["providers"]))]
    elif noun == "teams":
        rows.append(("customer", doc["customer"] or "-"))
    rows += [("budgets", fmt_budgets(doc["budgets"])), ("rate limits", fmt_rates(doc["rate_limits"])),
             ("source", doc["source"])]
    if noun == "keys":
        rows += [("created", doc["created_at"]), ("secret", doc["secret"])]
    return "\n".join(f"{k + ':':<13}{v}" for k, v in rows)


def _list(noun: str, doc: dict) -> str:
    items = doc[noun]
    if not items:
        return f"no {noun}"
    if noun == "keys":
        return table([[k["id"], k["name"] or "-", k["team"] or "-", "yes" if k["enabled"] else "no",
                       ("expired " if k["expired"] else "") + (k["expires"] or "never"),
                       fmt_budgets(k["budgets"]), k["source"]] for k in items],
                     ["ID", "NAME", "TEAM", "ENABLED", "EXPIRES", "BUDGETS", "SOURCE"])
    if noun == "teams":
        return table([[t["id"], t["name"] or "-", t["customer"] or "-", fmt_budgets(t["budgets"]),
                       fmt_rates(t["rate_limits"]), t["source"]] for t in items],
                     ["ID", "NAME", "CUSTOMER", "BUDGETS", "RATE LIMITS", "SOURCE"])
    return table([[c["id"], c["name"] or "-", fmt_budgets(c["budgets"]), fmt_rates(c["rate_limits"]), c["source"]]
                  for c in items], ["ID", "NAME", "BUDGETS", "RATE LIMITS", "SOURCE"])


def ledger_usage(cfg, store: DirectoryStore, key_id: str) -> list[dict]:
    """The ledger's usage entries for `key_id`'s scopes, read without a running gateway and without
    writing anything: this node's last snapshot (the local ledger saves one every second), or
    Redis (`ledger = "redis"`). Raises LedgerUnavailable when Redis cannot be read."""
    g = cfg.governance
    directory = load_directory(store, cfg)
    if g.ledger == "redis":
        from ..ledger.redis_state import RedisLedger
        led = RedisLedger.from_config(g, directory)
        try:
            return led.usage(key_id)
        finally:
            led.close()
    state = LedgerState(directory, tz=g.timezone, reservation_ttl=g.reservation_ttl_seconds)
    snap = store.load_snapshot()
    if snap:
        state.restore(snap)
    return state.usage(key_id)


def budget_usage(cfg, store: DirectoryStore, key_id: str, now: float | None = None) -> list[dict]:
    """The ledger's budget entries for `key_id`'s scopes (as /admin/usage?key=ID gives them), each
    with `forecast_usd` and `forecast_crosses_at` when the request log has spend to project from
    (dashboard.usage_with_forecasts, the function /admin/usage uses)."""
    usage = [u for u in ledger_usage(cfg, store, key_id) if u.get("kind") == "budget"]
    if not (usage and cfg.observability.request_log):
        return usage
    try:
        db = pglog.open_reader(cfg)
    except (FileNotFoundError, StoreError):          # no request logged yet, or PostgreSQL away: no forecast
        return usage
    try:
        return dashboard.usage_with_forecasts(db, usage, now)
    finally:
        db.close()


def fmt_usage(usage: list[dict]) -> list[tuple[str, str]]:
    """`keys show` rows: one per budget, its spend and forecast."""
    rows = []
    for u in usage:
        line = f"${u['spent_usd']:.4f} of the {u['label']} (resets {u['resets_at']})"
        if "forecast_usd" in u:
            line += f"; forecast ${u['forecast_usd']:.4f} at the reset"
            if u.get("forecast_crosses_at"):
                line += f", crosses the limit at {u['forecast_crosses_at']}"
        rows.append(("spend", line))
    return rows or [("spend", "-")]


# --- main ----------------------------------------------------------------------------------------

def _run(store: DirectoryStore, args, cfg) -> int:
    noun, verb = args.noun, args.verb
    one = noun[:-1]
    base = f"/admin/{noun}"
    ident = quote(getattr(args, "id", None) or "", safe="")
    if verb == "list":
        query = {f: getattr(args, f) for f in ("team", "customer") if getattr(args, f, None) is not None}
        call = ("GET", base, query, None)
    elif verb == "create":
        call = ("POST", base, {}, _body(args, update=False))
    elif verb == "show":
        call = ("GET", f"{base}/{ident}", {}, None)
    elif verb == "delete":
        call = ("DELETE", f"{base}/{ident}", {}, None)
    elif verb == "update":
        body = _body(args, update=True)
        if not body:
            raise UsageError(f"{noun} update: nothing to change (give --name, --budget, ...)")
        call = ("PATCH", f"{base}/{ident}", {}, body)
    else:                                           # keys disable|enable|rotate
        body = {"secret": "rotate"} if verb == "rotate" else {"enabled": verb == "enable"}
        call = ("PATCH", f"{base}/{ident}", {}, body)
    method, path, query, body = call
    status, doc = call_store(store, method, path, query, json.dumps(body).encode() if body is not None else b"")
    if status >= 400:
        print(f"finops: {doc['message']}", file=sys.stderr)
        return 1
    if noun == "keys" and verb == "show":
        try:
            doc = {**doc, "usage": budget_usage(cfg, store, doc["id"])}
        except LedgerUnavailable as e:              # the key is still shown; its spend cannot be
            doc = {**doc, "usage_error": str(e)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if verb == "list":
        print(_list(noun, doc))
    elif verb == "show":
        print(_show(noun, doc))
        if noun == "keys":
            rows = fmt_usage(doc["usage"]) if "usage" in doc else [("spend", f"unknown: {doc['usage_error']}")]
            print("\n".join(f"{k + ':':<13}{v}" for k, v in rows))
    elif verb == "delete":
        print(f"Deleted {one} {doc['deleted']}.")
    elif verb in ("disable", "enable"):
        print(f"Key {doc['id']} {verb}d.")
    elif noun == "keys" and verb in ("create", "rotate"):
        what = "Created key" if verb == "create" else "New secret for key"
        print(f"{what} {doc['id']}" + (f" ({doc['name']})" if doc["name"] else "") + ".\n"
              f"  access key id: {doc['id']}\n"
              f"  secret:        {doc['secret']}\n"
              f"The secret is shown only now; store it safely.\n{_boto3_hint(cfg, doc)}")
    else:
        print(f"{'Created' if verb == 'create' else 'Updated'} {one} {doc['id']}.\n{_show(noun, doc)}")
    return 0


def main(argv, cfg) -> int:
    """`argv` starts with the noun: ["keys", "create", "--name", "x"]. Returns the exit status:
    0 done, 1 refused (not found, conflict, invalid value), 2 usage error."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as e:                        # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    cfg.server.data_dir = cfg.server.data_dir or default_data_dir(os.environ)
    try:
        store = open_store(cfg)
    except (StoreError, OSError, sqlite3.Error) as e:
        where = "(PostgreSQL)" if cfg.governance.store == "postgres" else f"in {cfg.server.data_dir}"
        print(f"finops: governance store {where}: {e}", file=sys.stderr)
        return 1
    try:
        return _run(store, args, cfg)
    except UsageError as e:
        print(f"finops: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
