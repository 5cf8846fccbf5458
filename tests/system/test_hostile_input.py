"""Input no Bedrock client sends, from anyone who can reach the port: the connection that carries
it is answered or closed, and the frontend serves everyone else (frontend/connection_guard.py).

Each test checks the same frontend process (same pid) still answers a real boto3 call afterwards:
before the guard, one `Upgrade: websocket` head with a byte after it ended the frontend, and
within two seconds of start the supervisor took that for "cannot start" and stopped the gateway.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from tests.helpers.gateway import Gateway

MSG = [{"role": "user", "content": [{"text": "still serving"}]}]
WS_HEAD = (b"GET /bedrock HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\n")


@pytest.fixture
def gw(tmp_path):
    with Gateway(tmp_path) as g:
        yield g


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; what the gateway answers before it closes (or 2 s pass)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(2)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return got


def assert_still_serving(gw: Gateway, frontend_pids: list[int]) -> None:
    time.sleep(0.3)                 # a crash, had there been one, is over by now
    assert gw.child_pids("frontend") == frontend_pids, gw.log()[-4000:]
    r = gw.client().converse(modelId="amazon.nova-lite-v1:0", messages=MSG)
    assert r["output"]["message"]["content"][0]["text"].endswith("still serving")


def test_a_websocket_head_with_a_byte_after_it_closes_only_that_connection(gw):
    pids = gw.child_pids("frontend")
    assert len(pids) == 1
    exchange(gw.port, WS_HEAD + b"x")
    assert_still_serving(gw, pids)
    log = gw.log()
    assert "failed inside the HTTP server; closed it, serving on" in log, log[-4000:]
    assert "exited with" not in log


def test_a_websocket_handshake_is_refused_aws_shaped(gw):
    pids = gw.child_pids("frontend")
    answer = exchange(gw.port, WS_HEAD)
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert status.startswith("HTTP/1.1 400"), answer
    assert headers["x-amzn-errortype"].startswith("ValidationException"), headers
    assert "not WebSocket" in json.loads(body)["message"]
    assert_still_serving(gw, pids)


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),        # a TLS hello on the http port
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\xff" * 40,
    b"POST /bedrock/model/m/converse HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + b"\x00" * 64,
], ids=["tls-hello", "h2-garbage-frames", "length-and-chunked", "h2c-upgrade-then-junk"])
def test_malformed_connections_leave_the_frontend_serving(gw, data):
    pids = gw.child_pids("frontend")
    exchange(gw.port, data)
    assert_still_serving(gw, pids)
