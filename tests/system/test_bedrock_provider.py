"""The `bedrock` provider against a fake Bedrock on loopback that verifies our SigV4 re-signing."""
from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import EventStreamError

from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.gateway import Gateway, free_port

AKID, SECRET = "AKIDPROVIDERKEY00001", "provider-secret-key"
MSG = [{"role": "user", "content": [{"text": "hello upstream"}]}]
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


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

[default_route]
provider = "aws"
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
