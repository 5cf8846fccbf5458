"""Idle memory and time to ready of `finops serve`, per process.

    python scripts/memory_report.py [--config default|mock|bedrock|PATH] [--workers N] [--frontends N]
                                    [--runs N] [--settle S] [--modules] [--no-compile]

Starts `finops serve` (the venv's, beside this Python) in a temporary directory with the given
config: `default` is the embedded defaults (no file), `mock` and `bedrock` are the load harness's
configs (scripts/bench.py: the mock provider; a bedrock provider relaying to an upstream, which
need not answer while idle), or a TOML file of yours (its [server] port and data_dir are replaced).
It waits until /health reports every worker live (the harness's readiness: the time printed is
from the start of `finops serve` to that answer), waits `--settle` seconds, then prints each
process's RSS and PSS (from /proc/PID/smaps_rollup) and the sums, the figures the harness reports as
"idle RSS / PSS". `--runs N` repeats it and prints the median of each figure. `--modules` also
prints how many Python modules each process has loaded and its biggest top-level packages (a
sitecustomize.py put on PYTHONPATH for the run makes each process write sys.modules to a file on
SIGUSR2; the gateway's code has no hook for it).

Before the runs it byte-compiles the project's modules (compileall, as `pip install` of a wheel
does): an editable install under PYTHONDONTWRITEBYTECODE=1 has no __pycache__, and then every
process compiles every module it imports at each start, which costs about 1 s of CPU and 8 MiB
of RSS over the six processes. `--no-compile` measures it as it is.

Run it with the project's venv Python (it starts the `finops` beside it); never part of the tests.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procstat import tree  # noqa: E402  (scripts/, beside this file)

CONFIGS = {
    "mock": '\n[providers.m]\nkind = "mock"\nchunks = 20\n\n[default_route]\nprovider = "m"\n',
    "bedrock": ('\n[providers.fake]\nkind = "bedrock"\nbase_url = "http://127.0.0.1:9"\nregion = "us-east-1"\n'
                'keys = [{access_key_id = "AKIDBENCH", secret_access_key = "benchsecret"}]\n'
                '\n[default_route]\nprovider = "fake"\n'),
}
ROLES = (("finops.frontend", "frontend"), ("finops.workers.ledger.actor", "ledger"),
         ("finops.workers.observe.actor", "observer"), ("finops.workers.cache.actor", "cache"),
         ("finops.workers.alerts.actor", "alerts"), ("finops.workers", "worker"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "supervisor"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "gone"
    for needle, role in ROLES:
        if needle in cmd:
            return role
    return "other"


def memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, or (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss / 1024, pss / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (its start-up, when read at idle)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def config_text(which: str, port: int, data_dir: str, workers: int, frontends: int) -> str | None:
    server = (f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = {workers}\n'
              f'frontends = {frontends}\ndata_dir = "{data_dir}"\n')
    if which == "default":
        return None
    if which in CONFIGS:
        return server + CONFIGS[which]
    with open(which) as f:
        import tomllib
        doc = tomllib.loads(f.read())
    if "server" in doc:
        raise SystemExit(f"{which}: has a [server] table; remove it (this script sets port and data_dir)")
    return server + "\n" + open(which).read()


def healthy(port: int, workers: int) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/health")
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status == 200 and json.loads(body).get("workers_live", 0) >= workers
    except (OSError, ValueError):
        return False


def one_run(args, tmp: str) -> dict:
    port = free_port()
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    finops = os.path.join(os.path.dirname(sys.executable), "finops")
    argv = [finops, "serve"]
    text = config_text(args.config, port, data_dir, args.workers, args.frontends)
    if text is None:
        argv += ["--port", str(port), "--host", "127.0.0.1", "--workers", str(args.workers),
                 "--frontends", str(args.frontends), "--data-dir", data_dir]
    else:
        path = os.path.join(tmp, "finops.toml")
        with open(path, "w") as f:
            f.write(text)
        argv += ["--config", path]
    mod_dir = os.path.join(tmp, "modules")
    if args.modules:
        os.makedirs(mod_dir, exist_ok=True)
        with open(os.path.join(mod_dir, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE.format(folder=mod_dir))
        env["PYTHONPATH"] = mod_dir + os.pathsep + env.get("PYTHONPATH", "")
    log_path = os.path.join(tmp, "gateway.log")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        while not healthy(port, args.workers):
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                with open(log_path, errors="replace") as f:
                    raise SystemExit(f"finops serve not ready (exit {proc.poll()}):\n{f.read()[-3000:]}")
            time.sleep(0.01)
        ready = time.monotonic() - t0
        time.sleep(args.settle)
        rows = []
        for pid in sorted(tree(proc.pid)):
            rss, pss = memory(pid)
            rows.append({"pid": pid, "role": role_of(pid, proc.pid), "rss": rss, "pss": pss,
                         "threads": threads(pid), "cpu": cpu_seconds(pid)})
        if args.modules:
            for r in rows:
                os.kill(r["pid"], signal.SIGUSR2)
            time.sleep(0.5)
            for r in rows:
                r["modules"] = read_modules(mod_dir, r["pid"])
        return {"ready_s": ready, "rows": rows}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SITECUSTOMIZE = """
import os, signal, sys
def _dump(signum, frame):
    with open(os.path.join({folder!r}, f"{{os.getpid()}}.txt"), "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
signal.signal(signal.SIGUSR2, _dump)
"""


def read_modules(folder: str, pid: int) -> list[str] | None:
    try:
        with open(os.path.join(folder, f"{pid}.txt")) as f:
            return f.read().split()
    except OSError:
        return None


def compile_project() -> None:
    """Byte-compile finops' four folders, wherever this Python imports them from."""
    import compileall
    import importlib.util
    for part in ("frontend", "workers", "shared", "launcher"):
        spec = importlib.util.find_spec(f"finops.{part}")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default="default", help="default (embedded), mock, bedrock, or a TOML file")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frontends", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds idle after ready before measuring")
    ap.add_argument("--modules", action="store_true",
                    help="also count each process's loaded modules, by top-level package")
    ap.add_argument("--json", action="store_true", help="print the runs as JSON")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile the project's modules first (see the module doc)")
    args = ap.parse_args()
    if not args.no_compile:
        compile_project()
    runs = []
    for _ in range(args.runs):
        tmp = tempfile.mkdtemp(prefix="finops-mem-")
        try:
            runs.append(one_run(args, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    # per role (and index within the role), the median over the runs
    by: dict[str, list] = {}
    for run in runs:
        seen: dict[str, int] = {}
        for r in sorted(run["rows"], key=lambda r: (r["role"], r["pid"])):
            n = seen.get(r["role"], 0)
            seen[r["role"]] = n + 1
            by.setdefault(f"{r['role']}#{n}", []).append(r)
    med = statistics.median
    print(f"finops serve, config {args.config}, {args.workers} workers, {args.frontends} frontends, "
          f"{len(runs)} run(s), measured {args.settle:g}s after ready (medians)")
    print(f"{'process':<14} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU s':>8} {'threads':>8} {'modules':>8}")
    for name in sorted(by, key=lambda n: (n.split('#')[0] != "supervisor", n)):
        rs = by[name]
        mods = rs[-1].get("modules")
        print(f"{name:<14} {med(r['rss'] for r in rs):8.1f} {med(r['pss'] for r in rs):8.1f} "
              f"{med(r['cpu'] for r in rs):8.2f} {med(r['threads'] for r in rs):8.0f} {len(mods) if mods else '':>8}")
    print(f"{'total':<14} {med(sum(r['rss'] for r in run['rows']) for run in runs):8.1f} "
          f"{med(sum(r['pss'] for r in run['rows']) for run in runs):8.1f} "
          f"{med(sum(r['cpu'] for r in run['rows']) for run in runs):8.2f} "
          f"{med(len(run['rows']) for run in runs):8.0f} processes")
    print(f"ready in {med(run['ready_s'] for run in runs):.2f} s (runs: "
          + ", ".join(f"{run['ready_s']:.2f}" for run in runs) + ")")
    if args.modules:
        for name in sorted(by):
            mods = by[name][-1].get("modules")
            if not mods:
                continue
            tops: dict[str, int] = {}
            for m in mods:
                tops[m.split(".")[0]] = tops.get(m.split(".")[0], 0) + 1
            big = sorted(tops.items(), key=lambda kv: -kv[1])[:25]
            print(f"\n{name}: {len(mods)} modules; top packages: "
                  + ", ".join(f"{k} {v}" for k, v in big))
    return 0


if __name__ == "__main__":
    sys.exit(main())
