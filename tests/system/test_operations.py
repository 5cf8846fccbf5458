"""All five operations through the real processes with the mock provider, via boto3 and raw HTTP."""
from __future__ import annotations

import base64
import json

import httpx
import pytest
from botocore.exceptions import ClientError

MSG = [{"role": "user", "content": [{"text": "ping 42"}]}]

ENCODED_IDS = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1",
    "weird name/with space+plus",
    "ünïcode-model",
]


@pytest.mark.parametrize("model_id", ENCODED_IDS)
def test_percent_encoded_model_ids_arrive_exactly(client, model_id):
    r = client.converse(modelId=model_id, messages=MSG)
    # the mock names the model it was asked for: the id survived encoding and routing intact
    assert f"({model_id})" in r["output"]["message"]["content"][0]["text"]


def test_converse_stream_event_order_plain_text(client):
    events = list(client.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                         messages=MSG)["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and events[0]["messageStart"]["role"] == "assistant"
    assert "contentBlockStart" not in names  # real Bedrock sends none for text blocks
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    assert len(deltas) >= 3 and all(d["contentBlockIndex"] == 0 for d in deltas)
    assert "ping 42" in "".join(d["delta"]["text"] for d in deltas)
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    md = events[-1]["metadata"]
    assert md["usage"]["inputTokens"] > 0 and md["usage"]["outputTokens"] > 0
    assert "latencyMs" in md["metrics"]


TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                 "inputSchema": {"json": {"type": "object", "properties": {
                                     "city": {"type": "string"}}, "required": ["city"]}}}}]}


def test_converse_tool_use(client):
    r = client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", toolConfig=TOOLS,
                        messages=[{"role": "user", "content": [{"text": "call get_weather for Paris"}]}])
    assert r["stopReason"] == "tool_use"
    tu = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b][0]
    assert tu["name"] == "get_weather" and isinstance(tu["input"]["city"], str) and tu["toolUseId"]


def test_converse_stream_tool_use_has_block_start_and_json_fragments(client):
    events = list(client.converse_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0", toolConfig=TOOLS,
        messages=[{"role": "user", "content": [{"text": "call get_weather please"}]}])["stream"])
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert len(starts) == 1 and starts[0]["start"]["toolUse"]["name"] == "get_weather"
    idx = starts[0]["contentBlockIndex"]
    frags = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
             if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == idx]
    assert len(frags) >= 2 and "city" in json.loads("".join(frags))
    assert [e for e in events if "messageStop" in e][0]["messageStop"]["stopReason"] == "tool_use"


@pytest.mark.parametrize("content_type", [None, "application/json", "application/octet-stream"])
def test_invoke_accepts_any_content_type(client, content_type):
    kw = {"contentType": content_type} if content_type else {}
    r = client.invoke_model(modelId="meta.llama3-70b-instruct-v1:0",
                            body=json.dumps({"prompt": "hello llama", "max_gen_len": 64}), **kw)
    doc = json.loads(r["body"].read())
    assert "hello llama" in doc["generation"] and doc["prompt_token_count"] > 0


def test_invoke_stream_honours_accept_header_and_answers_content_type(client):
    r = client.invoke_model_with_response_stream(
        modelId="mistral.mistral-7b-instruct-v0:2", accept="application/json",
        body=json.dumps({"prompt": "<s>[INST] stream me [/INST]", "max_tokens": 100}))
    assert r["contentType"] == "application/json"
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert len(chunks) >= 2
    assert "stream me" in "".join(c["outputs"][0]["text"] for c in chunks)
    assert "amazon-bedrock-invocationMetrics" in chunks[-1]


def test_invoke_stream_rejects_unsupported_accept(client):
    with pytest.raises(client.exceptions.ValidationException, match="image/png"):
        client.invoke_model_with_response_stream(
            modelId="mistral.mistral-7b-instruct-v0:2", accept="image/png",
            body=json.dumps({"prompt": "x", "max_tokens": 10}))


def test_count_tokens_both_forms(client):
    a = client.count_tokens(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
                            input={"converse": {"messages": MSG}})
    assert a["inputTokens"] > 0
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "ping 42"}]}).encode()
    b = client.count_tokens(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
                            input={"invokeModel": {"body": body}})
    assert b["inputTokens"] > 0


# --- errors, raw HTTP and boto3 ----------------------------------------------------------

def assert_aws_error(resp: httpx.Response, status: int, code: str, *fragments: str):
    assert resp.status_code == status, resp.text
    assert resp.headers["x-amzn-errortype"] == code
    assert resp.headers["x-amzn-requestid"]
    assert resp.headers["content-type"] == "application/json"
    msg = resp.json()["message"]
    for f in fragments:
        assert f in msg, msg
    return msg


def post(gateway, path, content=b"", headers=None):
    return httpx.post(gateway.url + path, content=content, headers=headers or {}, timeout=10)


def test_unknown_path_is_aws_404(gateway):
    assert_aws_error(post(gateway, "/bedrock/model/x/talk"), 404, "UnknownOperationException", "/model/x/talk")
    assert_aws_error(post(gateway, "/nothing/here"), 404, "UnknownOperationException")


def test_wrong_method_is_aws_405(gateway):
    r = httpx.get(gateway.url + "/bedrock/model/x/converse")
    assert_aws_error(r, 405, "MethodNotAllowedException", "POST")
    assert r.headers["allow"] == "POST"


BAD_BODIES = [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"", "empty"),
    (b"[]", "body"),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "robot", "content": [{"text": "x"}]}]}).encode(), "role"),
    (json.dumps({"messages": [{"role": "user", "content": [{"video2": {}}]}]}).encode(), "video2"),
    (json.dumps({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {
        "bytes": base64.b64encode(b"definitely not a png").decode()}}}]}]}).encode(), "image"),
]


@pytest.mark.parametrize("body,fragment", BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_bad_converse_bodies_are_clear_400s(gateway, body, fragment):
    r = post(gateway, "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", body,
             {"content-type": "application/json"})
    msg = assert_aws_error(r, 400, "ValidationException")
    assert fragment.lower() in msg.lower()
    assert "Traceback" not in r.text


def test_bad_body_via_boto3_raises_modeled_class(client):
    with pytest.raises(client.exceptions.ValidationException) as e:
        client.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=b"{oops")
    assert e.value.response["ResponseMetadata"]["RequestId"]


def test_gateway_keeps_serving_after_bad_input(gateway, client):
    for body, _ in BAD_BODIES:
        post(gateway, "/bedrock/model/m/converse-stream", body)
    assert client.converse(modelId="m", messages=MSG)["stopReason"] == "end_turn"
