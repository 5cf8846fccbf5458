"""Frontend process: Hypercorn (trio) serving `App`, on a SO_REUSEPORT socket.

Several frontend processes bind the same host:port with SO_REUSEPORT and the kernel spreads
connections over them; no process hands sockets to another, so the supervisor and honcho start
frontends the same way. SIGTERM (or SIGINT) starts a drain: the listener closes, idle keep-alive
connections close, in-flight requests get up to `server.drain_seconds` to finish, then the
process exits.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from finops.shared import config as configmod
from finops.shared import exitcodes
from finops.shared import memtrim
from finops.shared.logs import setup_logging

from . import connection_guard, h11_writes, h2_protocol, keepalive
from .app import App
from .dispatch import WorkerPool

log = logging.getLogger("finops.frontend")


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def hypercorn_config(cfg: configmod.Config) -> HyperConfig:
    hc = HyperConfig()
    hc.graceful_timeout = cfg.server.drain_seconds
    hc.keep_alive_timeout = 75          # longer than typical client pool idle times
    hc.keep_alive_max_requests = 1_000_000  # hypercorn's 1000 makes SDK pools reconnect needlessly
    hc.include_server_header = False
    hc.include_date_header = True
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.h11_max_incomplete_size = 64 * 1024
    if cfg.server.tls_cert_file:
        hc.certfile, hc.keyfile = cfg.server.tls_cert_file, cfg.server.tls_key_file
        hc.alpn_protocols = ["h2", "http/1.1"]     # h2 for the JS SDK (h2_protocol.py), 1.1 for boto3
    return hc


async def report_gauges(pool: WorkerPool) -> None:
    """Every second, this frontend's requests in flight and rows waiting for the observer, for
    /metrics (the observer actor sums them over every frontend)."""
    proc = f"frontend-{os.getpid()}"
    outcomes = pool.outcomes
    while True:
        outcomes.observer.send({"k": "gauges", "proc": proc, "kind": "frontend",
                                "g": {"inflight": len(pool.pending),
                                      "queues": {"frontend_rows": len(outcomes.rows)}}})
        await trio.sleep(1.0)


async def serve(cfg: configmod.Config, sock: socket.socket) -> None:
    h2_protocol.install()
    connection_guard.install()
    keepalive.install()
    h11_writes.install()
    pool = WorkerPool(cfg)
    app = App(cfg, pool)
    hc = hypercorn_config(cfg)
    stop = trio.Event()

    async def on_signal():
        # Held open until the process ends: a repeated SIGTERM (honcho sends one to every process
        # when any exits) is ignored instead of killing the drain.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                if not stop.is_set():
                    log.info("draining (up to %.0fs for requests in flight)", cfg.server.drain_seconds)
                    app.draining = True
                    stop.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        nursery.start_soon(on_signal)
        nursery.start_soon(report_gauges, pool)
        nursery.start_soon(memtrim.run)         # free heap pages back to the system
        sockets = Sockets([sock], [], []) if hc.ssl_enabled else Sockets([], [sock], [])
        await worker_serve(wrap_app(app, hc.wsgi_max_body_size, "asgi"), hc,
                           sockets=sockets, shutdown_trigger=stop.wait)
        nursery.cancel_scope.cancel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finops.frontend", description="FinOps HTTP frontend")
    ap.add_argument("--config", help="TOML config file (default: FINOPS_CONFIG or embedded defaults)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    args = ap.parse_args(argv)
    setup_logging("frontend")
    try:
        cfg = configmod.load(args.config, host=args.host, port=args.port)
    except configmod.ConfigError as e:
        print(f"finops frontend: config error: {e}", file=sys.stderr)
        return exitcodes.CANNOT_START
    try:
        sock = listen_socket(cfg.server.host, cfg.server.port)
    except OSError as e:
        print(f"finops frontend: cannot listen on {cfg.server.host}:{cfg.server.port}: {e}", file=sys.stderr)
        return exitcodes.CANNOT_START
    trio.run(serve, cfg, sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
