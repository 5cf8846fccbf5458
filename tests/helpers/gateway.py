"""Start the real gateway (`finops serve`, or honcho with the Procfile) for system tests.

`Gateway` runs the real processes on a free loopback port with its own data directory and config
file, waits until /health reports a live worker, and stops them on exit (SIGTERM, then kill).
`client()` returns an unchanged boto3 bedrock-runtime client pointed at it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request

import boto3
from botocore.config import Config as BotoConfig

BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INSECURE = ssl._create_unverified_context()   # health checks of our own loopback gateway only


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1, context=INSECURE if url.startswith("https") else None) as r:
                if r.status == 200:
                    return json.loads(r.read())
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s (last error: {last})")


class Gateway:
    def __init__(self, tmp_path, config_text: str = "", *, workers: int = 2, frontends: int = 1,
                 honcho: bool = False, extra_env: dict | None = None):
        self.port = free_port()
        self.data_dir = str(tmp_path / "data")
        self.config_path = None
        if config_text:
            self.config_path = str(tmp_path / "finops.toml")
            with open(self.config_path, "w") as f:
                f.write(config_text)
        self.workers = workers
        self.frontends = frontends
        self.honcho = honcho
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = str(tmp_path / "gateway.log")
        scheme = "https" if "tls_cert_file" in config_text else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.endpoint = self.url + "/bedrock"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}  # no leaks from the shell
        env.update(FINOPS_DATA_DIR=self.data_dir, FINOPS_PORT=str(self.port), FINOPS_HOST="127.0.0.1",
                   FINOPS_WORKERS=str(self.workers), FINOPS_FRONTENDS=str(self.frontends),
                   PATH=BIN + os.pathsep + env.get("PATH", ""))
        if self.config_path:
            env["FINOPS_CONFIG"] = self.config_path
        env.update(self.extra_env)
        return env

    def start(self) -> "Gateway":
        log = open(self.log_path, "wb")
        if self.honcho:
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            argv = [os.path.join(BIN, "honcho"), "-f", os.path.join(root, "Procfile"), "start",
                    "-c", f"worker={self.workers},frontend={self.frontends}"]
        else:
            argv = [os.path.join(BIN, "finops"), "serve"]
        self.proc = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()          # never leave a gateway running behind a failed start
            raise
        return self

    def wait_ready(self, timeout: float = 30.0, workers: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            h = wait_http(self.url + "/health", max(0.1, deadline - time.monotonic()), self.proc)
            if h["workers_live"] >= workers:
                return h
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {h['workers_live']} workers live")
            time.sleep(0.05)

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2,
                                        context=INSECURE if self.url.startswith("https") else None) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def child_pids(self, kind: str) -> list[int]:
        """pids of this gateway's `finops.workers` or `finops.frontend` processes (by cmdline and
        by the FINOPS_DATA_DIR in their environment, so other gateways are not counted)."""
        want = f"FINOPS_DATA_DIR={self.data_dir}".encode()
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                if argv[1:3] != [b"-m", f"finops.{kind}".encode()]:
                    continue
                with open(f"/proc/{d}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        pids.append(int(d))
            except (OSError, IndexError):
                continue
        return pids

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM) if self.honcho else self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def client(self, **config):
        cfg = dict(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30, connect_timeout=5)
        cfg.update(config)
        return boto3.client("bedrock-runtime", endpoint_url=self.endpoint, region_name="us-west-2",
                            aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret",
                            config=BotoConfig(**cfg))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def request_log(data_dir: str) -> list[dict]:
    """Every row of the gateway's request log (<data_dir>/requests.sqlite), as dicts by column
    name; [] before the first row is written. Rows arrive within about half a second."""
    path = os.path.join(data_dir, "requests.sqlite")
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY ts")]
    except sqlite3.OperationalError:       # the table is not there yet
        return []
    finally:
        db.close()


__all__ = ["Gateway", "free_port", "wait_http", "request_log"]
