"""frontend/h11_writes.py on a real hypercorn: a Content-Length answer leaves in one write with
the same bytes as hypercorn's own; a streamed answer's head still leaves before its body."""
from __future__ import annotations

import pytest
import trio
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.trio import tcp_server

from finops.frontend import h11_writes
from tests.helpers.inprocess_hypercorn import serving

BODY = b'{"output":{"message":{"role":"assistant","content":[{"text":"hello"}]}}}'


class Served:
    def __init__(self, port: int, writes: list):
        self.port, self.writes = port, writes
        self.go = trio.Event()          # the streaming route waits for it between head and body

    async def exchange(self, raw: bytes, until: bytes = b"", close: bool = True) -> bytes:
        s = await trio.open_tcp_stream("127.0.0.1", self.port)
        await s.send_all(raw)
        got = b""
        with trio.fail_after(10):
            while not (until and got.endswith(until)):
                data = await s.receive_some(65536)
                if not data:
                    break
                got += data
        if close:
            await s.aclose()
        return got


async def run_server(patched: bool, monkeypatch, test) -> None:
    monkeypatch.setattr(hypercorn_h11.H11Protocol, "_send_h11_event", hypercorn_h11.H11Protocol._send_h11_event)
    if patched:
        h11_writes.install()
    writes: list[bytes] = []
    original = tcp_server.TCPServer.protocol_send

    async def protocol_send(self, event):
        if type(event).__name__ == "RawData":
            writes.append(event.data)
        await original(self, event)
    monkeypatch.setattr(tcp_server.TCPServer, "protocol_send", protocol_send)
    served: Served | None = None

    async def app(scope, receive, send):
        await receive()
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/vnd.amazon.eventstream")]})
            await served.go.wait()
            await send({"type": "http.response.body", "body": b"frame-1", "more_body": True})
            return await send({"type": "http.response.body", "body": b"", "more_body": False})
        body = b"" if scope["path"] == "/empty" else BODY
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async with serving(app, include_date_header=False) as port:
        served = Served(port, writes)
        await test(served)


GET = b"GET /converse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("raw", [GET, b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 b"HEAD /converse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 b"GET /converse HTTP/1.1\r\nHost x\r\n\r\n"])          # a 400 from hypercorn
async def test_same_bytes_in_one_write(raw, monkeypatch):
    got = {}
    for patched in (False, True):
        async def test(served):
            got[patched] = (await served.exchange(raw), [w for w in served.writes if w])
        await run_server(patched, monkeypatch, test)
    (theirs, their_writes), (ours, our_writes) = got[False], got[True]
    assert ours == theirs and ours.startswith(b"HTTP/1.1 ")
    assert len(our_writes) == 1, our_writes
    assert len(their_writes) == (2 if raw == GET else 1), their_writes     # head, body: two packets


async def test_keep_alive_answers_each_request_in_one_write(monkeypatch):
    async def test(served):
        s = await trio.open_tcp_stream("127.0.0.1", served.port)
        got = b""
        for _ in range(2):                            # two requests on one connection
            await s.send_all(GET.replace(b"Connection: close\r\n", b""))
            with trio.fail_after(10):
                while got.count(BODY) < _ + 1:
                    got += await s.receive_some(65536)
        await s.aclose()
        assert got.count(b"HTTP/1.1 200") == 2
        writes = [w for w in served.writes if w]
        assert len(writes) == 2 and all(w.startswith(b"HTTP/1.1 200") and w.endswith(BODY) for w in writes)
    await run_server(True, monkeypatch, test)


async def test_a_streamed_head_is_not_held(monkeypatch):
    async def test(served):
        s = await trio.open_tcp_stream("127.0.0.1", served.port)
        await s.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(10):
            head = await s.receive_some(65536)      # before the app has sent any body
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        served.go.set()
        rest = b""
        with trio.fail_after(10):
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await s.receive_some(65536)
        assert b"frame-1" in rest
        await s.aclose()
    await run_server(True, monkeypatch, test)
