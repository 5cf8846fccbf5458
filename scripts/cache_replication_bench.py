#!/usr/bin/env python3
"""Cache replication harness: how long an entry stored on one node takes to reach another node's cache.

    .venv/bin/python scripts/cache_replication_bench.py                  a local redis-server, 500 entries
    .venv/bin/python scripts/cache_replication_bench.py --entries 2000 --burst 5000 --url redis://host:6379/0

Method:

- Redis: `--url`, or a redis-server this script starts on a free loopback port in a temp dir
  (tests/helpers/redis_server.py: no persistence). The stream is emptied first.
- Two cache actors (`python -m finops.workers.cache.actor`, real processes, as `finops serve`
  starts them), nodes `a` and `b`, each with its own data dir, `[cache] replication = "redis"`.
- Entries are what a worker stores: a 384-float MiniLM-sized vector (random, normalised) and a
  2 KiB answer, each its own scope and exact key, sent to a's ZeroMQ socket as `put` messages.
- lag (sequential): one entry is put on a; at once this script asks b `get` for its exact key
  (a round trip over b's socket, ~0.1 ms) again and again until b answers a hit. The lag is the time
  from sending the put to the first hit: a's actor publishing, the XADD, b's blocked XREAD
  returning, the wake-up message and b's actor applying it, plus at most one poll round trip.
  Reported: p50, p99 and max over `--entries`.
- burst: `--burst` entries are put on a as fast as the socket takes them; the time until b has the
  last one (b applies in stream order), and that rate.
- warm start: a third actor `c` with an empty data dir is started after all that; the time from
  its process start until `stats` reports every entry (process start and imports included).
- for comparison, what a shared store would put on every lookup: a Redis GET of a 2 KiB value
  over the same loopback (p50/p99), against b's local `get` round trip.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))             # the checkout, for tests.helpers.redis_server

import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from finops.shared import transport  # noqa: E402
from finops.shared.transport import zmq  # noqa: E402
from finops.workers.cache import replication  # noqa: E402

DIM = 384


class Node:
    def __init__(self, root: str, name: str, url: str):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.cfg = os.path.join(self.dir, "finops.toml")
        with open(self.cfg, "w") as f:
            f.write(f'[server]\ndata_dir = "{self.dir}"\nnode_name = "{name}"\n'
                    f'[governance]\nredis_url = "{url}"\n[cache]\nreplication = "redis"\n')
        self.run_dir = os.path.join(self.dir, "run")
        os.makedirs(self.run_dir, exist_ok=True)
        self.started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "finops.workers.cache.actor", "--config", self.cfg],
                                     env=env, stdout=open(os.path.join(self.dir, "actor.log"), "wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not transport.discover(self.run_dir, "cache"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"cache actor {name} did not start:\n" + open(os.path.join(self.dir, "actor.log")).read()[-2000:])
            time.sleep(0.01)
        self.push = transport.make_socket(zmq.PUSH)
        self.push.connect(transport.discover(self.run_dir, "cache")[self.proc.pid])
        self.pull = transport.make_socket(zmq.PULL)
        self.reply = transport.bind(self.pull, transport.endpoint_for(f"bench-{name}", self.run_dir, "ipc"))
        self.n = 0

    def send(self, msg: dict) -> None:
        self.push.send(msgpack.packb(msg, use_bin_type=True))

    def ask(self, msg: dict) -> dict:
        self.n += 1
        self.send({**msg, "i": self.n, "r": self.reply})
        while True:
            if not self.pull.poll(5000):
                raise SystemExit(f"cache actor {self.name} did not answer")
            out = msgpack.unpackb(self.pull.recv(), raw=False)
            if out.get("i") == self.n:
                return out

    def stop(self) -> None:
        self.push.close(linger=0)
        self.pull.close(linger=0)
        self.proc.terminate()
        self.proc.wait(10)


def entry(i: int, rng, answer: bytes) -> dict:
    v = rng.standard_normal(DIM).astype(np.float32)
    v /= np.linalg.norm(v)
    return {"k": "put", "scope": f"scope-{i}", "exact": f"exact-{i}-{rng.integers(1 << 62)}", "ns": "bench|anonymous",
            "ns_max": 1_000_000, "owner": "anonymous", "model": "bench.model", "question": f"question {i}",
            "answer": answer, "ttl": 3600.0, "saved": 0.001, "vec": v.tobytes(), "emb": "bench-emb"}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a Redis to use (default: start one)")
    ap.add_argument("--entries", type=int, default=500, help="sequential lag samples")
    ap.add_argument("--burst", type=int, default=2000, help="entries put at once")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    answer = os.urandom(2048)
    with tempfile.TemporaryDirectory(prefix="cache-repl-bench-") as root:
        srv = None
        url = args.url
        if not url:
            from tests.helpers.redis_server import RedisServer
            srv = RedisServer(os.path.join(root, "redis")).start()
            url = srv.url
        r = replication.client_factory(url)()
        r.delete(replication.STREAM)
        nodes = []
        try:
            a, b = Node(root, "a", url), Node(root, "b", url)
            nodes += [a, b]
            for _ in range(20):                                  # warm up both readers and sockets
                e = entry(-1, rng, answer)
                a.send(e)
                while not b.ask({"k": "get", "exact": e["exact"], "final": True}).get("hit"):
                    pass
            lags, polls = [], []
            for i in range(args.entries):
                e = entry(i, rng, answer)
                t0 = time.perf_counter()
                a.send(e)
                n = 0
                while not b.ask({"k": "get", "exact": e["exact"], "final": True}).get("hit"):
                    n += 1
                lags.append(time.perf_counter() - t0)
                polls.append(n)
            print(f"lag a -> b, {args.entries} entries one at a time (384-float vector, 2 KiB answer):")
            print(f"  p50 {pct(lags, 0.5) * 1000:.2f} ms   p99 {pct(lags, 0.99) * 1000:.2f} ms   "
                  f"max {max(lags) * 1000:.2f} ms   (mean {statistics.mean(polls):.0f} polls of b)")

            es = [entry(100_000 + i, rng, answer) for i in range(args.burst)]
            t0 = time.perf_counter()
            for e in es:
                a.send(e)
            sent = time.perf_counter() - t0
            while not b.ask({"k": "get", "exact": es[-1]["exact"], "final": True}).get("hit"):
                time.sleep(0.001)
            took = time.perf_counter() - t0
            print(f"burst: {args.burst} entries put on a in {sent * 1000:.0f} ms, all on b after {took * 1000:.0f} ms "
                  f"({args.burst / took:,.0f} entries/s)")

            total = a.ask({"k": "stats"})["entries"]
            c = Node(root, "c", url)
            nodes.append(c)
            while c.ask({"k": "stats"})["entries"] < total:
                time.sleep(0.005)
            print(f"warm start: a new node has all {total} entries {time.monotonic() - c.started:.2f} s after its "
                  f"process started")

            r.set("bench:blob", answer)
            gets, locals_ = [], []
            for _ in range(2000):
                t0 = time.perf_counter()
                r.get("bench:blob")
                gets.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b.ask({"k": "get", "exact": es[0]["exact"], "final": True})
                locals_.append(time.perf_counter() - t0)
            print(f"lookup: b's local get round trip p50 {pct(locals_, 0.5) * 1e3:.3f} ms p99 "
                  f"{pct(locals_, 0.99) * 1e3:.3f} ms; a Redis GET of 2 KiB p50 {pct(gets, 0.5) * 1e3:.3f} ms "
                  f"p99 {pct(gets, 0.99) * 1e3:.3f} ms (what a shared store adds to every lookup, at least)")
            s = b.ask({"k": "stats"})["replication"]
            print(f"b: received {s['received']}, applied {s['applied']}; a: published "
                  f"{a.ask({'k': 'stats'})['replication']['published']}, dropped "
                  f"{a.ask({'k': 'stats'})['replication']['dropped']}")
        finally:
            for n in nodes:
                n.stop()
            r.close()
            if srv is not None:
                srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
