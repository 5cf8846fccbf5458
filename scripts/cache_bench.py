#!/usr/bin/env python3
"""Cache harness: what the response cache costs and saves per request, against the real processes.

    .venv/bin/python scripts/cache_bench.py                     10,000 entries, 200 requests a phase
    .venv/bin/python scripts/cache_bench.py --entries 1000 --requests 100
    .venv/bin/python scripts/cache_bench.py --help              every option

It measures the cache's speed goals: a semantic hit end to end <= 20 ms at 10,000 entries; a miss
adds at most one embedding (about 15 ms), and nothing when only the exact layer is on; the cache
actor's RSS stays under 300 MB (workers embed, the actor owns the index).

Method:

- Three gateways (`finops serve`, real processes, `--workers` workers, one frontend, the built-in
  mock provider, a temporary data directory each), one after the other:
    off      no route caches: no cache actor, workers without the embedder;
    exact    `[cache] embedding_model = "none"`: the exact layer only, workers without the model;
    cache    three routes: `nocache.*` (no [routes.cache]), `exact.*` (`semantic = false`) and
             `semantic.*` (the default semantic cache), workers with MiniLM loaded.
  Routes that cache get `ttl_seconds = 3600` and `max_entries` above what the run stores, so no
  entry expires or is evicted during the run.
- Fill: `--entries` distinct questions from templates ("How do I {verb} {a} {thing} in {lang}?"),
  embedded here with the gateway's own MiniLM int8 embedder (the vectors are cached under
  ~/.cache/finops/cache-bench/, keyed by the model and the questions), are sent straight to the
  cache actor as `put` messages over its ZeroMQ socket, in the scope the measured `semantic.*`
  requests have (keys.scope_key of the parsed Converse body, owner "anonymous"), each with a
  recorded answer shaped like the mock's (the body of one real answer, its text replaced by what
  the mock would say). All of them share one scope: the worst case for the scoped search. Then
  `GET /admin/cache` must report them.
- Phases: a boto3 bedrock-runtime client (one connection, sequential requests) sends `--requests`
  Converse requests per phase after `--warmup` unmeasured ones; latency is the wall time of
  `client.converse()`. Misses are unique questions of random words (so no miss is similar to
  another or to a stored question); a semantic hit is a paraphrase of a stored question ("What's
  the way to {verb} {a} {lang} {thing}?"), counted correct when the replayed answer is the stored
  question's; an exact hit repeats a stored question. The `x-bf-cache` verdict of every answer is
  counted.
- Gateway CPU per request: utime+stime from /proc/<pid>/stat of `finops serve` and every
  descendant (plus what it reaped), before and after each phase, divided by the phase's requests;
  also split into workers, the cache actor and the frontend.
- Memory: VmRSS (and VmHWM) from /proc/<pid>/status of the cache actor (empty, and with the
  entries), of each worker per gateway.
- References measured here: the MiniLM embedding of the same texts in this process, one thread;
  `CacheIndex.search` at `--entries` vectors (all in one scope, and spread ten per scope); and
  the cache actor's round trip for `get` and `search` over ZeroMQ from this script.

Output: progress on stderr; a markdown report on stdout (and --json FILE for the figures).
Everything listens on 127.0.0.1; every process started here is stopped on exit (SIGTERM, then
SIGKILL, matched by pid and start time), and the script checks none is left.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from procstat import read_stat, tree  # noqa: E402  (scripts/, beside this file)

try:
    import boto3
    import msgpack
    import numpy as np
    import zmq
    from botocore.config import Config as BotoConfig

    from finops.shared import transport
    from finops.workers.formats.bedrock import converse
    from finops.workers.cache import embedder as embeddermod
    from finops.workers.cache import keys
    from finops.workers.cache.index import CacheIndex, Entry
    from finops.workers.cache.service import recorded_answer
except ImportError as e:  # pragma: no cover
    sys.exit(f"cache_bench: {e}; run it with the project's venv: .venv/bin/python scripts/cache_bench.py")

ADMIN = "cache-bench-admin-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPSTREAM_MODEL = "bench-model"
MODELS = {"nocache": "nocache.bench-v1", "exact": "exact.bench-v1", "semantic": "semantic.bench-v1",
          "slow": "slow.bench-v1"}
MAX_TOKENS = 64
VERBS = ["sort", "reverse", "copy", "merge", "split", "filter", "serialize", "parse", "hash", "compress",
         "encrypt", "validate", "flatten", "shuffle", "deduplicate", "iterate over", "initialize", "clear",
         "clone", "compare", "print", "convert", "read", "write", "search", "index", "slice", "encode",
         "decode", "benchmark"]
THINGS = ["list", "dictionary", "string", "file", "array", "tree", "queue", "matrix", "date", "socket", "set",
          "stack", "map", "tuple", "JSON document", "CSV file", "byte buffer", "linked list", "hash table",
          "graph", "vector", "timestamp", "URL", "regular expression", "integer", "float", "enum", "struct",
          "iterator", "stream"]
LANGS = ["Python", "Java", "Rust", "Go", "C++", "JavaScript", "TypeScript", "Ruby", "Kotlin", "Haskell",
         "Swift", "C#", "PHP", "Scala", "Elixir", "Perl", "Lua", "Dart", "Julia", "R", "Clojure", "OCaml",
         "Zig", "Erlang", "F#"]
MAX_ENTRIES = len(VERBS) * len(THINGS) * len(LANGS)


def log(msg: str) -> None:
    print(f"[cache_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A check failed; the message says which."""


# --- questions ------------------------------------------------------------------------------

def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def templates(n: int, seed: int) -> list[tuple[str, str, str]]:
    """n distinct (verb, thing, lang) triples, in a seeded random order."""
    combos = list(itertools.product(VERBS, THINGS, LANGS))
    random.Random(seed).shuffle(combos)
    return combos[:n]


def stored_question(v: str, t: str, lang: str) -> str:
    return f"How do I {v} {article(t)} {t} in {lang}?"


def paraphrase(v: str, t: str, lang: str) -> str:
    return f"What's the way to {v} {article(lang)} {lang} {t}?"


class RandomQuestions:
    """Unique questions of random words from the tokenizer's vocabulary: similar to nothing."""

    def __init__(self, seed: int):
        path = embeddermod.DEFAULT_TOKENIZER
        with open(path) as f:
            vocab = json.load(f)["model"]["vocab"]
        self.words = sorted(w for w in vocab if w.isalpha() and w.isascii() and w.islower() and 4 <= len(w) <= 10)
        self.rng = random.Random(seed)
        self.seen: set[str] = set()

    def take(self, n: int) -> list[str]:
        out = []
        while len(out) < n:
            ws = self.rng.sample(self.words, 7)
            q = f"{ws[0].capitalize()} {' '.join(ws[1:])}?"
            if q not in self.seen:
                self.seen.add(q)
                out.append(q)
        return out


def converse_doc(text: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], "inferenceConfig": {"maxTokens": MAX_TOKENS}}


def cache_keys(model_id: str, text: str) -> tuple[str, str, str]:
    """(scope, exact, question) of a Converse request with `text`, as a worker computes them."""
    ctx, question = keys.split(converse.parse_request(converse_doc(text)))
    scope = keys.scope_key("converse", model_id, keys.owner(None), ctx)
    return scope, keys.exact_key(scope, question), question


def embed_all(emb, texts: list[str], threads: int = 2) -> np.ndarray:
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return np.stack(list(ex.map(emb.embed, texts, chunksize=64)))


def vectors_for(emb, texts: list[str], use_cache: bool) -> np.ndarray:
    """MiniLM vectors of `texts`, from the on-disk cache when the model and texts are the same."""
    h = hashlib.sha256((emb.model_id + "\0" + "\n".join(texts)).encode()).hexdigest()[:16]
    d = os.path.join(os.path.expanduser("~"), ".cache", "finops", "cache-bench")
    path = os.path.join(d, f"vectors-{len(texts)}-{h}.npy")
    if use_cache and os.path.exists(path):
        log(f"vectors of {len(texts)} stored questions from {path}")
        return np.load(path)
    t0 = time.monotonic()
    log(f"embedding {len(texts)} stored questions (2 threads) ...")
    vecs = embed_all(emb, texts)
    log(f"embedded in {time.monotonic() - t0:.1f}s")
    if use_cache:
        os.makedirs(d, exist_ok=True)
        np.save(path + ".tmp.npy", vecs)
        os.replace(path + ".tmp.npy", path)
    return vecs


# --- statistics -----------------------------------------------------------------------------

def dist(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=float)
    if not len(a):
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "max": float("nan")}
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}


def fmt(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.{nd}f}"


# --- /proc ----------------------------------------------------------------------------------

ROLES = {"finops.workers": "worker", "finops.frontend": "frontend", "finops.workers.cache.actor": "cache",
         "finops.workers.ledger.actor": "ledger", "finops.workers.observe.actor": "observer"}


def role_of(pid: int) -> str:
    """worker, frontend, cache, ledger, observer (the other actors by module), or supervisor."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return "gone"
    if "-m" in argv[:-1]:
        mod = argv[argv.index("-m") + 1]
        return ROLES.get(mod, mod.removeprefix("finops.workers."))
    return "supervisor" if "serve" in argv else "other"


def tree_cpu(root: int) -> collections.Counter:
    """CPU ticks of the tree by role, plus what the root reaped, and the total."""
    out = collections.Counter()
    for pid in tree(root):
        st = read_stat(pid)
        if st is None:
            continue
        out[role_of(pid)] += st[1]
        if pid == root:
            out["reaped"] += st[2]
    out["total"] = sum(v for k, v in out.items())
    return out


def status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --- the gateway ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route(name: str, glob: str, cache: str | None) -> str:
    out = f'\n[[routes]]\nname = "{name}"\nmodels = ["{glob}"]\nprovider = "mock"\nmodel = "{UPSTREAM_MODEL}"\n'
    return out + (f"[routes.cache]\n{cache}" if cache is not None else "")


class Gateway:
    """`finops serve` with its own config, port and data directory, in its own session."""

    def __init__(self, name: str, tmp: str, args):
        self.name, self.args = name, args
        self.dir = os.path.join(tmp, f"gw-{name}")
        self.data_dir = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.pids: dict[int, str] = {}
        self.started: dict[int, int] = {}      # pid -> start time, to kill leftovers safely
        self.cap = args.entries + 10 * (args.requests + args.warmup) + 1000

    def config(self) -> str:
        a = self.args
        out = (f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nworkers = {a.workers}\nfrontends = 1\n'
               f'data_dir = "{self.data_dir}"\n'
               f'\n[providers.mock]\nkind = "mock"\n' + (f"latency_ms = {a.latency_ms}\n" if a.latency_ms else "")
               + f'\n[governance]\nadmin_token = "{ADMIN}"\n')
        pol = f"ttl_seconds = 3600\nmax_entries = {self.cap}\n"
        out += route("bench-nocache", "nocache.*", None)
        if self.name == "cache" and a.control_latency_ms:
            out += (f'\n[providers.slowmock]\nkind = "mock"\nlatency_ms = {a.control_latency_ms}\n'
                    f'\n[[routes]]\nname = "bench-slow"\nmodels = ["slow.*"]\nprovider = "slowmock"\n'
                    f'model = "{UPSTREAM_MODEL}"\n')
        if self.name == "exact":
            out += route("bench-exact", "exact.*", "semantic = false\n" + pol)
            out += f'\n[cache]\nembedding_model = "none"\nmax_entries = {self.cap}\n'
        elif self.name == "cache":
            out += route("bench-exact", "exact.*", "semantic = false\n" + pol)
            out += route("bench-semantic", "semantic.*", f"threshold = {a.threshold}\n" + pol)
            out += f"\n[cache]\nmax_entries = {self.cap}\n"
        return out

    def start(self) -> "Gateway":
        os.makedirs(self.data_dir, exist_ok=True)
        cfg = os.path.join(self.dir, "finops.toml")
        with open(cfg, "w") as f:
            f.write(self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        finops = os.path.join(os.path.dirname(sys.executable), "finops")
        if not os.access(finops, os.X_OK):
            finops = os.path.join(ROOT, ".venv", "bin", "finops")
        self.log_path = os.path.join(self.dir, "gateway.log")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([finops, "serve", "--config", cfg], env=env, cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + 90
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"gateway {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get_json("/health").get("workers_live", 0) >= self.args.workers:
                    break
            except (OSError, ValueError, BenchError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"gateway {self.name} not ready after 90s:\n{self.log_tail()}")
            time.sleep(0.05)
        want = {"supervisor", "frontend"} | ({"cache"} if self.name != "off" else set())
        while True:     # the actors announce themselves a moment after the workers may
            self.pids = {pid: role_of(pid) for pid in tree(self.proc.pid)}
            roles = collections.Counter(self.pids.values())
            if (want <= set(roles) and roles["worker"] == self.args.workers) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in self.pids:
            st = read_stat(pid)
            if st:
                self.started[pid] = st[3]
        log(f"gateway {self.name} ready in {time.monotonic() - t0:.1f}s on {self.url}: "
            + ", ".join(f"{r} {p}" for p, r in sorted(self.pids.items(), key=lambda x: x[1])))
        return self

    def role_pids(self, role: str) -> list[int]:
        return sorted(p for p, r in self.pids.items() if r == role)

    def check_stable(self) -> None:
        now = {pid: role_of(pid) for pid in tree(self.proc.pid)}
        if self.proc.poll() is not None or now != self.pids:
            raise BenchError(f"gateway {self.name}: processes changed (crash or restart?): before {self.pids}, "
                             f"now {now}:\n{self.log_tail()}")

    def get_json(self, path: str, admin: bool = False) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", path, headers={"authorization": f"Bearer {ADMIN}"} if admin else {})
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        if r.status != 200:
            raise BenchError(f"GET {path}: {r.status} {body[:300]!r}")
        return json.loads(body)

    def post_converse(self, model_id: str, text: str) -> tuple[int, list, bytes]:
        """A plain (unsigned) Converse POST: (status, headers, body)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("POST", f"/bedrock/model/{model_id}/converse", body=json.dumps(converse_doc(text)),
                      headers={"content-type": "application/json"})
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def client(self):
        return boto3.client("bedrock-runtime", endpoint_url=self.url + "/bedrock", region_name="us-east-1",
                            aws_access_key_id="finops-bench", aws_secret_access_key="finops-bench",
                            config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                              read_timeout=30, connect_timeout=5, max_pool_connections=1))

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> list[int]:
        """SIGTERM, wait, SIGKILL what is left; returns the pids still alive afterwards (none, we hope)."""
        if self.proc is None:
            return []
        kids = {pid: st for pid, st in self.started.items()}
        for pid in tree(self.proc.pid) if self.proc.poll() is None else []:
            st = read_stat(pid)
            if st:
                kids.setdefault(pid, st[3])
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log(f"gateway {self.name} did not stop in 30s; killing it")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait(5)
        left = []
        deadline = time.monotonic() + 5
        for pid, started in kids.items():
            while time.monotonic() < deadline and (read_stat(pid) or (0, 0, 0, None))[3] == started:
                time.sleep(0.05)
            st = read_stat(pid)
            if st and st[3] == started:
                log(f"gateway {self.name}: pid {pid} outlived it; killing it")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                time.sleep(0.1)
                st = read_stat(pid)
                if st and st[3] == started:
                    left.append(pid)
        self.proc = None
        return left


# --- the cache actor, straight over ZeroMQ --------------------------------------------------

class ActorProbe:
    """PUSH to the cache actor; replies come to our own PULL socket (the actor's protocol)."""

    def __init__(self, run_dir: str, sock_dir: str):
        found = {}
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:
            found = transport.discover(run_dir, "cache")
            time.sleep(0.05)
        if not found:
            raise BenchError(f"no cache actor announced in {run_dir}")
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.setsockopt(zmq.SNDHWM, 100_000)
        self.push.connect(found[max(found)])
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.reply = f"ipc://{sock_dir}/probe-{os.getpid()}.sock"
        self.pull.bind(self.reply)
        self.n = 0
        self.pack = msgpack.Packer(use_bin_type=True).pack

    def send(self, msg: dict) -> None:
        self.push.send(self.pack(msg))

    def request(self, msg: dict, timeout: float = 5.0) -> dict:
        self.n += 1
        msg["i"], msg["r"] = self.n, self.reply
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.pull.poll(int(left * 1000)):
                raise BenchError(f"the cache actor did not answer {msg['k']!r} in {timeout}s")
            out = msgpack.unpackb(self.pull.recv(), raw=False)
            if out.get("i") == self.n:
                return out

    def close(self) -> None:
        self.push.close()
        self.pull.close()
        self.ctx.term()


# --- phases ---------------------------------------------------------------------------------

def run_phase(gw: Gateway, client, name: str, model_id: str, texts: list[str], warmup: int,
              expect: str | None, check=None) -> dict:
    """Send texts[:warmup] unmeasured, then the rest one by one; latency, verdicts, CPU per request."""
    def ask(text):
        t0 = time.perf_counter()
        r = client.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": text}]}],
                            inferenceConfig={"maxTokens": MAX_TOKENS})
        ms = (time.perf_counter() - t0) * 1000
        h = r["ResponseMetadata"]["HTTPHeaders"]
        return ms, h.get("x-bf-cache", "-"), h, r["output"]["message"]["content"][0]["text"]

    for text in texts[:warmup]:
        ask(text)
    measured = texts[warmup:]
    time.sleep(0.3)
    cpu0, w0, t0 = tree_cpu(gw.proc.pid), time.monotonic(), time.time()
    lat, verdicts, sims, correct = [], collections.Counter(), [], 0
    for i, text in enumerate(measured):
        ms, verdict, h, answer = ask(text)
        lat.append(ms)
        verdicts[verdict] += 1
        if "x-bf-cache-similarity" in h:
            sims.append(float(h["x-bf-cache-similarity"]))
        if check is not None and check(i, verdict, answer):
            correct += 1
    wall = time.monotonic() - w0
    cpu1 = tree_cpu(gw.proc.pid)
    n = len(measured)
    ms_per = {k: (cpu1[k] - cpu0[k]) * 1000 / CLK_TCK / n for k in ("total", "worker", "cache", "frontend")}
    ms_per["other"] = max(0.0, ms_per["total"] - ms_per["worker"] - ms_per["cache"] - ms_per["frontend"])
    d = dist(lat)
    out = {"phase": name, "gateway": gw.name, "requests": n, **d, "cpu_ms": ms_per, "verdicts": dict(verdicts),
           "wall_s": wall, "window": (t0, time.time()), "model": model_id}
    if sims:
        out["similarity"] = {**dist(sims), "min": min(sims)}
    if check is not None:
        out["correct"] = correct
    if expect is not None and verdicts[expect] != n:
        log(f"  note: {name}: expected every verdict to be {expect!r}, got {dict(verdicts)}")
    log(f"  {name}: p50 {d['p50']:.2f} ms, p95 {d['p95']:.2f} ms, mean {d['mean']:.2f} ms, "
        f"CPU {ms_per['total']:.2f} ms/req, verdicts {dict(verdicts)}")
    return out


def settle(gw: Gateway, role: str, quiet_s: float = 1.0, limit_s: float = 60.0) -> float:
    """Wait until `role`'s processes use no CPU for `quiet_s` (the actor writes a big fill to
    SQLite on its next ticks); returns how long it took."""
    t0 = time.monotonic()
    pids = gw.role_pids(role)
    def ticks():
        return sum((read_stat(p) or (0, 0, 0, 0))[1] for p in pids)
    last, since = ticks(), time.monotonic()
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.2)
        now = ticks()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return time.monotonic() - t0


def idle_cpu(gw: Gateway, seconds: float = 3.0) -> dict:
    """The idle gateway's CPU by role, in ms per second of wall time (background work: heartbeats,
    ticks), to read the CPU per request of slow phases against."""
    c0, t0 = tree_cpu(gw.proc.pid), time.monotonic()
    time.sleep(seconds)
    c1, dt = tree_cpu(gw.proc.pid), time.monotonic() - t0
    return {k: (c1[k] - c0[k]) * 1000 / CLK_TCK / dt for k in c1 if k != "reaped"}


def worker_latency(gw: Gateway, phases: list[dict]) -> None:
    """Add each phase's worker-side latency (request log latency_ms) when the log can be read."""
    import sqlite3
    path = os.path.join(gw.data_dir, "requests.sqlite")
    deadline = time.monotonic() + 5
    for p in phases:
        if p["gateway"] != gw.name:
            continue
        while True:
            try:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                try:
                    rows = [r[0] for r in db.execute(
                        "SELECT latency_ms FROM requests WHERE model = ? AND ts >= ? AND ts <= ?",
                        (p["model"], p["window"][0] - 0.05, p["window"][1] + 0.05))]
                finally:
                    db.close()
            except sqlite3.Error as e:
                log(f"  request log not readable ({e}); no worker-side latency")
                return
            if len(rows) >= p["requests"] or time.monotonic() > deadline:
                break
            time.sleep(0.25)    # the log is written in batches
        if rows:
            p["worker_ms"] = dist([r for r in rows if r is not None])


def rss_line(gw: Gateway, role: str, when: str) -> list[dict]:
    out = []
    for pid in gw.role_pids(role):
        out.append({"gateway": gw.name, "role": role, "pid": pid, "when": when,
                    "rss_mb": (status_kb(pid, "VmRSS") or 0) / 1024, "hwm_mb": (status_kb(pid, "VmHWM") or 0) / 1024})
    return out


def answer_template(gw: Gateway) -> tuple[dict, str]:
    """A real mock Converse answer (from the uncached route) to shape stored answers on, and the
    text prefix the mock puts before the question."""
    q = "What is the template answer?"
    status, headers, body = gw.post_converse(MODELS["nocache"], q)
    if status != 200:
        raise BenchError(f"template request: {status} {body[:300]!r}")
    doc = json.loads(body)
    text = doc["output"]["message"]["content"][0]["text"]
    if not text.endswith(q):
        raise BenchError(f"the mock's answer does not end with the question: {text!r}")
    ctype = dict((k.lower(), v) for k, v in headers)["content-type"]
    return {"doc": doc, "headers": [("content-type", ctype)]}, text[:-len(q)]


def recorded_blob(template: dict, prefix: str, question: str) -> bytes:
    doc = json.loads(json.dumps(template["doc"]))
    doc["output"]["message"]["content"][0]["text"] = prefix + question
    body = json.dumps(doc, separators=(",", ":")).encode()
    ans = recorded_answer([("head", 200, template["headers"], False), ("body", body)])
    return msgpack.packb(ans, use_bin_type=True)


def fill(gw: Gateway, probe: ActorProbe, questions: list[str], vecs: np.ndarray, model_id: str) -> dict:
    template, prefix = answer_template(gw)
    ns = f"bench-semantic|{keys.owner(None)}"
    t0 = time.monotonic()
    scopes = set()
    for q, v in zip(questions, vecs):
        scope, exact, question = cache_keys(MODELS["semantic"], q)
        scopes.add(scope)
        probe.send({"k": "put", "scope": scope, "exact": exact, "ns": ns, "ns_max": gw.cap,
                    "owner": keys.owner(None), "model": MODELS["semantic"], "question": question,
                    "answer": recorded_blob(template, prefix, q), "ttl": 3600.0, "saved": 0.0,
                    "vec": v.astype(np.float32).tobytes(), "emb": model_id})
    sent = time.monotonic() - t0
    deadline = time.monotonic() + 120
    while True:
        stats = gw.get_json("/admin/cache", admin=True)
        if stats["entries"] >= len(questions) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
    log(f"fill: {len(questions)} puts sent in {sent:.1f}s, actor holds {stats['entries']} entries "
        f"({stats['vectors']} vectors) after {took:.1f}s; scopes used: {len(scopes)}")
    if stats["entries"] != len(questions) or stats["vectors"] != len(questions):
        raise BenchError(f"fill: /admin/cache reports {stats['entries']} entries, {stats['vectors']} vectors; "
                         f"expected {len(questions)}: {stats}")
    return {"sent_s": sent, "total_s": took, "stats": stats, "prefix": prefix}


def actor_rtt(probe: ActorProbe, scope: str, hit_vecs: np.ndarray, miss_vecs: np.ndarray, model_id: str,
              threshold: float, reps: int) -> dict:
    out = {}
    for name, make in (
            ("get (exact miss)", lambda i: {"k": "get", "exact": hashlib.sha256(str(i).encode()).hexdigest(),
                                            "final": False}),
            ("search (hit)", lambda i: {"k": "search", "scope": scope, "vec": hit_vecs[i % len(hit_vecs)].tobytes(),
                                        "emb": model_id, "threshold": threshold}),
            ("search (miss)", lambda i: {"k": "search", "scope": scope, "vec": miss_vecs[i % len(miss_vecs)].tobytes(),
                                         "emb": model_id, "threshold": threshold})):
        for i in range(10):
            probe.request(make(i))
        lat, hits = [], 0
        for i in range(reps):
            t0 = time.perf_counter()
            r = probe.request(make(i))
            lat.append((time.perf_counter() - t0) * 1000)
            hits += bool(r.get("hit"))
        out[name] = {**dist(lat), "hits": hits}
        log(f"  actor round trip {name}: p50 {out[name]['p50']:.3f} ms, p95 {out[name]['p95']:.3f} ms")
    return out


def index_search_timing(vecs: np.ndarray, model_id: str, hit_vecs: np.ndarray, miss_vecs: np.ndarray,
                        threshold: float, per_scope: int | None) -> dict:
    """CacheIndex.search at len(vecs) entries in this process: all in one scope (per_scope None), or
    `per_scope` entries per scope; and its parts (candidates, selector + FAISS)."""
    import faiss
    now = time.time()
    idx = CacheIndex(model_id, vecs.shape[1], max_total=len(vecs) + 1)
    for i, v in enumerate(vecs):
        scope = "s0" if per_scope is None else f"s{i // per_scope}"
        idx.put(Entry(id=0, scope=scope, exact=f"e{i}", ns="bench", owner="anonymous", model="m", question="",
                      answer=b"", created=now, expires=now + 3600), v, len(vecs) + 1)
    scope_of = (lambda i: "s0") if per_scope is None else (lambda i: f"s{i // per_scope}")
    res = {}
    for name, qs, targets in (("hit", hit_vecs, True), ("miss", miss_vecs, False)):
        lat, parts_c, parts_s, hits = [], [], [], 0
        for rep in range(2):
            for j, q in enumerate(qs):
                # a hit query searches the scope of the entry it paraphrases (the first len(qs) entries)
                scope = scope_of(j) if targets else scope_of(j * 7 % len(vecs))
                t0 = time.perf_counter()
                e, _ = idx.search(scope, q, threshold, now)
                t1 = time.perf_counter()
                ids = idx.scopes[scope]
                cand = np.fromiter((i for i in ids if idx.entries[i].has_vector), dtype=np.int64)
                t2 = time.perf_counter()
                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(cand))
                idx.index.search(q.reshape(1, -1), min(4, len(cand)), params=params)
                t3 = time.perf_counter()
                if rep:
                    lat.append((t1 - t0) * 1000)
                    parts_c.append((t2 - t1) * 1000)
                    parts_s.append((t3 - t2) * 1000)
                    hits += e is not None
        res[name] = {"search": dist(lat), "candidates": dist(parts_c), "faiss": dist(parts_s), "hits": hits}
    return res


# --- report ---------------------------------------------------------------------------------

def report(results: dict, args) -> str:
    L = []
    m = results["machine"]
    L.append(f"## Cache bench: {args.entries} entries, {args.requests} requests per phase, {args.workers} workers")
    L.append("")
    L.append(f"{m['when']}, {m['cpus']} CPUs ({m['cpu']}), load before the run {m['load']}, git {m['git']}. "
             f"Mock provider (latency {args.latency_ms} ms), boto3, one connection, sequential; "
             f"threshold {args.threshold}.")
    L.append("")
    L.append("| phase | gateway | requests | p50 ms | p95 ms | mean ms | in worker p50 ms | CPU ms/req (all) | workers "
             "| cache actor | frontend | other | x-bf-cache verdicts |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for p in results["phases"]:
        c = p["cpu_ms"]
        v = ", ".join(f"{k} {n}" for k, n in sorted(p["verdicts"].items()))
        extra = ""
        if "correct" in p:
            extra += f"; right entry {p['correct']}/{p['requests']}"
        if "similarity" in p:
            extra += f"; similarity p50 {p['similarity']['p50']:.3f}, min {p['similarity']['min']:.3f}"
        L.append(f"| {p['phase']} | {p['gateway']} | {p['requests']} | {fmt(p['p50'])} | {fmt(p['p95'])} | "
                 f"{fmt(p['mean'])} | {fmt(p.get('worker_ms', {}).get('p50'))} | {fmt(c['total'])} | "
                 f"{fmt(c['worker'])} | {fmt(c['cache'])} | {fmt(c['frontend'])} | {fmt(c['other'])} | {v}{extra} |")
    L.append("")
    L.append("Latency is boto3's `converse()` wall time; \"in worker\" is the request log's latency_ms (the worker's "
             "time for the request), where the log could be read. CPU is the gateway's processes' utime+stime per "
             "request (\"other\": ledger, observer, supervisor).")
    L.append("")
    d = results.get("derived", {})
    if d:
        L.append("Derived (p50 / CPU per request, differences of the rows above):")
        L.append("")
        for k, v in d.items():
            L.append(f"- {k}: {v}")
        L.append("")
    if "idle_cpu" in results:
        ic = results["idle_cpu"]
        L.append("Idle CPU of the cache gateway (background, ms per second of wall time): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ic.items()) if v or k == "total") + ".")
        L.append("")
    L.append("Memory (VmRSS from /proc/PID/status; VmHWM = peak):")
    L.append("")
    L.append("| gateway | process | pid | when | RSS MB | peak MB |")
    L.append("|---|---|---:|---|---:|---:|")
    for r in results["rss"]:
        L.append(f"| {r['gateway']} | {r['role']} | {r['pid']} | {r['when']} | {r['rss_mb']:.1f} | {r['hwm_mb']:.1f} |")
    L.append("")
    if "fill" in results:
        f = results["fill"]
        L.append(f"Fill: {args.entries} puts straight to the cache actor in {f['sent_s']:.1f}s, "
                 f"all stored after {f['total_s']:.1f}s; /admin/cache: {f['stats']['entries']} entries, "
                 f"{f['stats']['vectors']} vectors, {f['stats']['bytes'] / 1e6:.1f} MB of answers, "
                 f"model {f['stats']['embedding_model']}. Final /admin/cache: "
                 f"{results['final_stats']['entries']} entries, hits exact {results['final_stats']['hits_exact']}, "
                 f"semantic {results['final_stats']['hits_semantic']}, misses {results['final_stats']['misses']}.")
        L.append("")
    L.append("References measured in this process / from this script:")
    L.append("")
    L.append("| what | p50 ms | p95 ms | mean ms |")
    L.append("|---|---:|---:|---:|")
    for name, dd in results["reference"].items():
        L.append(f"| {name} | {fmt(dd['p50'], 3)} | {fmt(dd['p95'], 3)} | {fmt(dd['mean'], 3)} |")
    L.append("")
    left = results.get("leftover", [])
    L.append(f"Processes left after stopping: {left or 'none'}.")
    return "\n".join(L)


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    try:
        git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        git += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        git = "?"
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(), "cpu": cpu,
            "load": " ".join(open("/proc/loadavg").read().split()[:3]), "git": git}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000, help=f"entries to fill the cache with (at most {MAX_ENTRIES})")
    ap.add_argument("--requests", type=int, default=200, help="measured requests per phase")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured requests before each phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.85, help="the semantic route's similarity threshold")
    ap.add_argument("--latency-ms", type=int, default=0, help="the mock provider's latency")
    ap.add_argument("--control-latency-ms", type=int, default=10,
                    help="also measure an uncached route whose mock waits this long (a control for how the "
                         "time outside the worker grows with the worker's time; 0: skip)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-vector-cache", action="store_true", help="embed the stored questions again")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args(argv)
    if not 1 <= a.entries <= MAX_ENTRIES:
        ap.error(f"--entries must be 1..{MAX_ENTRIES}")
    if a.requests + a.warmup > a.entries // 2:
        ap.error("--requests + --warmup must be at most half of --entries (hits use distinct stored questions)")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    results: dict = {"machine": machine(), "phases": [], "rss": [], "reference": {}, "leftover": []}
    n_req = args.requests + args.warmup
    combos = templates(args.entries, args.seed)
    stored = [stored_question(*c) for c in combos]
    rng = random.Random(args.seed + 1)
    order = rng.sample(range(args.entries), 2 * n_req)
    para_idx, exact_idx = order[:n_req], order[n_req:]
    paraphrases = [paraphrase(*combos[i]) for i in para_idx]
    rq = RandomQuestions(args.seed)

    log("loading the embedder (the gateway's MiniLM int8) in this process")
    emb = embeddermod.load()
    vecs = vectors_for(emb, stored, not args.no_vector_cache)

    # --- references in this process --------------------------------------------------------
    para_vecs = np.stack([emb.embed(t) for t in paraphrases])
    miss_texts = rq.take(n_req)
    miss_vecs = np.stack([emb.embed(t) for t in miss_texts])
    for name, texts in (("embed a paraphrase (MiniLM int8, 1 thread, this process)", paraphrases),
                        ("embed a random-word miss question (same)", miss_texts)):
        lat = []
        for t in texts:
            t0 = time.perf_counter()
            emb.embed(t)
            lat.append((time.perf_counter() - t0) * 1000)
        results["reference"][name] = dist(lat)
    hit_order_vecs = para_vecs          # paraphrase j targets stored entry para_idx[j]
    # in-process search: reorder so that paraphrase j's entry is entry j (for the per-scope layout)
    taken = set(para_idx)
    perm = para_idx + [i for i in range(args.entries) if i not in taken]
    for per_scope, label in ((None, f"all {args.entries} in one scope"), (10, "10 per scope")):
        r = index_search_timing(vecs[perm], emb.model_id, hit_order_vecs, miss_vecs, args.threshold, per_scope)
        for kind in ("hit", "miss"):
            results["reference"][f"CacheIndex.search, {args.entries} vectors, {label}, {kind} "
                                 f"({r[kind]['hits']}/{len(hit_order_vecs)} hit)"] = r[kind]["search"]
            if per_scope is None:
                results["reference"][f"  of which: candidate ids (np.fromiter over the scope's set), {kind}"] = \
                    r[kind]["candidates"]
                results["reference"][f"  of which: IDSelectorBatch + FAISS search, {kind}"] = r[kind]["faiss"]
    log("in-process references done")

    tmp = tempfile.mkdtemp(prefix="cb-", dir="/tmp")
    gateways: list[Gateway] = []
    try:
        # --- gateway "off": no caching anywhere ----------------------------------------------
        gw = Gateway("off", tmp, args)
        gateways.append(gw)
        gw.start()
        c = gw.client()
        results["rss"] += rss_line(gw, "worker", "idle, no cache configured")
        results["phases"].append(run_phase(gw, c, "A: route without cache", MODELS["nocache"], rq.take(n_req),
                                           args.warmup, "-"))
        gw.check_stable()
        results["rss"] += rss_line(gw, "worker", f"after {n_req} requests")
        worker_latency(gw, results["phases"])
        results["leftover"] += gw.stop()

        # --- gateway "exact": embedding_model = "none" ---------------------------------------
        gw = Gateway("exact", tmp, args)
        gateways.append(gw)
        gw.start()
        c = gw.client()
        results["rss"] += rss_line(gw, "cache", "empty") + rss_line(gw, "worker", "idle, exact layer only (no model)")
        qs = rq.take(n_req)
        results["phases"].append(run_phase(gw, c, "B: exact-only, miss", MODELS["exact"], qs, args.warmup, "miss"))
        time.sleep(1.5)    # the puts are fire-and-forget: let the actor take them
        results["phases"].append(run_phase(gw, c, "B: exact-only, exact hit", MODELS["exact"], qs, args.warmup,
                                           "hit-exact"))
        gw.check_stable()
        worker_latency(gw, results["phases"])
        results["leftover"] += gw.stop()

        # --- gateway "cache": routes A, B, C, semantic layer on ------------------------------
        gw = Gateway("cache", tmp, args)
        gateways.append(gw)
        gw.start()
        c = gw.client()
        results["rss"] += rss_line(gw, "cache", "empty") + rss_line(gw, "worker", "idle, MiniLM loaded")
        probe = ActorProbe(os.path.join(gw.data_dir, "run"), tmp)
        try:
            results["fill"] = fill(gw, probe, stored, vecs, emb.model_id)
            prefix = results["fill"]["prefix"]
            log(f"fill: the cache actor was quiet again after {settle(gw, 'cache'):.1f}s")
            results["rss"] += rss_line(gw, "cache", f"{args.entries} entries")
            results["idle_cpu"] = idle_cpu(gw)
            results["phases"].append(run_phase(gw, c, "A: route without cache", MODELS["nocache"], rq.take(n_req),
                                               args.warmup, "-"))
            if args.control_latency_ms:
                results["phases"].append(run_phase(
                    gw, c, f"A': route without cache, upstream {args.control_latency_ms} ms (control)",
                    MODELS["slow"], rq.take(n_req), args.warmup, "-"))
            qs = rq.take(n_req)
            results["phases"].append(run_phase(gw, c, "B: exact-only route, miss", MODELS["exact"], qs,
                                               args.warmup, "miss"))
            time.sleep(1.5)
            results["phases"].append(run_phase(gw, c, "B: exact-only route, exact hit", MODELS["exact"], qs,
                                               args.warmup, "hit-exact"))
            results["phases"].append(run_phase(
                gw, c, "C: semantic route, miss (embed + search + upstream)", MODELS["semantic"], rq.take(n_req),
                args.warmup, "miss"))
            want = [prefix + stored[i] for i in para_idx[args.warmup:]]
            results["phases"].append(run_phase(
                gw, c, f"C: semantic route, semantic hit (paraphrase, {args.entries} entries)", MODELS["semantic"],
                paraphrases, args.warmup, "hit-semantic",
                check=lambda i, verdict, answer: verdict == "hit-semantic" and answer == want[i]))
            want_x = [prefix + stored[i] for i in exact_idx[args.warmup:]]
            results["phases"].append(run_phase(
                gw, c, f"C: semantic route, exact hit ({args.entries} entries)", MODELS["semantic"],
                [stored[i] for i in exact_idx], args.warmup, "hit-exact",
                check=lambda i, verdict, answer: verdict == "hit-exact" and answer == want_x[i]))
            gw.check_stable()
            scope = cache_keys(MODELS["semantic"], "x")[0]
            log("actor round trips from this script:")
            rtt = actor_rtt(probe, scope, para_vecs, miss_vecs, emb.model_id, args.threshold, args.requests)
            n_vec = gw.get_json("/admin/cache", admin=True)["vectors"]
            for k, v in rtt.items():
                results["reference"][f"cache actor round trip over ZeroMQ, {k}, {n_vec} vectors in the scope"] = v
        finally:
            probe.close()
        results["final_stats"] = gw.get_json("/admin/cache", admin=True)
        results["rss"] += rss_line(gw, "cache", f"end ({results['final_stats']['entries']} entries)")
        results["rss"] += rss_line(gw, "worker", "end, MiniLM loaded, after the phases")
        results["rss"] += rss_line(gw, "frontend", "end")
        worker_latency(gw, results["phases"])
        results["leftover"] += gw.stop()
    except BaseException:
        for g in gateways:
            if g.proc is not None:
                log(f"gateway {g.name} log tail:\n{g.log_tail()}")
        raise
    finally:
        for g in gateways:
            results["leftover"] += g.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- derived figures -------------------------------------------------------------------------
    ph = {(p["gateway"], p["phase"].split(" (")[0]): p for p in results["phases"]}
    def diff(a, b):
        pa, pb = ph.get(a), ph.get(b)
        if pa and pb:
            return (f"{pa['p50'] - pb['p50']:+.2f} ms p50, {pa['mean'] - pb['mean']:+.2f} ms mean, "
                    f"{pa['cpu_ms']['total'] - pb['cpu_ms']['total']:+.2f} ms CPU/req")
        return "–"
    base = ("cache", "A: route without cache")
    results["derived"] = {
        "exact-only miss vs no cache (exact gateway vs off gateway)": diff(("exact", "B: exact-only, miss"),
                                                                           ("off", "A: route without cache")),
        "exact-only miss vs no cache (same gateway)": diff(("cache", "B: exact-only route, miss"), base),
        "semantic miss vs no cache (same gateway)": diff(("cache", "C: semantic route, miss"), base),
        "semantic miss vs exact-only miss (the embedding + search)": diff(("cache", "C: semantic route, miss"),
                                                                          ("cache", "B: exact-only route, miss")),
        "semantic hit vs no cache (same gateway)": diff(("cache", "C: semantic route, semantic hit"), base),
        "semantic hit vs exact hit (same route)": diff(("cache", "C: semantic route, semantic hit"),
                                                       ("cache", "C: semantic route, exact hit")),
    }
    sem, ex = ph.get(("cache", "C: semantic route, semantic hit")), ph.get(("cache", "C: semantic route, exact hit"))
    ref = results["reference"]
    emb_ref = next((v for k, v in ref.items() if k.startswith("embed a paraphrase")), None)
    rtt_ref = next((v for k, v in ref.items() if "search (hit)" in k), None)
    if sem and ex and "worker_ms" in sem and "worker_ms" in ex and emb_ref and rtt_ref:
        results["derived"]["semantic hit, where the time goes (p50)"] = (
            f"in the worker {sem['worker_ms']['p50'] - ex['worker_ms']['p50']:.2f} ms more than an exact hit, against "
            f"{emb_ref['p50']:.2f} ms embedding (this process) + {rtt_ref['p50']:.2f} ms actor search round trip = "
            f"{emb_ref['p50'] + rtt_ref['p50']:.2f} ms; outside the worker (client p50 - worker p50) "
            f"{sem['p50'] - sem['worker_ms']['p50']:.2f} ms vs {ex['p50'] - ex['worker_ms']['p50']:.2f} ms for an "
            f"exact hit")
    ctl = next((p for p in results["phases"] if p["phase"].startswith("A'")), None)
    if ctl and "worker_ms" in ctl:
        results["derived"]["control: time outside the worker when the upstream takes "
                           f"{args.control_latency_ms} ms"] = f"{ctl['p50'] - ctl['worker_ms']['p50']:.2f} ms"
    print(report(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    if results["leftover"]:
        log(f"processes left behind: {results['leftover']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
