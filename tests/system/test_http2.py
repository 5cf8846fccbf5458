"""HTTP/2 as the AWS SDK for JavaScript v3 speaks it: h2c with prior knowledge on http://, ALPN h2
on https://, one connection per request, and a GOAWAY sent as soon as the response headers
arrive. Streams must still complete (frontend/h2_protocol.py; bedrock-protocol.md section 5)."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import GoAwayFrame

from finops.shared import eventstream
from tests.helpers.gateway import Gateway

FINOPS = os.path.join(os.path.dirname(sys.executable), "finops")
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "over http2"}]}]}).encode()
CONFIG = """
[providers.mock]
kind = "mock"
chunks = 12
chunk_delay_ms = 15

[default_route]
provider = "mock"
"""


def js_sdk_like_request(port: int, path: str, body: bytes, tls: ssl.SSLContext | None = None):
    """One request on a fresh HTTP/2 connection, GOAWAY right after the response headers, then
    read until the stream ends or the server closes. Returns (status, headers, data, ended)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
    if tls:
        assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "https" if tls else "http"),
                            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/json")])
    conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, headers, data, ended = None, {}, b"", False
    try:
        while not ended:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                    status = int(headers[":status"])
                    # what NodeHttp2Handler does: session.close() -> GOAWAY, before the body
                    sock.sendall(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return status, headers, data, ended


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("h2c"), CONFIG) as g:
        yield g


def test_stream_completes_after_the_clients_goaway_h2c(gw):
    status, headers, data, ended = js_sdk_like_request(gw.port, "/bedrock/model/anthropic.claude-3-haiku/converse-stream", BODY)
    assert status == 200 and headers["content-type"] == "application/vnd.amazon.eventstream"
    kinds = [f.event_type for f in eventstream.decode_all(data)]
    assert ended, "the stream must end with END_STREAM, not a cut connection"
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert kinds.count("contentBlockDelta") == 12


def test_plain_answer_over_h2c(gw):
    status, _, data, ended = js_sdk_like_request(gw.port, "/bedrock/model/anthropic.claude-3-haiku/converse", BODY)
    assert status == 200 and ended
    assert json.loads(data)["output"]["message"]["content"][0]["text"].endswith("over http2")


def test_invoke_stream_over_h2_with_tls(tmp_path):
    out = subprocess.run([FINOPS, "certs", "--dir", str(tmp_path / "certs")], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")})
    assert out.returncode == 0, out.stderr
    certs = tmp_path / "certs"
    cfg = CONFIG + f'\n[server]\ntls_cert_file = "{certs / "server.pem"}"\ntls_key_file = "{certs / "server-key.pem"}"\n'
    with Gateway(tmp_path, cfg) as g:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.set_alpn_protocols(["h2"])
        body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                           "messages": [{"role": "user", "content": "tls and h2"}]}).encode()
        status, _, data, ended = js_sdk_like_request(
            g.port, "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream", body, ctx)
        assert status == 200 and ended
        chunks = [json.loads(__import__("base64").b64decode(json.loads(f.payload)["bytes"]))
                  for f in eventstream.decode_all(data)]
        assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"


def test_request_data_after_the_answer_is_dropped_and_the_connection_serves_on(gw):
    """A client still sending a body when its stream was answered (here: an unknown operation,
    refused before the body is read). hypercorn raised KeyError on that data (issue #365), which
    ended the whole frontend; now the data is dropped and the same connection serves the next
    request (frontend/h2_protocol.py)."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()

    def request(sid: int, path: str, end_stream: bool) -> None:
        conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"),
                                (":authority", f"127.0.0.1:{gw.port}"), ("content-type", "application/json")],
                          end_stream=end_stream)

    def answer(sid: int) -> tuple[int, bytes]:
        status, data = None, b""
        while True:
            sock.sendall(conn.data_to_send())
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            for ev in conn.receive_data(chunk):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, data

    try:
        request(1, "/bedrock/model/anthropic.claude-3-haiku/no-such-operation", end_stream=False)
        status, data = answer(1)                    # answered while its body is still to come
        assert 400 <= status < 500, (status, data)
        conn.send_data(1, BODY, end_stream=True)    # ... and here the body comes
        request(3, "/bedrock/model/anthropic.claude-3-haiku/converse", end_stream=False)
        conn.send_data(3, BODY, end_stream=True)
        status, data = answer(3)
        assert status == 200, data
        assert json.loads(data)["output"]["message"]["content"][0]["text"].endswith("over http2")
    finally:
        sock.close()
    assert "failed inside the HTTP server" not in gw.log()
