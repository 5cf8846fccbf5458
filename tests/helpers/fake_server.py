"""The server machinery the loopback fakes share (`FakeBedrock`, `FakeOpenAI`, `FakeAnthropic`,
`FakeMistral`): everything but the routes, the auth and the wire shapes; plus the two helpers their
default answers share, `tokens` and `texts`.

A `FakeServer` is a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1:<free port>`` speaking HTTP/1.1
with keep-alive (one daemon thread per connection, ``TCP_NODELAY`` on every connection: headers, body
and each stream event are separate writes, and with Nagle on a keep-alive client's delayed ACK costs
~40 ms per response). Every response carries the fake's ``Server`` header (`server_header`).

Lifecycle: ``start()`` (returns the fake; a second call does nothing) / ``stop()``, or ``with fake:``.
``stop()`` stops serving, drops the open connections and interrupts the sleeps of scripted
``delay`` / ``event_delay``, whose connections are then closed without an answer. ``.port`` (a
`RuntimeError` before ``start()``) and ``.url`` = ``http://127.0.0.1:PORT`` + `url_path`.

Inspection: ``.requests`` lists the requests in arrival order (each fake records its own
``RecordedRequest``), ``.last_request`` is the newest one, ``.tokens(text)`` is the fakes' token count
(whitespace-separated words, at least 1).

Scripting: ``fake.script(model, behavior)`` sets how requests for that model are answered; ``"*"``
matches any model and is used when no exact script matches. It holds until ``fake.script(model,
None)``, ``fake.clear_scripts()`` or ``fake.reset()`` (which also forgets the recorded requests). A
behavior is a dict whose keys combine; the keys every fake understands the same way:

* ``times``: apply to the next N matching requests only, then forget the script.
* ``delay``: seconds to sleep before answering (whatever the answer is).
* ``event_delay``: seconds to sleep between stream events.
* ``then: "cut"``: streams: send half of the next event and drop the connection (no terminating
  chunk). Non-stream answers: send half of the body (its full Content-Length announced) and drop the
  connection.

Each fake documents its other keys and how it answers.
"""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

__all__ = ["FakeServer", "texts", "tokens"]


def tokens(text: str) -> int:
    """The fakes' token count: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def texts(content: Any, *, any_type: bool = False) -> list[str]:
    """Texts of a message content value: a string, or a list of strings and text blocks
    (``{"text": ...}`` / ``{"type": "text", "text": ...}``). With `any_type`, a block of any other
    ``type`` that has a string ``text`` counts too."""
    if isinstance(content, str):
        return [content]
    out = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str) \
                    and (any_type or part.get("type", "text") == "text"):
                out.append(part["text"])
    return out


class _Server(ThreadingHTTPServer):
    """Tracks its open connections so that `FakeServer.stop` can drop them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: "FakeServer"):
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request, whatever its method, to the fake's ``_handle``."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    # TCP_NODELAY: headers and body (and each stream event) are separate writes; with Nagle on, a
    # keep-alive client's delayed ACK costs ~40 ms per response.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet
        pass

    def version_string(self) -> str:
        return self.server.fake.server_header

    def _dispatch(self):
        self.server.fake._handle(self)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _dispatch


class FakeServer:
    """Lifecycle, recording, scripts and the wire helpers of a loopback fake. Subclasses implement
    ``_handle(h)`` for one request. See the module docstring."""

    server_header = "fake"         # the Server response header
    url_path = ""                  # appended to http://127.0.0.1:PORT for .url
    _name = "fake"                 # the serving thread is "<_name>:<port>"
    _poll_interval = 0.05          # serve_forever's shutdown poll

    def __init__(self) -> None:
        self.requests: list = []
        self._scripts: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": self._poll_interval},
                                        name=f"{self._name}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (also interrupts scripted delays)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with server.conn_lock:
            conns = list(server.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_path}"

    # --- scripting and inspection ---------------------------------------------------------------
    def script(self, model: str, behavior: dict | None) -> None:
        """Answer requests for `model` ("*" = any) per `behavior`; None removes the script."""
        with self._lock:
            if behavior is None:
                self._scripts.pop(model, None)
            else:
                self._scripts[model] = dict(behavior)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def reset(self) -> None:
        """Forget recorded requests and scripts."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()

    @property
    def last_request(self) -> Any:
        return self.requests[-1]

    tokens = staticmethod(tokens)

    def _take_script(self, model: str | None, api_key: str | None = None) -> dict:
        """The behavior for a request for `model` (a copy; {} when none), counting down ``times``.
        A behavior with an ``api_key`` applies only to requests presenting that key (`api_key`);
        other requests are answered as if it were not there."""
        def applies(name):
            b = self._scripts.get(name)
            return b is not None and ("api_key" not in b or b["api_key"] == api_key)
        with self._lock:
            key = model if model is not None and applies(model) else "*" if applies("*") else None
            if key is None:
                return {}
            behavior = self._scripts[key]
            if "times" in behavior:
                behavior["times"] -= 1
                if behavior["times"] <= 0:
                    del self._scripts[key]
            return dict(behavior)

    def _record(self, rec: Any) -> None:
        with self._lock:
            self.requests.append(rec)

    # --- request handling ----------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        """Read, record and answer one request."""
        raise NotImplementedError

    @staticmethod
    def _headers_of(h: _Handler) -> dict[str, str]:
        """The request headers, lower-case names; repeated ones joined with ``,``."""
        headers: dict[str, str] = {}
        for name, value in h.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        return headers

    @staticmethod
    def _read_body(h: _Handler, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(headers.get("content-length") or 0)
        return h.rfile.read(length) if length else b""

    def _pause(self, h: _Handler, seconds: Any) -> bool:
        """Sleep `seconds` (none when falsy) unless `stop()` interrupts it; then mark the connection
        for closing and return True: the caller answers nothing more."""
        seconds = float(seconds or 0)
        if seconds and self._stopping.wait(seconds):
            h.close_connection = True
            return True
        return False

    # --- writing ---------------------------------------------------------------------------------
    @staticmethod
    def _start_response(h: _Handler, status: int, headers: Iterable[tuple[str, Any]]) -> None:
        """Status line and `headers` (in order, repeats allowed), then the blank line."""
        h.send_response(status)
        for name, value in headers:
            h.send_header(name, str(value))
        h.end_headers()

    @staticmethod
    def _write_body(h: _Handler, body: bytes, behavior: dict) -> None:
        """A Content-Length body; ``then: "cut"`` sends half of it and drops the connection."""
        if behavior.get("then") == "cut":
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)
        h.wfile.flush()

    @staticmethod
    def _write_chunk(h: _Handler, data: bytes) -> None:
        """One chunk of a chunked body, flushed (nothing for empty data: that would end the body)."""
        if data:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

    def _write_events(self, h: _Handler, events: list[bytes], limit: int, behavior: dict, then: Any, *,
                      last: bytes = b"", spare: bytes) -> None:
        """The chunked body of a stream: ``events[:limit]``, one chunk each, ``event_delay`` apart.
        Then ``then == "cut"``: half of the next event (`spare` when there is none) and drop the
        connection; otherwise `last` (if any) and the terminating chunk."""
        event_delay = float(behavior.get("event_delay") or 0)
        for i, event in enumerate(events[:limit]):
            if i and self._pause(h, event_delay):
                return
            self._write_chunk(h, event)
        if then == "cut":
            nxt = events[limit] if limit < len(events) else spare
            self._write_chunk(h, nxt[:max(1, len(nxt) // 2)])
            h.close_connection = True
            return
        self._write_chunk(h, last)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
