"""PostgreSQL figures for several nodes: how fast a directory change reaches a worker, and how fast
settled charges are written (workers/governance/pg_watch.py, pg_spend.py).

Starts its own PostgreSQL (tests/helpers/postgres_server.py: Debian's server on a free loopback
port, in a temp dir) with durable settings (fsync and synchronous_commit on, as a deployment).

1. Directory changes: one connection (a node's admin API) changes a key N times; a
   `DirectoryWatcher` (a worker) reports each reload; the delay from the writer's commit returning
   to the watcher holding the new directory, by notification (poll every 0.5 s, the default) and
   with notifications lost (changes made without NOTIFY: only the version poll finds them).
2. Settled spend: for each batch size, batches of new rows with `SettledSpend.write` (one multi-row
   `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` per batch), the same batches again (all
   duplicates: the ON CONFLICT path), and for comparison COPY into a temp table followed by
   `INSERT ... SELECT ... ON CONFLICT DO NOTHING` in one transaction. One client connection; the
   client's CPU per row is reported beside the wall-clock rate.

    $FINOPS_VENV/bin/python scripts/pg_bench.py                       # after scripts/dev setup
    $FINOPS_VENV/bin/python scripts/pg_bench.py --batches 1,16,256 --rows 20000 --fast   # fsync off
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import queue  # noqa: E402
import statistics  # noqa: E402

from finops.shared.governance import VirtualKey  # noqa: E402
from finops.workers.governance import pg_schema  # noqa: E402
from finops.workers.governance.pg_spend import SettledCharge, SettledSpend  # noqa: E402
from finops.workers.governance.pg_store import PgStore  # noqa: E402
from finops.workers.governance.pg_watch import DirectoryWatcher  # noqa: E402
from tests.helpers.postgres_server import PostgresServer  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rows(prefix: str, n: int, t0: float) -> list[SettledCharge]:
    return [SettledCharge(f"{prefix}-{i:09d}", f"vk-{i % 50:04d}", "prod" if i % 3 else "", 1234 + i % 997,
                          300 + i % 50, i % 7, t0 + i * 0.001, f"team-{i % 5}", "acme") for i in range(n)]


def timed(fn, batches) -> tuple[float, float]:
    c0, w0 = cpu(), time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - w0, cpu() - c0


def copy_writer(url: str):
    conn = pg_schema.connect(url)
    conn.execute("CREATE TEMP TABLE settled_in (LIKE finops_settled INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    cols = "request_id, key_id, env, cost_micro, tokens, saved_micro, settled_at, team, customer"

    def write(batch):
        with conn.transaction():
            with conn.cursor().copy(f"COPY settled_in ({cols}) FROM STDIN") as cp:
                for r in batch:
                    cp.write_row(r)
            conn.execute(f"INSERT INTO finops_settled ({cols}) SELECT {cols} FROM settled_in "
                         "ON CONFLICT (request_id) DO NOTHING")
    return write, conn


def directory_latency(url: str, n: int) -> None:
    reports: queue.Queue = queue.Queue()
    with PgStore.open(url) as node, \
            DirectoryWatcher(url, on_change=lambda v, d: reports.put((time.perf_counter(), v))) as w, \
            pg_schema.connect(url) as raw:
        reports.get(timeout=10)                              # the first load
        for how in ("notification", "poll only"):
            delays = []
            for i in range(n):
                want = w.data_version() + 1
                if how == "notification":
                    node.put_key(VirtualKey(f"vk-{i}", "s" * 20, name=how))
                else:
                    with raw.transaction():                 # a change whose notification is lost
                        raw.execute("UPDATE finops_keys SET name = %s WHERE id = %s", (how, f"vk-{i}"))
                        raw.execute("UPDATE finops_directory_version SET version = version + 1")
                committed = time.perf_counter()
                while True:
                    at, v = reports.get(timeout=10)
                    if v >= want:
                        break
                delays.append((at - committed) * 1000)
                time.sleep(0.05 if how == "notification" else 0.13)   # spread over the poll's phase
            delays.sort()
            print(f"directory change -> worker, by {how:<12}: p50 {statistics.median(delays):6.1f} ms, "
                  f"p99 {delays[int(len(delays) * 0.99) - 1]:6.1f} ms, max {delays[-1]:6.1f} ms ({n} changes, "
                  f"poll every {w.poll_seconds:g} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,16,64,256,1024,4096", help="batch sizes, comma-separated")
    ap.add_argument("--rows", type=int, default=40000, help="rows per measurement (batch size 1: a tenth)")
    ap.add_argument("--fast", action="store_true", help="fsync and synchronous_commit off")
    ap.add_argument("--changes", type=int, default=100, help="directory changes timed")
    ap.add_argument("--repeat", type=int, default=3, help="runs per batch size; the best is reported")
    args = ap.parse_args()
    sizes = [int(x) for x in args.batches.split(",")]
    with PostgresServer(durable=not args.fast) as pg:
        url = pg.create_database("bench")
        s = SettledSpend.open(url)
        directory_latency(url, args.changes)
        t0 = time.time()
        print(f"PostgreSQL {s._run('SHOW server_version').fetchone()[0]}, "
              f"fsync={s._run('SHOW fsync').fetchone()[0]}, "
              f"synchronous_commit={s._run('SHOW synchronous_commit').fetchone()[0]}; one client connection")
        print(f"{'batch':>6} {'rows':>7} | {'new rows/s':>11} {'client us/row':>13} | {'dup rows/s':>11} | "
              f"{'COPY rows/s':>11}")
        cw, cconn = copy_writer(url)
        for size in sizes:
            n = max(size, (args.rows // 10 if size == 1 else args.rows) // size * size)
            best = [float("inf")] * 4
            for r in range(args.repeat):                        # best of --repeat: the machine is shared
                data = rows(f"b{size}r{r}", n, t0)
                batches = [data[i:i + size] for i in range(0, n, size)]
                wall, used = timed(s.write, batches)
                dwall, _ = timed(s.write, batches)              # every row again: nothing new
                cdata = rows(f"c{size}r{r}", n, t0)
                cwall, _ = timed(cw, [cdata[i:i + size] for i in range(0, n, size)])
                best = [min(a, b) for a, b in zip(best, (wall, used, dwall, cwall))]
            wall, used, dwall, cwall = best
            print(f"{size:>6} {n:>7} | {n / wall:>11,.0f} {used / n * 1e6:>13.1f} | {n / dwall:>11,.0f} | "
                  f"{n / cwall:>11,.0f}")
        total = s.count()
        assert len(s.since(t0 - 1)) == total
        cconn.close()
        s.close()


if __name__ == "__main__":
    main()
