"""A webhook receiver on a loopback port for the alerts tests (tests/system/test_alerts*.py):
it records every POST (path, headers, body) and answers by path.

    /ok     200
    /flaky  500 twice per (path, idempotency id), then 200
    /hold   the first POST waits until `release` is set (`first` is set when it arrives), then 200
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A webhook receiver on a loopback port. Paths: /ok (200), /flaky (500 twice per idempotency
    id, then 200), /hold (the first POST waits until `release` is set, then 200)."""

    def __init__(self):
        self.posts: list[tuple[str, dict, bytes]] = []
        self.tries: dict[str, int] = {}
        self.lock = threading.Lock()
        self.first = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("X-FinOps-Idempotency-Key", "")
                with outer.lock:
                    outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    n = outer.tries[(self.path, key)] = outer.tries.get((self.path, key), 0) + 1
                status = 200
                if self.path == "/flaky" and n <= 2:
                    status = 500
                if self.path == "/hold" and not outer.first.is_set():
                    outer.first.set()
                    outer.release.wait(60)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:            # the sender is gone (killed)
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[dict, bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.posts if p == path]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
