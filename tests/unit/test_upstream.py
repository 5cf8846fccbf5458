"""The upstream HTTP client against tiny loopback servers: reuse, stale connections, deadlines."""
from __future__ import annotations

import pytest
import trio

from finops.shared.provider_config import BedrockConfig
from finops.shared.errors import GatewayError
from finops.workers.upstream import UpstreamClient

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def serve(nursery, handler) -> tuple[str, list]:
    """A loopback server; returns its URL and the list of accepted connections."""
    accepted = []

    async def on_conn(stream):
        accepted.append(stream)
        await handler(stream)

    listeners = await nursery.start(trio.serve_tcp, on_conn, 0, )
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}", accepted


async def read_request(stream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    return head


def client(**kw) -> UpstreamClient:
    return UpstreamClient(BedrockConfig(name="t", **kw))


async def test_keep_alive_reuses_one_connection():
    async def handler(stream):
        while await read_request(stream):
            await stream.send_all(OK)

    async with trio.open_nursery() as n:
        url, accepted = await serve(n, handler)
        c = client()
        for _ in range(5):
            r = await c.post(url + "/model/m/converse", [(b"content-type", b"application/json")], b"{}")
            assert r.status_code == 200 and r.content == b"{}"
        assert len(accepted) == 1
        await c.aclose()
        n.cancel_scope.cancel()


async def test_connection_the_server_closed_while_idle_is_replaced_transparently():
    async def handler(stream):
        if await read_request(stream):
            await stream.send_all(OK)
        await stream.aclose()          # closes after one answer, without saying so

    async with trio.open_nursery() as n:
        url, accepted = await serve(n, handler)
        c = client()
        for _ in range(3):
            r = await c.post(url + "/x", [], b"{}")
            assert r.status_code == 200
        assert len(accepted) == 3
        await c.aclose()
        n.cancel_scope.cancel()


async def test_fresh_connection_dropped_before_answer_is_not_retried():
    async def handler(stream):
        await read_request(stream)
        await stream.aclose()

    async with trio.open_nursery() as n:
        url, accepted = await serve(n, handler)
        with pytest.raises(GatewayError) as e:
            await client().post(url + "/x", [], b"{}")
        assert e.value.code == "ServiceUnavailableException" and "before answering" in e.value.message
        assert len(accepted) == 1      # a request the server may have seen is never sent twice
        n.cancel_scope.cancel()


async def test_read_timeout_is_model_timeout(autojump_clock):
    async def handler(stream):
        await read_request(stream)
        await trio.sleep(100)

    async with trio.open_nursery() as n:
        url, _ = await serve(n, handler)
        with pytest.raises(GatewayError) as e:
            await client(read_timeout_seconds=5).post(url + "/x", [], b"{}")
        assert e.value.code == "ModelTimeoutException" and "read_timeout_seconds" in e.value.message
        n.cancel_scope.cancel()


async def test_stalled_body_fails_between_chunks(autojump_clock):
    async def handler(stream):
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await trio.sleep(100)

    async with trio.open_nursery() as n:
        url, _ = await serve(n, handler)
        got = []
        with pytest.raises(GatewayError) as e:
            async with client(read_timeout_seconds=5).stream(url + "/x", [], b"{}") as r:
                async for d in r.aiter_raw():
                    got.append(d)
        assert got == [b"abc"] and e.value.code == "ModelTimeoutException"
        n.cancel_scope.cancel()


async def test_connection_refused_names_base_url():
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GatewayError) as e:
        await client().post(f"http://127.0.0.1:{port}/x", [], b"{}")
    assert e.value.code == "ServiceUnavailableException" and "base_url" in e.value.message
