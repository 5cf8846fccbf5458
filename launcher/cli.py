"""The `finops` command.

    finops serve [--config PATH] [--host H] [--port P] [--workers N] [--frontends N]
    finops check-config [--config PATH]
    finops keys|teams|customers ... [--config PATH]     virtual keys (see `finops keys --help`)
    finops certs [--dir DIR] [--name HOST]...           a development CA and server certificate
    finops report [--by DIM,...] [--since X] ... [--config PATH]   spend from the request log
    finops cache stats | clear [--key VK] [--model M] [--config PATH]   the response cache
    finops alerts list [--limit N] [--kind K] [--format table|json] [--config PATH]   alerts fired
"""
from __future__ import annotations

import argparse
import os
import sys

from finops.shared import config as configmod
from finops.shared.logs import setup_logging


GOVERNANCE_COMMANDS = ("keys", "teams", "customers")
SUBCOMMANDS = GOVERNANCE_COMMANDS + ("report", "cache", "alerts")


def _config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    """(config path or None, the other arguments): `--config PATH` or `--config=PATH` anywhere
    in a subcommand's arguments. Raises ValueError for a `--config` without a path."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.partition("=")[2], argv[:i] + argv[i + 1:]
        if a == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a path")
            return argv[i + 1], argv[:i] + argv[i + 2:]
    return None, argv


def subcommand(name: str, argv: list[str]) -> int:
    """`finops report|cache|keys|teams|customers ...`: load the config, run the command's module."""
    try:
        path, argv = _config_arg(argv)
    except ValueError as e:
        print(f"finops: {e}", file=sys.stderr)
        return 2
    try:
        cfg = configmod.load(path)
    except configmod.ConfigError as e:
        print(f"finops: config error: {e}", file=sys.stderr)
        return 2
    if name == "report":
        from finops.workers.observe import report_cli
        return report_cli.main(argv[1:], cfg)
    if name == "cache":
        from finops.workers.cache import cli as cache_cli
        return cache_cli.main(argv[1:], cfg)
    if name == "alerts":
        from finops.workers.alerts import cli as alerts_cli
        return alerts_cli.main(argv[1:], cfg)
    from finops.workers.governance import cli as gov_cli
    return gov_cli.main(argv, cfg)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return subcommand(argv[0], argv)
    if argv and argv[0] == "certs":
        from . import certs
        return certs.main(argv[1:], configmod.load(None).server.data_dir)
    ap = argparse.ArgumentParser(prog="finops", description="FinOps: a Bedrock Runtime-compatible AI gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("serve", help="start the gateway (every process, supervised)")
    sp.add_argument("--config", help="TOML config file (default: FINOPS_CONFIG, else embedded defaults)")
    sp.add_argument("--host", help="listen address (overrides the file)")
    sp.add_argument("--port", type=int, help="listen port (overrides the file)")
    sp.add_argument("--workers", type=int, help="worker processes (overrides the file)")
    sp.add_argument("--frontends", type=int, help="frontend processes (overrides the file)")
    sp.add_argument("--node-name", help="this node's name in a fleet (overrides server.node_name; default: host name)")
    sp.add_argument("--data-dir", help="state directory (overrides server.data_dir): one per node on one machine")
    sub.add_parser("certs", help="make a development CA and server certificate (finops certs --help)", add_help=False)
    sub.add_parser("report", help="spend and usage from the request log (finops report --help)", add_help=False)
    sub.add_parser("cache", help="response cache stats, or clear it (finops cache --help)", add_help=False)
    sub.add_parser("alerts", help="budget, forecast and anomaly alerts fired (finops alerts list --help)",
                   add_help=False)
    for name in GOVERNANCE_COMMANDS:
        sub.add_parser(name, help=f"manage {name} (finops {name} --help)", add_help=False)
    cp = sub.add_parser("check-config", help="validate a config file and print the effective settings")
    cp.add_argument("--config")
    args = ap.parse_args(argv)

    try:
        cfg = configmod.load(args.config, host=getattr(args, "host", None), port=getattr(args, "port", None))
        if getattr(args, "workers", None):
            configmod._positive("--workers", args.workers)
            cfg.server.workers = args.workers
        if getattr(args, "frontends", None):
            configmod._positive("--frontends", args.frontends)
            cfg.server.frontends = args.frontends
        if getattr(args, "node_name", None):
            cfg.server.node_name = args.node_name
        if getattr(args, "data_dir", None):
            cfg.server.data_dir = os.path.abspath(args.data_dir)
    except configmod.ConfigError as e:
        print(f"finops: config error: {e}", file=sys.stderr)
        return 2

    if args.cmd == "check-config":
        s = cfg.server
        print(f"config: {cfg.source}\nlisten: {s.host}:{s.port}  frontends={s.frontends} workers={s.workers}\n"
              f"data_dir: {s.data_dir}\nproviders: {', '.join(f'{n} ({p.kind})' for n, p in cfg.providers.items())}\n"
              f"routes: {len(cfg.routes)}; default: {cfg.default_route.provider if cfg.default_route else 'none'}\n"
              f"governance: {cfg.governance.mode}; {len(cfg.governance.keys)} keys, {len(cfg.governance.teams)} teams, "
              f"{len(cfg.governance.customers)} customers in the file; admin API "
              f"{'on' if cfg.governance.admin_token else 'off'}\n"
              f"cache: {cache_summary(cfg)}\n"
              f"observability: request log {'on' if cfg.observability.request_log else 'off'} "
              f"(retention {cfg.observability.log_retention_days:g} days); traces "
              f"{cfg.observability.otlp_endpoint or 'off'}; /metrics "
              f"{'behind the admin token' if cfg.observability.metrics_auth else 'open'}\n"
              f"alerts: {alerts_summary(cfg)}")
        return 0

    setup_logging("supervisor")
    from . import supervisor
    os.makedirs(cfg.server.data_dir, exist_ok=True)
    return supervisor.exec_supervisor(supervisor.plan(cfg, args.config))


def alerts_summary(cfg) -> str:
    """check-config's alerts line: the webhooks, the thresholds, forecast and anomaly alerts."""
    a = cfg.alerts
    if not a.webhooks:
        return "off (no [[alerts.webhooks]])"
    return (f"{len(a.webhooks)} webhook(s) ({', '.join(f'{w.name} {w.format}' for w in a.webhooks)}); thresholds "
            f"{', '.join(f'{t:g}' for t in a.thresholds)} %; forecast {'on' if a.forecast else 'off'}; anomaly "
            + (f"> {a.anomaly_factor:g}x and >= ${a.anomaly_min_usd:g}/hour" if a.anomaly else "off"))


def cache_summary(cfg) -> str:
    """check-config's cache line: which routes cache, how many key overrides adjust them."""
    routes = sum(1 for r in cfg.routes + [cfg.default_route] if r and r.cache and r.cache.enabled)
    keys = len(cfg.cache.keys)
    if not cfg.caching:
        return ("off (no route has an enabled [routes.cache] table"
                + (f"; the {keys} [cache.keys] override(s) adjust only routes that have one)" if keys else ")"))
    out = (f"{routes} routes, {keys} key override(s); embedder "
           f"{cfg.cache.embedding_model or 'built-in MiniLM'}")
    if cfg.cache.replication == "redis":
        from finops.workers.cache.replication import redis_target, where
        out += f"; replicated with the other nodes through Redis at {where(redis_target(cfg)[0])}"
    return out


if __name__ == "__main__":
    sys.exit(main())
