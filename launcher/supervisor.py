"""`finops serve`: start, watch and restart every process; drain on SIGTERM.

Processes (each a `python -m` module, so the Procfile can start the same ones without us):

    ledger   ×1                  python -m finops.workers.ledger.actor   (budgets, rate limits)
    cache    ×1 when a route caches   python -m finops.workers.cache.actor   (the response cache's index)
    observer ×1                  python -m finops.workers.observe.actor   (request log, metrics)
    alerts   ×1 when [alerts] has a webhook   python -m finops.workers.alerts.actor   (budget, forecast, anomaly alerts)
    worker   ×server.workers     python -m finops.workers
    frontend ×server.frontends   python -m finops.frontend

The ledger and the workers start first; frontends find them through the run directory. A process that exits is
restarted with exponential backoff (0.1 s doubling to 5 s; reset once it has run 30 s), except
one whose first start exits with `exitcodes.CANNOT_START` (a frontend whose port is taken, or
whose config is refused): then the supervisor stops every process and exits with that code. (A
restart that cannot start is retried with backoff: a gateway that has served keeps trying.) The
frontends notice a dead worker on their own (its connection drops), so requests in flight on it
fail fast with a retryable 503 or an exception frame.

The supervisor runs as a process of its own image: `finops serve` validates the config, writes what
the supervisor needs into a plan (`plan()`: the processes, the port, the children's environment)
and execs `python -m finops.launcher.supervisor serve` with it in FINOPS_SUPERVISOR_PLAN, same pid.
So the process that lives as long as the gateway carries neither the config loader (msgspec,
tomllib, the schema) nor anything else `finops serve` imported: about 13 MiB of RSS instead of 19.

SIGTERM or SIGINT: frontends get SIGTERM first and drain (no new connections; in-flight requests
get `server.drain_seconds`), then workers get SIGTERM and finish what is left; whatever is still
running after the drain time plus a grace period is killed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

from finops.shared import exitcodes
from finops.shared.rundir import RESTARTS_FILE

log = logging.getLogger("finops.supervisor")

BACKOFF_START = 0.1     # seconds before restarting a process that died ...
BACKOFF_MAX = 5.0       # ... doubling at each death in a row, up to this
HEALTHY_AFTER = 30.0    # a process up this long starts again from BACKOFF_START when it dies
KILL_GRACE = 3.0        # after its drain, a process gets this long to exit before SIGKILL


class Child:
    def __init__(self, kind: str, index: int, argv: list[str]):
        self.kind = kind
        self.index = index
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.backoff = BACKOFF_START
        self.restart_at = 0.0
        self.restarts = 0

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<{self.kind}#{self.index} pid={pid} restarts={self.restarts}>"

    def start(self, environ: dict) -> None:
        self.proc = subprocess.Popen(self.argv, env=environ)
        self.started = time.monotonic()
        log.info("started %s#%d pid %d", self.kind, self.index, self.proc.pid)


PLAN_ENV = "FINOPS_SUPERVISOR_PLAN"
ACTOR_MODULES = {"ledger": "finops.workers.ledger.actor", "observer": "finops.workers.observe.actor",
                 "cache": "finops.workers.cache.actor", "alerts": "finops.workers.alerts.actor"}


def plan(cfg, config_path: str | None) -> dict:
    """What the supervisor needs from a loaded config (finops.shared.config.Config), as JSON-able data."""
    s = cfg.server
    environ = {}
    if config_path:
        environ["FINOPS_CONFIG"] = os.path.abspath(config_path)
    # The children load the same file; these make them see the same effective values.
    environ.update(FINOPS_HOST=s.host, FINOPS_PORT=str(s.port), FINOPS_DATA_DIR=s.data_dir,
                   FINOPS_WORKERS=str(s.workers), FINOPS_FRONTENDS=str(s.frontends), FINOPS_NODE_NAME=s.node_name)
    actors = ["ledger", "observer"] + (["cache"] if cfg.caching else []) + (["alerts"] if cfg.alerts.webhooks else [])
    return {"environ": environ, "actors": actors, "run_dir": cfg.run_dir, "source": cfg.source,
            "server": {"host": s.host, "port": s.port, "scheme": s.scheme, "workers": s.workers,
                       "frontends": s.frontends, "drain_seconds": s.drain_seconds}}


def exec_supervisor(the_plan: dict) -> int:
    """Become the supervisor: exec this Python on `python -m finops.launcher.supervisor serve` (same
    pid); if exec fails, run it here."""
    env = dict(os.environ)
    env[PLAN_ENV] = json.dumps(the_plan)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "finops.launcher.supervisor", "serve"], env)
    except OSError as e:
        log.warning("cannot exec the supervisor (%s); running it in this process", e)
    return Supervisor(the_plan).run()


class Supervisor:
    def __init__(self, the_plan: dict):
        self.cfg = SimpleNamespace(server=SimpleNamespace(**the_plan["server"]), run_dir=the_plan["run_dir"],
                                   source=the_plan["source"])
        self.environ = {k: v for k, v in os.environ.items() if k != PLAN_ENV}
        self.environ.update(the_plan["environ"])
        s = self.cfg.server
        py = sys.executable
        actors = [Child(kind, 0, [py, "-m", ACTOR_MODULES[kind]]) for kind in the_plan["actors"]]
        self.workers = actors + [Child("worker", i, [py, "-m", "finops.workers"]) for i in range(s.workers)]
        self.frontends = [Child("frontend", i, [py, "-m", "finops.frontend"]) for i in range(s.frontends)]
        self.stopping = False
        self.exit_code = 0      # CANNOT_START once a process said it cannot start

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        os.makedirs(self.cfg.run_dir, exist_ok=True)
        self.write_restarts()
        for c in self.workers + self.frontends:
            c.start(self.environ)
        announced = False
        while not self.stopping:
            now = time.monotonic()
            for c in self.workers + self.frontends:
                code = c.proc.poll() if c.proc else None
                if c.proc is not None and code is not None:
                    if code == exitcodes.CANNOT_START and c.restarts == 0:    # at `finops serve`: say so and stop
                        log.error("%s cannot start (exit %d); see its error above. Stopping.", c.kind, code)
                        self.stopping, self.exit_code = True, code
                        break
                    log.warning("%s#%d (pid %d) exited with %s; restarting in %.1fs",
                                c.kind, c.index, c.proc.pid, code, c.backoff)
                    c.proc = None
                    c.restart_at = now + c.backoff
                    c.backoff = min(c.backoff * 2, BACKOFF_MAX)
                    c.restarts += 1
                    self.write_restarts()
                elif c.proc is None and now >= c.restart_at:
                    c.start(self.environ)
                elif c.proc is not None and now - c.started > HEALTHY_AFTER:
                    c.backoff = BACKOFF_START
            if not announced and self._healthy():
                announced = True
                s = self.cfg.server
                print(f"FinOps gateway ready: {s.scheme}://{s.host}:{s.port}/bedrock "
                      f"({s.frontends} frontend, {s.workers} workers; config: {self.cfg.source})",
                      flush=True)
            time.sleep(0.05 if not announced else 0.2)
        return self.shutdown()

    def write_restarts(self) -> None:
        """Restarts per process kind, for /metrics (finops_process_restarts; the observer reads it)."""
        counts: dict[str, int] = {}
        for c in self.workers + self.frontends:
            counts[c.kind] = counts.get(c.kind, 0) + c.restarts
        path = os.path.join(self.cfg.run_dir, RESTARTS_FILE)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(counts, f)
            os.replace(path + ".tmp", path)
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def _healthy(self) -> bool:
        """GET /health answers 200. A bare socket, not urllib: the supervisor stays small (urllib
        imports http.client, email and ssl; ssl is imported here only when the port serves TLS)."""
        s = self.cfg.server
        host = s.host.strip("[]")
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        try:
            with socket.create_connection((host, s.port), timeout=0.5) as sock:
                conn = sock
                if s.scheme == "https":
                    import ssl
                    conn = ssl._create_unverified_context().wrap_socket(sock)   # our own port, loopback
                name = f"[{host}]" if ":" in host else host
                conn.sendall(f"GET /health HTTP/1.1\r\nHost: {name}:{s.port}\r\nConnection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head and len(head) < 256:
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    head += chunk
                return head.split(b" ", 2)[1:2] == [b"200"]
        except (OSError, ValueError):
            return False

    def shutdown(self) -> int:
        drain = self.cfg.server.drain_seconds
        log.info("stopping: draining frontends (up to %.0fs)", drain)
        self._stop(self.frontends, drain + KILL_GRACE)
        self._stop([c for c in self.workers if c.kind == "worker"], drain + KILL_GRACE)
        self._stop([c for c in self.workers if c.kind != "worker"], KILL_GRACE)   # the actors, after every settle
        log.info("stopped")
        return self.exit_code

    @staticmethod
    def _stop(children: list[Child], timeout: float) -> None:
        live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()


def main() -> int:
    """`python -m finops.launcher.supervisor serve`, exec'd by `finops serve` (see the module doc)."""
    from finops.shared.logs import setup_logging
    setup_logging("supervisor")
    try:
        the_plan = json.loads(os.environ[PLAN_ENV])
    except (KeyError, ValueError):
        print("finops.launcher.supervisor: start the gateway with `finops serve`", file=sys.stderr)
        return 2
    return Supervisor(the_plan).run()


if __name__ == "__main__":
    sys.exit(main())
