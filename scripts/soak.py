#!/usr/bin/env python3
"""Soak: N minutes of mixed traffic through the real gateway while its processes are killed, then
checks that nothing hung, every failure was AWS-shaped, memory stayed flat, no request-log row was
lost and the ledger's spend equals the log.

    scripts/dev soak                      10 minutes (calibration first: 70 % of the measured maximum)
    scripts/dev soak --minutes 1          a short run
    scripts/dev soak --rate 300           a fixed rate, no calibration
    scripts/dev soak --help               every option

What runs (everything on 127.0.0.1, started and stopped by this script, like scripts/bench.py,
whose pieces it imports):

- `finops serve` with 2 workers, 1 frontend, the ledger, the observer and the cache actor; the
  governance mode `enforced`: every request presents one of four virtual keys (`x-bf-vk`), each
  with a monthly budget and rate limits far above the soak's traffic, so every request is reserved
  and settled at the ledger; the request log on SQLite.
- Four routes, by modelId: `main` (the bedrock provider relaying to bench.py's nginx fake:
  Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream), `cached` (the mock
  provider behind an exact-match response cache, prompts drawn from a pool of 40 so most are
  hits; the semantic layer is off: its embedder costs about 9 ms of CPU per miss and 200 MB per
  worker, reloaded at every worker restart, which would make this a test of the embedder),
  `slow` and `failing` (scripts/soak_upstream.py: the tests' FakeBedrock, waiting --slow-ms, or
  failing at random with 500s, 503s, TCP resets, cut answers and stream exception frames; the
  failing provider's circuit breaker is set so it never opens, so every request meets a failure).
- Load: a Python open-loop generator (threads, http.client, one keep-alive connection per
  thread): requests are scheduled at --rate per second whatever the gateway does, and each
  one's outcome is recorded (requests.jsonl.gz). Without --rate a calibration phase first
  measures the maximum (closed loop, --calibrate-connections, the mix without the slow route) and
  the soak runs at --load-pct (70 %) of it.
- Chaos: SIGKILL of a worker every --kill-every seconds (the youngest worker, so the oldest lives
  through the run and its memory is checked over the whole run), and of each actor (ledger,
  observer, cache) once, spread over the run; none in the last 15 s. `finops serve` restarts them.

Checks (ok / FAIL; exit 1 on any FAIL):

1. no hung request: every request finished within --deadline seconds (30);
2. every failure AWS-shaped: an error status carries X-Amzn-ErrorType and a JSON body with a
   message; a failed stream ends with an exception frame (and only there); anything else (a
   connection closed before or during an answer, a stream without its last event) fails;
3. memory: each gateway process's RSS at the end is at most 5 % above its RSS after its first
   minute (the first minute of the soak for the processes it starts with; the first minute of
   its own life for a process restarted by the chaos). A process with less than --mem-window
   seconds of life after that minute (a worker killed 30 s after it started) is listed as
   excluded;
4. no request-log row lost: every request the client saw answered (a success or an AWS error)
   has its row (matched by x-amzn-RequestId) in the request log. The README promises that an
   observer killed loses the rows it had not committed (at most 0.5 s) and the frontend's last
   50 ms: rows of requests that finished within 1 s before to 0.5 s after the observer's kill are
   tolerated and counted;
5. spend equals the log: for every virtual key, the ledger's spend (/admin/usage) equals the sum
   of `cost_usd` of its rows, to the micro-dollar. The README promises that a ledger killed loses
   at most its last second of counter changes: the difference may be at most the logged cost of
   the requests that finished within 1.5 s before to 0.5 s after the ledger's kill (reported).

Output: a markdown summary on stdout and in bench-results/soak-<UTC time>/ (summary.md,
results.json, requests.jsonl.gz with every request, memory.csv, the gateway's config and log).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import gzip
import http.client
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
import bench  # noqa: E402  (scripts/, beside this file: the fake upstream, the gateway, process roles)
from bench import BenchError, Procs, role_of  # noqa: E402
from procstat import read_stat, tree  # noqa: E402

from finops.shared import eventstream  # noqa: E402  (bench.py exits with a hint when finops is missing)

MAIN = bench.MODEL_ID                                   # -> nginx fake, bedrock relay
CACHED = "anthropic.claude-3-5-haiku-20241022-v1:0"     # -> mock provider, exact cache
SLOW = "anthropic.claude-3-5-sonnet-20240620-v1:0"      # -> soak_upstream.py, slow
FAILING = "anthropic.claude-3-opus-20240229-v1:0"       # -> soak_upstream.py, failing at random
ROUTE_MODELS = {"main": MAIN, "cached": CACHED, "slow": SLOW, "failing": FAILING}
OPS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
STREAM_OPS = ("converse-stream", "invoke-with-response-stream")
MIX = (  # (route, operation, weight): the share of each in the traffic, in %
    ("main", "converse", 22), ("main", "converse-stream", 14), ("main", "invoke", 10),
    ("main", "invoke-with-response-stream", 10),
    ("cached", "converse", 10), ("cached", "converse-stream", 6), ("cached", "invoke", 4),
    ("slow", "converse", 4), ("slow", "converse-stream", 3),
    ("failing", "converse", 6), ("failing", "converse-stream", 6), ("failing", "invoke", 3),
    ("failing", "invoke-with-response-stream", 2),
)
KEYS = [(f"vk-soak-{i}", f"soak-virtual-key-secret-{i:04d}") for i in range(4)]
CACHE_PROMPTS = [f"Question {i} about cloud spend: which {w} drove the change this month?"
                 for i, w in enumerate(("service", "team", "region", "account", "model", "tier", "tag", "env")
                                       * 5)]
ACTOR_ROLES = ("ledger", "observer", "cache", "alerts")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAILS = ("hung", "connection", "truncated", "non_aws_error", "bad_stream", "bad_body")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the gateway ----------------------------------------------------------------------------

class SoakGateway(bench.Gateway):
    """bench.Gateway (start, health wait, stop) with the soak's config."""

    def __init__(self, procs: Procs, args, fake: bench.FakeUpstream, upstream_url: str, tmp: str, out: str):
        super().__init__(procs, "soak", args, fake, tmp, out)
        self.upstream_url = upstream_url
        self.admin_token = "soak-admin-" + os.urandom(8).hex()

    def config(self) -> str:
        a = self.args
        from soak_upstream import ACCESS_KEY_ID, SECRET
        keys = "".join(
            f"\n[[governance.keys]]\nid = \"{kid}\"\nsecret = \"{secret}\"\n"
            "budgets = [{amount_usd = 1000000.0, period = \"month\"}]\n"
            "rate_limits = [{requests = 100000000, tokens = 100000000000, window = \"minute\"}]\n"
            for kid, secret in KEYS)
        return (f"[server]\nhost = \"127.0.0.1\"\nport = {self.port}\nworkers = {a.workers}\n"
                f"frontends = {a.frontends}\ndata_dir = \"{self.data_dir}\"\n"
                f"\n[providers.nginx]\nkind = \"bedrock\"\nbase_url = \"{self.fake.url}\"\nregion = \"us-east-1\"\n"
                "keys = [{access_key_id = \"AKIDBENCH\", secret_access_key = \"benchsecret\"}]\n"
                f"\n[providers.slow]\nkind = \"bedrock\"\nbase_url = \"{self.upstream_url}\"\nregion = \"us-east-1\"\n"
                f"keys = [{{access_key_id = \"{ACCESS_KEY_ID}\", secret_access_key = \"{SECRET}\"}}]\n"
                f"\n[providers.flaky]\nkind = \"bedrock\"\nbase_url = \"{self.upstream_url}\"\nregion = \"us-east-1\"\n"
                f"keys = [{{access_key_id = \"{ACCESS_KEY_ID}\", secret_access_key = \"{SECRET}\"}}]\n"
                "read_timeout_seconds = 10.0\n"
                "circuit_failures = 1000000000\ncircuit_failure_rate = 1.0   # never opens: every request meets a failure\n"
                "\n[providers.m]\nkind = \"mock\"\nchunks = 20\n"
                f"\n[[routes]]\nname = \"main\"\nmodels = [\"{MAIN}\"]\nprovider = \"nginx\"\n"
                f"\n[[routes]]\nname = \"cached\"\nmodels = [\"{CACHED}\"]\nprovider = \"m\"\n"
                "[routes.cache]\nsemantic = false\nttl_seconds = 120\n"
                f"\n[[routes]]\nname = \"slow\"\nmodels = [\"{SLOW}\"]\nprovider = \"slow\"\n"
                f"\n[[routes]]\nname = \"failing\"\nmodels = [\"{FAILING}\"]\nprovider = \"flaky\"\n"
                "\n[cache]\nembedding_model = \"none\"\n"
                f"\n[governance]\nmode = \"enforced\"\nadmin_token = \"{self.admin_token}\"\n" + keys)

    def pids_by_role(self) -> dict[str, list[int]]:
        out = collections.defaultdict(list)
        for pid in tree(self.proc.pid):
            out[role_of(pid)].append(pid)
        return out

    def admin(self, path: str) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", path, headers={"authorization": f"Bearer {self.admin_token}"})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise BenchError(f"GET {path}: HTTP {r.status}: {body[:300]!r}")
            return json.loads(body)
        finally:
            c.close()


def start_upstream(procs: Procs, tmp: str, out: str, slow_ms: float) -> tuple[str, subprocess.Popen]:
    port_file = os.path.join(tmp, "soak-upstream.port")
    p = procs.start("soak upstream", [sys.executable, os.path.join(HERE, "soak_upstream.py"),
                                      "--slow-model", SLOW, "--failing-model", FAILING, "--slow-ms", str(slow_ms),
                                      "--port-file", port_file],
                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "soak-upstream.log"), "wb"))
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if p.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"soak upstream did not start; see {out}/soak-upstream.log")
        time.sleep(0.05)
    with open(port_file) as f:
        url = f"http://127.0.0.1:{int(f.read())}"
    log(f"slow and failing upstream (pid {p.pid}) on {url}")
    return url, p


# --- requests ---------------------------------------------------------------------------------

class Job:
    __slots__ = ("n", "route", "op", "key", "sched")

    def __init__(self, n: int, route: str, op: str, key: int, sched: float):
        self.n, self.route, self.op, self.key, self.sched = n, route, op, key, sched


def body_of(job: Job, rng: random.Random) -> bytes:
    if job.route == "cached":
        prompt = rng.choice(CACHE_PROMPTS)
    else:
        prompt = f"Soak request {job.n}: summarise the quarterly cloud spend report in two sentences."
    if job.op.startswith("invoke"):
        doc = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
               "messages": [{"role": "user", "content": prompt}]}
    else:
        doc = {"messages": [{"role": "user", "content": [{"text": prompt}]}], "inferenceConfig": {"maxTokens": 200}}
    return json.dumps(doc, separators=(",", ":")).encode()


def classify(job: Job, status: int, headers: dict, body: bytes) -> tuple[str, str]:
    """(outcome, detail) of a complete HTTP answer: "ok", "error:<AWS code>", "exception:<type>"
    (a stream that ended with an exception frame), or one of FAILS."""
    if status != 200:
        etype = headers.get("x-amzn-errortype", "")
        try:
            doc = json.loads(body)
            msg = doc.get("message") or doc.get("Message") if isinstance(doc, dict) else None
        except ValueError:
            msg = None
        if not etype or not isinstance(msg, str) or not msg:
            return "non_aws_error", f"HTTP {status}, X-Amzn-ErrorType {etype!r}, body {body[:200]!r}"
        return "error:" + etype.split(":", 1)[0], msg[:200]
    if job.op in STREAM_OPS:
        if not headers.get("content-type", "").startswith("application/vnd.amazon.eventstream"):
            return "bad_stream", f"content-type {headers.get('content-type')!r}, body {body[:200]!r}"
        try:
            frames = eventstream.decode_all(body)
        except eventstream.EventStreamError as e:
            return "bad_stream", f"not an event stream ({e}); {len(body)} B"
        if not frames:
            return "bad_stream", "an empty stream"
        for i, f in enumerate(frames):
            if f.message_type != "event" and i != len(frames) - 1:
                return "bad_stream", f"a {f.message_type} frame before the end (frame {i} of {len(frames)})"
        last = frames[-1]
        if last.message_type != "event":
            try:
                msg = json.loads(last.payload).get("message")
            except (ValueError, AttributeError):
                msg = None
            if not last.exception_type or not msg:
                return "bad_stream", f"last frame {last.message_type} {last.exception_type!r} {last.payload[:200]!r}"
            return "exception:" + last.exception_type, str(msg)[:200]
        if job.op == "converse-stream":
            if last.event_type != "metadata":
                return "bad_stream", f"ended after {last.event_type!r} without metadata ({len(frames)} frames)"
        else:
            try:
                import base64
                inner = json.loads(base64.b64decode(json.loads(last.payload)["bytes"]))
            except (ValueError, KeyError, TypeError):
                return "bad_stream", f"last chunk unreadable: {last.payload[:200]!r}"
            if inner.get("type") != "message_stop":
                return "bad_stream", f"ended after {inner.get('type')!r} without message_stop ({len(frames)} frames)"
        return "ok", ""
    try:
        doc = json.loads(body)
    except ValueError:
        return "bad_body", f"200 with a non-JSON body {body[:200]!r}"
    if ("output" not in doc) if job.op == "converse" else ("content" not in doc):
        return "bad_body", f"200 with an unexpected body {body[:200]!r}"
    return "ok", ""


class Client:
    """One thread's keep-alive connection to the gateway."""

    def __init__(self, port: int, deadline: float, seed: int):
        self.port, self.deadline = port, deadline
        self.conn: http.client.HTTPConnection | None = None
        self.rng = random.Random(seed)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, job: Job, t0: float) -> dict:
        path = f"/bedrock/model/{urllib.parse.quote(ROUTE_MODELS[job.route], safe='')}/{job.op}"
        body = body_of(job, self.rng)
        hdrs = {"content-type": "application/json", "x-bf-vk": KEYS[job.key][1],
                "user-agent": "finops-soak"}
        if job.op in STREAM_OPS:
            hdrs["accept"] = "application/vnd.amazon.eventstream"
        rec = {"n": job.n, "route": job.route, "op": job.op, "key": KEYS[job.key][0],
               "sched": round(job.sched - t0, 4), "status": 0, "rid": "", "retried": 0}
        for attempt in (0, 1):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.deadline)
            start = time.monotonic()
            rec["start"] = round(start - t0, 4)
            got_head = False
            try:
                self.conn.request("POST", path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                got_head = True
                headers = {k.lower(): v for k, v in r.getheaders()}
                rec["status"], rec["rid"] = r.status, headers.get("x-amzn-requestid", "")
                rec["cache"] = headers.get("x-bf-cache", "")
                rec["cost"] = headers.get("x-bf-cost-usd", "")
                data = r.read()
                if r.will_close:
                    self.close()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if not got_head and reused and attempt == 0:
                    # a keep-alive connection the server had closed before this request reached
                    # it (what every HTTP client retries); counted, never hidden
                    rec["retried"] = 1
                    continue
                rec.update(outcome="connection" if not got_head else "truncated",
                           detail=f"{type(e).__name__}: {e} ({'after' if got_head else 'before'} the head)")
                break
            except (socket.timeout, TimeoutError) as e:
                self.close()
                rec.update(outcome="hung", detail=f"no byte for {self.deadline:.0f}s ({e})")
                break
            except http.client.IncompleteRead as e:
                self.close()
                rec.update(outcome="truncated", detail=f"body cut: {len(e.partial)} B, {e.expected} more expected")
                break
            except (OSError, http.client.HTTPException) as e:
                self.close()
                rec.update(outcome="connection", detail=f"{type(e).__name__}: {e}")
                break
            rec["outcome"], rec["detail"] = classify(job, rec["status"], headers, data)
            break
        end = time.monotonic()
        rec["end"] = round(end - t0, 4)
        rec["wall_end"] = time.time()
        rec["service_ms"] = round((end - start) * 1000, 2)
        rec["latency_ms"] = round((end - job.sched) * 1000, 2)
        if rec["service_ms"] > self.deadline * 1000 and rec["outcome"] not in FAILS:
            rec["detail"] = f"answered as {rec['outcome']} after {rec['service_ms'] / 1000:.1f}s"
            rec["outcome"] = "hung"
        if not rec["detail"]:
            del rec["detail"]
        return rec


class Recorder:
    """Every request's record, in memory and in requests.jsonl.gz."""

    def __init__(self, path: str):
        self.f = gzip.open(path, "wt", compresslevel=3)
        self.lock = threading.Lock()
        self.records: list[dict] = []

    def add(self, rec: dict) -> None:
        with self.lock:
            self.records.append(rec)
            self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.f.close()


def mix_table(routes: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    return [(r, op) for r, op, w in MIX if routes is None or r in routes for _ in range(w)]


def calibrate(port: int, args, rec: Recorder, t0: float, counter) -> float:
    """Closed loop, --calibrate-connections threads, the mix without the slow route: completed
    requests per second."""
    table = mix_table(("main", "cached", "failing"))
    stop = time.monotonic() + args.calibrate_seconds
    done = [0]
    lock = threading.Lock()

    def loop(i):
        c = Client(port, args.deadline, args.seed * 1000 + i)
        rng = random.Random(args.seed + i)
        while time.monotonic() < stop:
            route, op = rng.choice(table)
            n = next(counter)
            r = c.run(Job(n, route, op, n % len(KEYS), time.monotonic()), t0)
            r["phase"] = "calibration"
            rec.add(r)
            with lock:
                done[0] += 1
        c.close()

    ts = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(args.calibrate_connections)]
    started = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(args.calibrate_seconds + args.deadline + 10)
    return done[0] / (time.monotonic() - started)


def open_loop(port: int, args, rate: float, seconds: float, rec: Recorder, t0: float, counter,
              stats: dict) -> None:
    """Requests scheduled at `rate` per second for `seconds`, whatever the gateway does, run by a
    pool of threads; each one's latency counts from its scheduled time."""
    q: queue.Queue = queue.Queue()
    table = mix_table()
    rng = random.Random(args.seed)

    def worker(i):
        c = Client(port, args.deadline, args.seed * 7919 + i)
        while True:
            job = q.get()
            if job is None:
                break
            r = c.run(job, t0)
            r["phase"] = "soak"
            rec.add(r)
        c.close()

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.threads)]
    for t in ts:
        t.start()
    start = time.monotonic()
    n = 0
    behind_max = 0
    while True:
        sched = start + n / rate
        if sched >= start + seconds:
            break
        delay = sched - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        route, op = rng.choice(table)
        k = next(counter)
        q.put(Job(k, route, op, k % len(KEYS), sched))
        n += 1
        behind_max = max(behind_max, q.qsize())
    for _ in ts:
        q.put(None)
    for t in ts:
        t.join(args.deadline * 2 + 10)
    stats.update(scheduled=n, seconds=time.monotonic() - start, queue_max=behind_max,
                 threads_stuck=sum(t.is_alive() for t in ts))


# --- chaos --------------------------------------------------------------------------------------

def proc_start_epoch(pid: int) -> float | None:
    st = read_stat(pid)
    if st is None:
        return None
    return boot_time() + st[3] / CLK_TCK


_BOOT = []


def boot_time() -> float:
    if not _BOOT:
        with open("/proc/stat") as f:
            _BOOT.append(next(float(line.split()[1]) for line in f if line.startswith("btime")))
    return _BOOT[0]


def chaos_plan(seconds: float, kill_every: float, actors: list[str]) -> list[tuple[float, str]]:
    """(seconds into the soak, role) of every kill: a worker every `kill_every` s, each actor once,
    spread over the run away from the worker kills; nothing in the last 15 s."""
    last = seconds - 15
    plan = [(t, "worker") for t in range(int(kill_every), int(last) + 1, int(kill_every))] if kill_every else []
    for i, role in enumerate(actors):
        t = 10 + (last - 10) * (i + 0.5) / len(actors)
        while any(abs(t - w) < 4 for w, r in plan):
            t += 4
        if t <= last:
            plan.append((round(t, 1), role))
    return sorted(plan)


def run_chaos(gw: SoakGateway, plan, start: float, stop: threading.Event, kills: list) -> None:
    for at, role in plan:
        if stop.wait(max(0.0, start + at - time.monotonic())):
            return
        pids = gw.pids_by_role().get(role, [])
        if not pids:
            kills.append({"at": at, "role": role, "pid": None, "note": f"no live {role} to kill"})
            log(f"chaos: no live {role} at {at:.0f}s")
            continue
        # the youngest worker (so the oldest one lives through the run); the only actor
        pid = max(pids, key=lambda p: (proc_start_epoch(p) or 0, p))
        if pid not in tree(gw.proc.pid):
            continue
        wall = time.time()
        os.kill(pid, signal.SIGKILL)
        k = {"at": round(time.monotonic() - start, 2), "wall": wall, "role": role, "pid": pid}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stop.is_set():
            new = [p for p in gw.pids_by_role().get(role, []) if p not in pids]
            if new:
                k.update(new_pid=new[0], restart_s=round(time.time() - wall, 2))
                break
            time.sleep(0.05)
        kills.append(k)
        log(f"chaos: killed {role} pid {pid} at {k['at']:.0f}s; "
            + (f"pid {k['new_pid']} after {k['restart_s']:.2f}s" if "new_pid" in k else "not restarted within 30s"))


# --- memory -------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_memory(gw: SoakGateway, start: float, every: float, stop: threading.Event, procs: dict) -> None:
    while True:
        now = time.monotonic()
        for pid in tree(gw.proc.pid):
            rss = rss_kib(pid)
            if rss is None:
                continue
            p = procs.get(pid)
            if p is None:
                born = proc_start_epoch(pid)
                p = procs[pid] = {"pid": pid, "role": role_of(pid),
                                  "born": round((born or time.time()) - (time.time() - (now - start)), 2),
                                  "samples": []}
            p["samples"].append((round(now - start, 2), rss))
        if stop.wait(every):
            return


def memory_verdicts(procs: dict, warm: float, window: float, limit_pct: float) -> list[dict]:
    out = []
    for p in sorted(procs.values(), key=lambda p: (p["role"], p["born"])):
        s = p["samples"]
        base_t = max(warm, p["born"] + warm)
        base = next((x for x in s if x[0] >= base_t), None)
        last = s[-1]
        v = {"pid": p["pid"], "role": p["role"], "born_s": p["born"], "first_kib": s[0][1], "last_s": last[0],
             "last_kib": last[1], "peak_kib": max(x[1] for x in s)}
        if base is None or last[0] - base[0] < window:
            lived = last[0] - max(0.0, p["born"])
            v.update(verdict="excluded", note=f"lived {lived:.0f}s in the soak; {window:.0f}s after its first "
                                              f"{warm:.0f}s needed")
        else:
            growth = 100.0 * (last[1] - base[1]) / base[1]
            v.update(base_s=base[0], base_kib=base[1], growth_pct=round(growth, 2),
                     verdict="ok" if growth <= limit_pct else "FAIL")
        out.append(v)
    return out


# --- the log and the ledger -----------------------------------------------------------------------

def read_log(data_dir: str) -> dict[str, dict]:
    path = os.path.join(data_dir, "requests.sqlite")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0]: {"vk": r[1], "cost": r[2] or 0.0, "status": r[3], "error": r[4], "cache": r[5]}
                for r in db.execute("SELECT id, vk, cost_usd, status, error, cache FROM requests")}
    finally:
        db.close()


def settle_log(gw: SoakGateway, min_wait: float, limit: float) -> dict[str, dict]:
    """The request log once it stopped growing (the observer commits every 0.5 s; the ledger's
    charges for a dead worker's reservations come about 2 s after its death)."""
    time.sleep(min_wait)
    deadline = time.monotonic() + limit
    rows = read_log(gw.data_dir)
    while time.monotonic() < deadline:
        time.sleep(1.5)
        again = read_log(gw.data_dir)
        if len(again) == len(rows) and sum(r["cost"] for r in again.values()) == sum(r["cost"] for r in rows.values()):
            return again
        rows = again
    return rows


def micros(usd: float) -> int:
    return int(round(usd * 1_000_000))


# --- the checks and the report ---------------------------------------------------------------------

def pct(vals: list[float], q: float) -> float | None:
    if not vals:
        return None
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(round(q / 100.0 * (len(vals) - 1))))]


def fmt(v, nd=1) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def evaluate(d: dict) -> tuple[list[tuple[str, bool, str]], list[dict]]:
    """The checks (name, ok, detail) and the spend per key, from what the run collected: `records`
    (every request), `rows` (the request log by id), `usage` (/admin/usage), `kills`, `plan`,
    `memory` (memory_verdicts), `stats` (open_loop's), `gw_alive`, `args`."""
    a, records, rows, kills = d["args"], d["records"], d["rows"], d["kills"]
    checks: list[tuple[str, bool, str]] = []
    hung = [r for r in records if r["outcome"] == "hung"]
    stuck = d["stats"].get("threads_stuck", 0)
    checks.append(("no hung request", not hung and not stuck,
                   f"{len(hung)} of {len(records)} requests took longer than {a['deadline']:.0f}s"
                   + (f"; {stuck} client threads still busy at the end" if stuck else "")
                   + "".join(f"\n  - {r['route']} {r['op']} at {r['start']:.1f}s: {r.get('detail', '')}" for r in hung[:10])))
    bad = [r for r in records if r["outcome"] in FAILS and r["outcome"] != "hung"]
    checks.append(("every failure AWS-shaped", not bad,
                   f"{len(bad)} requests failed in a non-AWS way"
                   + "".join(f"\n  - {r['outcome']}: {r['route']} {r['op']} at {r['start']:.1f}s, HTTP {r['status']}, "
                             f"rid {r['rid'] or '-'}: {r.get('detail', '')}" for r in bad[:15])))
    mv = d["memory"]
    mfail = [m for m in mv if m["verdict"] == "FAIL"]
    compared = [m for m in mv if m["verdict"] != "excluded"]
    checks.append((f"memory growth <= {a['mem_limit_pct']:.0f} % after the first minute", not mfail and bool(compared),
                   f"{len(compared)} processes compared, {len(mv) - len(compared)} excluded (lived too briefly)"
                   + "".join(f"\n  - {m['role']} pid {m['pid']}: {m['base_kib'] / 1024:.1f} -> {m['last_kib'] / 1024:.1f} MiB "
                             f"({m['growth_pct']:+.1f} %)" for m in mfail)))
    obs_kills = [k["wall"] for k in kills if k["role"] == "observer" and k.get("pid")]
    led_kills = [k["wall"] for k in kills if k["role"] == "ledger" and k.get("pid")]
    answered = [r for r in records if r["status"] and r["rid"]]
    missing = [r for r in answered if r["rid"] not in rows]
    tolerated = [r for r in missing if any(k - 1.0 <= r["wall_end"] <= k + 0.5 for k in obs_kills)]
    lost = [r for r in missing if not any(k - 1.0 <= r["wall_end"] <= k + 0.5 for k in obs_kills)]
    noid = [r for r in records if r["status"] and not r["rid"]]
    checks.append(("no request-log row lost", not lost and not noid,
                   f"{len(answered)} answered requests, {len(answered) - len(missing)} in the log; "
                   f"{len(tolerated)} missing that finished within 1 s before to 0.5 s after the observer's kill "
                   f"(tolerated: the README's \"loses the rows it had not committed (at most 0.5 s)\"), "
                   f"{len(lost)} missing otherwise; {len(noid)} answers without x-amzn-RequestId"
                   + "".join(f"\n  - {r['rid']}: {r['route']} {r['op']} HTTP {r['status']} {r['outcome']}, "
                             f"finished {r['wall_end'] - (obs_kills[0] if obs_kills else 0):+.2f}s from the observer's kill"
                             for r in lost[:15])))
    # spend: the ledger's against the log's, per key; what the README allows a kill to lose is
    # counted: the ledger's last second (requests finished around its kill, at their logged cost),
    # and the rows the observer's kill was allowed to lose (their x-bf-cost-usd, or for a stream,
    # which has no such header, the dearest logged request of the same route and operation)
    spent = {u["owner"]: u for u in d["usage"].get("usage", ()) if u.get("level") == "key" and u.get("kind") == "budget"}
    logged = collections.Counter()
    dearest = collections.Counter()
    by_rid = {r["rid"]: r for r in records if r["rid"]}
    for rid, row in rows.items():
        logged[row["vk"]] += micros(row["cost"])
        r = by_rid.get(rid)
        if r is not None:
            dearest[(r["route"], r["op"])] = max(dearest[(r["route"], r["op"])], micros(row["cost"]))
    allowed_ledger, allowed_rows = collections.Counter(), collections.Counter()
    for r in records:
        if r["rid"] in rows and any(k - 1.5 <= r["wall_end"] <= k + 0.5 for k in led_kills):
            allowed_ledger[r["key"]] += micros(rows[r["rid"]]["cost"])
    for r in tolerated:
        cost = r.get("cost")
        allowed_rows[r["key"]] += micros(float(cost)) if cost not in (None, "") else dearest[(r["route"], r["op"])]
    spend, spend_ok = [], True
    for kid, _ in KEYS:
        u = spent.get(kid)
        led = micros(u["spent_usd"]) if u else None
        diff = None if led is None else led - logged[kid]
        allowed = allowed_ledger[kid] + allowed_rows[kid]
        ok = diff is not None and abs(diff) <= allowed
        spend_ok &= ok
        spend.append({"key": kid, "ledger_usd": None if led is None else led / 1e6, "log_usd": logged[kid] / 1e6,
                      "diff_usd": None if diff is None else diff / 1e6, "allowed_ledger_kill_usd": allowed_ledger[kid] / 1e6,
                      "allowed_rows_lost_usd": allowed_rows[kid] / 1e6,
                      "reserved_usd": u.get("reserved_usd") if u else None, "ok": ok})
    anon = logged.get("", 0)
    checks.append(("spend equals the log", spend_ok,
                   "; ".join(f"{s['key']}: ledger {fmt(s['ledger_usd'], 6)} vs log {s['log_usd']:.6f} USD"
                             + (f" (difference {s['diff_usd']:+.6f}, allowed ±"
                                f"{s['allowed_ledger_kill_usd'] + s['allowed_rows_lost_usd']:.6f})" if s["diff_usd"] else "")
                             for s in spend)
                   + (f"; rows without a key: {anon / 1e6:.6f} USD" if anon else "")))
    checks.append(("the gateway stayed up", d["gw_alive"], "finops serve " + ("running" if d["gw_alive"] else "exited")))
    missed = [k for k in kills if "new_pid" not in k]
    checks.append(("every killed process came back", not missed and len(kills) == len(d["plan"]),
                   f"{len(kills)} of {len(d['plan'])} kills done; "
                   + (("not restarted: " + ", ".join(f"{k['role']}@{k['at']:.0f}s" for k in missed)) if missed
                      else "each process restarted")))
    return checks, spend


def render(d: dict, checks: list, spend: list) -> str:
    a, records, stats = d["args"], d["records"], d["stats"]
    soak = [r for r in records if r.get("phase") == "soak"]
    by = collections.defaultdict(collections.Counter)
    lat = collections.defaultdict(list)
    for r in soak:
        by[(r["route"], r["op"])][r["outcome"]] += 1
        lat[(r["route"], r["op"])].append(r["latency_ms"])
    achieved = len(soak) / stats["seconds"] if stats.get("seconds") else 0.0
    all_lat = [r["latency_ms"] for r in soak]
    m = d["machine"]
    rate, max_rps = d["rate"], d["max_rps"]
    md = [f"# FinOps soak, {d['started']}", "",
          f"git {d['git']}; {m['cpus']} CPU {m['cpu_model']}. Gateway: {a['workers']} workers, {a['frontends']} "
          f"frontend, ledger, observer, cache; {len(KEYS)} enforced virtual keys; request log on SQLite. "
          f"{a['minutes']:g} min"
          + (f" at {rate:.0f} rps = {a['load_pct']:.0f} % of {max_rps:.0f} rps measured by a {a['calibrate_seconds']} s "
             f"calibration ({a['calibrate_connections']} connections, closed loop, this Python client)" if max_rps else
             f" at {rate:.0f} rps (--rate)")
          + f"; achieved {achieved:.1f} rps: {len(soak)} requests (+{len(records) - len(soak)} in the calibration). "
            f"Latency counts from each request's scheduled time (open loop); at most {stats.get('queue_max', 0)} "
            f"scheduled requests waited for a client thread.", "",
          f"CPU during the soak, % of one core: gateway {d['cpu']['gateway_pct']:.0f}, fake upstreams "
          f"{d['cpu']['upstreams_pct']:.0f}, this client {d['cpu']['client_pct']:.0f}, other processes on the machine "
          f"{d['cpu']['foreign_pct']:.0f}, steal {d['cpu']['steal_pct']:.0f}.", "",
          "## Checks", ""]
    for name, ok, detail in checks:
        md.append(f"- **{'ok' if ok else 'FAIL'}** {name}: {detail}")
    outcomes = sorted({o for c in by.values() for o in c}, key=lambda o: (o != "ok", o))
    md += ["", "## Requests by route and outcome (soak phase)", "",
           "| route | operation | requests | " + " | ".join(outcomes) + " | p50 ms | p99 ms |",
           "|---|---|---:|" + "---:|" * len(outcomes) + "---:|---:|"]
    for route, op, _ in MIX:
        c = by.get((route, op))
        if c:
            md.append(f"| {route} | {op} | {sum(c.values())} | " + " | ".join(str(c.get(o, "")) for o in outcomes)
                      + f" | {fmt(pct(lat[(route, op)], 50))} | {fmt(pct(lat[(route, op)], 99))} |")
    tot = collections.Counter()
    for c in by.values():
        tot.update(c)
    md.append(f"| all | | {sum(tot.values())} | " + " | ".join(str(tot.get(o, "")) for o in outcomes)
              + f" | {fmt(pct(all_lat, 50))} | {fmt(pct(all_lat, 99))} |")
    hits = sum(1 for r in soak if r["route"] == "cached" and str(r.get("cache", "")).startswith("hit"))
    ncached = sum(1 for r in soak if r["route"] == "cached")
    retried = sum(r["retried"] for r in records)
    md += ["", f"Cache: {hits} of {ncached} requests on the cached route were hits. Keep-alive connections the "
           f"gateway had closed before a request reached it, retried by the client: {retried}. Errors and exception "
           "frames on the `failing` route are its upstream's scripted failures; elsewhere they are what the kills "
           "cost (503 ServiceUnavailableException or a serviceUnavailableException frame for the requests on a "
           "killed worker, or waiting for a restarting ledger).", ""]
    start0 = min((r["sched"] for r in soak), default=0.0)
    win = 30 if a["minutes"] >= 3 else 10
    buckets = collections.defaultdict(list)
    for r in soak:
        buckets[int((r["sched"] - start0) // win)].append(r)
    md += [f"Over time ({win} s windows of scheduled time):", "",
           "| from s | requests | ok | other outcomes | p50 ms | p99 ms | kills |", "|---:|---:|---:|---:|---:|---:|---|"]
    for b in sorted(buckets):
        rs = buckets[b]
        ks = [f"{k['role']}@{k['at']:.0f}" for k in d["kills"] if b * win <= k["at"] < (b + 1) * win]
        ok = sum(1 for r in rs if r["outcome"] == "ok")
        md.append(f"| {b * win} | {len(rs)} | {ok} | {len(rs) - ok} | {fmt(pct([r['latency_ms'] for r in rs], 50))} | "
                  f"{fmt(pct([r['latency_ms'] for r in rs], 99))} | {', '.join(ks)} |")
    md += ["", "## Kills", "", "| at s | role | pid | restarted as | after s |", "|---:|---|---:|---:|---:|"]
    for k in d["kills"]:
        md.append(f"| {k['at']:.1f} | {k['role']} | {k.get('pid') or '–'} | {k.get('new_pid', '–')} | "
                  f"{fmt(k.get('restart_s'), 2)} |")
    md += ["", f"## Memory (RSS, MiB; compared from {a['mem_warmup']:.0f} s into the soak or into the process's own "
           f"life, over at least {a['mem_window']:.0f} s)", "",
           "| role | pid | born s | first | base (at s) | end (at s) | peak | growth | verdict |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v in d["memory"]:
        md.append(f"| {v['role']} | {v['pid']} | {v['born_s']:.0f} | {v['first_kib'] / 1024:.1f} | "
                  + (f"{v['base_kib'] / 1024:.1f} ({v['base_s']:.0f}) | " if "base_kib" in v else "– | ")
                  + f"{v['last_kib'] / 1024:.1f} ({v['last_s']:.0f}) | {v['peak_kib'] / 1024:.1f} | "
                  + (f"{v['growth_pct']:+.1f} %" if "growth_pct" in v else "–")
                  + f" | {v['verdict']}{(': ' + v['note']) if v.get('note') else ''} |")
    md += ["", "## Spend per key", "",
           "| key | ledger USD | log USD | difference | allowed: ledger kill | allowed: rows lost at the observer kill | reserved USD at the end |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for s in spend:
        md.append(f"| {s['key']} | {fmt(s['ledger_usd'], 6)} | {s['log_usd']:.6f} | {fmt(s['diff_usd'], 6)} | "
                  f"{s['allowed_ledger_kill_usd']:.6f} | {s['allowed_rows_lost_usd']:.6f} | {fmt(s['reserved_usd'], 6)} |")
    failed = [n for n, ok, _ in checks if not ok]
    md += ["", f"**{'FAIL: ' + ', '.join(failed) if failed else 'ok: every check passed'}**", ""]
    return "\n".join(md)


def cpu_split(before: "bench.Snapshot", after: "bench.Snapshot", upstream_pid: int) -> dict:
    """% of one core over the soak: the gateway (every process, the killed ones too), the fake
    upstreams, this script, every other process on the machine, and steal."""
    wall = after.wall - before.wall
    per = 100.0 / (CLK_TCK * wall)
    gw = after.gw.get("total", 0) - before.gw.get("total", 0)
    up = (after.nginx - before.nginx) + (after.all.get(upstream_pid, ("", 0))[1] - before.all.get(upstream_pid, ("", 0))[1])
    me = after.me - before.me
    busy = after.busy - before.busy
    return {"gateway_pct": gw * per, "upstreams_pct": up * per, "client_pct": me * per,
            "foreign_pct": max(0.0, busy - gw - up - me) * per, "steal_pct": (after.steal - before.steal) * per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/dev soak", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="requests per second; 0 (default): --load-pct of the maximum a calibration measures")
    ap.add_argument("--load-pct", type=float, default=70.0, help="share of the measured maximum (default 70)")
    ap.add_argument("--calibrate-seconds", type=int, default=0,
                    help="length of the calibration (default 20; 10 when --minutes < 3)")
    ap.add_argument("--calibrate-connections", type=int, default=16, help="closed-loop threads (default 16)")
    ap.add_argument("--threads", type=int, default=96, help="open-loop client threads (default 96)")
    ap.add_argument("--deadline", type=float, default=30.0, help="a request longer than this is hung (default 30)")
    ap.add_argument("--kill-every", type=float, default=30.0, help="seconds between worker kills (default 30; 0 = none)")
    ap.add_argument("--no-actor-kills", action="store_true", help="do not kill the actors")
    ap.add_argument("--slow-ms", type=float, default=800.0, help="the slow upstream's wait (default 800)")
    ap.add_argument("--mem-warmup", type=float, default=0.0,
                    help="memory is compared from this many seconds into each process's life in the soak "
                         "(default 60; 20 when --minutes < 3)")
    ap.add_argument("--mem-window", type=float, default=0.0,
                    help="seconds a process must live after that to be compared (default 60; 20 when --minutes < 3)")
    ap.add_argument("--mem-limit-pct", type=float, default=5.0, help="allowed RSS growth (default 5)")
    ap.add_argument("--mem-every", type=float, default=5.0, help="seconds between memory samples (default 5)")
    ap.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    ap.add_argument("--frontends", type=int, default=1, help="gateway frontends (default 1)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--out", help="results directory (default bench-results/soak-<UTC timestamp>)")
    ap.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing nginx")
    a = ap.parse_args(argv)
    short = a.minutes < 3
    a.calibrate_seconds = a.calibrate_seconds or (10 if short else 20)
    a.mem_warmup = a.mem_warmup or (20.0 if short else 60.0)
    a.mem_window = a.mem_window or (20.0 if short else 60.0)
    if a.minutes <= 0.5 or a.threads < 1 or a.deadline <= 0:
        ap.error("--minutes must be > 0.5, --threads >= 1, --deadline > 0")
    seconds = a.minutes * 60.0

    started = dt.datetime.now(dt.timezone.utc)
    out = os.path.abspath(a.out or os.path.join(bench.ROOT, "bench-results", "soak-" + started.strftime("%Y%m%dT%H%M%SZ")))
    os.makedirs(out, exist_ok=True)
    nginx, _wrk = bench.ensure_tools(not a.no_install)
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="finops-soak-")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, on_term)

    code = 0
    stop = threading.Event()
    rec = None
    try:
        fake = bench.FakeUpstream(procs, nginx, tmp, out).start()
        upstream_url, upstream = start_upstream(procs, tmp, out, a.slow_ms)
        gw = SoakGateway(procs, a, fake, upstream_url, tmp, out).start()
        roles = gw.pids_by_role()
        actors = [r for r in ACTOR_ROLES if roles.get(r)] if not a.no_actor_kills else []
        rec = Recorder(os.path.join(out, "requests.jsonl.gz"))
        t0 = time.monotonic()
        counter = iter(range(10**12))
        if a.rate > 0:
            max_rps, rate = None, a.rate
        else:
            log(f"calibration: {a.calibrate_seconds}s closed loop, {a.calibrate_connections} connections")
            max_rps = calibrate(gw.port, a, rec, t0, counter)
            rate = max(1.0, max_rps * a.load_pct / 100.0)
            log(f"calibration: {max_rps:.0f} rps at most; the soak runs at {rate:.0f} rps ({a.load_pct:.0f} %)")
        plan = chaos_plan(seconds, a.kill_every, actors)
        log(f"soak: {seconds:.0f}s at {rate:.0f} rps; {len(plan)} kills planned: "
            + ", ".join(f"{r}@{t:.0f}s" for t, r in plan))
        soak_t0 = time.monotonic()
        soak_wall0 = time.time()
        kills: list = []
        mem: dict = {}
        stats: dict = {}
        th_mem = threading.Thread(target=sample_memory, args=(gw, soak_t0, a.mem_every, stop, mem), daemon=True)
        th_chaos = threading.Thread(target=run_chaos, args=(gw, plan, soak_t0, stop, kills), daemon=True)
        snap0 = bench.Snapshot(gw.proc.pid, fake.proc.pid)
        th_mem.start()
        th_chaos.start()
        open_loop(gw.port, a, rate, seconds, rec, t0, counter, stats)
        snap1 = bench.Snapshot(gw.proc.pid, fake.proc.pid)
        stop.set()
        th_chaos.join(35)
        th_mem.join(10)
        log(f"soak done: {stats['scheduled']} requests scheduled in {stats['seconds']:.0f}s; reading the log")
        rows = settle_log(gw, 4.0, 60.0)
        usage = gw.admin("/admin/usage")
        gw_alive = gw.proc.poll() is None
        records = list(rec.records)
        rec.close()
        rec = None

        d = {"args": vars(a), "records": records, "rows": rows, "usage": usage, "kills": kills, "plan": plan,
             "memory": memory_verdicts(mem, a.mem_warmup, a.mem_window, a.mem_limit_pct), "stats": stats,
             "gw_alive": gw_alive, "rate": rate, "max_rps": max_rps, "git": bench.git_rev(),
             "machine": bench.machine_info(), "started": started.strftime("%Y-%m-%d %H:%M:%SZ"),
             "cpu": cpu_split(snap0, snap1, upstream.pid)}
        checks, spend = evaluate(d)
        summary = render(d, checks, spend)
        failed = [n for n, ok, _ in checks if not ok]
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write(summary)
        with open(os.path.join(out, "memory.csv"), "w") as f:
            f.write("pid,role,t_s,rss_kib\n")
            for p in mem.values():
                for t, rss in p["samples"]:
                    f.write(f"{p['pid']},{p['role']},{t},{rss}\n")
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({**{k: v for k, v in d.items() if k not in ("records", "rows")}, "soak_wall_start": soak_wall0,
                       "checks": [{"name": n, "ok": ok, "detail": x} for n, ok, x in checks], "spend": spend,
                       "log_rows": len(rows)}, f, indent=1)
        print(summary)
        code = 1 if failed else 0
    except BenchError as e:
        log(f"FAILED: {e}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        code = 130
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if rec is not None:
            rec.close()
        procs.stop_all()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"results: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
