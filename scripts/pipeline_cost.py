#!/usr/bin/env python3
"""The worker's CPU per request in-process, with the request log on and off: an A/B of
`Pipeline.handle` (mock provider, 20 stream deltas) with no HTTP, no ZeroMQ and no other process,
so the difference is what building and packing a log row costs the worker (the row rides the
request's final envelope: finops.shared.logrow). Alternates the two
settings to cancel drift. The observer's share is measured by `scripts/dev bench` (actors column).

    .venv/bin/python scripts/pipeline_cost.py [--requests 3000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import trio

from finops.shared import config, envelope
from finops.workers.pipeline import Pipeline


class NullReply:
    """A Reply that sends nothing (the pipeline's side of a request only)."""

    def __init__(self):
        self.n, self.head_sent, self.done, self.stream, self.tape, self.why = 0, False, False, False, None, None

    async def head(self, status, headers, stream):
        self.head_sent, self.stream, self.n = True, stream, self.n + 1

    async def body(self, data):
        self.done, self.n = True, self.n + 1

    async def chunks(self, events):
        self.n += 1

    async def end(self, usage=None):
        self.done, self.n = True, self.n + 1

    async def error(self, e):
        raise RuntimeError(f"request failed: {e}")

    def messages(self):
        return self.n + 1

    async def finish(self, row=None, settle=None):
        self.n += 1


BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "Summarise the quarterly cloud spend report"}]}],
                   "inferenceConfig": {"maxTokens": 200}}).encode()


async def cost(log_on: bool, op: str, n: int) -> float:
    cfg = config.build({"providers": {"m": {"kind": "mock", "chunks": 20}}, "default_route": {"provider": "m"},
                        "server": {"data_dir": tempfile.mkdtemp(prefix="finops-pipeline-cost-")},
                        "observability": {"request_log": log_on}}, "pipeline_cost")
    p = Pipeline(cfg)
    def request(rid: str) -> envelope.Request:
        return envelope.Request(rid=rid, op=op, model="anthropic.claude-3-haiku-20240307-v1:0", body=BODY,
                                headers={"user-agent": "Boto3/1.43", "host": "bench"}, reply="", window=16,
                                deadline=600.0, path="/")
    for i in range(200):                                     # warm up
        await p.handle(request(f"warm-{i}"), NullReply())
    t = time.process_time()
    for i in range(n):
        await p.handle(request(f"r-{i}"), NullReply())
    spent = time.process_time() - t
    p.observer.close()
    p.gov.close()
    return spent / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print("| operation | log off, ms/req | log on, ms/req | difference |\n|---|---:|---:|---:|")
    for op in ("converse", "converse-stream"):
        off, on = [], []
        for _ in range(a.rounds):
            off.append(trio.run(cost, False, op, a.requests))
            on.append(trio.run(cost, True, op, a.requests))
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f"| {op} | {m_off:.4f} | {m_on:.4f} | {m_on - m_off:+.4f} |")


if __name__ == "__main__":
    main()
