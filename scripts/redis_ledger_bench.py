#!/usr/bin/env python3
"""Redis ledger harness: reserve+settle pairs per second one Redis sustains, and what they cost.

    .venv/bin/python scripts/redis_ledger_bench.py                  a local redis-server, every mode
    .venv/bin/python scripts/redis_ledger_bench.py --url redis://host:6379/0 --pairs 20000
    .venv/bin/python scripts/redis_ledger_bench.py --help

Method:

- Redis: `--url`, or a redis-server this script starts on a free loopback port in a temp dir
  (tests/helpers/redis_server.py: no persistence, installed with apt-get when missing).
- Two directories: `1 budget` (a key with one daily budget: 1 counter per request) and
  `3 levels` (key, team and customer, each with a daily and a monthly budget, a requests-per-minute
  and a tokens-per-hour limit: 12 counters per request, every one read, checked, incremented
  and given its TTL in the reserve script, and charged in the settle script). Limits are high
  enough that nothing is refused; each run uses its own namespace.
- Modes, each a series of pairs (reserve then settle of the same rid, as a request does):
    single         one client, one EVALSHA per reserve and per settle (2 round trips a pair);
                   a worker calling Redis itself through blocking redis-py, one call each (the
                   gateway's workers reserve on a pipelined trio connection instead, direct.py,
                   measured end to end by scripts/bench.py's governed-redis);
    batch N        one client, N reserves in one pipeline, then their N settles in another (what a
                   node's ledger actor batching its workers' messages would do);
    P procs        P client processes at once, each `single`, or `batch N` with --procs-batch.
- Reported per mode: pairs per second (wall time), the Redis server's CPU per pair (INFO
  used_cpu_user + used_cpu_sys before and after, all its threads) and, of it, the time inside the
  scripts (INFO commandstats, EVALSHA's usec: the rest is the network and the event loop), and
  the client's CPU per pair
  (time.process_time of the process(es) calling RedisLedger: Python, redis-py, the sockets):
  what a gateway node would spend on the ledger. On one small machine the client processes and
  Redis share the cores: `P procs` is bounded by that, not by Redis alone.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))             # the checkout, for tests.helpers.redis_server

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team, VirtualKey  # noqa: E402
from finops.workers.ledger.redis_state import RedisLedger  # noqa: E402

BIG = 1e9
DIRS = {
    "1 budget": Directory(keys={"vk-1": VirtualKey("vk-1", "s", budgets=(Budget(BIG, "day"),))}),
    "3 levels": Directory(
        keys={"vk-1": VirtualKey("vk-1", "s", team="t1", budgets=(Budget(BIG, "day"), Budget(BIG, "month")),
                                 rate_limits=(RateLimit("minute", requests=10**12), RateLimit("hour", tokens=10**15)))},
        teams={"t1": Team("t1", customer="c1", budgets=(Budget(BIG, "day"), Budget(BIG, "month")),
                          rate_limits=(RateLimit("minute", requests=10**12), RateLimit("hour", tokens=10**15)))},
        customers={"c1": Customer("c1", budgets=(Budget(BIG, "day"), Budget(BIG, "month")),
                                  rate_limits=(RateLimit("minute", requests=10**12),
                                               RateLimit("hour", tokens=10**15)))}),
}


def redis_cpu(led: RedisLedger) -> tuple[float, float]:
    """(Redis CPU seconds, all threads; seconds spent inside EVALSHA, the scripts themselves)."""
    info = led.r.info("cpu")
    stats = led.r.info("commandstats").get("cmdstat_evalsha", {})
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), stats.get("usec", 0) / 1e6


def run_pairs(url: str, dname: str, ns: str, tag: str, pairs: int, batch: int) -> tuple[float, float]:
    """`pairs` reserve+settle pairs; returns (wall seconds, client CPU seconds)."""
    led = RedisLedger.from_url(url, DIRS[dname], namespace=ns)
    for i in range(50):                                         # warm up: connection, plans, scripts
        led.reserve(f"w{tag}-{i}", "vk-1", "", 0.01, 100, pid=f"bench/{os.getpid()}")
        led.settle(f"w{tag}-{i}", 0.005, 50, "vk-1", "")
    t0, c0 = time.perf_counter(), time.process_time()
    pid = f"bench/{os.getpid()}"
    if batch <= 1:
        for i in range(pairs):
            rid = f"{tag}-{i}"
            out = led.reserve(rid, "vk-1", "", 0.01, 100, pid=pid)
            assert out["ok"], out
            led.settle(rid, 0.005, 50, "vk-1", "")
    else:
        for j in range(0, pairs, batch):
            rids = [f"{tag}-{i}" for i in range(j, min(j + batch, pairs))]
            outs = led.reserve_many([(rid, "vk-1", "", 0.01, 100, pid) for rid in rids])
            assert all(isinstance(o, dict) and o["ok"] for o in outs), outs[:2]
            led.settle_many([(rid, 0.005, 50, "vk-1", "") for rid in rids])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    led.close()
    return wall, cpu


def _child(args, q):
    q.put(run_pairs(*args))


def measure(url: str, dname: str, mode: str, pairs: int, batch: int, procs: int, n: int) -> dict:
    ns = f"bench{os.getpid()}-{n}"
    probe = RedisLedger.from_url(url, DIRS[dname], namespace=ns)
    probe.rebuild([])
    r0 = redis_cpu(probe)
    if procs <= 1:
        t0 = time.perf_counter()
        wall, cpu = run_pairs(url, dname, ns, "p0", pairs, batch)
        total_pairs, client_cpu = pairs, cpu
        wall = time.perf_counter() - t0 if wall <= 0 else wall
    else:
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        ps = [ctx.Process(target=_child, args=((url, dname, ns, f"p{k}", pairs, batch), q)) for k in range(procs)]
        t0 = time.perf_counter()
        for p in ps:
            p.start()
        got = [q.get(timeout=600) for _ in ps]
        for p in ps:
            p.join()
        wall = max(w for w, _ in got)
        total_pairs, client_cpu = pairs * procs, sum(c for _, c in got)
    r1 = redis_cpu(probe)
    warm = 50 * max(1, procs)
    probe.close()
    return {"dir": dname, "mode": mode, "pairs": total_pairs, "per_s": total_pairs / wall,
            "redis_us": (r1[0] - r0[0]) * 1e6 / (total_pairs + warm),
            "script_us": (r1[1] - r0[1]) * 1e6 / (total_pairs + warm), "client_us": client_cpu * 1e6 / total_pairs}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an existing Redis (default: start a local redis-server)")
    ap.add_argument("--ca-file", help="the CA of a rediss:// Redis")
    ap.add_argument("--pairs", type=int, default=4000, help="reserve+settle pairs per mode and process")
    ap.add_argument("--procs", type=int, default=3, help="client processes for the multi-process modes")
    args = ap.parse_args(argv)
    srv = None
    url = args.url
    if not url:
        from tests.helpers.redis_server import RedisServer
        srv = RedisServer(tempfile.mkdtemp(prefix="redis-bench-")).start()
        url = srv.url
    try:
        info = RedisLedger.from_url(url, DIRS["1 budget"]).r.info("server")
        print(f"Redis {info.get('redis_version')} at {url.split('@')[-1]}; {os.cpu_count()} cores; "
              f"{args.pairs} pairs per mode and process", flush=True)
        modes = [("single", 1, 1), ("batch 16", 16, 1), ("batch 64", 64, 1),
                 (f"{args.procs} procs single", 1, args.procs), (f"{args.procs} procs batch 64", 64, args.procs)]
        print(f"{'directory':10} {'mode':22} {'pairs/s':>8} {'redis CPU us/pair':>18} {'in scripts':>11} "
              f"{'client CPU us/pair':>19}")
        n = 0
        for dname in DIRS:
            for mode, batch, procs in modes:
                n += 1
                m = measure(url, dname, mode, args.pairs, batch, procs, n)
                print(f"{m['dir']:10} {m['mode']:22} {m['per_s']:8,.0f} {m['redis_us']:18.1f} "
                      f"{m['script_us']:11.1f} {m['client_us']:19.1f}", flush=True)
    finally:
        if srv is not None:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
