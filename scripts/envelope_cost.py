#!/usr/bin/env python3
"""What an envelope costs to build+encode and to decode+read: the typed records of
finops.shared.envelope against the msgpack maps it replaced, in the same process.

The old module is read from git (`--old`, by default the newest commit whose envelope module is
the msgpack-map one) into a temporary module. For each kind, with sizes as a Converse request has
them,
it times, alternating old and new to cancel drift, over `--rounds` rounds of `--n` repetitions:

    build+encode   what a sender does: the builder (old) or the record and encode() (new)
    decode+read    what a receiver does: decode() and the fields its reader uses

and prints the best round of each, in microseconds per envelope, with the encoded sizes.

    .venv/bin/python scripts/envelope_cost.py [--n 20000] [--rounds 7] [--old REV]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

from finops.shared import envelope as new
from finops.shared import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RID = "8d3f6c1e-5a0b-4c2e-9f41-2b7d9e0a6c55"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
BODY = (b'{"messages":[{"role":"user","content":[{"text":"Summarise the quarterly cloud spend report '
        b'for the platform team, by service and by account."}]}],"inferenceConfig":{"maxTokens":200}}')
HDR = {"host": "127.0.0.1:8080", "content-type": "application/json", "user-agent": "Boto3/1.43.0 md/Botocore#1.43.0",
       "x-amz-date": "20250101T000000Z", "x-bf-vk": "vk-platform", "accept": "application/json"}
REPLY = "ipc:///run/finops/frontend-41234.ipc"
PATH = f"/bedrock/model/{MODEL}/converse"
HEAD_HDR = [("content-type", "application/json"), ("x-bf-target", "mock/m"), ("x-bf-attempts", "1")]
DELTA = b'{"contentBlockIndex":0,"delta":{"text":"The quarterly spend rose by "}}'
EVENTS_1 = [("contentBlockDelta", DELTA)]
EVENTS_20 = [("contentBlockDelta", DELTA)] * 20
ANSWER = (b'{"output":{"message":{"role":"assistant","content":[{"text":"' + b"x" * 300 + b'"}]}},'
          b'"stopReason":"end_turn","usage":{"inputTokens":31,"outputTokens":120,"totalTokens":151}}')
ROW = bytes(range(256)) * 1         # a packed request-log row is about this size
SETTLE = [RID, "vk-platform", "prod", 0.000412, 151]
USAGE = {"in": 31, "out": 120}
ERR = errors.throttled("Rate exceeded: 10 requests per minute.", retry_after_ms=1500)


def load_old(rev: str):
    src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:shared/envelope.py"], check=True,
                         capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="finops-envelope-old-"), "envelope_old.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("envelope_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def default_old() -> str:
    """The newest commit whose shared/envelope.py is the msgpack-map one."""
    commits = subprocess.run(["git", "-C", ROOT, "log", "--format=%H", "--", "shared/envelope.py"], check=True,
                             capture_output=True, text=True).stdout.split()
    for c in commits:
        src = subprocess.run(["git", "-C", ROOT, "show", f"{c}:shared/envelope.py"], capture_output=True,
                             text=True).stdout
        if "\nimport msgpack\n" in src:
            return c
    sys.exit("no msgpack-map shared/envelope.py in this checkout's history: pass --old REV")


def cases(old):
    """name -> ((old build, old read), (new build, new read)); a read takes the decoded envelope."""
    werr = ERR.to_wire()
    derr = {"code": ERR.code, "status": ERR.status, "message": ERR.message, "retry_after_ms": 1500}

    def old_relay_chunk(e):
        return e["k"], e["n"], [(et, d) for et, d in e["ev"]]

    def new_relay_chunk(e):
        return type(e), e.n, [(et, d) for et, d in e.events]

    return {
        "request": (
            (lambda: old.request(RID, "converse", MODEL, BODY, HDR, REPLY, 16, 600.0, PATH),
             lambda e: (e["k"], e["id"], e["op"], e["model"], e["body"], e.get("hdr", {}), e["reply"],
                        int(e.get("window", 16)), float(e.get("deadline", 600)), e.get("path", ""))),
            (lambda: new.encode(new.Request(rid=RID, op="converse", model=MODEL, body=BODY, headers=HDR, reply=REPLY,
                                            window=16, deadline=600.0, path=PATH)),
             lambda e: (type(e), e.rid, e.op, e.model, e.body, e.headers, e.reply, e.window, e.deadline, e.path))),
        "head": (
            (lambda: old.head(RID, 200, HEAD_HDR, True),
             lambda e: (e["k"], e["id"], e["n"], e["hdr"], e["stream"], e["status"])),
            (lambda: new.encode(new.Head(rid=RID, n=0, status=200, headers=HEAD_HDR, stream=True)),
             lambda e: (type(e), e.rid, e.n, e.headers, e.stream, e.status))),
        "chunk, 1 event": (
            (lambda: old.chunk(RID, 1, EVENTS_1), old_relay_chunk),
            (lambda: new.encode(new.Chunk(rid=RID, n=1, events=EVENTS_1)), new_relay_chunk)),
        "chunk, 20 events": (
            (lambda: old.chunk(RID, 1, EVENTS_20), old_relay_chunk),
            (lambda: new.encode(new.Chunk(rid=RID, n=1, events=EVENTS_20)), new_relay_chunk)),
        "body + outcome": (
            (lambda: old.body(RID, 1, ANSWER, row=ROW, settle=SETTLE),
             lambda e: (e["k"], e["id"], e["n"], e["data"], e.get("row"), e.get("settle"))),
            (lambda: new.encode(new.Body(rid=RID, n=1, data=ANSWER, row=ROW, settle=SETTLE)),
             lambda e: (type(e), e.rid, e.n, e.data, e.row, e.settle))),
        "end + outcome": (
            (lambda: old.end(RID, 21, USAGE, None, row=ROW, settle=SETTLE),
             lambda e: (e["k"], e["id"], e["n"], e.get("row"), e.get("settle"))),
            (lambda: new.encode(new.End(rid=RID, n=21, usage=USAGE, row=ROW, settle=SETTLE)),
             lambda e: (type(e), e.rid, e.n, e.row, e.settle))),
        "error + outcome": (
            (lambda: old.error(RID, 1, derr, row=ROW, settle=SETTLE),
             lambda e: (e["k"], e["id"], e["n"], e["err"]["code"], e.get("row"), e.get("settle"))),
            (lambda: new.encode(new.Error(rid=RID, n=1, error=werr, row=ROW, settle=SETTLE)),
             lambda e: (type(e), e.rid, e.n, e.error.code, e.row, e.settle))),
        "log + outcome": (
            (lambda: old.log(RID, 0, row=ROW, settle=SETTLE),
             lambda e: (e["k"], e["id"], e.get("row"), e.get("settle"))),
            (lambda: new.encode(new.Log(rid=RID, n=0, row=ROW, settle=SETTLE)),
             lambda e: (type(e), e.rid, e.row, e.settle))),
        "credit": (
            (lambda: old.credit(RID, 8), lambda e: (e["k"], e["id"], int(e["grant"]))),
            (lambda: new.encode(new.Credit(rid=RID, grant=8)), lambda e: (type(e), e.rid, e.grant))),
        "cancel": (
            (lambda: old.cancel(RID, {"status": 408, "error": "ModelTimeoutException", "origin": "upstream"}),
             lambda e: (e["k"], e["id"], e.get("why"))),
            (lambda: new.encode(new.Cancel(rid=RID, why=new.Why(408, "ModelTimeoutException", "upstream"))),
             lambda e: (type(e), e.rid, e.why))),
        "ping": (
            (lambda: old.ping(REPLY, 12345.678), lambda e: (e["k"], e["reply"], e.get("t", 0.0))),
            (lambda: new.encode(new.Ping(reply=REPLY, t=12345.678)), lambda e: (type(e), e.reply, e.t))),
        "pong": (
            (lambda: old.pong("41234", 12345.678, 3), lambda e: (e["k"], int(e["wid"]))),
            (lambda: new.encode(new.Pong(wid="41234", t=12345.678, inflight=3)), lambda e: (type(e), int(e.wid)))),
    }


def per_op(fn, arg, n: int) -> float:
    """Microseconds per call of fn(arg) (or fn() when arg is None), over n calls."""
    loop = range(n)
    if arg is None:
        t = time.perf_counter()
        for _ in loop:
            fn()
    else:
        t = time.perf_counter()
        for _ in loop:
            fn(arg)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="repetitions per timing")
    ap.add_argument("--rounds", type=int, default=7, help="alternating old/new rounds; the best is reported")
    ap.add_argument("--old", default="", help="git revision of the msgpack-map shared/envelope.py")
    a = ap.parse_args()
    rev = a.old or default_old()
    old = load_old(rev)
    print(f"old: shared/envelope.py at {rev}; {a.rounds} rounds of {a.n}, best round, us per envelope")
    print(f"{'kind':18} {'build+encode old':>16} {'new':>7} {'decode+read old':>16} {'new':>7} {'bytes old':>9} {'new':>5}")
    tot = [0.0, 0.0, 0.0, 0.0]
    for name, ((ob, orr), (nb, nr)) in cases(old).items():
        odata, ndata = ob(), nb()
        assert orr(old.decode(odata)) and nr(new.decode(ndata))

        def old_read(d, _dec=old.decode, _r=orr):
            return _r(_dec(d))

        def new_read(d, _dec=new.decode, _r=nr):
            return _r(_dec(d))
        best = [float("inf")] * 4
        for _ in range(a.rounds):
            for i, (fn, arg) in enumerate(((ob, None), (nb, None), (old_read, odata), (new_read, ndata))):
                best[i] = min(best[i], per_op(fn, arg, a.n))
        tot = [x + y for x, y in zip(tot, best)]
        print(f"{name:18} {best[0]:16.2f} {best[1]:7.2f} {best[2]:16.2f} {best[3]:7.2f} {len(odata):9d} {len(ndata):5d}")
    print(f"{'sum':18} {tot[0]:16.2f} {tot[1]:7.2f} {tot[2]:16.2f} {tot[3]:7.2f}")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
