"""The `bedrock` provider against a fake Bedrock on loopback that verifies our SigV4 re-signing."""
from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import EventStreamError

from finops.workers.governance.pricing import PricingTable, cost
from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.gateway import Gateway, free_port, request_log

AKID, SECRET = "AKIDPROVIDERKEY00001", "provider-secret-key"
MSG = [{"role": "user", "content": [{"text": "hello upstream"}]}]
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CACHED = "cached.claude"           # the route with [routes.cache], to CLAUDE
INVOKE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hello upstream"}]}


def config(base_url: str, read_timeout: float = 30) -> str:
    return f"""
[providers.aws]
kind = "bedrock"
base_url = "{base_url}"
region = "us-east-1"
read_timeout_seconds = {read_timeout}
keys = [{{access_key_id = "{AKID}", secret_access_key = "${{FINOPS_TEST_SECRET}}"}}]

[[routes]]
models = ["team-alias"]
provider = "aws"
model = "{CLAUDE}"

[[routes]]
models = ["cached.*"]
provider = "aws"
model = "{CLAUDE}"
[routes.cache]

[default_route]
provider = "aws"

[cache]
embedding_model = "none"
"""


@pytest.fixture(scope="module")
def fake():
    with FakeBedrock(AKID, SECRET) as f:
        yield f


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    with Gateway(tmp_path_factory.mktemp("bedrock"), config(fake.url, read_timeout=2),
                 extra_env={"FINOPS_TEST_SECRET": SECRET}) as g:
        yield g


@pytest.fixture()
def client(gw, fake):
    fake.clear_scripts()
    return gw.client()


OPS = {"converse": "Converse", "converse-stream": "ConverseStream", "invoke": "InvokeModel",
       "invoke-with-response-stream": "InvokeModelWithResponseStream", "count-tokens": "CountTokens"}


def last(fake, op):
    r = [r for r in fake.requests if r.operation == OPS[op]][-1]
    assert r.sigv4_ok, r.sigv4_error                       # re-signed, and the signature holds
    assert f"Credential={AKID}/" in r.headers["authorization"]   # with the provider's key...
    assert "finops-dummy-key" not in json.dumps(r.headers)       # ...never the client's
    return r


def test_converse_relayed_and_resigned(client, fake):
    r = client.converse(modelId=CLAUDE, messages=MSG, inferenceConfig={"maxTokens": 100})
    assert r["output"]["message"]["content"][0]["text"] == "fake-bedrock: hello upstream"
    assert r["usage"]["inputTokens"] == FakeBedrock.tokens("hello upstream")
    up = last(fake, "converse")
    assert up.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert json.loads(up.body)["inferenceConfig"] == {"maxTokens": 100}


def test_arn_model_id_and_route_alias(client, fake):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    client.converse(modelId=arn, messages=MSG)
    assert last(fake, "converse").model_id == arn
    client.converse(modelId="team-alias", messages=MSG)
    assert last(fake, "converse").model_id == CLAUDE


def test_converse_stream_relayed_event_by_event(client, fake):
    events = list(client.converse_stream(modelId=CLAUDE, messages=MSG)["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert "hello upstream" in text
    last(fake, "converse-stream")


def test_invoke_and_invoke_stream_and_count_tokens(client, fake):
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hello upstream"}]})
    r = client.invoke_model(modelId=CLAUDE, body=body)
    assert json.loads(r["body"].read())["content"][0]["text"] == "fake-bedrock: hello upstream"
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"]
    assert last(fake, "invoke").body == body.encode()            # byte for byte
    s = client.invoke_model_with_response_stream(modelId=CLAUDE, body=body)
    assert s["contentType"] == "application/json"
    chunks = [json.loads(e["chunk"]["bytes"]) for e in s["body"]]
    assert chunks[0]["type"] == "message_start" and "amazon-bedrock-invocationMetrics" in chunks[-1]
    last(fake, "invoke-with-response-stream")
    n = client.count_tokens(modelId=CLAUDE, input={"converse": {"messages": MSG}})["inputTokens"]
    assert n == FakeBedrock.tokens("hello upstream")
    last(fake, "count-tokens")


@pytest.mark.parametrize("status,code", [(429, "ThrottlingException"), (400, "ValidationException"),
                                         (403, "AccessDeniedException"), (424, "ModelErrorException"),
                                         (503, "ServiceUnavailableException"), (500, "InternalServerException")])
def test_upstream_errors_reach_the_client_as_the_same_class(client, fake, status, code):
    fake.script(CLAUDE, {"status": status, "code": code, "message": f"upstream says {code}"})
    with pytest.raises(getattr(client.exceptions, code)) as e:
        client.converse(modelId=CLAUDE, messages=MSG)
    assert e.value.response["Error"]["Message"] == f"upstream says {code}"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_upstream_error_before_stream_is_a_plain_error(client, fake):
    fake.script(CLAUDE, {"status": 429, "code": "ThrottlingException", "message": "slow down"})
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse_stream(modelId=CLAUDE, messages=MSG)


def test_upstream_exception_mid_stream_is_passed_on(client, fake):
    fake.script(CLAUDE, {"stream_events": 3, "then": "exception",
                         "exception_type": "modelStreamErrorException", "message": "model blew up"})
    got = []
    with pytest.raises(EventStreamError) as e:
        for ev in client.converse_stream(modelId=CLAUDE, messages=MSG)["stream"]:
            got.append(ev)
    assert len(got) == 3
    assert e.value.response["Error"] == {"Code": "modelStreamErrorException", "Message": "model blew up"}


def test_upstream_cut_mid_stream_becomes_an_exception_frame(client, fake):
    fake.script(CLAUDE, {"stream_events": 2, "then": "cut"})
    with pytest.raises(EventStreamError) as e:
        list(client.converse_stream(modelId=CLAUDE, messages=MSG)["stream"])
    assert e.value.response["Error"]["Code"] in ("modelStreamErrorException", "serviceUnavailableException")


def test_upstream_garbage_is_an_aws_error(client, fake):
    fake.script(CLAUDE, {"garbage": True})
    with pytest.raises(client.exceptions.InternalServerException, match="not a JSON object"):
        client.converse(modelId=CLAUDE, messages=MSG)
    # garbage before any event: the stream never started, so it is a plain error response
    with pytest.raises(client.exceptions.ModelStreamErrorException, match="corrupt event stream"):
        client.converse_stream(modelId=CLAUDE, messages=MSG)


def test_upstream_timeout_is_model_timeout(client, fake):
    fake.script(CLAUDE, {"delay": 3.0})
    t0 = time.monotonic()
    with pytest.raises(client.exceptions.ModelTimeoutException, match="read_timeout_seconds"):
        client.converse(modelId=CLAUDE, messages=MSG)
    assert time.monotonic() - t0 < 3.0


def test_unreachable_upstream_is_service_unavailable(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with Gateway(tmp_path, config(dead), extra_env={"FINOPS_TEST_SECRET": SECRET}) as g:
        c = g.client()
        with pytest.raises(c.exceptions.ServiceUnavailableException, match="cannot connect"):
            c.converse(modelId=CLAUDE, messages=MSG)
        with pytest.raises(c.exceptions.ServiceUnavailableException):
            c.converse_stream(modelId=CLAUDE, messages=MSG)


# --- a stream is complete only when Bedrock ended it (issue 14) ------------------------------------

def log_row(gw, request_id: str, timeout: float = 10.0) -> dict:
    """The request log's row for this request id, once written (rows arrive within ~0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in request_log(gw.data_dir) if r["id"] == request_id]
        if rows or time.monotonic() > deadline:
            assert rows, f"no request log row for {request_id}"
            return rows[0]
        time.sleep(0.1)


def converse_stream(client, model, text):
    r = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])
    return r["ResponseMetadata"], r["stream"]


def invoke_stream(client, model, text):
    body = json.dumps(dict(INVOKE_BODY, messages=[{"role": "user", "content": text}]))
    r = client.invoke_model_with_response_stream(modelId=model, body=body)
    return r["ResponseMetadata"], r["body"]


@pytest.mark.parametrize("call,op", [(converse_stream, "ConverseStream"),
                                     (invoke_stream, "InvokeModelWithResponseStream")])
def test_stream_that_ends_before_its_end_event_fails_and_is_not_cached(gw, client, fake, call, op):
    """Upstream sends messageStart and two deltas (or the first three chunks, without the one that
    carries the invocation metrics), then ends the HTTP response cleanly."""
    text = f"a story cut short, via {op}"
    fake.script(CLAUDE, {"stream_events": 3, "then": "end", "times": 1})
    meta, stream = call(client, CACHED, text)
    assert meta["HTTPHeaders"]["x-bf-cache"] == "miss"
    got = []
    with pytest.raises(EventStreamError) as e:
        for ev in stream:
            got.append(ev)
    assert len(got) == 3                                   # what arrived was relayed
    assert e.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert "ended before the answer was complete" in e.value.response["Error"]["Message"]
    row = log_row(gw, meta["RequestId"])
    assert (row["error"], row["error_origin"]) == ("ModelStreamErrorException", "upstream")

    n = len(fake.requests_for(op, CLAUDE))
    meta, stream = call(client, CACHED, text)              # not served from the cache: upstream again
    assert meta["HTTPHeaders"]["x-bf-cache"] == "miss"
    complete = list(stream)
    assert len(fake.requests_for(op, CLAUDE)) == n + 1
    assert log_row(gw, meta["RequestId"])["error"] == ""
    meta, stream = call(client, CACHED, text)              # the complete answer was stored
    assert meta["HTTPHeaders"]["x-bf-cache"] == "hit-exact"
    assert list(stream) == complete
    assert len(fake.requests_for(op, CLAUDE)) == n + 1


def test_converse_stream_charges_the_cache_tokens_bedrock_reported(gw, client, fake):
    fake.script(CLAUDE, {"cache_read": 1200, "cache_write": 300})
    meta, stream = converse_stream(client, CLAUDE, "prompt caching pays")
    usage = list(stream)[-1]["metadata"]["usage"]
    row = log_row(gw, meta["RequestId"])
    got = {k: row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")}
    assert got == {"input_tokens": usage["inputTokens"], "output_tokens": usage["outputTokens"],
                   "cache_read_tokens": 1200, "cache_write_tokens": 300}
    want = cost(PricingTable().price_for(CLAUDE), usage["inputTokens"], usage["outputTokens"], 1200, 300)
    assert want > cost(PricingTable().price_for(CLAUDE), usage["inputTokens"], usage["outputTokens"])
    assert row["cost_usd"] == pytest.approx(want, rel=1e-6)


def test_invoke_stream_charges_the_invocation_metrics(gw, client, fake):
    fake.script(CLAUDE, {"cache_read": 800, "cache_write": 64})
    meta, stream = invoke_stream(client, CLAUDE, "count me from the last chunk")
    m = json.loads(list(stream)[-1]["chunk"]["bytes"])["amazon-bedrock-invocationMetrics"]
    row = log_row(gw, meta["RequestId"])
    got = {k: row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")}
    assert got == {"input_tokens": m["inputTokenCount"], "output_tokens": m["outputTokenCount"],
                   "cache_read_tokens": 800, "cache_write_tokens": 64}
    want = cost(PricingTable().price_for(CLAUDE), m["inputTokenCount"], m["outputTokenCount"], 800, 64)
    assert row["cost_usd"] == pytest.approx(want, rel=1e-6)


def test_invoke_model_charges_the_cache_token_headers(gw, client, fake):
    fake.script(CLAUDE, {"cache_read": 500, "cache_write": 20})
    r = client.invoke_model(modelId=CLAUDE, body=json.dumps(INVOKE_BODY))
    h = r["ResponseMetadata"]["HTTPHeaders"]
    row = log_row(gw, r["ResponseMetadata"]["RequestId"])
    n_in, n_out = int(h["x-amzn-bedrock-input-token-count"]), int(h["x-amzn-bedrock-output-token-count"])
    got = {k: row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")}
    assert got == {"input_tokens": n_in, "output_tokens": n_out, "cache_read_tokens": 500, "cache_write_tokens": 20}
    want = cost(PricingTable().price_for(CLAUDE), n_in, n_out, 500, 20)
    assert row["cost_usd"] == pytest.approx(want, rel=1e-6)
    assert float(h["x-bf-cost-usd"]) == pytest.approx(want, abs=1e-6)
