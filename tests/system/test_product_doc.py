"""Every example of ../shared/product-doc-bedrock.txt, as written, against the default start."""
from __future__ import annotations

import json

import boto3

from tests.helpers.gateway import request_log


def doc_client(gateway):
    # exactly the product page's construction, with {AI_GATEWAY_URL} filled in
    return boto3.client(
        service_name="bedrock-runtime",
        endpoint_url=f"{gateway.url}/bedrock",
        region_name="us-west-2",
        aws_access_key_id="finops-dummy-key",
        aws_secret_access_key="finops-dummy-secret",
    )


def test_setup_example_converse(gateway):
    client = doc_client(gateway)
    response = client.converse(
        modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
        messages=[{"role": "user", "content": [{"text": "Hello!"}]}],
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ResponseMetadata"]["RequestId"]
    assert response["output"]["message"]["role"] == "assistant"
    assert "Hello!" in response["output"]["message"]["content"][0]["text"]
    assert response["stopReason"] == "end_turn"
    u = response["usage"]
    assert u["inputTokens"] > 0 and u["outputTokens"] > 0 and u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert "latencyMs" in response["metrics"]


def test_provider_model_examples(gateway):
    client = doc_client(gateway)
    anthropic_response = client.converse(
        modelId="anthropic.claude-3-sonnet-20240229",
        messages=[{"role": "user", "content": [{"text": "Hello from Claude!"}]}])
    assert "Hello from Claude!" in anthropic_response["output"]["message"]["content"][0]["text"]
    mistral_response = client.converse(
        modelId="mistral.mistral-large-2407",
        messages=[{"role": "user", "content": [{"text": "Hello from Mistral!"}]}])
    assert "Hello from Mistral!" in mistral_response["output"]["message"]["content"][0]["text"]
    mistral_invoke_response = client.invoke_model(
        modelId="mistral.mistral-large-2407",
        contentType="application/json",
        accept="application/json",
        body=json.dumps({"prompt": "Say hello from Mistral using Invoke API.", "max_tokens": 50,
                         "temperature": 0.7}),
    )
    assert mistral_invoke_response["contentType"] == "application/json"
    doc = json.loads(mistral_invoke_response["body"].read())
    assert "Say hello from Mistral using Invoke API." in doc["outputs"][0]["text"]
    assert doc["outputs"][0]["stop_reason"] in ("stop", "length")
    hdrs = mistral_invoke_response["ResponseMetadata"]["HTTPHeaders"]
    assert int(hdrs["x-amzn-bedrock-input-token-count"]) > 0
    assert int(hdrs["x-amzn-bedrock-output-token-count"]) > 0


def test_custom_headers_hook_is_recorded(gateway):
    def add_bifrost_headers(request, **kwargs):
        """Add custom FinOps headers to the request before signing."""
        request.headers.add_header("x-bf-vk", "vk_12345")
        request.headers.add_header("x-bf-env", "production")

    client = doc_client(gateway)
    client.meta.events.register_first("before-sign.bedrock-runtime.*", add_bifrost_headers)
    response = client.converse(
        modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
        messages=[{"role": "user", "content": [{"text": "Hello with custom headers!"}]}])
    rid = response["ResponseMetadata"]["RequestId"]
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = [r for r in request_log(gateway.data_dir) if r["id"] == rid]
        if rows:
            break
        time.sleep(0.1)
    assert rows, "request not in the request log"
    assert rows[0]["vk"] == "vk_12345" and rows[0]["env"] == "production"
    assert rows[0]["op"] == "converse" and rows[0]["error"] == "" and rows[0]["status"] == 200


def test_converse_stream_example(gateway, capsys):
    client = doc_client(gateway)
    response = client.converse_stream(
        modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
        messages=[{"role": "user", "content": [{"text": "Tell me a story about a brave knight."}]}],
        inferenceConfig={"maxTokens": 512, "temperature": 0.5})
    print("Response:")
    deltas = 0
    for chunk in response["stream"]:
        if "contentBlockDelta" in chunk:
            text = chunk["contentBlockDelta"]["delta"]["text"]
            print(text, end="", flush=True)
            deltas += 1
    out = capsys.readouterr().out
    assert deltas >= 2
    assert "Tell me a story about a brave knight." in out


def test_invoke_stream_example_claude(gateway, capsys):
    client = doc_client(gateway)
    body = json.dumps({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Write a haiku about coding."}]})
    response = client.invoke_model_with_response_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0", body=body,
        contentType="application/json", accept="application/json")
    assert response["contentType"] == "application/json"
    print("Response:")
    types = []
    last = None
    for event in response.get("body"):
        if "chunk" in event:
            chunk = event["chunk"]
            if "bytes" in chunk:
                result = json.loads(chunk["bytes"].decode("utf-8"))
                types.append(result["type"])
                last = result
                if "delta" in result and "text" in result["delta"]:
                    print(result["delta"]["text"], end="", flush=True)
                elif "completion" in result:
                    print(result["completion"], end="", flush=True)
    out = capsys.readouterr().out
    assert "Write a haiku about coding." in out
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "content_block_delta" in types and "message_delta" in types
    metrics = last["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] > 0 and metrics["outputTokenCount"] > 0
