"""A real Redis for tests: Debian's `redis-server` on a free loopback port in a temp dir.

    with RedisServer(tmp_path) as srv:               # no persistence, no password, plain TCP
        r = srv.client()                              # a redis-py client for it
        srv.url                                       # redis://127.0.0.1:PORT/0
    RedisServer(tmp_path, password="pw", tls=True)    # AUTH and TLS: rediss://:pw@127.0.0.1:PORT/0,
                                                      # srv.ca_file signs its certificate

Failure tests can `stop()` (SIGTERM), `kill()` (SIGKILL), `pause()` / `resume()` (SIGSTOP /
SIGCONT: a stalled server), `start()` again on the same port, `flushall()`. `persist=True` turns the append-only file on (fsync every write), so a restart
keeps the data; without it a restart starts empty, like a failover to an empty replica.

When `redis-server` is missing it is installed with apt-get (scripts/apt_packages.py, as for the
dashboard test's Chromium); Valkey's `valkey-server` is used when it is there instead.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers.gateway import free_port

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import apt_packages  # noqa: E402

PACKAGE = "redis-server"
NAMES = ("redis-server", "valkey-server")


class RedisMissing(RuntimeError):
    """redis-server is not installed and could not be installed; the message says how to."""


def redis_server_path() -> str:
    """The path of redis-server (or valkey-server), installing Debian's redis-server when missing."""
    for name in NAMES:
        path = apt_packages.find_executable(name)
        if path:
            return path
    try:
        apt_packages.install([PACKAGE], lambda msg: print(f"[redis] {msg}", file=sys.stderr, flush=True))
    except apt_packages.AptError as e:
        raise RedisMissing(str(e)) from None
    path = apt_packages.find_executable("redis-server")
    if path is None:
        raise RedisMissing(f"apt-get installed {PACKAGE} but no redis-server executable was found")
    return path


class RedisServer:
    def __init__(self, tmp_dir, *, password: str | None = None, tls: bool = False, persist: bool = False,
                 port: int | None = None):
        self.dir = str(tmp_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.password = password
        self.tls = tls
        self.persist = persist
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.ca_file = None
        self.exe = redis_server_path()
        if tls:
            from finops.launcher import certs
            paths = certs.make(os.path.join(self.dir, "tls"), [])   # covers 127.0.0.1 and localhost
            self.ca_file, self.cert_file, self.key_file = paths["ca"], paths["cert"], paths["key"]

    # --- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL a client connects with, password included."""
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kw):
        """A redis-py client for this server (TLS verified against the test CA)."""
        import redis
        if self.tls:
            kw.setdefault("ssl_ca_certs", self.ca_file)
        return redis.Redis.from_url(self.url, **kw)

    # --- life cycle -------------------------------------------------------------------------
    def args(self) -> list[str]:
        a = [self.exe, "--bind", "127.0.0.1", "--dir", self.dir, "--logfile", self.log_path,
             "--daemonize", "no", "--save", "", "--protected-mode", "no",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--maxmemory-policy", "noeviction"]
        if self.tls:
            a += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.cert_file,
                  "--tls-key-file", self.key_file, "--tls-ca-cert-file", self.ca_file,
                  "--tls-auth-clients", "no"]
        else:
            a += ["--port", str(self.port)]
        if self.password:
            a += ["--requirepass", self.password]
        return a

    def start(self, timeout: float = 15.0) -> "RedisServer":
        """Start it (again, on the same port) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_tail())
            try:
                c = self.client(socket_timeout=1, socket_connect_timeout=1)
                try:
                    if c.ping():
                        return self
                finally:
                    c.close()
            except Exception as e:   # not up yet
                last = e
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server not ready after {timeout}s (last error: {last})\n" + self.log_tail())

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGCONT)      # a paused server cannot handle SIGTERM
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def pause(self) -> None:
        """SIGSTOP: Redis stops answering but keeps its connections (a stalled server)."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["RedisServer", "RedisMissing", "redis_server_path"]
