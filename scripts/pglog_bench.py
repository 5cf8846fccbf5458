"""Report times on the fleet's request log in PostgreSQL at 1 M and 10 M rows
(workers/observe/pglog.py, report.py, dashboard.py, focus.py, chargeback.py).

Starts its own PostgreSQL (tests/helpers/postgres_server.py: Debian's server on a free loopback
port, in a temp dir; fsync off: load speed is not what is measured here, except the observer's
write path below), makes the log's schema, and then, for each size:

1. fills the log up to that many rows with COPY straight into `finops_requests` (30 days, 3 nodes,
   200 keys in 10 teams and 3 customers, skewed (a few heavy keys, a long tail), 6 models, 3
   envs, 1 % errors, 4 % cache hits; daily partitions made first), rebuilds
   the hourly and daily rollups from them (the observer keeps them batch by batch), then ANALYZE;
2. times the main report queries, each run `--repeat` times (the median is printed): `finops
   report` by key, by node,model and by day over 30 days, by key over today, the chargeback of the
   30 days, the dashboard's data (30 days, one budget) and the FOCUS export of one day.

Once, before the fill, it also times the observer's own write path (`PgLogWriter.write`: COPY into
the stage + INSERT ... ON CONFLICT + the rollup's upsert, batches of 2,000 rows) on 100,000 rows.

    $FINOPS_VENV/bin/python scripts/pglog_bench.py                       # 1 M then 10 M rows
    $FINOPS_VENV/bin/python scripts/pglog_bench.py --sizes 200000 --repeat 1
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg  # noqa: E402

from finops.workers.observe import chargeback, dashboard, focus, report  # noqa: E402
from finops.workers.observe.logsql import POSTGRES  # noqa: E402
from finops.workers.observe.pglog import (DAILY, DAY, HOURLY, NAMES, TABLE, PgLogReader, PgLogWriter,  # noqa: E402
                                          _hourly_upsert)
from tests.helpers.postgres_server import PostgresServer  # noqa: E402

MODELS = ["anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0",
          "us.anthropic.claude-3-7-sonnet-20250219-v1:0", "amazon.nova-pro-v1:0", "meta.llama3-70b-instruct-v1:0",
          "mistral.mistral-large-2407-v1:0"]
NODES = ["gw-a", "gw-b", "gw-c"]
ENVS = ["prod", "dev", ""]


_RNG = random.Random(17)


def _u(i: int, salt: int) -> float:
    """A uniform [0, 1) draw (the same sequence every run)."""
    return _RNG.random()


def make_row(i: int, now: float, span: float) -> list:
    """Row i: spread evenly over the span; keys and models skewed as traffic is (a few heavy keys,
    a long tail), 1 % throttled, 4 % cache hits."""
    ts = now - span + _u(i, 1) * span
    k = int(200 * _u(i, 2) ** 3)
    day = time.strftime("%Y-%m-%d", time.gmtime(ts))
    err = "ThrottlingException" if _u(i, 3) < 0.01 else ""
    hit = "hit-exact" if not err and _u(i, 4) < 0.04 else ""
    model = MODELS[int(6 * _u(i, 5) ** 2)]
    r = {"id": f"req-{i:010d}", "ts": ts, "day": day, "vk": f"vk-{k:04d}", "vk_name": f"key {k}",
         "team": f"team-{k % 10}", "customer": f"cust-{k % 3}", "env": ENVS[k % 3], "op": "converse",
         "stream": 0, "model": model, "provider": "bedrock", "upstream_model": "", "target": "",
         "attempts": 1, "fallback": 0, "status": 429 if err else 200, "error": err, "error_origin": "",
         "latency_ms": 100.0 + i % 500, "ttft_ms": None, "input_tokens": 100 + i % 900,
         "output_tokens": 10 + i % 300, "cache_read_tokens": 0, "cache_write_tokens": 0,
         "cost_usd": 0.0 if err or hit else round(0.000123 * (1 + i % 50), 6), "cache": hit,
         "cache_similarity": None, "saved_usd": 0.0021 if hit else 0.0, "user_agent": "bench",
         "request_body": None, "response_body": None, "messages": 2, "node": NODES[int(3 * _u(i, 6))],
         "prompt_saved_usd": 0.0, "tags": ""}
    return [r[n] for n in NAMES]


def fill(url: str, start: int, end: int, now: float, span: float) -> tuple[float, float]:
    """COPY rows start..end straight into the table, then rebuild the hourly rollup from every row
    (what the observer's writes keep up to date batch by batch); (fill seconds, rollup seconds)."""
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        with c.cursor().copy(f"COPY {TABLE} ({', '.join(NAMES)}) FROM STDIN") as cp:
            for i in range(start, end):
                cp.write_row(make_row(i, now, span))
        t1 = time.perf_counter()
        for table, daily in ((HOURLY, False), (DAILY, True)):
            c.execute(f"TRUNCATE {table}")
            build = _hourly_upsert(POSTGRES._rows(TABLE, daily), table=table)
            c.execute(build[:build.index(" ON CONFLICT")])       # a fresh table: a plain INSERT ... GROUP BY
            c.execute(f"ANALYZE {table}")
        c.execute(f"ANALYZE {TABLE}")
    return t1 - t0, time.perf_counter() - t1


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def queries(db, now: float) -> dict:
    since = now - 30 * DAY
    today = int(now // DAY) * DAY
    usage = [{"kind": "budget", "level": "key", "owner": "vk-0007", "env": "", "label": "vk-0007 month",
              "period": "month", "limit_usd": 100.0, "spent_usd": 10.0, "remaining_usd": 90.0,
              "period_start": time.strftime("%Y-%m-01T00:00:00Z", time.gmtime(now)),
              "resets_at": time.strftime("%Y-%m-01T00:00:00Z", time.gmtime(now + 31 * DAY))}]
    return {
        "report --by key (30 d)": lambda: report.summarize(db, ["key"], since, now),
        "report --by node,model (30 d)": lambda: report.summarize(db, ["node", "model"], since, now),
        "report --by day (30 d)": lambda: report.summarize(db, ["day"], since, now),
        "report --by key --since today": lambda: report.summarize(db, ["key"], today, now),
        "report --by model --since 7d (cuts hours)": lambda: report.summarize(db, ["model"], now - 7 * DAY, now),
        "report --by team --key vk-0007 (30 d)": lambda: report.summarize(db, ["team"], since, now, {"key": "vk-0007"}),
        "chargeback (30 d)": lambda: chargeback.chargeback(db, since, now),
        "dashboard data (30 d, 1 budget)": lambda: dashboard.dashboard_data(db, usage, 30, "UTC", now=now),
        "FOCUS export, 1 day, hourly": lambda: focus.focus_rows(db, today - DAY, today, "UTC"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="row counts, ascending (default 1M,10M)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    now = time.time()
    span = 30 * DAY
    with PostgresServer() as pg:
        url = pg.create_database()
        w = PgLogWriter(url, "bench")
        w.open()
        w.ensure_partitions(range(int((now - span) // DAY) - 1, int(now // DAY) + 2))
        # the observer's path: batches of 2,000 through the stage
        n, t0 = 100_000, time.perf_counter()
        for b in range(0, n, 2000):
            w.write([make_row(10**9 + i, now, span) for i in range(b, b + 2000)])
        dt = time.perf_counter() - t0
        print(f"observer write path (COPY to stage + INSERT ON CONFLICT, 2,000-row batches): "
              f"{n / dt:,.0f} rows/s (row generation included)", flush=True)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"TRUNCATE {TABLE}")
        w.close()
        have = 0
        for size in sizes:
            dt, rt = fill(url, have, size, now, span)
            with psycopg.connect(url) as c:
                hourly, daily = (c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (HOURLY, DAILY))
            print(f"\n{size:,} rows: filled {size - have:,} with COPY in {dt:.1f} s "
                  f"({(size - have) / dt:,.0f} rows/s); rollups rebuilt in {rt:.1f} s: {hourly:,} hourly rows, "
                  f"{daily:,} daily rows", flush=True)
            have = size
            db = PgLogReader(url)
            try:
                for name, fn in queries(db, now).items():
                    fn()                                         # warm the cache once
                    print(f"  {name:40s} {timed(fn, args.repeat) * 1000:9.0f} ms", flush=True)
            finally:
                db.close()


if __name__ == "__main__":
    main()
