#!/usr/bin/env python3
"""Load harness: what the gateway costs per request, next to a direct baseline, on this machine.

    scripts/dev bench                          full run: 10 s x 3 runs per point (about 45 minutes)
    scripts/dev bench --duration 5             shorter points
    scripts/dev bench --routes converse --connections 1,16,64 \
        --scenarios portkey,bare,production,production-redis,mock
                                               what the performance issue's goals need (Converse)
    scripts/dev bench --profile 15             also py-spy the frontend, workers and ledger under load
    scripts/dev bench --help                   every option

Method (the same as docs/peers.md, so the figures compare with LiteLLM's and Portkey's):

- Fake upstream: nginx, 1 worker, access log off, answering like AWS Bedrock Runtime with fixed
  bodies (`scripts/bench/nginx.conf`): POST /model/{id}/converse -> a Converse JSON (~600 B, usage
  and metrics), /converse-stream -> 24 event-stream frames (messageStart, 20 contentBlockDelta,
  contentBlockStop, messageStop, metadata; built with finops.shared.eventstream at start),
  /invoke -> a Claude Messages JSON.
- Load: wrk, 1 thread, a Lua script POSTing a Converse JSON body (`scripts/bench/wrk.lua`), at 1,
  16 and 64 connections; each point `--runs` runs of `--duration` seconds, median reported, after a
  discarded warm-up per target and route. wrk is a closed loop: past saturation, latency is queueing
  (connections / rps); compare by rps and CPU per request there.
- Targets, all measured in one run: `direct` (wrk -> nginx, no gateway), `portkey` (Portkey's
  gateway 1.15.2, one Node process, installed from npm into .bench-cache/portkey/ by
  scripts/portkey.py and reused, `@hono/node-server` pinned to 1.13.8 by an npm override, started
  with NODE_ENV=production and a preload binding it to 127.0.0.1; wrk sends it the same
  conversation as OpenAI Chat Completions with `x-portkey-provider: openai` and
  `x-portkey-custom-host` = the nginx fake's /v1 (/stream/v1 for streams, which always answers
  SSE); skipped, and said so in the report, when node or npm is missing; it has no InvokeModel
  route), `bare` (the design's bare path, scripts/bare_path.py: Hypercorn-trio -> ZeroMQ PUSH ->
  `--workers` trio workers -> PUSH back, nothing parsed, no upstream, the same Converse bytes and
  stream frames as the fake: the floor; no InvokeModel route), `production` (the bedrock relay
  behind an enforced virtual key with a budget and a rate limit that the bench never reaches,
  request log on: what production runs) and `production-redis` (the same with the ledger on the
  local Redis and PostgreSQL, as `governed-redis`), `bedrock` (the gateway's
  bedrock provider relaying to the nginx fake, SigV4 re-signing included), `mock` (the built-in
  mock provider, `chunks = 20`: the gateway's cost with no upstream at all) and `openai` (the
  openai provider: the same Bedrock requests translated to Chat Completions and back, against
  nginx answering /v1/chat/completions with the same text as JSON or as 20 SSE deltas).
  `governed` is mock behind a virtual key with a budget and rate limits (the local ledger);
  `governed-redis` the same with `ledger = "redis"` on a local redis-server, settled spend to a
  local PostgreSQL (both started by this script with tests/helpers/redis_server.py and
  postgres_server.py); their CPU per request is reported apart, not in the gateway's total.
  `mock-pglog` is mock with the request log on that PostgreSQL (`log_store = "postgres"`): its
  observer CPU per request beside mock's (SQLite) in the same run, PostgreSQL's CPU apart.
  `bedrock-slow` is bedrock against a second nginx server that answers after a non-blocking 50 ms
  (echo_sleep; Debian's libnginx-mod-http-echo, skipped when missing), compared with
  `direct-slow` (wrk -> that server), which the run then measures too.
- First event: for every target that runs converse-stream, the median time from a request to
  the first bytes of its body over 100 requests on one connection (http.client), beside direct's.
- Goals (scripts/bench_goals.py): the performance issue's goals as ratios within the run (CPU
  per request, rps and added p50 of production against Portkey, production-redis against
  Portkey, mock against bare, stream against Converse, the slow upstream against direct, first
  event, idle memory and start time of the gateway), each `ok` or `MISS`, or `not measured` with
  the flags that would measure it; in table.md, on stdout and in results.json.
- Gateway CPU: utime+stime from /proc/<pid>/stat of `finops serve` (Portkey: its Node process;
  bare: its frontend) and all its descendants (plus children it reaped), before and after each run, divided by completed requests; also split
  by role (frontend, workers). Foreign CPU: machine busy time (/proc/stat) minus the gateway,
  nginx, wrk and this script, as % of one core; a run above `--max-foreign-pct`, or with more CPU
  steal than `--max-steal-pct` (the hypervisor running another guest: CPU per request rises with
  it on the same code, measured up to +30 % at 20-28 % steal), is repeated (at most `--retries`
  times). Memory: RSS and PSS summed over the gateway's processes.
- Correctness: every target is checked once before load (status, body, event frames), wrk's error
  counts (non-2xx, connect, read, write, timeout) must be 0, every request in the request log
  must have succeeded, and no gateway process may restart during a run (Portkey's answer must
  carry the fake's text; Portkey and bare have no request log, and must listen on 127.0.0.1
  only). Any failure makes the script exit 1 after writing what it measured.

Output: a markdown table on stdout, and bench-results/<UTC timestamp>/ with results.json,
table.md, the raw wrk output of every run, the gateway and nginx logs, and with --profile the raw
py-spy stacks plus profile-summary.md. Everything listens on 127.0.0.1 only; every process this
script starts is stopped on exit, Ctrl-C or failure, and every wait has a deadline.

Profiling (--profile SECONDS): after measuring a scenario, wrk loads `--profile-route` at
`--profile-connections` while `py-spy record --nonblocking -f raw` samples every frontend,
worker and the ledger actor; with the default `--profile-mode both` it runs once counting every running sample and
once with `--gil` (Python's own CPU time only), and writes profile-summary.md (self time by
component, by function, inclusive).

Needs nginx and wrk: if missing they are installed with apt-get (nginx-light, wrk); --profile
installs py-spy into the venv with pip; the `portkey` target needs node and npm (Node.js 20).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import grp
import http.client
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "bench")
import apt_packages  # noqa: E402  (scripts/, beside this file)
import bench_goals  # noqa: E402
import portkey  # noqa: E402
from procstat import read_stat, tree  # noqa: E402

try:
    from finops.shared import eventstream
except ImportError:  # pragma: no cover - run it through scripts/dev, which sets up the venv
    sys.exit("bench: cannot import finops; run it as `scripts/dev bench` (it sets up the venv)")

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
MODEL_PATH = "anthropic.claude-3-haiku-20240307-v1%3A0"
GATEWAY_PREFIX = "/bedrock"
ROUTES = {  # route -> (request body file, fake's response body file)
    "converse": ("request-converse.json", "response-converse.json"),
    "converse-stream": ("request-converse.json", None),
    "invoke": ("request-invoke.json", "response-invoke.json"),
}
SCENARIOS = ("portkey", "bare", "production", "production-redis", "bedrock", "mock", "openai", "governed",
             "governed-redis", "weighted", "nolog", "mock-pglog", "bedrock-slow")
PEERS = ("portkey", "bare")                    # not the gateway: Portkey, and the design's bare path (the floor)
GOVERNED = ("governed", "governed-redis", "production", "production-redis")  # requests present BENCH_VK
MOCKED = ("mock", "openai", "governed", "governed-redis", "weighted", "nolog", "mock-pglog")   # answers not the fake's bytes
SHARED = ("governed-redis", "mock-pglog", "production-redis")  # on the local Redis / PostgreSQL (Backends)
BENCH_VK = "bench-virtual-key-secret-0123"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"   # Debian's libnginx-mod-http-echo (bedrock-slow)
TARGETS = {"added_p50_ms_at_1": 1.5, "cpu_ms_per_req": 2.0, "max_rps": 800.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_DELTAS = 20
ANSWER = ("Here is a summary of the quarterly cloud spend report: total spend rose 12% quarter over "
          "quarter, storage fell 8% after lifecycle policies, and reserved coverage reached 74%.")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A check failed; the message says which and where to look."""


# --- tools ----------------------------------------------------------------------------------

def find_tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


def ensure_tools(install: bool) -> tuple[str, str]:
    """nginx and wrk, installed with apt-get (nginx-light, wrk) when missing."""
    missing = [pkg for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk")) if not find_tool(tool)]
    if missing:
        if not install:
            raise BenchError(f"missing {', '.join(missing)}; install with: apt-get install -y {' '.join(missing)}")
        try:
            apt_packages.install(missing, log)
        except apt_packages.AptError as e:
            raise BenchError(str(e)) from None
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if not (nginx and wrk):
        raise BenchError("nginx or wrk still missing after apt-get install")
    return nginx, wrk


def ensure_pyspy() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.access(exe, os.X_OK):
        log("installing py-spy into the venv (pip)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600)
    return exe


def tool_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes we start ---------------------------------------------------------------------

class Procs:
    """Every process this script starts, each in its own session, so cleanup can stop its group."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen, int]] = []

    def start(self, name: str, argv: list[str], stop_signal=signal.SIGTERM, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append((name, p, stop_signal))
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 30.0) -> None:
        for i, (name, q, sig) in enumerate(self.procs):
            if q is p:
                del self.procs[i]
                _stop_group(name, p, sig, timeout)
                return

    def stop_all(self) -> None:
        while self.procs:
            name, p, sig = self.procs.pop()
            _stop_group(name, p, sig, 15.0)


def _stop_group(name: str, p: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal the process, wait up to `timeout`, then SIGKILL it and whatever it started.

    Only our own processes are ever signalled: the group id is used only while its leader (our
    child) is not yet reaped, and leftover descendants are matched by pid *and* start time.
    """
    kids = [(pid, start_time(pid)) for pid in tree(p.pid) if pid != p.pid] if p.poll() is None else []
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {p.pid}) did not stop in {timeout:.0f}s; killing it")
            try:
                os.killpg(p.pid, signal.SIGKILL)  # start_new_session: it leads its own group
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) is still there after SIGKILL")
    for pid, started in kids:
        if started is not None and start_time(pid) == started:
            log(f"{name}: pid {pid} outlived its parent; killing it")
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


# --- /proc accounting -----------------------------------------------------------------------

def role_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "gone"
    if "finops.frontend" in cmd or "bare_path.py serve" in cmd:
        return "frontend"
    if "bare_path.py worker" in cmd:
        return "worker"
    if "start-server.js" in cmd and "portkey" in cmd:
        return "node"
    if "finops.workers.ledger.actor" in cmd:
        return "ledger"
    if "finops.workers.observe.actor" in cmd:
        return "observer"
    if "finops.workers.cache.actor" in cmd:
        return "cache"
    if "finops.workers" in cmd:
        return "worker"
    if "finops" in cmd and "serve" in cmd:
        return "supervisor"
    return "other"


def tree_cpu(root: int) -> dict:
    """CPU ticks of the tree by role, plus what `root` has reaped (children that exited), and by
    role and thread kind ("frontend:py" is Python's own thread, "frontend:zmq" the ZeroMQ I/O
    threads, which py-spy does not see)."""
    out = collections.Counter()
    threads = collections.Counter()
    for pid in tree(root):
        st = read_stat(pid)
        if st is None:
            continue
        role = role_of(pid)
        out[role] += st[1]
        if pid == root:
            out["reaped"] += st[2]
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            comm = data[data.index(b"(") + 1:data.rindex(b")")]
            fields = data[data.rindex(b")") + 2:].split()
            kind = "zmq" if comm.startswith(b"ZMQbg") else "py" if tid == str(pid) else "other"
            threads[f"{role}:{kind}"] += int(fields[11]) + int(fields[12])
    out["total"] = sum(out.values())
    out.update(threads)
    return dict(out)


def tree_memory(root: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the tree."""
    rss = pss = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def machine_busy() -> tuple[int, int]:
    """(busy ticks excluding steal, steal ticks) over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def rusage_ticks(who) -> float:
    r = resource.getrusage(who)
    return (r.ru_utime + r.ru_stime) * CLK_TCK


def ticks_of(root: int | None) -> int:
    """CPU ticks of `root` and its live descendants, plus the children `root` reaped."""
    if root is None:
        return 0
    total = 0
    for pid in tree(root):
        st = read_stat(pid)
        if st is not None:
            total += st[1] + (st[2] if pid == root else 0)
    return total


class Snapshot:
    def __init__(self, gw_root: int | None, nginx_root: int, backends: "Backends | None" = None):
        self.wall = time.monotonic()
        self.gw = tree_cpu(gw_root) if gw_root else {}
        self.nginx = tree_cpu(nginx_root)["total"]
        self.redis = ticks_of(backends.redis_pid()) if backends else 0        # governed-redis's servers
        self.postgres = ticks_of(backends.postgres_pid()) if backends else 0
        self.children = rusage_ticks(resource.RUSAGE_CHILDREN)  # wrk, once waited for
        self.me = rusage_ticks(resource.RUSAGE_SELF)
        self.busy, self.steal = machine_busy()
        self.all = all_cpu()


def all_cpu() -> dict:
    """{pid: (comm, utime+stime ticks)} of every process, to name the foreign CPU users."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        comm = data[data.index(b"(") + 1:data.rindex(b")")].decode("utf-8", "replace")
        out[int(name)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def foreign_top(before: dict, after: dict, ours: set, pct: float, n: int = 3) -> list[str]:
    deltas = collections.Counter()
    for pid, (comm, ticks) in after.items():
        if pid not in ours:
            deltas[comm] += ticks - before.get(pid, (comm, 0))[1]
    return [f"{comm} {d * pct:.1f}%" for comm, d in deltas.most_common(n) if d > 0]


class MemorySampler:
    """Peak RSS/PSS of the gateway's tree, sampled every 0.5 s while a run goes on."""

    def __init__(self, root: int | None):
        self.root = root
        self.peak = (0.0, 0.0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(0.5):
            m = tree_memory(self.root)
            self.peak = (max(self.peak[0], m[0]), max(self.peak[1], m[1]))

    def __enter__(self):
        if self.root:
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.root:
            self._t.join(5)
            m = tree_memory(self.root)
            self.peak = (max(self.peak[0], m[0]), max(self.peak[1], m[1]))


# --- fixed bodies -------------------------------------------------------------------------

def read_body(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read().strip()


class Req(typing.NamedTuple):
    """What wrk and the preflight send to a target for a route: path, body file (scripts/bench/), headers."""
    path: str
    body: str
    headers: dict


def request_for(target: str, route: str, fake_url: str) -> Req | None:
    """The request of `route` for `target`, or None when the target has no such route (Portkey has
    no Bedrock route: it gets the same conversation as OpenAI Chat Completions; the bare path
    answers Converse and ConverseStream only)."""
    if target == "portkey":
        if route == "invoke":
            return None
        stream = route == "converse-stream"
        return Req("/v1/chat/completions", "request-openai-stream.json" if stream else "request-openai.json",
                   portkey.upstream_headers(fake_url, stream))
    if target == "bare" and route == "invoke":
        return None
    prefix = "" if target.startswith("direct") else GATEWAY_PREFIX
    return Req(f"{prefix}/model/{MODEL_PATH}/{route}", ROUTES[route][0],
               {"x-bf-vk": BENCH_VK} if target in GOVERNED else {})


def stream_events() -> list[tuple[str, bytes]]:
    """ConverseStream as Bedrock sends it: messageStart, 20 deltas, stop, messageStop, metadata."""
    words = ANSWER.split(" ")
    per = -(-len(words) // STREAM_DELTAS)
    pieces = [" ".join(words[i * per:(i + 1) * per]) + " " for i in range(STREAM_DELTAS)]
    pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

    def p(i):  # the random "p" padding real Bedrock adds to every payload (fixed here)
        return pad[:8 + (i * 7) % 40]

    def j(obj):
        return json.dumps(obj, separators=(",", ":")).encode()

    ev = [("messageStart", j({"p": p(0), "role": "assistant"}))]
    ev += [("contentBlockDelta", j({"contentBlockIndex": 0, "delta": {"text": t}, "p": p(i + 1)}))
           for i, t in enumerate(pieces)]
    ev += [("contentBlockStop", j({"contentBlockIndex": 0, "p": p(21)})),
           ("messageStop", j({"p": p(22), "stopReason": "end_turn"})),
           ("metadata", j({"metrics": {"latencyMs": 412}, "p": p(23),
                           "usage": {"inputTokens": 25, "outputTokens": 42, "totalTokens": 67}}))]
    return ev


def invoke_stream_frames() -> bytes:
    """InvokeModelWithResponseStream as Bedrock sends it for a Claude Messages body: `chunk` events
    carrying base64 Anthropic stream events (message_start, content_block_start, 20 deltas,
    content_block_stop, message_delta, message_stop with the invocation metrics). Not measured by
    this harness; scripts/soak.py sends this route through the nginx fake."""
    import base64
    words = ANSWER.split(" ")
    per = -(-len(words) // STREAM_DELTAS)
    pieces = [" ".join(words[i * per:(i + 1) * per]) + " " for i in range(STREAM_DELTAS)]
    events = [{"type": "message_start", "message": {
                  "id": "msg_bdrk_bench0000000000000000", "type": "message", "role": "assistant",
                  "model": "claude-3-haiku-20240307", "content": [], "stop_reason": None, "stop_sequence": None,
                  "usage": {"input_tokens": 25, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
               for t in pieces]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 42}},
               {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                   "inputTokenCount": 25, "outputTokenCount": 42, "invocationLatency": 412, "firstByteLatency": 90}}]
    return b"".join(eventstream.event_frame("chunk", json.dumps(
        {"bytes": base64.b64encode(json.dumps(e, separators=(",", ":")).encode()).decode(), "p": "abcdefgh"},
        separators=(",", ":")).encode()) for e in events)


def openai_sse() -> bytes:
    """The same answer as an OpenAI Chat Completions stream: role chunk, 20 content deltas, the
    finish_reason chunk, the usage chunk (stream_options.include_usage) and [DONE]."""
    words = ANSWER.split(" ")
    per = -(-len(words) // STREAM_DELTAS)
    pieces = [" ".join(words[i * per:(i + 1) * per]) + " " for i in range(STREAM_DELTAS)]
    base = {"id": "chatcmpl-bench0000000000000000000002", "object": "chat.completion.chunk",
            "created": 1764230400, "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench"}

    def chunk(delta, finish=None, usage=None, choices=True):
        d = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                 if choices else [], usage=usage)
        return b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    out += [chunk({"content": t}) for t in pieces]
    out += [chunk({}, "stop"), chunk(None, usage={"prompt_tokens": 25, "completion_tokens": 42, "total_tokens": 67},
                                     choices=False), b"data: [DONE]\n\n"]
    return b"".join(out)


# --- the fake upstream ----------------------------------------------------------------------

class FakeUpstream:
    """nginx answering with fixed bodies on `url`, and with `slow` the same after 50 ms on `slow_url`."""

    def __init__(self, procs: Procs, nginx: str, tmp: str, out: str, slow: bool = False):
        self.procs, self.nginx_bin, self.out, self.slow = procs, nginx, out, slow
        self.dir = os.path.join(tmp, "nginx")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.slow_port = free_port() if slow else 0
        self.slow_url = f"http://127.0.0.1:{self.slow_port}" if slow else ""
        self.proc: subprocess.Popen | None = None
        self.bodies: dict[str, bytes] = {}

    def start(self) -> "FakeUpstream":
        bodies = os.path.join(self.dir, "bodies")
        os.makedirs(bodies, exist_ok=True)
        self.bodies = {"converse": read_body("response-converse.json"),
                       "invoke": read_body("response-invoke.json"),
                       "converse-stream": b"".join(eventstream.event_frame(t, b) for t, b in stream_events()),
                       "invoke-stream": invoke_stream_frames(),
                       "openai": read_body("response-openai.json"),
                       "openai-stream": openai_sse()}
        for route, name in (("converse", "converse.json"), ("converse-stream", "converse-stream.bin"),
                            ("invoke", "invoke.json"), ("invoke-stream", "invoke-stream.bin"),
                            ("openai", "openai.json"), ("openai-stream", "openai.sse")):
            with open(os.path.join(bodies, name), "wb") as f:
                f.write(self.bodies[route])
        user = ""
        if os.geteuid() == 0:  # nginx drops its worker to this user; it must read the bodies
            pw = pwd.getpwnam("nobody")
            user = f"user nobody {grp.getgrgid(pw.pw_gid).gr_name};"
        with open(os.path.join(DATA, "nginx.conf")) as f:
            conf = f.read().replace("@@DIR@@", self.dir).replace("@@PORT@@", str(self.port)).replace("@@USER@@", user)
        if self.slow:
            conf = conf.replace("@@LOAD_ECHO@@", f"load_module {ECHO_MODULE};").replace("@@SLOW_PORT@@",
                                                                                      str(self.slow_port))
        else:
            conf = re.sub(r"\n *# SLOW begin\n.*# SLOW end\n", "\n", conf, flags=re.S).replace("@@LOAD_ECHO@@", "")
        conf_path = os.path.join(self.dir, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        for d, _, files in os.walk(os.path.dirname(self.dir)):
            os.chmod(d, 0o755)
            for name in files:
                os.chmod(os.path.join(d, name), 0o644)
        shutil.copy(conf_path, os.path.join(self.out, "nginx.conf"))
        self.proc = self.procs.start("nginx", [self.nginx_bin, "-p", self.dir, "-c", conf_path,
                                               "-e", os.path.join(self.dir, "nginx-error.log")],
                                     stop_signal=signal.SIGQUIT, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.out, "nginx.log"), "wb"))
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"nginx exited with {self.proc.returncode}; see {self.out}/nginx.log")
            try:
                if all(post(url, f"/model/{MODEL_PATH}/converse", b"{}")[0] == 200
                       for url in (self.url, self.slow_url) if url):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"nginx fake not answering on {self.url} {self.slow_url} after 15s")
            time.sleep(0.05)
        log(f"fake upstream (nginx, pid {self.proc.pid}) on {self.url}"
            + (f", +50 ms on {self.slow_url}" if self.slow else "")
            + f"; stream body {len(self.bodies['converse-stream'])} B in {len(stream_events())} frames")
        return self


def post(base: str, path: str, body: bytes, timeout: float = 10.0, headers: dict | None = None):
    host, port = base.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request("POST", path, body=body, headers={"content-type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# --- governed-redis's and mock-pglog's Redis and PostgreSQL ------------------------------------

class Backends:
    """A local redis-server and PostgreSQL for the `governed-redis` and `mock-pglog` scenarios, started once per run
    with the tests' own code (tests/helpers/redis_server.py, postgres_server.py: Debian's packages
    on free loopback ports, installed with apt-get when missing). PostgreSQL is durable (fsync on),
    as a deployment's would be. Their CPU is measured apart from the gateway's."""

    def __init__(self, tmp: str):
        self.dir = os.path.join(tmp, "backends")
        self.redis = self.pg = None
        self.redis_url = self.postgres_url = ""

    def start(self) -> "Backends":
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        from tests.helpers.postgres_server import PostgresServer
        from tests.helpers.redis_server import RedisServer
        self.redis = RedisServer(os.path.join(self.dir, "redis")).start()
        self.redis_url = self.redis.url
        self.pg = PostgresServer(durable=True).start()
        self.postgres_url = self.pg.create_database("finops_bench", "finops_bench", "bench-" + os.urandom(6).hex())
        log(f"redis-server (pid {self.redis_pid()}) on {self.redis_url}; PostgreSQL (pid {self.postgres_pid()}) "
            f"on 127.0.0.1:{self.pg.port}")
        return self

    def redis_pid(self) -> int | None:
        return self.redis.proc.pid if self.redis and self.redis.running else None

    def postgres_pid(self) -> int | None:
        """The postmaster's pid (its backends are its children), from postmaster.pid."""
        try:
            with open(os.path.join(self.pg.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError, AttributeError):
            return None

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.close()


# --- the gateway ------------------------------------------------------------------------------

class Gateway:
    def __init__(self, procs: Procs, scenario: str, args, fake: FakeUpstream, tmp: str, out: str,
                 backends: Backends | None = None):
        self.procs, self.scenario, self.args, self.fake, self.out = procs, scenario, args, fake, out
        self.backends = backends
        self.dir = os.path.join(tmp, f"gateway-{scenario}")
        self.data_dir = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.ready_s = 0.0
        self.pids: dict[int, str] = {}

    def config(self) -> str:
        a = self.args
        server = (f"[server]\nhost = \"127.0.0.1\"\nport = {self.port}\nworkers = {a.workers}\n"
                  f"frontends = {a.frontends}\ndata_dir = \"{self.data_dir}\"\n")
        bedrock = (f"\n[providers.fake]\nkind = \"bedrock\"\nbase_url = \"{self.fake.url}\"\n"
                   "region = \"us-east-1\"\n"
                   "keys = [{access_key_id = \"AKIDBENCH\", secret_access_key = \"benchsecret\"}]\n"
                   "\n[default_route]\nprovider = \"fake\"\n")
        mock_provider = (f"\n[providers.m]\nkind = \"mock\"\nchunks = {STREAM_DELTAS}\n"
                         "\n[default_route]\nprovider = \"m\"\n")
        if self.scenario == "bedrock":
            return server + bedrock
        if self.scenario == "bedrock-slow":   # the same relay to the fake's +50 ms server
            return server + bedrock.replace(self.fake.url, self.fake.slow_url)
        if self.scenario == "openai":
            return server + (f"\n[providers.fake]\nkind = \"openai\"\nbase_url = \"{self.fake.url}/v1\"\n"
                             "keys = [{api_key = \"sk-bench\"}]\n"
                             "\n[default_route]\nprovider = \"fake\"\nmodel = \"gpt-4o-mini\"\n")
        if self.scenario == "weighted":
            # the openai scenario's upstream, split over two providers by weight (routing's cost)
            prov = "".join(f"\n[providers.{n}]\nkind = \"openai\"\nbase_url = \"{self.fake.url}/v1\"\n"
                           "keys = [{api_key = \"sk-bench\"}]\n" for n in ("fake1", "fake2"))
            return server + prov + ("\n[default_route]\ntargets = [{provider = \"fake1\", model = \"gpt-4o-mini\", "
                                    "weight = 1}, {provider = \"fake2\", model = \"gpt-4o-mini\", weight = 1}]\n")
        if self.scenario in GOVERNED:
            # governed: mock behind an enforced virtual key with a budget and a rate limit (never
            # reached); production: the same key in front of the bedrock relay, request log on (the
            # default), what a deployment runs; -redis: the ledger on Redis (settled spend durably
            # in PostgreSQL), as several nodes share it
            shared = (f"ledger = \"redis\"\nredis_url = \"{self.backends.redis_url}\"\n"
                      f"postgres_url = \"{self.backends.postgres_url}\"\n") if self.scenario.endswith("-redis") else ""
            upstream = bedrock if self.scenario.startswith("production") else mock_provider
            return server + upstream + ("\n[governance]\nmode = \"enforced\"\n" + shared +
                                        "\n[[governance.keys]]\nid = \"vk-bench\"\n"
                                        f"secret = \"{BENCH_VK}\"\n"
                                        "budgets = [{amount_usd = 1000000.0, period = \"day\"}]\n"
                                        "rate_limits = [{requests = 100000000, tokens = 100000000000, window = \"minute\"}]\n")
        mock = server + mock_provider
        if self.scenario == "nolog":
            # mock without the request log and the metrics it feeds: what logging costs
            return mock + "\n[observability]\nrequest_log = false\n"
        if self.scenario == "mock-pglog":
            # mock with the request log on the local PostgreSQL (a fleet's shared log)
            return mock + (f"\n[observability]\nlog_store = \"postgres\"\n"
                           f"log_postgres_url = \"{self.backends.postgres_url}\"\n")
        return mock

    def start(self) -> "Gateway":
        os.makedirs(self.data_dir, exist_ok=True)
        cfg = os.path.join(self.dir, "finops.toml")
        with open(cfg, "w") as f:
            f.write(self.config())
        shutil.copy(cfg, os.path.join(self.out, f"finops-{self.scenario}.toml"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}  # the file decides
        finops = os.path.join(os.path.dirname(sys.executable), "finops")
        if not os.access(finops, os.X_OK):
            finops = os.path.join(ROOT, ".venv", "bin", "finops")
        self.log_path = os.path.join(self.out, f"gateway-{self.scenario}.log")
        t0 = time.monotonic()
        self.proc = self.procs.start(f"gateway ({self.scenario})", [finops, "serve", "--config", cfg],
                                     env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)
        deadline = t0 + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"gateway ({self.scenario}) exited with {self.proc.returncode} before it was "
                                 f"ready; see {self.log_path}:\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/health")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and json.loads(body).get("workers_live", 0) >= self.args.workers:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"gateway ({self.scenario}) not ready after 60s; see {self.log_path}:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.05)
        self.ready_s = time.monotonic() - t0
        self.pids = self.children()
        log(f"gateway ({self.scenario}) ready in {self.ready_s:.2f}s on {self.url}: "
            + ", ".join(f"{r} {p}" for p, r in sorted(self.pids.items(), key=lambda x: x[1])))
        return self

    def children(self) -> dict[int, str]:
        return {pid: role_of(pid) for pid in tree(self.proc.pid)}

    def check_stable(self) -> None:
        now = self.children()
        if self.proc.poll() is not None or now != self.pids:
            raise BenchError(f"gateway ({self.scenario}): processes changed during the run (crash or restart?): "
                             f"before {self.pids}, now {now}; see {self.log_path}")

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def outcomes(self) -> collections.Counter:
        """Outcome counts ("ok" or the error code) of every request in the request log (the
        observer writes rows within about half a second)."""
        time.sleep(1.5)
        out = collections.Counter()
        if self.scenario == "mock-pglog":
            import psycopg
            with psycopg.connect(self.backends.postgres_url) as db:
                for error, n in db.execute("SELECT error, count(*) FROM finops_requests GROUP BY error"):
                    out[error or "ok"] += n
            return out
        path = os.path.join(self.data_dir, "requests.sqlite")
        if self.scenario == "nolog" or not os.path.exists(path):
            return out
        import sqlite3
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            for error, n in db.execute("SELECT error, count(*) FROM requests GROUP BY error"):
                out[error or "ok"] += n
        finally:
            db.close()
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc, timeout=30)


class PeerServer(Gateway):
    """A target that is not the gateway, measured the same way (CPU and memory of its process
    tree): `portkey` (one Node process, installed by scripts/portkey.py) or `bare` (the design's
    bare path, scripts/bare_path.py: a frontend and `--workers` workers). Ready when it has
    answered one Converse (Portkey: one Chat Completion through the nginx fake)."""

    def __init__(self, procs: Procs, scenario: str, args, fake: FakeUpstream, tmp: str, out: str):
        super().__init__(procs, scenario, args, fake, tmp, out)
        self.dir = os.path.join(tmp, scenario)

    def command(self) -> tuple[list[str], dict, str]:
        """argv, environment and working directory."""
        if self.scenario == "portkey":
            argv, env = portkey.command(portkey.tools()[0], self.port)
            return argv, env, portkey.CACHE_DIR
        bodies = os.path.join(self.fake.dir, "bodies")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        return ([sys.executable, os.path.join(HERE, "bare_path.py"), "serve", "--port", str(self.port),
                 "--workers", str(self.args.workers), "--converse-body", os.path.join(bodies, "converse.json"),
                 "--stream-body", os.path.join(bodies, "converse-stream.bin")], env, self.dir)

    def start(self) -> "PeerServer":
        os.makedirs(self.dir, exist_ok=True)
        argv, env, cwd = self.command()
        self.log_path = os.path.join(self.out, f"{self.scenario}.log")
        req = request_for(self.scenario, "converse", self.fake.url)
        body = read_body(req.body)
        t0 = time.monotonic()
        self.proc = self.procs.start(self.scenario, argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.scenario} exited with {self.proc.returncode} before it was ready; "
                                 f"see {self.log_path}:\n{self.log_tail()}")
            try:
                if post(self.url, req.path, body, timeout=5, headers=req.headers)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > t0 + 60:
                raise BenchError(f"{self.scenario} not answering after 60s; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.02)
        self.ready_s = time.monotonic() - t0
        self.pids = self.children()
        exposed = [a for a in listen_addresses(list(self.pids)) if not a.startswith("127.0.0.1:")]
        if exposed:
            raise BenchError(f"{self.scenario} listens beyond loopback ({', '.join(exposed)}); stopping it")
        log(f"{self.scenario} ready in {self.ready_s:.2f}s on {self.url}: "
            + ", ".join(f"{r} {p}" for p, r in sorted(self.pids.items(), key=lambda x: x[1])))
        return self

    def outcomes(self) -> collections.Counter:
        return collections.Counter()     # no request log: wrk's error counts are the check


def listen_addresses(pids: list[int]) -> list[str]:
    """"ip:port" of every TCP socket in LISTEN state that one of `pids` holds (from /proc/net/tcp[6])."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != "0A" or cols[9] not in inodes:
                continue
            addr, port = cols[1].split(":")
            raw = bytes.fromhex(addr)
            if v6:
                # four 32-bit words, each in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                ip = socket.inet_ntop(socket.AF_INET6, raw)
                ip = ip[7:] if ip.startswith("::ffff:") else ip
            else:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out.append(f"{ip}:{int(port, 16)}")
    return out


# --- checks before load ---------------------------------------------------------------------

def frames_of(body: bytes) -> list:
    try:
        return eventstream.decode_all(body)
    except eventstream.EventStreamError as e:
        raise BenchError(f"stream body is not a valid event stream: {e}") from None


def preflight(target: str, base: str, route: str, fake: FakeUpstream) -> None:
    """One request, checked closely, before any load goes to `target`."""
    req = request_for(target, route, fake.url)
    status, hdr, body = post(base, req.path, read_body(req.body), headers=req.headers)
    where = f"{target} {route}"
    if status != 200:
        raise BenchError(f"{where}: HTTP {status}: {body[:300]!r}")
    if target == "portkey":
        check_openai_answer(where, hdr, body, fake, route == "converse-stream")
        return
    if route == "converse-stream":
        if not hdr.get("content-type", "").startswith("application/vnd.amazon.eventstream"):
            raise BenchError(f"{where}: content-type {hdr.get('content-type')!r}")
        frames = frames_of(body)
        kinds = [f.event_type or f.exception_type or f.message_type for f in frames]
        want = ["messageStart"] + ["contentBlockDelta"] * STREAM_DELTAS + ["contentBlockStop", "messageStop", "metadata"]
        if kinds != want:
            raise BenchError(f"{where}: stream events {kinds}, expected {want}")
        if target not in MOCKED:
            got = [(f.event_type, f.payload) for f in frames]
            if got != stream_events():
                raise BenchError(f"{where}: stream payloads differ from the fake's")
        return
    if target in MOCKED:
        doc = json.loads(body)
        ok = ("output" in doc) if route == "converse" else ("content" in doc)
        if not ok:
            raise BenchError(f"{where}: unexpected answer {body[:300]!r}")
    elif body != fake.bodies[route]:
        raise BenchError(f"{where}: body differs from the fake's ({len(body)} vs {len(fake.bodies[route])} B): "
                         f"{body[:200]!r}")
    if not target.startswith("direct") and "x-amzn-requestid" not in hdr:
        raise BenchError(f"{where}: no x-amzn-RequestId header")


def openai_text(where: str, body: bytes, stream: bool) -> str:
    """The answer text of a Chat Completion, or of a Chat Completions stream (which must end with [DONE])."""
    try:
        if not stream:
            return json.loads(body)["choices"][0]["message"]["content"]
        events = [ln[6:] for ln in body.decode().splitlines() if ln.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            raise BenchError(f"{where}: the stream does not end with data: [DONE]: {body[-200:]!r}")
        chunks = [json.loads(e) for e in events[:-1]]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BenchError(f"{where}: not a Chat Completion{' stream' if stream else ''} ({e!r}): {body[:300]!r}") from None


def check_openai_answer(where: str, hdr: dict, body: bytes, fake: FakeUpstream, stream: bool) -> None:
    """A peer's Chat Completions answer carries the nginx fake's text, whole."""
    want = openai_text("the fake", fake.bodies["openai-stream" if stream else "openai"], stream)
    got = openai_text(where, body, stream)
    if got != want:
        raise BenchError(f"{where}: answer text differs from the fake's: {got[:120]!r} vs {want[:120]!r}")
    if stream and not hdr.get("content-type", "").startswith("text/event-stream"):
        raise BenchError(f"{where}: content-type {hdr.get('content-type')!r}")


def first_event_ms(base: str, req: Req, n: int = 100, discard: int = 5) -> float:
    """Median time from sending `req` to reading the first bytes of the answer's body, over `n`
    requests one after the other on one connection (http.client), after `discard` more. wrk times
    whole responses; this is when a streaming client sees its first event."""
    host, port = base.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    body, headers = read_body(req.body), {"content-type": "application/json", **req.headers}
    times = []
    try:
        for i in range(n + discard):
            t0 = time.perf_counter()
            c.request("POST", req.path, body=body, headers=headers)
            r = c.getresponse()
            first = r.read1(65536)
            t1 = time.perf_counter()
            rest = r.read()
            if r.status != 200 or not first:
                raise BenchError(f"first-event probe {base}{req.path}: HTTP {r.status}: {(first + rest)[:200]!r}")
            if i >= discard:
                times.append(t1 - t0)
    finally:
        c.close()
    return statistics.median(times) * 1000


# --- load ---------------------------------------------------------------------------------------

class Runner:
    def __init__(self, args, procs: Procs, wrk: str, fake: FakeUpstream, tmp: str, out: str,
                 backends: Backends | None = None):
        self.args, self.procs, self.wrk, self.fake, self.tmp, self.out = args, procs, wrk, fake, tmp, out
        self.backends = backends
        self.raw_dir = os.path.join(out, "raw")
        os.makedirs(self.raw_dir, exist_ok=True)
        self.bodies: dict[str, str] = {}   # body file name -> the stripped copy wrk reads
        self.runs: list[dict] = []
        self.failures: list[str] = []
        self.closed_conns = collections.Counter()  # base url -> connections wrk opened and dropped

    def body_file(self, name: str) -> str:
        if name not in self.bodies:
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(read_body(name))
            self.bodies[name] = path
        return self.bodies[name]

    def wrk_once(self, base: str, req: Req, conns: int, seconds: int, tag: str) -> dict:
        argv = [self.wrk, "-t", str(min(conns, self.args.threads)), "-c", str(conns), "-d", f"{seconds}s",
                "--timeout", "30s", "--latency", "-s", os.path.join(DATA, "wrk.lua"), base + req.path]
        self.closed_conns[base] += conns
        env = dict(os.environ, BENCH_BODY=self.body_file(req.body),
                   BENCH_HEADERS="".join(f"{k}: {v}\n" for k, v in req.headers.items()))
        p = self.procs.start("wrk", argv, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            out, _ = p.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            self.procs.stop(p, 5)
            raise BenchError(f"wrk {tag}: did not finish within {seconds + 60}s")
        self.procs.stop(p, 1)
        text = out.decode("utf-8", "replace")
        with open(os.path.join(self.raw_dir, f"{tag}.txt"), "w") as f:
            f.write(" ".join(argv) + "\n\n" + text)
        m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
        if p.returncode != 0 or not m:
            raise BenchError(f"wrk {tag}: exit {p.returncode}, no result line:\n{text[-2000:]}")
        res = json.loads(m.group(1))
        res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
        return res

    def warm(self, target: str, base: str, req: Req, route: str) -> None:
        if self.args.warmup > 0:
            conns = min(16, max(self.args.connections))
            r = self.wrk_once(base, req, conns, self.args.warmup, f"{target}-{route}-warmup")
            log(f"  warm-up {target} {route}: {r['rps']:.0f} rps (discarded)")
            self.check_errors(r, f"{target} {route} warm-up")

    def check_errors(self, r: dict, where: str) -> None:
        bad = {k: v for k, v in r["errors"].items() if v}
        if bad:
            what = ", ".join(f"{v} {'non-2xx responses' if k == 'status' else k + ' errors'}" for k, v in bad.items())
            msg = f"{where}: {what} (of {r['requests']} requests)"
            log("ERROR " + msg)
            self.failures.append(msg)

    def wait_quiet(self, gw: Gateway | None, limit: float = 60.0) -> None:
        """Wait (at most `limit` s) for a 1 s window where other processes use < --max-foreign-pct
        and the host steals < --max-steal-pct."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = Snapshot(gw.proc.pid if gw else None, self.fake.proc.pid, self.backends)
            time.sleep(1.0)
            after = Snapshot(gw.proc.pid if gw else None, self.fake.proc.pid, self.backends)
            ours = (after.gw.get("total", 0) - before.gw.get("total", 0) + after.nginx - before.nginx
                    + after.redis - before.redis + after.postgres - before.postgres + after.me - before.me)
            per_core = 100.0 / (CLK_TCK * (after.wall - before.wall))
            busy = (after.busy - before.busy - ours) * per_core
            if busy <= self.args.max_foreign_pct and (after.steal - before.steal) * per_core <= self.args.max_steal_pct:
                return
        log(f"  the machine did not become quiet within {limit:.0f}s; going on")

    def point(self, target: str, base: str, req: Req, route: str, conns: int, gw: Gateway | None) -> dict:
        a = self.args
        runs = []
        for run in range(a.runs):
            for attempt in range(a.retries + 1):
                tag = f"{target}-{route}-c{conns}-run{run + 1}" + (f"-retry{attempt}" if attempt else "")
                before = Snapshot(gw.proc.pid if gw else None, self.fake.proc.pid, self.backends)
                with MemorySampler(gw.proc.pid if gw else None) as mem:
                    r = self.wrk_once(base, req, conns, a.duration, tag)
                after = Snapshot(gw.proc.pid if gw else None, self.fake.proc.pid, self.backends)
                wall = after.wall - before.wall
                ours = {os.getpid(), *tree(self.fake.proc.pid), *(tree(gw.proc.pid) if gw else ())}
                if self.backends:
                    ours |= {*tree(self.backends.redis_pid() or -1), *tree(self.backends.postgres_pid() or -1)}
                ours |= {pid for pid, (comm, _) in after.all.items() if comm == "wrk"}
                gw_ticks = {k: after.gw.get(k, 0) - before.gw.get(k, 0) for k in set(after.gw) | set(before.gw)}
                ours_ticks = (gw_ticks.get("total", 0) + (after.nginx - before.nginx) + (after.children - before.children)
                        + (after.redis - before.redis) + (after.postgres - before.postgres) + (after.me - before.me))
                pct = 100.0 / (CLK_TCK * wall)
                rec = {"target": target, "route": route, "connections": conns, "run": run + 1, "attempt": attempt,
                       "requests": r["requests"], "rps": r["rps"], "errors": r["errors"],
                       "p50_ms": r["latency_us"]["p"]["50"] / 1000, "p90_ms": r["latency_us"]["p"]["90"] / 1000,
                       "p99_ms": r["latency_us"]["p"]["99"] / 1000, "max_ms": r["latency_us"]["max"] / 1000,
                       "mean_ms": r["latency_us"]["mean"] / 1000, "wall_s": wall,
                       "nginx_cpu_pct": (after.nginx - before.nginx) * pct,
                       "wrk_cpu_pct": (after.children - before.children) * pct,
                       "foreign_cpu_pct": max(0.0, (after.busy - before.busy - ours_ticks) * pct),
                       "foreign_top": foreign_top(before.all, after.all, ours, pct),
                       "steal_pct": (after.steal - before.steal) * pct}
                if gw:
                    n = max(1, r["requests"])
                    ms = 1000.0 / CLK_TCK
                    rec.update(cpu_ms_per_req=gw_ticks["total"] * ms / n,
                               frontend_cpu_ms_per_req=gw_ticks.get("frontend", 0) * ms / n,
                               worker_cpu_ms_per_req=gw_ticks.get("worker", 0) * ms / n,
                               actors_cpu_ms_per_req=sum(gw_ticks.get(k, 0) for k in ("ledger", "observer", "cache")) * ms / n,
                               observer_cpu_ms_per_req=gw_ticks.get("observer", 0) * ms / n,
                               supervisor_cpu_ms_per_req=(gw_ticks.get("supervisor", 0) + gw_ticks.get("reaped", 0)) * ms / n,
                               gateway_cpu_pct=gw_ticks["total"] * pct,
                               threads_cpu_ms_per_req={k: round(v * ms / n, 4) for k, v in sorted(gw_ticks.items())
                                                       if ":" in k},
                               rss_peak_mib=mem.peak[0], pss_peak_mib=mem.peak[1])
                    if target == "portkey":          # one Node process: no frontend/worker split
                        for k in ("frontend_cpu_ms_per_req", "worker_cpu_ms_per_req", "actors_cpu_ms_per_req",
                                  "observer_cpu_ms_per_req"):
                            del rec[k]
                    if target in SHARED:             # the shared servers' CPU, not in the gateway's total
                        rec.update(redis_cpu_ms_per_req=(after.redis - before.redis) * ms / n,
                                   postgres_cpu_ms_per_req=(after.postgres - before.postgres) * ms / n)
                self.check_errors(r, tag)
                if gw:
                    gw.check_stable()
                self.runs.append(rec)
                log(f"  {tag}: {r['rps']:9.1f} rps  p50 {rec['p50_ms']:7.3f} ms  p99 {rec['p99_ms']:8.3f} ms"
                    + (f"  cpu {rec['cpu_ms_per_req']:.3f} ms/req" if gw else "")
                    + f"  foreign {rec['foreign_cpu_pct']:.1f}%"
                + (f" ({', '.join(rec['foreign_top'])})" if rec["foreign_cpu_pct"] > 2 and rec["foreign_top"] else ""))
                noisy = (f"foreign CPU {rec['foreign_cpu_pct']:.1f}% of a core > {a.max_foreign_pct}%"
                         if rec["foreign_cpu_pct"] > a.max_foreign_pct else
                         f"CPU steal {rec['steal_pct']:.1f}% of a core > {a.max_steal_pct}% (the host took the CPU)"
                         if rec["steal_pct"] > a.max_steal_pct else "")
                if not noisy:
                    break
                if attempt < a.retries:
                    log(f"  {noisy}: repeating once the machine is quiet")
                    self.wait_quiet(gw)
                else:
                    rec["foreign_flag"] = True
                    log(f"  {noisy} after {a.retries} retries; keeping it (flagged)")
            runs.append(rec)
        return summarize(runs)


def summarize(runs: list[dict]) -> dict:
    med = {}
    for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_ms_per_req", "frontend_cpu_ms_per_req",
              "worker_cpu_ms_per_req", "actors_cpu_ms_per_req", "observer_cpu_ms_per_req",
              "supervisor_cpu_ms_per_req", "gateway_cpu_pct", "redis_cpu_ms_per_req", "postgres_cpu_ms_per_req"):
        vals = [r[k] for r in runs if k in r]
        if vals:
            med[k] = statistics.median(vals)
    if "threads_cpu_ms_per_req" in runs[0]:
        keys = sorted({k for r in runs for k in r["threads_cpu_ms_per_req"]})
        med["threads_cpu_ms_per_req"] = {k: statistics.median(r["threads_cpu_ms_per_req"].get(k, 0) for r in runs)
                                         for k in keys}
        med["zmq_io_cpu_ms_per_req"] = sum(v for k, v in med["threads_cpu_ms_per_req"].items() if k.endswith(":zmq"))
    first = runs[0]
    med.update(target=first["target"], route=first["route"], connections=first["connections"],
               runs=len(runs), rps_min=min(r["rps"] for r in runs), rps_max=max(r["rps"] for r in runs),
               foreign_cpu_pct_max=max(r["foreign_cpu_pct"] for r in runs),
               foreign_flagged=sum(1 for r in runs if r.get("foreign_flag")),
               requests=sum(r["requests"] for r in runs))
    if "rss_peak_mib" in first:
        med["rss_peak_mib"] = max(r["rss_peak_mib"] for r in runs)
        med["pss_peak_mib"] = max(r["pss_peak_mib"] for r in runs)
    return med


# --- profiling --------------------------------------------------------------------------------

def profile(runner: Runner, gw: Gateway, route: str, seconds: int, conns: int, rate: int,
            gil: bool = False) -> list[dict]:
    """py-spy every frontend, worker and ledger actor of `gw` while wrk loads `route`; summaries of each."""
    pyspy = ensure_pyspy()
    pdir = os.path.join(runner.out, "profile")
    os.makedirs(pdir, exist_ok=True)
    result: dict = {}
    err: list = []

    def load():
        try:
            result["wrk"] = runner.wrk_once(gw.url, request_for(gw.scenario, route, runner.fake.url), conns, seconds + 3,
                                            f"profile-{gw.scenario}-{route}-c{conns}" + ("-gil" if gil else ""))
        except BenchError as e:
            err.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    time.sleep(1.0)
    spies = []
    counts = collections.Counter()
    for pid, role in sorted(gw.pids.items()):
        if role not in ("frontend", "worker", "ledger"):
            continue
        counts[role] += 1
        name = f"{gw.scenario}-{route}-{role}{counts[role]}-{pid}" + ("-gil" if gil else "")
        path = os.path.join(pdir, f"{name}.txt")
        p = runner.procs.start("py-spy", [pyspy, "record", "--nonblocking", "--rate", str(rate), "--duration",
                                          str(seconds), "-f", "raw", "-o", path, "--pid", str(pid)]
                               + (["--gil"] if gil else []),
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(pdir, f"{name}.log"), "wb"))
        spies.append((name, role, pid, path, p))
    for _, _, _, _, p in spies:
        try:
            p.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            pass
        runner.procs.stop(p, 5)
    t.join(seconds + 90)
    if err:
        raise err[0]
    if "wrk" in result:
        runner.check_errors(result["wrk"], f"profile {gw.scenario} {route}")
        log(f"  profile load: {result['wrk']['rps']:.0f} rps under py-spy (rate {rate} Hz)")
    out = []
    for name, role, pid, path, _ in spies:
        if not os.path.exists(path):
            log(f"  py-spy wrote nothing for {name}; see {pdir}/{name}.log")
            continue
        s = summarize_profile(path)
        s.update(name=name, role=role, pid=pid, scenario=gw.scenario, route=route, gil=gil, connections=conns)
        out.append(s)
    return out


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def component(path: str) -> str:
    """A frame's file (as py-spy prints it, relative to sys.path) -> a component name:
    finops.<module> for our code, stdlib:<module>, or the third-party top-level package."""
    p = short(path)
    if p.startswith("<frozen "):
        return "stdlib:" + p[8:].rstrip(">")
    if p.startswith("<"):
        return p
    top = p.split("/", 1)[0].removesuffix(".py")
    if top in ("frontend", "workers", "shared"):
        return "finops." + p.removesuffix(".py").replace("/", ".")
    if top in sys.stdlib_module_names:
        return "stdlib:" + top
    return top


def summarize_profile(path: str) -> dict:
    """Self and inclusive sample shares of a py-spy raw (collapsed) file."""
    self_fn, self_comp, layer_comp, self_owner, incl = (collections.Counter() for _ in range(5))
    total = complete = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            n = int(n)
            frames = []
            for fr in stack.split(";"):
                m = _FRAME.match(fr.strip())
                if m:
                    frames.append((m.group("func"), m.group("file")))
            if not frames:
                continue
            total += n
            if frames[0][0] in ("_run_module_as_main", "<module>"):
                complete += n  # py-spy --nonblocking sometimes reads a torn, partial stack
            func, file = frames[-1]
            self_fn[f"{func} ({short(file)})"] += n
            self_comp[component(file)] += n
            # the same, with stdlib frames charged to their caller (json under requestlog -> requestlog)
            layer_comp[next((c for c in (component(fl) for _, fl in reversed(frames))
                             if not c.startswith(("stdlib:", "<"))), "stdlib/runtime")] += n
            # the innermost frame that is neither stdlib nor trio's own machinery: "who asked for it"
            owner = next((f"{fn} ({short(fl)})" for fn, fl in reversed(frames)
                          if not component(fl).startswith(("stdlib:", "trio", "outcome", "sniffio"))), "(runtime)")
            self_owner[owner] += n
            for key in {f"{fn} ({short(fl)})" for fn, fl in frames}:
                incl[key] += n
    pct = (lambda c: [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(25)]) if total else (lambda c: [])
    return {"samples": total, "complete_pct": round(100.0 * complete / total, 1) if total else 0.0,
            "self_functions": pct(self_fn), "self_components": pct(self_comp),
            "self_components_stdlib_to_caller": pct(layer_comp),
            "owner_functions": pct(self_owner), "inclusive_functions": pct(incl)}


def short(path: str) -> str:
    """A path relative to its sys.path entry (py-spy usually prints it that way already)."""
    p = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in p:
            return p.split(marker, 1)[1]
    m = re.search(r"/python3\.\d+/(?:lib-dynload/)?(.*)$", p)
    if m:
        return m.group(1)
    m = re.search(r"(?:^|/)((?:frontend|workers|shared)/[^/].*)$", p)
    return m.group(1) if m else p


def profile_markdown(profiles: list[dict]) -> str:
    lines = ["# py-spy profiles", "",
             "Sleeping threads are never counted. Without --gil a sample counts whenever the thread is running "
             "or runnable, so a thread preempted right after waking another (socket or ZeroMQ sends, on a busy "
             "2-core box) inflates those call sites; \"GIL held only\" profiles count Python's own CPU time. "
             "Percentages are of all samples of that process; stacks py-spy read only partly (--nonblocking) "
             "still count for self time.", ""]
    for s in profiles:
        lines += [f"## {s['scenario']} {s['route']}, {s['connections']} connections: {s['role']} pid {s['pid']} "
                  f"({s['samples']} samples{', GIL held only' if s['gil'] else ''}; "
                  f"{s['complete_pct']}% with a complete stack)", ""]
        for title, key in (("self time by component", "self_components"),
                           ("self time by component, stdlib frames charged to their caller",
                            "self_components_stdlib_to_caller"),
                           ("self time by function (innermost frame)", "self_functions"),
                           ("self time by innermost non-stdlib, non-trio frame", "owner_functions"),
                           ("inclusive (frame anywhere on the stack)", "inclusive_functions")):
            lines += [f"**{title}**", "", "| % | where |", "|---:|---|"]
            lines += [f"| {v} | `{k}` |" for k, v in s[key][:20]]
            lines.append("")
    return "\n".join(lines)


# --- report -----------------------------------------------------------------------------------

def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def signed(v, nd=3):
    return "–" if v is None else f"{v:+.{nd}f}"


def baseline(target: str) -> str:
    """The direct target a target's added latency is measured against (the same upstream)."""
    return "direct-slow" if target.endswith("-slow") else "direct"


def report(points: list[dict], meta: dict) -> tuple[str, list[dict], list[dict]]:
    by = {(p["target"], p["route"], p["connections"]): p for p in points}
    conns = sorted({p["connections"] for p in points})
    routes = [r for r in ROUTES if any(p["route"] == r for p in points)]
    targets = [s for s in ("direct", "direct-slow") + SCENARIOS if any(p["target"] == s for p in points)]
    for p in points:
        d = by.get((baseline(p["target"]), p["route"], p["connections"]))
        p["added_p50_ms"] = p["p50_ms"] - d["p50_ms"] if d and d is not p else None
        p["added_p99_ms"] = p["p99_ms"] - d["p99_ms"] if d and d is not p else None
    goals = bench_goals.evaluate(points, meta.get("gateways", []), meta.get("first_event_ms", {}))
    a = meta["args"]
    out = [f"# FinOps gateway benchmark, {meta['started_utc']}", "",
           f"{meta['machine']['cpus']} CPU {meta['machine']['cpu_model']}, {meta['machine']['mem_gib']} GiB; "
           f"{meta['versions']['nginx']}; {meta['versions']['wrk']}; git {meta['git']}. "
           f"Gateway: {a['workers']} workers, {a['frontends']} frontend. Each point: median of {a['runs']} runs "
           f"of {a['duration']} s (after {a['warmup']} s warm-up per target and route); wrk -t{a['threads']}.", "",
           "`portkey` = Portkey's gateway (Node, one process) -> nginx fake, the same conversation as OpenAI Chat "
           "Completions (its added latency is against direct on the Converse route); `bare` = the design's bare "
           "path (scripts/bare_path.py: Hypercorn-trio -> ZeroMQ -> trio workers -> back, nothing parsed, no "
           "upstream: the floor); `production` = bedrock behind an enforced virtual key with a budget and a rate "
           "limit, request log on (what production runs); `production-redis` = the same with the ledger on Redis. "
           "`bedrock` = gateway -> bedrock provider -> nginx fake (SigV4 re-signing); `openai` = the same requests "
           "translated to Chat Completions -> nginx fake; `weighted` = the openai traffic over two weighted "
           "targets; `mock` = built-in mock provider, no upstream; `governed` = mock behind a virtual key with a "
           "budget and rate limits (ledger reserve + settle); `governed-redis` = the same with the ledger on a local Redis "
           "(settled spend to a local PostgreSQL; their CPU is reported apart, not in the gateway's); `mock-pglog` = mock "
           "with the request log on that PostgreSQL (`log_store = \"postgres\"`; compare its observer CPU with mock's); `nolog` = mock with the request log (and the metrics it "
           "feeds) off, so mock minus nolog is what logging costs; `bedrock-slow` = bedrock against the fake's server that "
           "answers after 50 ms, `direct-slow` = wrk -> that server; `direct` = wrk -> nginx fake. Added = gateway minus "
           "direct (direct-slow for bedrock-slow) at the same connection count; past saturation it is queueing (wrk is "
           "closed-loop).", "",
           "| route | target | conns | rps | p50 ms | added p50 ms | p99 ms | CPU ms/req |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for route in routes:
        for t in targets:
            for c in conns:
                p = by.get((t, route, c))
                if p:
                    flag = " †" if p.get("foreign_flagged") else ""
                    out.append(f"| {route} | {t} | {c}{flag} | {fmt(p['rps'], 1)} | {fmt(p['p50_ms'], 3)} | "
                               f"{signed(p['added_p50_ms'])} | "
                               f"{fmt(p['p99_ms'], 3)} | {fmt(p.get('cpu_ms_per_req'), 3)} |")
    if any(p.get("foreign_flagged") for p in points):
        out += ["", f"† a run of this point kept more than {a['max_foreign_pct']:.0f}% of a core of foreign CPU, "
                f"or more than {a.get('max_steal_pct', 5):.0f}% of CPU steal, after its retries (another job on "
                "the machine or the host); see results.json."]
    for name, why in meta.get("skipped", {}).items():
        out += ["", f"Not measured: `{name}`: {why}."]
    if meta.get("first_event_ms"):
        fe = meta["first_event_ms"]
        out += ["", "First event of a ConverseStream (Portkey: of its Chat Completions stream), one connection: "
                "median time from the request to the first bytes of the body over 100 requests (http.client); "
                "added against the direct target on the same upstream.", "",
                "| target | first event ms | added ms |", "|---|---:|---:|"]
        for t in targets:
            if t in fe:
                b = fe.get(baseline(t)) if not t.startswith("direct") else None
                out.append(f"| {t} | {fe[t]:.3f} | {signed(fe[t] - b if b is not None else None)} |")
    out += [""] + bench_goals.markdown(goals)
    out += ["", "Details: rps range over the runs, CPU by process role (and the part spent in ZeroMQ's I/O "
            "threads, all roles; actors = ledger, observer and cache), foreign CPU (other processes, % of one "
            "core, worst run) and gateway peak RSS.", "",
            "| route | target | conns | rps min–max | p90 ms | frontend ms/req | workers ms/req | actors ms/req "
            "(of which observer) | of which ZeroMQ I/O threads | gateway CPU % | foreign CPU % | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for route in routes:
        for t in targets:
            for c in conns:
                p = by.get((t, route, c))
                if p:
                    out.append(f"| {route} | {t} | {c} | {fmt(p['rps_min'], 0)}–{fmt(p['rps_max'], 0)} | "
                               f"{fmt(p['p90_ms'], 3)} | {fmt(p.get('frontend_cpu_ms_per_req'), 3)} | "
                               f"{fmt(p.get('worker_cpu_ms_per_req'), 3)} | {fmt(p.get('actors_cpu_ms_per_req'), 3)} "
                               f"({fmt(p.get('observer_cpu_ms_per_req'), 3)}) | {fmt(p.get('zmq_io_cpu_ms_per_req'), 3)} | "
                               f"{fmt(p.get('gateway_cpu_pct'), 0)} | "
                               f"{fmt(p['foreign_cpu_pct_max'], 1)} | {fmt(p.get('rss_peak_mib'), 1)} |")
    shared = [p for p in points if "redis_cpu_ms_per_req" in p]
    if shared:
        out += ["", f"{', '.join(SHARED)}: the shared servers' CPU per request, beside the gateway's (not included "
                "in it).", "",
                "| route | target | conns | gateway CPU ms/req | of which observer | Redis CPU ms/req | PostgreSQL CPU ms/req |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for p in shared:
            out.append(f"| {p['route']} | {p['target']} | {p['connections']} | {fmt(p.get('cpu_ms_per_req'), 3)} | "
                       f"{fmt(p.get('observer_cpu_ms_per_req'), 3)} | "
                       f"{fmt(p['redis_cpu_ms_per_req'], 3)} | {fmt(p.get('postgres_cpu_ms_per_req'), 3)} |")
    verdicts = []
    out += ["", f"Targets: added p50 <= {TARGETS['added_p50_ms_at_1']} ms at 1 connection, CPU <= "
            f"{TARGETS['cpu_ms_per_req']} ms/req (worst point), >= {TARGETS['max_rps']:.0f} rps (best point).", "",
            "| target | route | added p50 @1 ms | CPU ms/req (worst) | max rps | verdict |", "|---|---|---:|---:|---:|---|"]
    for t in targets:
        if t in PEERS or t.startswith("direct"):
            continue
        for route in routes:
            ps = [by[(t, route, c)] for c in conns if (t, route, c) in by]
            if not ps:
                continue
            one = by.get((t, route, 1))
            added = one["added_p50_ms"] if one else None
            cpu = max(p["cpu_ms_per_req"] for p in ps)
            rps = max(p["rps"] for p in ps)
            checks = {"added_p50": added is not None and added <= TARGETS["added_p50_ms_at_1"],
                      "cpu": cpu <= TARGETS["cpu_ms_per_req"], "rps": rps >= TARGETS["max_rps"]}
            missed = [k for k, ok in checks.items() if not ok]
            verdicts.append({"target": t, "route": route, "added_p50_ms_at_1": added, "cpu_ms_per_req_worst": cpu,
                             "max_rps": rps, "met": not missed, "missed": missed})
            out.append(f"| {t} | {route} | {signed(added)} {'ok' if checks['added_p50'] else 'MISS'} | "
                       f"{fmt(cpu, 3)} {'ok' if checks['cpu'] else 'MISS'} | {fmt(rps, 0)} "
                       f"{'ok' if checks['rps'] else 'MISS'} | {'met' if not missed else 'missed: ' + ', '.join(missed)} |")
    if meta.get("gateways"):
        out += ["", "| gateway | ready s | idle RSS / PSS MiB | peak RSS / PSS MiB | after load RSS MiB | processes |",
                "|---|---:|---:|---:|---:|---|"]
        for g in meta["gateways"]:
            out.append(f"| {g['scenario']} | {g['ready_s']:.2f} | {g['idle_rss_mib']:.1f} / {g['idle_pss_mib']:.1f} | "
                       f"{g['peak_rss_mib']:.1f} / {g['peak_pss_mib']:.1f} | {g['after_rss_mib']:.1f} | "
                       f"{g['processes']} |")
    return "\n".join(out) + "\n", verdicts, goals


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem = 0
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/dev bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per point; the median is reported (default 3)")
    ap.add_argument("--warmup", type=int, default=3, help="discarded warm-up seconds per target and route (default 3)")
    ap.add_argument("--connections", type=lambda s: [int(x) for x in csv(s)], default=[1, 16, 64],
                    help="comma-separated connection counts (default 1,16,64)")
    ap.add_argument("--routes", type=csv, default=["converse", "converse-stream"],
                    help=f"comma-separated, of {', '.join(ROUTES)} (default converse,converse-stream)")
    ap.add_argument("--scenarios", type=csv, default=list(SCENARIOS),
                    help="targets beside direct: portkey (Portkey 1.15.2 from npm, OpenAI chat route, against the nginx fake; skipped without node/npm), bare (the design's bare path, scripts/bare_path.py), production (bedrock with an enforced virtual key, budget, rate limit and the request log), production-redis (production with the ledger on a local Redis + PostgreSQL), bedrock-slow (bedrock against the fake's +50 ms server, beside direct-slow), bedrock (nginx fake upstream), openai (nginx fake Chat Completions), mock (no upstream), governed (mock with a virtual key, budget and rate limit), governed-redis (governed with the ledger on a local Redis + PostgreSQL), mock-pglog (mock with the request log on a local PostgreSQL), weighted (the openai upstream over two weighted targets), nolog (mock without the request log) (default all)")
    ap.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    ap.add_argument("--frontends", type=int, default=1, help="gateway frontend processes (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1, as in docs/peers.md)")
    ap.add_argument("--max-foreign-pct", type=float, default=10.0,
                    help="repeat a run whose foreign CPU exceeds this %% of one core (default 10)")
    ap.add_argument("--max-steal-pct", type=float, default=5.0,
                    help="repeat a run whose CPU steal (the hypervisor running another guest) exceeds this %% of "
                         "one core (default 5): CPU per request rises with steal on the same code")
    ap.add_argument("--retries", type=int, default=2,
                    help="repeats allowed per run for foreign CPU or steal (default 2)")
    ap.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                    help="after measuring each scenario, py-spy its frontend, workers and ledger actor for SECONDS under load")
    ap.add_argument("--profile-route", default="converse", help="route loaded while profiling (default converse)")
    ap.add_argument("--profile-connections", type=int, default=16, help="connections while profiling (default 16)")
    ap.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)")
    ap.add_argument("--profile-mode", choices=("wall", "gil", "both"), default="both",
                    help="wall: every sample of a running thread (py-spy's default), which also counts a thread "
                         "in a syscall or preempted right after it woke another (a socket or ZeroMQ send), so it "
                         "inflates those call sites on a busy 2-core box; gil: py-spy --gil, only samples holding "
                         "the GIL, i.e. Python's own CPU time; both (default): one after the other")
    ap.add_argument("--out", help="results directory (default bench-results/<UTC timestamp>)")
    ap.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing nginx/wrk")
    a = ap.parse_args(argv)
    bad = [r for r in a.routes + [a.profile_route] if r not in ROUTES] + [s for s in a.scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown route or scenario: {', '.join(bad)}")
    if a.duration < 1 or a.runs < 1 or a.warmup < 0 or not a.connections or min(a.connections) < 1:
        ap.error("--duration and --runs must be >= 1, --warmup >= 0, connections >= 1")
    if a.retries < 0 or a.retries > 5:
        ap.error("--retries must be 0..5")
    return a


def ensure_portkey() -> str | None:
    """Install Portkey (or reuse the cache); None when it can run, else why not."""
    found = portkey.tools()
    if not found:
        return "node or npm is not on PATH (install Node.js 20 with npm to measure Portkey)"
    try:
        portkey.install(found[1], log)
    except portkey.PortkeyError as e:
        return str(e)
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    out = os.path.abspath(args.out or os.path.join(ROOT, "bench-results", started.strftime("%Y%m%dT%H%M%SZ")))
    os.makedirs(out, exist_ok=True)
    nginx, wrk = ensure_tools(not args.no_install)
    if args.profile:
        ensure_pyspy()
    skipped = {}
    if "portkey" in args.scenarios:
        why = ensure_portkey()
        if why:
            log(f"portkey: {why}; skipping it")
            skipped["portkey"] = why
            args.scenarios = [s for s in args.scenarios if s != "portkey"]
    if "bedrock-slow" in args.scenarios and not os.path.exists(ECHO_MODULE):
        why = f"nginx's echo module is missing ({ECHO_MODULE}; apt-get install libnginx-mod-http-echo)"
        log(f"bedrock-slow: {why}; skipping it")
        skipped["bedrock-slow"] = why
        args.scenarios = [s for s in args.scenarios if s != "bedrock-slow"]
    points_n = (1 + len(args.scenarios) + ("bedrock-slow" in args.scenarios)) * len(args.routes) * len(args.connections)
    est = points_n * args.runs * args.duration + (1 + len(args.scenarios)) * len(args.routes) * args.warmup
    est += len(args.scenarios) * ((args.profile + 6) * (2 if args.profile_mode == "both" else 1) + 5)
    log(f"{points_n} points x {args.runs} runs x {args.duration}s: about {est / 60:.1f} minutes; results in {out}")

    meta = {"started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"), "args": vars(args), "machine": machine_info(),
            "versions": {"nginx": tool_version([nginx, "-v"]), "wrk": tool_version([wrk, "-v"]),
                         "python": sys.version.split()[0]},
            "git": git_rev(), "targets": TARGETS, "gateways": [], "skipped": skipped,
            "first_event_ms": {}}
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="finops-bench-")
    points: list[dict] = []
    profiles: list[dict] = []
    runner = None
    backends = None

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGHUP, on_term)

    def save(final: bool):
        table, verdicts, goals = report(points, meta) if points else ("(no points measured)\n", [], [])
        doc = {"meta": meta, "points": points, "runs": runner.runs if runner else [], "verdicts": verdicts,
               "goals": goals,
               "profiles": profiles, "failures": runner.failures if runner else [], "complete": final}
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(out, "table.md"), "w") as f:
            f.write(table)
        if profiles:
            with open(os.path.join(out, "profile-summary.md"), "w") as f:
                f.write(profile_markdown(profiles))
        return table

    code = 0
    try:
        fake = FakeUpstream(procs, nginx, tmp, out, slow="bedrock-slow" in args.scenarios).start()
        if any(s in SHARED for s in args.scenarios):
            backends = Backends(tmp).start()
        runner = Runner(args, procs, wrk, fake, tmp, out, backends)
        for direct, url in (("direct", fake.url), ("direct-slow", fake.slow_url)):
            if not url:
                continue
            log(f"{direct} (wrk -> nginx fake{', +50 ms' if direct == 'direct-slow' else ''})")
            for route in args.routes:
                preflight(direct, url, route, fake)
                req = request_for(direct, route, fake.url)
                runner.warm(direct, url, req, route)
                for c in args.connections:
                    points.append(runner.point(direct, url, req, route, c, None))
                if route == "converse-stream":
                    meta["first_event_ms"][direct] = first_event_ms(url, req)
                    log(f"  {direct} first event: {meta['first_event_ms'][direct]:.3f} ms (median, 1 connection)")
        save(False)
        for scenario in args.scenarios:
            routes = [r for r in args.routes if request_for(scenario, r, fake.url)]
            if routes != args.routes:
                log(f"{scenario}: no {', '.join(r for r in args.routes if r not in routes)} route; measuring "
                    f"{', '.join(routes) or 'nothing'}")
            if not routes:
                continue
            if scenario in PEERS:
                gw = PeerServer(procs, scenario, args, fake, tmp, out).start()
            else:
                gw = Gateway(procs, scenario, args, fake, tmp, out, backends).start()
            try:
                time.sleep(1.0)
                idle = tree_memory(gw.proc.pid)
                for route in routes:
                    preflight(scenario, gw.url, route, fake)
                peak = idle
                for route in routes:
                    req = request_for(scenario, route, fake.url)
                    runner.warm(scenario, gw.url, req, route)
                    for c in args.connections:
                        p = runner.point(scenario, gw.url, req, route, c, gw)
                        points.append(p)
                        peak = (max(peak[0], p["rss_peak_mib"]), max(peak[1], p["pss_peak_mib"]))
                    if route == "converse-stream":
                        meta["first_event_ms"][scenario] = first_event_ms(gw.url, req)
                        log(f"  {scenario} first event: {meta['first_event_ms'][scenario]:.3f} ms (median, 1 connection)")
                after = tree_memory(gw.proc.pid)
                if args.profile and scenario != "portkey":   # py-spy reads Python processes only
                    for gil in {"wall": [False], "gil": [True], "both": [False, True]}[args.profile_mode]:
                        log(f"profiling {scenario} {args.profile_route} for {args.profile}s"
                            + (" (GIL-held samples only)" if gil else ""))
                        profiles.extend(profile(runner, gw, args.profile_route, args.profile,
                                                args.profile_connections, args.profile_rate, gil))
                gw.check_stable()
                outcomes = gw.outcomes()
                if scenario not in PEERS:
                    log(f"gateway ({scenario}) request log outcomes: {dict(outcomes)}")
                # wrk stops with up to `connections` requests in flight and drops those connections;
                # the gateway rightly logs them "cancelled". More than that is a real failure.
                allowed = runner.closed_conns[gw.url]
                not_ok = {k: v for k, v in outcomes.items()
                          if k != "ok" and not (k == "cancelled" and v <= allowed)}
                if not_ok:
                    runner.failures.append(f"{scenario}: the workers logged requests that failed: {not_ok}")
                meta["gateways"].append({"scenario": scenario, "peer": scenario in PEERS,
                                         "ready_s": gw.ready_s, "idle_rss_mib": idle[0],
                                         "idle_pss_mib": idle[1], "peak_rss_mib": peak[0], "peak_pss_mib": peak[1],
                                         "after_rss_mib": after[0], "outcomes": dict(outcomes),
                                         "processes": ", ".join(f"{r}" for r in sorted(gw.pids.values()))})
            finally:
                gw.stop()
            save(False)
        table = save(True)
        print(table)
        if profiles:
            for s in profiles:
                top = ", ".join(f"{k} {v}%" for k, v in s["self_components_stdlib_to_caller"][:6])
                log(f"py-spy {s['scenario']} {s['route']} {s['role']} pid {s['pid']}"
                    f"{' (GIL held)' if s['gil'] else ''}: {top}")
            log(f"py-spy summaries: {out}/profile-summary.md")
        if runner.failures:
            log("FAILED checks:\n  " + "\n  ".join(runner.failures))
            code = 1
    except BenchError as e:
        log(f"FAILED: {e}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        if backends is not None:
            backends.stop()
        if code and (points or profiles):
            try:
                save(False)
            except Exception as e:  # noqa: BLE001 - never mask the real failure
                log(f"could not save partial results: {e}")
        for name in ("nginx/nginx-error.log",):
            src = os.path.join(tmp, name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(out, os.path.basename(name)))
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"results: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
