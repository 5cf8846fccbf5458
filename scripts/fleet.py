#!/usr/bin/env python3
"""Several gateway nodes on one machine, sharing one Redis and one PostgreSQL: see budgets hold
across nodes in minutes.

    scripts/dev fleet                               3 nodes on :8080-8082, the mock provider, a demo key
    scripts/dev fleet --nodes 2 --port 9000         2 nodes on :9000-9001
    scripts/dev fleet --config finops.toml          your providers, routes, keys (the backends are set here)
    scripts/dev fleet --redis-url redis://h:6379/0 --postgres-url postgresql://u:p@h:5432/db
                                                    your own servers instead of local throwaway ones

What it does:
1. Unless `--redis-url` / `--postgres-url` are given, starts a local `redis-server` and a PostgreSQL
   cluster on free loopback ports (the same code the tests use: tests/helpers/redis_server.py and
   tests/helpers/postgres_server.py; Debian's packages, installed with apt-get when missing;
   PostgreSQL runs as the `postgres` user when this runs as root). Both are throwaway: no
   persistence, removed on exit.
2. Writes one config for every node, `<dir>/finops.toml`: `[governance] ledger = "redis"`,
   `store = "postgres"`, the two URLs, `mode = "enforced"` and an admin token (unless your config
   sets them), `[cache] replication = "redis"` (unless set: one cache for the nodes' caching routes), and the mock provider with a demo key ($0.50 a day, 30 requests a minute, every token
   priced at $0.001) unless `--config` is given.
3. Starts `finops serve --config <dir>/finops.toml --node-name nodeI --port P+I --data-dir <dir>/nodeI`
   for each node (logs in `<dir>/nodeI.log`), waits until each answers /health, and prints the
   endpoints, a boto3 snippet and the admin token.
Ctrl-C (or SIGTERM) stops the nodes (they drain), then Redis and PostgreSQL. `<dir>` is a new temp
directory unless `--dir` is given.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))           # the checkout: the servers' code is the tests'

DEMO_KEY, DEMO_SECRET = "vk-demo", "vk-demo-secret-0123456789"
MOCK = {
    "providers": {"mock": {"kind": "mock"}},
    "default_route": {"provider": "mock"},
    "pricing": {"*": {"input": 1000.0, "output": 1000.0}},          # $0.001 a token: budgets move fast
    "governance": {"default_max_tokens": 64,                          # what a request without maxTokens reserves
                   "keys": [{"id": DEMO_KEY, "secret": DEMO_SECRET, "team": "demo",
                             "budgets": [{"amount_usd": 0.5, "period": "day"}],
                             "rate_limits": [{"requests": 30, "window": "minute"}]}],
                   "teams": [{"id": "demo"}]},
}


def log(msg: str) -> None:
    print(f"[fleet] {msg}", file=sys.stderr, flush=True)


# --- the config -------------------------------------------------------------------------------

def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)                        # a TOML basic string is JSON's string syntax
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _scalars(d: dict) -> bool:
    return not any(isinstance(v, (dict, list)) for v in d.values())


def toml_dumps(doc: dict, prefix: str = "") -> str:
    """`doc` as TOML: scalars and inline values first (a list of flat tables inline), then
    sub-tables and arrays of tables (a table holding only tables gets no header of its own)."""
    out, tables = [], []
    for k, v in doc.items():
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        if isinstance(v, dict):
            head = "" if v and all(isinstance(x, dict) for x in v.values()) else f"\n[{name}]\n"
            tables.append(head + toml_dumps(v, name))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and not all(
                _scalars(x) for x in v):
            tables += [f"\n[[{name}]]\n" + toml_dumps(x, name) for x in v]
        else:
            out.append(f"{_toml_key(k)} = {_toml_value(v)}\n")
    return "".join(out) + "".join(tables)


def fleet_config(base: dict, redis_url: str, postgres_url: str, workers: int) -> tuple[dict, str]:
    """The shared config: `base` with the shared backends set; (config, admin token)."""
    cfg = dict(base)
    server = dict(cfg.get("server", {}))
    server.setdefault("host", "127.0.0.1")
    server.setdefault("workers", workers)
    for k in ("port", "data_dir", "node_name"):     # per node: on each node's command line
        server.pop(k, None)
    gov = dict(cfg.get("governance", {}))
    gov.setdefault("mode", "enforced")
    gov.setdefault("admin_token", "fleet-admin-" + secrets.token_hex(8))
    gov.update(ledger="redis", redis_url=redis_url, store="postgres", postgres_url=postgres_url)
    cache = dict(cfg.get("cache", {}))
    cache.setdefault("replication", "redis")         # routes that cache share one cache across the nodes
    cfg["server"], cfg["governance"], cfg["cache"] = server, gov, cache
    return cfg, gov["admin_token"]


# --- the nodes --------------------------------------------------------------------------------

def finops_exe() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "finops")
    return exe if os.access(exe, os.X_OK) else "finops"


def wait_health(url: str, proc: subprocess.Popen, log_path: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the node exited with {proc.returncode}; see {log_path}:\n" + tail(log_path))
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if json.loads(r.read()).get("workers_live", 0) >= 1:
                    return
        except Exception:           # not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: not ready after {timeout:.0f}s; see {log_path}:\n" + tail(log_path))
        time.sleep(0.1)


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


def stop_node(p: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM (the node drains), then SIGKILL its whole group if it takes longer than `timeout`."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)            # start_new_session: the node leads its own group
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()


def snippet(port: int, nodes: int, admin: str, demo: bool) -> str:
    key = f'"{DEMO_SECRET}"' if demo else '"<a virtual key secret>"'
    return f"""
import boto3
def client(port, vk={key}):
    c = boto3.client("bedrock-runtime", endpoint_url=f"http://127.0.0.1:{{port}}/bedrock", region_name="us-east-1",
                     aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret")
    c.meta.events.register_first("before-sign.bedrock-runtime.*",
                                 lambda request, **kw: request.headers.add_header("x-bf-vk", vk))
    return c
msgs = [{{"role": "user", "content": [{{"text": "Hello from several nodes"}}]}}]
for i in range(40):                                 # round robin over the nodes, one budget
    r = client({port} + i % {nodes}).converse(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0", messages=msgs,
                                            inferenceConfig={{"maxTokens": 50}})
    print(i % {nodes}, r["ResponseMetadata"]["HTTPHeaders"].get("x-bf-budget-remaining-usd"))
# ...until ServiceQuotaExceededException (budget) or ThrottlingException (30 a minute), whichever node.
# Spend, the same on every node:
#   curl -H 'authorization: Bearer {admin}' http://127.0.0.1:{port}/admin/usage{'?key=' + DEMO_KEY if demo else ''}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    ap.add_argument("--port", type=int, default=8080, help="node I listens on PORT+I (default 8080)")
    ap.add_argument("--workers", type=int, default=2, help="workers per node, unless the config says (default 2)")
    ap.add_argument("--config", help="your config file (providers, routes, keys); default: the mock provider and a demo key")
    ap.add_argument("--redis-url", help="use this Redis instead of starting one")
    ap.add_argument("--postgres-url", help="use this PostgreSQL database instead of starting one")
    ap.add_argument("--dir", help="where the config, the nodes' data and logs go (default: a new temp dir)")
    a = ap.parse_args(argv)
    if a.nodes < 1:
        ap.error("--nodes must be at least 1")

    d = os.path.abspath(a.dir) if a.dir else tempfile.mkdtemp(prefix="finops-fleet-")
    os.makedirs(d, exist_ok=True)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    redis = pg = None
    nodes: list[subprocess.Popen] = []
    try:
        redis_url, postgres_url = a.redis_url, a.postgres_url
        if not redis_url:
            from tests.helpers.redis_server import RedisServer
            redis = RedisServer(os.path.join(d, "redis")).start()
            redis_url = redis.url
            log(f"redis-server (pid {redis.proc.pid}) on {redis_url}")
        if not postgres_url:
            from tests.helpers.postgres_server import PostgresServer
            pg = PostgresServer().start()
            postgres_url = pg.create_database("finops", "finops", "finops-" + secrets.token_hex(6))
            log(f"PostgreSQL on 127.0.0.1:{pg.port} (data in {pg.dir}), database finops")
        if a.config:
            with open(a.config, "rb") as f:
                base = tomllib.load(f)
        else:
            base = MOCK
        cfg, admin = fleet_config(base, redis_url, postgres_url, a.workers)
        cfg_path = os.path.join(d, "finops.toml")
        with open(cfg_path, "w") as f:
            f.write(f"# written by scripts/fleet.py for {a.nodes} nodes; each gets --node-name/--port/--data-dir\n")
            f.write(toml_dumps(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}   # the file and flags decide
        for i in range(a.nodes):
            data, log_path = os.path.join(d, f"node{i}"), os.path.join(d, f"node{i}.log")
            argv = [finops_exe(), "serve", "--config", cfg_path, "--node-name", f"node{i}",
                    "--port", str(a.port + i), "--data-dir", data]
            nodes.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=open(log_path, "ab"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
            log(f"node{i}: {' '.join(argv[1:])} (log {log_path})")
        for i, p in enumerate(nodes):
            wait_health(f"http://127.0.0.1:{a.port + i}", p, os.path.join(d, f"node{i}.log"))

        print(f"\n{a.nodes} FinOps nodes, one Redis ({redis_url}), one PostgreSQL ({postgres_url}):")
        for i in range(a.nodes):
            print(f"  node{i}: http://127.0.0.1:{a.port + i}/bedrock")
        print(f"config: {cfg_path}\nadmin token: {admin}")
        print("\nTry it:" + snippet(a.port, a.nodes, admin, not a.config))
        print("Ctrl-C stops every node, then Redis and PostgreSQL.", flush=True)
        while True:
            for i, p in enumerate(nodes):
                if p.returncode is None and p.poll() is not None:
                    log(f"node{i} exited with {p.returncode}; see {os.path.join(d, f'node{i}.log')}")
            time.sleep(1)
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except Exception as e:
        log(f"error: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in nodes:                                 # all drain at once
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in nodes:
            stop_node(p)
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.close()
        if nodes:
            log(f"stopped; logs in {d}")


if __name__ == "__main__":
    sys.exit(main())
