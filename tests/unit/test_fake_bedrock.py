"""tests/helpers/fake_bedrock.py driven by a real boto3 bedrock-runtime client over loopback.

The fake must look like Bedrock to an unchanged client: every operation parses, streams arrive as
events, each scripted failure surfaces as the exception boto3 raises against real AWS, and a
request with wrong credentials is refused by the fake's SigV4 check.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError, ReadTimeoutError, ResponseStreamingError

from finops.shared import sigv4
from finops.shared.eventstream import FrameDecoder
from tests.helpers.fake_bedrock import FakeBedrock

AKID = "AKIDFAKEBEDROCKTEST1"
SECRET = "fake-bedrock-secret/with+chars"
CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
CLAUDE_ARN = ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
              "us.anthropic.claude-3-7-sonnet-20250219-v1:0")
MISTRAL = "mistral.mistral-7b-instruct-v0:2"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
WEIRD = "weird name/with space+plus"
HELLO = [{"role": "user", "content": [{"text": "hello big world"}]}]
CLAUDE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
               "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(autouse=True)
def _no_bearer(monkeypatch):
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


@pytest.fixture
def fake():
    with FakeBedrock(AKID, SECRET) as f:
        yield f


_open_clients: list = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open_clients:
        _open_clients.pop().close()


def make_client(fake, *, key=AKID, secret=SECRET, attempts: int | None = 1, region="us-east-1",
                token: str | None = None, **cfg):
    """A real boto3 bedrock-runtime client for `fake` (closed after the test)."""
    retries = {"total_max_attempts": attempts} if attempts else {}
    c = boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name=region,
                     aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
                     config=Config(retries=retries, **cfg))
    _open_clients.append(c)
    return c


@pytest.fixture
def client(fake):
    return make_client(fake)


def collect(stream, into: list) -> list:
    """Iterate a boto3 EventStream into `into`; close it even when iteration raises."""
    try:
        for event in stream:
            into.append(event)
    finally:
        stream.close()
    return into


def raw_post(fake, path: str, body: bytes, headers: dict | None = None, sign: bool = True):
    """POST with http.client (signed with our signer) and return (response, body bytes)."""
    h = dict(headers or {})
    if sign:
        h = sigv4.sign_headers("POST", fake.url + path, h, body, access_key_id=AKID, secret_key=SECRET,
                               region="us-east-1", now=datetime.now(timezone.utc))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=h)
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


# --- the five operations -----------------------------------------------------------------------

def test_converse_echo_usage_and_recording(fake, client):
    r = client.converse(modelId=CLAUDE, messages=HELLO, system=[{"text": "be brief"}])
    assert r["output"]["message"] == {"role": "assistant",
                                      "content": [{"text": "fake-bedrock: hello big world"}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 5, "outputTokens": 4, "totalTokens": 9}
    assert r["metrics"]["latencyMs"] >= 1
    rec = fake.last_request
    assert (rec.method, rec.operation, rec.model_id) == ("POST", "Converse", CLAUDE)
    assert rec.path == "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse"
    assert rec.sigv4_ok and rec.sigv4_error == ""
    assert rec.json()["messages"] == HELLO
    assert rec.headers["content-type"] == "application/json"
    assert r["ResponseMetadata"]["RequestId"] == rec.request_id


@pytest.mark.parametrize("model_id, wire", [
    (CLAUDE_ARN, "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic."
                 "claude-3-7-sonnet-20250219-v1%3A0"),
    (WEIRD, "weird%20name%2Fwith%20space%2Bplus"),
])
def test_model_ids_are_routed_on_the_raw_path(fake, client, model_id, wire):
    client.converse(modelId=model_id, messages=HELLO)
    rec = fake.last_request
    assert rec.path == f"/model/{wire}/converse"
    assert rec.model_id == model_id
    assert rec.sigv4_ok, rec.sigv4_error


def test_converse_max_tokens_truncates(client):
    r = client.converse(modelId=CLAUDE, messages=HELLO, inferenceConfig={"maxTokens": 2})
    assert r["output"]["message"]["content"] == [{"text": "fake-bedrock: hello"}]
    assert r["stopReason"] == "max_tokens"
    assert r["usage"]["outputTokens"] == 2


def test_converse_stream_events(fake, client):
    r = client.converse_stream(modelId=CLAUDE, messages=HELLO)
    events = list(r["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["messageStart"] + ["contentBlockDelta"] * 4 + [
        "contentBlockStop", "messageStop", "metadata"]
    assert events[0]["messageStart"] == {"role": "assistant"}  # "p" padding is not surfaced
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:5])
    assert text == "fake-bedrock: hello big world"
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"] == {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    assert fake.last_request.operation == "ConverseStream"


def raw_stream(fake, path: str, payload: dict) -> tuple[bytes, list[bytes], bool]:
    """Signed POST over a bare socket; returns (response head, HTTP chunks, saw terminating chunk)."""
    body = json.dumps(payload).encode()
    h = sigv4.sign_headers("POST", fake.url + path, {"Content-Type": "application/json"}, body,
                           access_key_id=AKID, secret_key=SECRET, region="us-east-1",
                           now=datetime.now(timezone.utc))
    with socket_conn(fake) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n".encode()
                     + b"".join(f"{k}: {v}\r\n".encode() for k, v in h.items())
                     + f"Host: 127.0.0.1:{fake.port}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        raw = read_until(sock, b"\r\n0\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, chunks, True
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    return head, chunks, False


def test_converse_stream_wire_format(fake):
    """Chunked, one frame per chunk, every payload padded with "p", real frame headers."""
    head, chunks, terminated = raw_stream(fake, "/model/m/converse-stream", {"messages": HELLO})
    assert terminated
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Type: application/vnd.amazon.eventstream" in head
    assert b"x-amzn-RequestId: " in head
    frames = []
    for c in chunks:
        d = FrameDecoder()
        d.receive_data(c)
        got = list(d.frames())
        assert len(got) == 1 and d.pending == 0  # exactly one whole frame per chunk
        frames.append(got[0])
    assert [f.event_type for f in frames][:2] == ["messageStart", "contentBlockDelta"]
    assert len(frames) == 8
    for f in frames:
        assert f.headers[":message-type"] == "event"
        assert f.headers[":content-type"] == "application/json"
        payload = json.loads(f.payload)
        assert isinstance(payload["p"], str) and payload["p"]


def test_cut_is_mid_frame_on_the_wire(fake):
    fake.script("m", {"stream_events": 2, "then": "cut"})
    _, chunks, terminated = raw_stream(fake, "/model/m/converse-stream", {"messages": HELLO})
    assert not terminated and len(chunks) == 3
    d = FrameDecoder()
    d.receive_data(b"".join(chunks))
    assert len(list(d.frames())) == 2
    assert d.pending > 12  # the third frame's prelude arrived, its end never did


def test_exception_frame_on_the_wire(fake):
    fake.script("m", {"stream_events": 1, "then": "exception", "message": "boom",
                      "original_status_code": 529})
    _, chunks, terminated = raw_stream(fake, "/model/m/converse-stream", {"messages": HELLO})
    assert terminated and len(chunks) == 2
    d = FrameDecoder()
    d.receive_data(chunks[1])
    (frame,) = d.frames()
    assert frame.headers == {":exception-type": "modelStreamErrorException",
                             ":content-type": "application/json", ":message-type": "exception"}
    assert json.loads(frame.payload) == {"message": "boom", "originalStatusCode": 529,
                                         "originalMessage": "boom"}


def test_stream_events_arrive_one_by_one(fake, client):
    fake.script(CLAUDE, {"event_delay": 0.25})
    t0 = time.monotonic()
    stream = client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"]
    arrivals = [time.monotonic() - t0 for _ in stream]
    assert len(arrivals) == 8
    assert arrivals[0] < 0.2 < 1.5 < arrivals[-1]  # not buffered until the end


def test_invoke_model_anthropic(fake, client):
    r = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    assert r["contentType"] == "application/json"
    native = json.loads(r["body"].read())
    assert native["type"] == "message" and native["role"] == "assistant"
    assert native["id"].startswith("msg_bdrk_")
    assert native["model"] == "claude-3-7-sonnet-20250219"
    assert native["content"] == [{"type": "text", "text": "fake-bedrock: hi there"}]
    assert native["stop_reason"] == "end_turn" and native["stop_sequence"] is None
    assert native["usage"] == {"input_tokens": 2, "output_tokens": 3}
    hdrs = r["ResponseMetadata"]["HTTPHeaders"]
    assert hdrs["x-amzn-bedrock-input-token-count"] == "2"
    assert hdrs["x-amzn-bedrock-output-token-count"] == "3"
    assert int(hdrs["x-amzn-bedrock-invocation-latency"]) >= 1
    rec = fake.last_request
    assert rec.operation == "InvokeModel" and "content-type" not in rec.headers  # boto3 sends none
    assert json.loads(rec.body) == CLAUDE_BODY


def test_invoke_model_anthropic_requires_native_fields(client):
    with pytest.raises(client.exceptions.ValidationException, match="max_tokens"):
        client.invoke_model(modelId=CLAUDE, body=json.dumps(
            {"anthropic_version": "bedrock-2023-05-31", "messages": []}))
    with pytest.raises(client.exceptions.ValidationException, match="not valid JSON"):
        client.invoke_model(modelId=CLAUDE, body=b"{nope")


@pytest.mark.parametrize("model_id, body, check", [
    (MISTRAL, {"prompt": "<s>[INST] hi you [/INST]", "max_tokens": 50},
     lambda n: n == {"outputs": [{"text": "fake-bedrock: <s>[INST] hi you [/INST]", "stop_reason": "stop"}]}),
    ("mistral.mistral-large-2407-v1:0", {"messages": [{"role": "user", "content": "yo"}]},
     lambda n: n["choices"][0]["message"] == {"role": "assistant", "content": "fake-bedrock: yo"}),
    (LLAMA, {"prompt": "why sky", "max_gen_len": 2},
     lambda n: n == {"generation": "fake-bedrock: why", "prompt_token_count": 2,
                     "generation_token_count": 2, "stop_reason": "length"}),
    ("amazon.titan-text-express-v1", {"inputText": "hey"},
     lambda n: n["results"][0]["outputText"] == "fake-bedrock: hey" and n["inputTextTokenCount"] == 1),
    ("us.amazon.nova-lite-v1:0", {"messages": [{"role": "user", "content": [{"text": "hey"}]}]},
     lambda n: n["output"]["message"]["content"] == [{"text": "fake-bedrock: hey"}]),
])
def test_invoke_model_other_families(client, model_id, body, check):
    r = client.invoke_model(modelId=model_id, body=json.dumps(body), contentType="application/json",
                            accept="application/json")
    assert r["contentType"] == "application/json"
    native = json.loads(r["body"].read())
    assert check(native), native


def test_invoke_stream_anthropic(fake, client):
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    assert r["contentType"] == "application/json"  # from X-Amzn-Bedrock-Content-Type
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    types = [c["type"] for c in chunks]
    assert types == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop", "message_delta", "message_stop"]
    assert chunks[0]["message"]["usage"]["input_tokens"] == 2
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == \
        "fake-bedrock: hi there"
    assert chunks[-2]["delta"]["stop_reason"] == "end_turn"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 2
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks[:-1])
    assert fake.last_request.operation == "InvokeModelWithResponseStream"


@pytest.mark.parametrize("model_id, body, key", [
    (MISTRAL, {"prompt": "one two"}, lambda c: c["outputs"][0]["text"]),
    (LLAMA, {"prompt": "one two"}, lambda c: c["generation"]),
])
def test_invoke_stream_other_families(client, model_id, body, key):
    r = client.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert len(chunks) == 3
    assert "".join(key(c) for c in chunks) == "fake-bedrock: one two"
    assert "amazon-bedrock-invocationMetrics" in chunks[-1]


def test_count_tokens_matches_converse_usage(client):
    conv = client.converse(modelId=CLAUDE, messages=HELLO)
    n = client.count_tokens(modelId=CLAUDE, input={"converse": {"messages": HELLO}})["inputTokens"]
    assert n == conv["usage"]["inputTokens"] == 3
    native = client.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(CLAUDE_BODY)}})
    assert native["inputTokens"] == 2


def test_count_tokens_invoke_body_is_base64_on_the_wire(fake, client):
    client.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": b'{"prompt":"a b c d"}'}})
    sent = fake.last_request.json()["input"]["invokeModel"]["body"]
    assert base64.b64decode(sent) == b'{"prompt":"a b c d"}'


# --- scripted failures ---------------------------------------------------------------------------

@pytest.mark.parametrize("status, code", [
    (429, "ThrottlingException"), (400, "ValidationException"), (403, "AccessDeniedException"),
    (404, "ResourceNotFoundException"), (408, "ModelTimeoutException"), (424, "ModelErrorException"),
    (429, "ModelNotReadyException"), (500, "InternalServerException"),
    (503, "ServiceUnavailableException"),
])
def test_scripted_error_raises_modeled_exception(fake, client, status, code):
    fake.script(CLAUDE, {"status": status, "code": code, "message": f"scripted {code}"})
    with pytest.raises(getattr(client.exceptions, code)) as ei:
        client.converse(modelId=CLAUDE, messages=HELLO)
    err = ei.value.response
    assert err["Error"] == {"Code": code, "Message": f"scripted {code}"}
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err["ResponseMetadata"]["RequestId"] == fake.last_request.request_id
    assert err["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith(code + ":http://")


@pytest.mark.parametrize("op", ["converse_stream", "invoke_model", "invoke_model_with_response_stream",
                                "count_tokens"])
def test_scripted_error_on_every_operation(fake, client, op):
    fake.script("*", {"status": 429, "code": "ThrottlingException", "message": "slow down"})
    kwargs = {"count_tokens": {"input": {"converse": {"messages": HELLO}}},
              "converse_stream": {"messages": HELLO}}.get(op, {"body": json.dumps(CLAUDE_BODY)})
    with pytest.raises(client.exceptions.ThrottlingException, match="slow down"):
        getattr(client, op)(modelId=CLAUDE, **kwargs)  # before any stream is returned


def test_error_without_code_and_custom_headers(fake, client):
    fake.script(CLAUDE, {"status": 429, "body": {"Message": "no code here"},
                         "headers": {"x-amz-retry-after": "1500"}})
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert ei.value.response["Error"] == {"Code": "429", "Message": "no code here"}
    assert ei.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-retry-after"] == "1500"
    assert not isinstance(ei.value, client.exceptions.ThrottlingException)


def test_times_limits_a_script_and_sdk_retries_are_seen(fake):
    client = make_client(fake, attempts=None)  # the SDK's default retry policy
    fake.script(CLAUDE, {"status": 503, "code": "ServiceUnavailableException", "times": 2})
    r = client.converse(modelId=CLAUDE, messages=HELLO)
    assert r["ResponseMetadata"]["RetryAttempts"] == 2
    recs = fake.requests_for("Converse", CLAUDE)
    assert len(recs) == 3 and all(x.sigv4_ok for x in recs)
    assert ["attempt=1" in recs[0].headers["amz-sdk-request"], "attempt=2" in recs[1].headers["amz-sdk-request"],
            "attempt=3" in recs[2].headers["amz-sdk-request"]] == [True, True, True]
    assert len({x.headers["amz-sdk-invocation-id"] for x in recs}) == 1  # one call, three attempts
    client.converse(modelId=CLAUDE, messages=HELLO)  # the script is used up
    assert len(fake.requests_for("Converse")) == 4


def test_wildcard_specific_and_clear(fake, client):
    fake.script("*", {"text": "from star"})
    fake.script(LLAMA, {"text": "from llama"})
    assert client.converse(modelId=CLAUDE, messages=HELLO)["output"]["message"]["content"][0]["text"] == "from star"
    assert client.converse(modelId=LLAMA, messages=HELLO)["output"]["message"]["content"][0]["text"] == "from llama"
    fake.script(LLAMA, None)
    assert client.converse(modelId=LLAMA, messages=HELLO)["output"]["message"]["content"][0]["text"] == "from star"
    fake.clear_scripts()
    assert client.converse(modelId=LLAMA, messages=HELLO)["output"]["message"]["content"][0]["text"] == \
        "fake-bedrock: hello big world"


def test_delay(fake):
    fake.script(CLAUDE, {"delay": 0.6})
    t0 = time.monotonic()
    make_client(fake).converse(modelId=CLAUDE, messages=HELLO)
    assert time.monotonic() - t0 >= 0.6
    fake.script(CLAUDE, {"delay": 2.0})
    with pytest.raises(ReadTimeoutError):
        make_client(fake, read_timeout=0.3).converse(modelId=CLAUDE, messages=HELLO)


@pytest.mark.parametrize("member", ["modelStreamErrorException", "throttlingException",
                                    "internalServerException", "validationException",
                                    "serviceUnavailableException"])
def test_stream_exception_after_n_events(fake, client, member):
    fake.script(CLAUDE, {"stream_events": 2, "then": "exception", "exception_type": member,
                         "message": "model blew up"})
    got = []
    with pytest.raises(EventStreamError) as ei:
        collect(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"], got)
    assert [next(iter(e)) for e in got] == ["messageStart", "contentBlockDelta"]
    assert ei.value.response["Error"] == {"Code": member, "Message": "model blew up"}


def test_invoke_stream_exception_after_n_events(fake, client):
    fake.script(CLAUDE, {"stream_events": 3, "then": "exception",
                         "exception_type": "modelTimeoutException", "message": "too slow"})
    got = []
    with pytest.raises(EventStreamError) as ei:
        collect(client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["body"], got)
    assert [json.loads(e["chunk"]["bytes"])["type"] for e in got] == [
        "message_start", "content_block_start", "content_block_delta"]
    assert ei.value.response["Error"]["Code"] == "modelTimeoutException"


def test_stream_clean_truncation_is_silent(fake, client):
    fake.script(CLAUDE, {"stream_events": 3, "then": "end"})
    events = list(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"])
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta", "contentBlockDelta"]


def test_invoke_stream_clean_truncation_has_no_invocation_metrics(fake, client):
    fake.script(CLAUDE, {"stream_events": 3, "then": "end"})
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert [c["type"] for c in chunks] == ["message_start", "content_block_start", "content_block_delta"]
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks)


def test_cache_tokens_are_reported_by_every_operation(fake, client):
    fake.script(CLAUDE, {"cache_read": 40, "cache_write": 12})
    u = client.converse(modelId=CLAUDE, messages=HELLO)["usage"]
    assert (u["cacheReadInputTokens"], u["cacheWriteInputTokens"]) == (40, 12)
    meta = list(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"])[-1]["metadata"]
    assert (meta["usage"]["cacheReadInputTokens"], meta["usage"]["cacheWriteInputTokens"]) == (40, 12)
    h = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-amzn-bedrock-cache-read-input-token-count"] == "40"
    assert h["x-amzn-bedrock-cache-write-input-token-count"] == "12"
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    m = json.loads(list(r["body"])[-1]["chunk"]["bytes"])["amazon-bedrock-invocationMetrics"]
    assert (m["cacheReadInputTokenCount"], m["cacheWriteInputTokenCount"]) == (40, 12)
    fake.script(CLAUDE, {"cache_read": 5})        # one alone; and none without the script
    assert "cacheWriteInputTokens" not in client.converse(modelId=CLAUDE, messages=HELLO)["usage"]
    fake.clear_scripts()
    assert "cacheReadInputTokens" not in client.converse(modelId=CLAUDE, messages=HELLO)["usage"]
    h = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["ResponseMetadata"]["HTTPHeaders"]
    assert "x-amzn-bedrock-cache-read-input-token-count" not in h


def test_one_hour_cache_writes_are_reported_where_bedrock_reports_them(fake, client):
    fake.script(CLAUDE, {"cache_write": 12, "cache_write_1h": 8})
    u = client.converse(modelId=CLAUDE, messages=HELLO)["usage"]
    assert u["cacheDetails"] == [{"ttl": "1h", "inputTokens": 8}, {"ttl": "5m", "inputTokens": 4}]
    meta = list(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"])[-1]["metadata"]
    assert meta["usage"]["cacheDetails"][0] == {"ttl": "1h", "inputTokens": 8}
    doc = json.loads(client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["body"].read())
    assert doc["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 8}
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    start = json.loads(list(r["body"])[0]["chunk"]["bytes"])
    assert start["message"]["usage"]["cache_creation_input_tokens"] == 12
    fake.clear_scripts()
    assert "cacheDetails" not in client.converse(modelId=CLAUDE, messages=HELLO)["usage"]


def test_a_guardrail_trace_only_when_the_request_enables_it(fake, client):
    guard = {"guardrailIdentifier": "gr-1", "guardrailVersion": "1", "trace": "enabled"}
    r = client.converse(modelId=CLAUDE, messages=HELLO, guardrailConfig=guard)
    trace = r["trace"]["guardrail"]
    assert set(trace["inputAssessment"]) == {"gr-1"} and len(trace["outputAssessments"]["gr-1"]) == 1
    assert "trace" not in client.converse(modelId=CLAUDE, messages=HELLO, guardrailConfig=dict(guard, trace="disabled"))
    meta = list(client.converse_stream(modelId=CLAUDE, messages=HELLO, guardrailConfig=guard)["stream"])[-1]
    assert "guardrail" in meta["metadata"]["trace"]
    raw = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY), guardrailIdentifier="gr-1",
                              guardrailVersion="1", trace="ENABLED")
    doc = json.loads(raw["body"].read())
    assert doc["amazon-bedrock-guardrailAction"] == "NONE" and "gr-1" in doc["amazon-bedrock-trace"]["guardrail"]["input"]
    plain = json.loads(client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["body"].read())
    assert "amazon-bedrock-trace" not in plain


@pytest.mark.parametrize("op", ["converse_stream", "invoke_model_with_response_stream"])
def test_stream_cut_mid_frame(fake, client, op):
    fake.script(CLAUDE, {"stream_events": 2, "then": "cut"})
    got = []
    with pytest.raises(urllib3.exceptions.ProtocolError, match="ended prematurely"):
        if op == "converse_stream":
            collect(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"], got)
        else:
            collect(client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["body"], got)
    assert len(got) == 2


def test_cut_non_stream_bodies(fake, client):
    fake.script(CLAUDE, {"then": "cut"})
    with pytest.raises(ResponseStreamingError):
        client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["body"].read()
    # botocore reads JSON bodies without enforcing Content-Length: half a Converse body parses
    # as an empty response rather than raising (a client-side fact worth knowing)
    r = client.converse(modelId=CLAUDE, messages=HELLO)
    assert "output" not in r


def test_garbage(fake, client):
    fake.script(CLAUDE, {"garbage": True})
    r = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    assert r["body"].read().startswith(b"<html>")
    assert "output" not in client.converse(modelId=CLAUDE, messages=HELLO)
    with pytest.raises(Exception) as ei:
        collect(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"], [])
    assert type(ei.value).__module__ == "botocore.eventstream"  # a frame parser error
    fake.script(CLAUDE, {"garbage": True, "status": 502})
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert ei.value.response["Error"]["Code"] == "502"


def test_scripted_body_and_events(fake, client):
    fake.script(CLAUDE, {"body": {"output": {"message": {"role": "assistant", "content": [{"text": "canned"}]}},
                                  "stopReason": "tool_use", "usage": {"inputTokens": 7, "outputTokens": 8,
                                                                      "totalTokens": 15},
                                  "metrics": {"latencyMs": 99}}})
    r = client.converse(modelId=CLAUDE, messages=HELLO)
    assert r["stopReason"] == "tool_use" and r["usage"]["inputTokens"] == 7
    fake.script(CLAUDE, {"body": {"generation": "raw"}})
    assert json.loads(client.invoke_model(modelId=CLAUDE, body=b"{}")["body"].read()) == {"generation": "raw"}
    fake.script(CLAUDE, {"events": [{"messageStart": {"role": "assistant"}},
                                    {"contentBlockStart": {"contentBlockIndex": 0, "start": {
                                        "toolUse": {"toolUseId": "t1", "name": "calc"}}}},
                                    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {
                                        "toolUse": {"input": "{\"x\":1}"}}}},
                                    {"messageStop": {"stopReason": "tool_use"}}]})
    events = list(client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"])
    assert events[1]["contentBlockStart"]["start"]["toolUse"]["name"] == "calc"
    assert events[-1] == {"messageStop": {"stopReason": "tool_use"}}


# --- authentication --------------------------------------------------------------------------------

def test_wrong_secret_is_rejected(fake):
    client = make_client(fake, secret="not-the-secret")
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=CLAUDE, messages=HELLO)
    err = ei.value.response
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "signature we calculated does not match" in err["Error"]["Message"]
    rec = fake.last_request
    assert not rec.sigv4_ok and rec.sigv4_error.startswith("InvalidSignatureException: ")
    assert rec.operation == "Converse"


def test_unknown_key_and_wrong_region_are_rejected(fake):
    with pytest.raises(ClientError) as ei:
        make_client(fake, key="AKIDSOMEONEELSE").invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as ei:
        make_client(fake, region="eu-west-1").converse(modelId=CLAUDE, messages=HELLO)
    assert ei.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "region" in ei.value.response["Error"]["Message"]
    assert [r.sigv4_ok for r in fake.requests] == [False, False]


def test_server_clock_skew_is_enforced():
    with FakeBedrock(AKID, SECRET, clock=lambda: datetime.now(timezone.utc) + timedelta(minutes=6)) as f:
        with pytest.raises(ClientError) as ei:
            make_client(f).converse(modelId=CLAUDE, messages=HELLO)
        assert ei.value.response["Error"]["Message"].startswith("Signature expired:")


def test_session_token_is_checked():
    with FakeBedrock(AKID, SECRET, session_token="good-token") as f:
        make_client(f, token="good-token").converse(modelId=CLAUDE, messages=HELLO)
        with pytest.raises(ClientError) as ei:
            make_client(f, token="bad-token").converse(modelId=CLAUDE, messages=HELLO)
        assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_unsigned_and_unknown_routes(fake):
    resp, body = raw_post(fake, "/model/m/converse", b"{}", sign=False)
    assert resp.status == 400
    assert resp.getheader("X-Amzn-ErrorType").startswith("IncompleteSignatureException:")
    assert "Authorization" in json.loads(body)["message"]
    resp, body = raw_post(fake, "/bedrock/model/m/converse", b"{}")  # real Bedrock has no prefix
    assert resp.status == 404 and resp.getheader("X-Amzn-ErrorType").startswith("UnknownOperationException")
    resp, _ = raw_post(fake, "/model/m/fly", b"{}")
    assert resp.status == 404
    assert resp.getheader("x-amzn-RequestId")
    assert [r.operation for r in fake.requests] == ["Converse", None, None]


def test_keep_alive_and_stop(fake):
    """Several calls reuse one connection; stop() closes it and frees the port."""
    client = make_client(fake)
    for _ in range(3):
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert len({r.client_address for r in fake.requests}) == 1
    port = fake.port
    fake.stop()
    fake.stop()  # idempotent
    with pytest.raises(Exception):
        client.converse(modelId=CLAUDE, messages=HELLO)


# --- small socket helpers --------------------------------------------------------------------------


def socket_conn(fake) -> socket.socket:
    return socket.create_connection(("127.0.0.1", fake.port), timeout=10)


def read_until(sock, marker: bytes) -> bytes:
    buf = b""
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf
