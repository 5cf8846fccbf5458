"""frontend/connection_guard.py, on a real Hypercorn in this test's trio loop: an exception inside
one connection's protocol code closes that connection, is logged, and the server goes on; a
shutdown (cancellation) still ends the server as before."""
from __future__ import annotations

import logging

import pytest
import trio

from finops.frontend import connection_guard
from tests.helpers.inprocess_hypercorn import serving

WS_HEAD_AND_A_BYTE = (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\nx")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return                      # a websocket scope: hypercorn answers, and with the byte after
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(2):
            while chunk := await stream.receive_some():
                got += chunk
                if data.startswith(b"GET /ok") and got.endswith(b"ok"):
                    break
    return got


@pytest.fixture(autouse=True)
def guarded():
    connection_guard.install()
    connection_guard.install()      # idempotent: still one wrapper around hypercorn's run


async def test_a_failing_connection_is_closed_and_the_server_serves_on(caplog):
    caplog.set_level(logging.ERROR, "finops.frontend")
    async with serving(app) as port:
        await exchange(port, WS_HEAD_AND_A_BYTE)      # h11 LocalProtocolError inside hypercorn
        for _ in range(3):
            answer = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
    failures = [r for r in caplog.records if "failed inside the HTTP server" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "127.0.0.1:" in failures[0].getMessage()


async def test_the_wrapper_lets_cancellation_through():
    from hypercorn.trio import tcp_server
    assert tcp_server.TCPServer.run is connection_guard._run
    assert connection_guard._run.hypercorns is not connection_guard._run

    class Stuck:
        stream = None

    with trio.move_on_after(0.05) as scope:
        async def forever(self):
            await trio.sleep_forever()
        original, connection_guard._run.hypercorns = connection_guard._run.hypercorns, forever
        try:
            await connection_guard._run(Stuck())
        finally:
            connection_guard._run.hypercorns = original
    assert scope.cancelled_caught       # the Cancelled reached its scope: not swallowed as a failure


async def test_a_write_that_meets_the_connections_close_is_that_close():
    """hypercorn's close (`send_eof`) does not take the send lock, so a write in another task met
    trio.BusyResourceError, which ended the connection as a failure (and, unguarded, the frontend)."""
    from hypercorn.events import Closed, RawData
    from hypercorn.trio import tcp_server

    class Closing:
        async def send_all(self, data):
            raise trio.BusyResourceError("another task is currently sending data on this SocketStream")

    class Protocol:
        def __init__(self):
            self.events = []

        async def handle(self, event):
            self.events.append(event)

    server = tcp_server.TCPServer.__new__(tcp_server.TCPServer)
    server.send_lock, server.stream, server.protocol = trio.Lock(), Closing(), Protocol()
    await server.protocol_send(RawData(data=b"the last bytes"))
    assert [type(e) for e in server.protocol.events] == [Closed]
    assert not server.send_lock.locked()
