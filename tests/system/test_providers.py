"""Bedrock clients served by OpenAI, Anthropic and Mistral: real boto3 against the real gateway
processes, with fake upstreams on loopback that answer in each provider's documented shapes."""
from __future__ import annotations

import base64
import json
import time

import pytest
from botocore.exceptions import ClientError, EventStreamError

from tests.helpers.fake_providers import FakeAnthropic, FakeMistral, FakeOpenAI
from tests.helpers.gateway import Gateway, free_port, request_log

OPENAI_KEY, ANTHROPIC_KEY, MISTRAL_KEY = "sk-test-openai", "sk-ant-test", "mistral-test-key"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
WEATHER = {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}}}}

# the modelId a client sends -> (provider fake, upstream model the route names)
SERVED = {
    "openai": ("gpt-alias", "gpt-4o-mini"),
    "anthropic": ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-latest"),
    "mistral": ("mistral.mistral-large-2407-v1:0", "mistral-large-latest"),
}


def config(o: FakeOpenAI, a: FakeAnthropic, m: FakeMistral, az: FakeOpenAI, read_timeout: float) -> str:
    return f"""
[providers.openai]
kind = "openai"
base_url = "{o.url}"
read_timeout_seconds = {read_timeout}
keys = [{{api_key = "${{T_OPENAI_KEY}}"}}]

[providers.anthropic]
kind = "anthropic"
base_url = "{a.url}"
read_timeout_seconds = {read_timeout}
keys = [{{api_key = "{ANTHROPIC_KEY}"}}]

[providers.mistral]
kind = "mistral"
base_url = "{m.url}"
read_timeout_seconds = {read_timeout}
keys = [{{api_key = "{MISTRAL_KEY}"}}]

[providers.azure]
kind = "openai"
base_url = "{az.url}"
azure_api_version = "2024-10-21"
keys = [{{api_key = "{OPENAI_KEY}"}}]

[providers.badkey]
kind = "openai"
base_url = "{o.url}"
keys = [{{api_key = "sk-wrong-key-0123456789abcdef"}}]

[providers.down]
kind = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
connect_timeout_seconds = 2

[[routes]]
models = ["gpt-alias", "meta.*", "cohere.*"]
provider = "openai"
model = "gpt-4o-mini"

[[routes]]
models = ["anthropic.*", "amazon.nova*"]
provider = "anthropic"
model = "claude-3-5-haiku-latest"

[[routes]]
models = ["mistral.*", "amazon.titan-text*"]
provider = "mistral"
model = "mistral-large-latest"

[[routes]]
models = ["azure-alias"]
provider = "azure"
model = "my-gpt4o-deployment"

[[routes]]
models = ["badkey-model"]
provider = "badkey"
model = "gpt-4o-mini"

[[routes]]
models = ["down-model"]
provider = "down"
"""


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI(api_keys=(OPENAI_KEY,)) as o, FakeAnthropic(api_keys=(ANTHROPIC_KEY,)) as a, \
            FakeMistral(api_keys=(MISTRAL_KEY,)) as m, FakeOpenAI(api_keys=(OPENAI_KEY,), azure=True) as az:
        yield {"openai": o, "anthropic": a, "mistral": m, "azure": az}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    f = fakes
    with Gateway(tmp_path_factory.mktemp("providers"),
                 config(f["openai"], f["anthropic"], f["mistral"], f["azure"], read_timeout=1.5),
                 extra_env={"T_OPENAI_KEY": OPENAI_KEY}) as g:
        yield g


@pytest.fixture()
def client(gw, fakes):
    for f in fakes.values():
        f.clear_scripts()
    return gw.client()


def user(text, *more):
    return [{"role": "user", "content": [{"text": text}, *more]}]


def stream_events(resp):
    return [(next(iter(e)), e[next(iter(e))]) for e in resp["stream"]]


def assemble(events):
    """Text and tool uses from ConverseStream events, checking the block discipline on the way."""
    text, tools, open_block, stop, usage = "", [], None, None, None
    for kind, e in events:
        if kind == "contentBlockStart":
            assert open_block is None
            open_block = e["contentBlockIndex"]
            tools.append({**e["start"]["toolUse"], "input": ""})
        elif kind == "contentBlockDelta":
            assert open_block in (None, e["contentBlockIndex"])
            open_block = e["contentBlockIndex"]
            d = e["delta"]
            if "text" in d:
                text += d["text"]
            elif "toolUse" in d:
                tools[-1]["input"] += d["toolUse"]["input"]
        elif kind == "contentBlockStop":
            assert open_block == e["contentBlockIndex"]
            open_block = None
        elif kind == "messageStop":
            stop = e["stopReason"]
        elif kind == "metadata":
            usage = e["usage"]
    return text, [{**t, "input": json.loads(t["input"] or "{}")} for t in tools], stop, usage


# --- Converse and ConverseStream through every provider ------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_converse_text(client, fakes, provider):
    model_id, upstream = SERVED[provider]
    r = client.converse(modelId=model_id, messages=user("hello there"), system=[{"text": "be brief"}],
                        inferenceConfig={"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["zzz"]})
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": f"fake-{provider}: hello there"}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"]["inputTokens"] > 0 and r["usage"]["outputTokens"] == 3
    assert r["usage"]["totalTokens"] == r["usage"]["inputTokens"] + r["usage"]["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 0
    sent = fakes[provider].requests[-1].json
    assert sent["model"] == upstream
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    if provider == "anthropic":
        assert sent["system"] == [{"type": "text", "text": "be brief"}]
        assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["zzz"]
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 50 and sent["stop"] == ["zzz"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_converse_stream_text_in_bedrock_order(client, provider):
    model_id, _ = SERVED[provider]
    events = stream_events(client.converse_stream(modelId=model_id, messages=user("stream me please")))
    kinds = [k for k, _ in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert kinds.count("contentBlockDelta") >= 2, "the provider's deltas are relayed, not buffered"
    text, tools, stop, usage = assemble(events)
    assert text == f"fake-{provider}: stream me please" and tools == [] and stop == "end_turn"
    assert usage["outputTokens"] == 4 and usage["inputTokens"] > 0
    assert "latencyMs" in events[-1][1]["metrics"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_max_tokens_stop_reason(client, provider):
    r = client.converse(modelId=SERVED[provider][0], messages=user("one two three four five"),
                        inferenceConfig={"maxTokens": 2})
    assert r["stopReason"] == "max_tokens"
    assert r["output"]["message"]["content"][0]["text"] == f"fake-{provider}: one"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_tool_choice_forced_and_tool_result_round_trip(client, fakes, provider):
    model_id, _ = SERVED[provider]
    tool_config = {"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}}
    r = client.converse(modelId=model_id, messages=user("Paris"), toolConfig=tool_config)
    assert r["stopReason"] == "tool_use"
    uses = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b]
    assert len(uses) == 1 and uses[0]["name"] == "get_weather" and uses[0]["input"] == {"city": "Paris"}
    sent = fakes[provider].requests[-1].json
    if provider == "anthropic":
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    else:
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert sent["tools"][0]["function"]["parameters"]["required"] == ["city"]
    # the next turn sends the tool's result back; the provider sees it in its own shape
    history = user("Paris") + [r["output"]["message"], {"role": "user", "content": [
        {"toolResult": {"toolUseId": uses[0]["toolUseId"], "content": [{"json": {"temp_c": 21}}]}}]}]
    r2 = client.converse(modelId=model_id, messages=history, toolConfig={"tools": [WEATHER]})
    assert r2["stopReason"] == "end_turn"
    assert r2["output"]["message"]["content"][0]["text"] == f'fake-{provider}: tool said {{"temp_c":21}}'


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_tool_choice_any_is_sent(client, fakes, provider):
    client.converse(modelId=SERVED[provider][0], messages=user("hi"),
                    toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}})
    sent = fakes[provider].requests[-1].json["tool_choice"]
    assert sent == {"openai": "required", "mistral": "any", "anthropic": {"type": "any"}}[provider]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_stream_tool_arguments_become_input_deltas(client, fakes, provider):
    fakes[provider].script("*", {"split_args": True})
    events = stream_events(client.converse_stream(
        modelId=SERVED[provider][0], messages=user("Lyon"),
        toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}}))
    text, tools, stop, _ = assemble(events)
    assert stop == "tool_use"
    assert [(t["name"], t["input"]) for t in tools] == [("get_weather", {"city": "Lyon"})]
    deltas = [e for k, e in events if k == "contentBlockDelta" and "toolUse" in e["delta"]]
    assert len(deltas) >= 2, "argument fragments are relayed as they arrive"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_several_tool_calls_in_one_turn(client, fakes, provider):
    fakes[provider].script("*", {"tool_calls": 2})
    r = client.converse(modelId=SERVED[provider][0], messages=user("Rome"),
                        toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}})
    uses = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b]
    assert len(uses) == 2 and len({u["toolUseId"] for u in uses}) == 2
    fakes[provider].script("*", {"tool_calls": 2, "split_args": True})
    _, tools, stop, _ = assemble(stream_events(client.converse_stream(
        modelId=SERVED[provider][0], messages=user("Rome"), toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}})))
    assert stop == "tool_use" and [t["input"] for t in tools] == [{"city": "Rome"}] * 2


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_image_is_sent_in_the_providers_shape(client, fakes, provider):
    client.converse(modelId=SERVED[provider][0],
                    messages=user("what is this", {"image": {"format": "png", "source": {"bytes": PNG}}}))
    content = fakes[provider].requests[-1].json["messages"][-1]["content"]
    blob = json.dumps(content)
    assert base64.b64encode(PNG).decode() in blob
    assert ("image/png" in blob)


def test_pdf_to_mistral_is_a_clear_validation_error(client, fakes):
    n = len(fakes["mistral"].requests)
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=SERVED["mistral"][0], messages=user(
            "summarise", {"document": {"format": "pdf", "name": "report", "source": {"bytes": b"%PDF-1.4 fake"}}}))
    err = ei.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert "mistral" in err["Message"] and "messages[0].content[1]" in err["Message"]
    assert len(fakes["mistral"].requests) == n, "nothing was sent upstream"


def test_pdf_to_anthropic_and_openai_is_sent(client, fakes):
    doc = {"document": {"format": "pdf", "name": "report", "source": {"bytes": b"%PDF-1.4 fake"}}}
    for provider in ("anthropic", "openai"):
        client.converse(modelId=SERVED[provider][0], messages=user("summarise", doc))
        assert base64.b64encode(b"%PDF-1.4 fake").decode() in json.dumps(fakes[provider].requests[-1].json)


def test_cache_tokens_are_reported(client, fakes):
    fakes["anthropic"].script("*", {"cached_tokens": 7})
    r = client.converse(modelId=SERVED["anthropic"][0], messages=user("cached question"))
    assert r["usage"].get("cacheReadInputTokens") == 7


def test_provider_slash_model_and_azure(client, fakes):
    r = client.converse(modelId="openai/gpt-4.1-nano", messages=user("direct"))
    assert r["output"]["message"]["content"][0]["text"] == "fake-openai: direct"
    assert fakes["openai"].requests[-1].json["model"] == "gpt-4.1-nano"
    r = client.converse(modelId="mistral/open-mistral-nemo", messages=user("direct"))
    assert fakes["mistral"].requests[-1].json["model"] == "open-mistral-nemo"
    r = client.converse(modelId="azure-alias", messages=user("via azure"))
    assert r["output"]["message"]["content"][0]["text"] == "fake-openai: via azure"
    req = fakes["azure"].requests[-1]
    assert req.path == "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == OPENAI_KEY and "authorization" not in req.headers


def test_count_tokens(client, fakes):
    r = client.count_tokens(modelId=SERVED["anthropic"][0],
                            input={"converse": {"messages": user("count these words please")}})
    assert r["inputTokens"] == 4          # Anthropic's count_tokens endpoint answered
    assert fakes["anthropic"].requests[-1].path == "/v1/messages/count_tokens"
    r = client.count_tokens(modelId=SERVED["openai"][0], input={"converse": {"messages": user("count these")}})
    assert r["inputTokens"] > 0           # estimated: OpenAI has no counting endpoint


# --- InvokeModel with each family's native body, served by another provider -----------------------

CLAUDE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
               "messages": [{"role": "user", "content": "native claude"}]}
FAMILY_BODIES = {
    "meta.llama3-1-8b-instruct-v1:0": ({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nnative llama<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "max_gen_len": 100},
                                       "openai", lambda d: d["generation"]),
    "cohere.command-r-v1:0": ({"message": "native cohere"}, "openai", lambda d: d["text"]),
    "amazon.nova-lite-v1:0": ({"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "native nova"}]}]},
                              "anthropic", lambda d: d["output"]["message"]["content"][0]["text"]),
    "amazon.titan-text-express-v1": ({"inputText": "native titan", "textGenerationConfig": {"maxTokenCount": 100}},
                                     "mistral", lambda d: d["results"][0]["outputText"]),
    "mistral.mistral-7b-instruct-v0:2": ({"prompt": "<s>[INST] native mistral [/INST]", "max_tokens": 100},
                                         "mistral", lambda d: d["outputs"][0]["text"]),
    "anthropic.claude-3-5-haiku-20241022-v1:0": (CLAUDE_BODY, "anthropic", lambda d: d["content"][0]["text"]),
}


@pytest.mark.parametrize("model_id", list(FAMILY_BODIES))
def test_invoke_family_body_through_another_provider(client, model_id):
    body, provider, text_of = FAMILY_BODIES[model_id]
    r = client.invoke_model(modelId=model_id, body=json.dumps(body))
    doc = json.loads(r["body"].read())
    assert text_of(doc).startswith(f"fake-{provider}: native")
    assert int(r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"]) > 0


@pytest.mark.parametrize("model_id", list(FAMILY_BODIES))
def test_invoke_stream_family_chunks(client, model_id):
    body, provider, _ = FAMILY_BODIES[model_id]
    r = client.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert len(chunks) >= 2
    assert "amazon-bedrock-invocationMetrics" in chunks[-1]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] > 0


def test_claude_body_to_anthropic_loses_nothing(client, fakes):
    body = dict(CLAUDE_BODY, anthropic_beta=["token-efficient-tools-2025-02-19"], top_k=5,
                metadata={"user_id": "u-1"},
                system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}])
    r = client.invoke_model(modelId=SERVED["anthropic"][0], body=json.dumps(body))
    doc = json.loads(r["body"].read())
    req = fakes["anthropic"].requests[-1]
    sent = req.json
    assert sent == {**{k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")},
                    "model": "claude-3-5-haiku-latest"}
    assert req.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert doc["type"] == "message" and doc["content"] == [{"type": "text", "text": "fake-anthropic: native claude"}]
    s = client.invoke_model_with_response_stream(modelId=SERVED["anthropic"][0], body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in s["body"]]
    assert [c["type"] for c in chunks][0] == "message_start" and chunks[-1]["type"] == "message_stop"
    assert "ping" not in [c["type"] for c in chunks]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3
    assert fakes["anthropic"].requests[-1].json["stream"] is True


# --- upstream failures become the AWS error a Bedrock user expects ---------------------------------

@pytest.mark.parametrize("behavior,code,status", [
    ({"status": 429}, "ThrottlingException", 429),
    ({"status": 400}, "ValidationException", 400),
    ({"status": 500}, "ModelErrorException", 424),
    ({"status": 503}, "ServiceUnavailableException", 503),
    ({"garbage": True}, "ModelErrorException", 424),
    ({"delay": 3}, "ModelTimeoutException", 408),
])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
def test_upstream_failures(client, fakes, provider, behavior, code, status):
    fakes[provider].script("*", behavior)
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=SERVED[provider][0], messages=user("fail please"))
    err = ei.value.response
    assert err["Error"]["Code"] == code
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status
    assert provider in err["Error"]["Message"]
    if code == "ThrottlingException":
        assert err["ResponseMetadata"]["HTTPHeaders"].get("x-amz-retry-after", "").isdigit()
    if code == "ModelErrorException":
        assert err["originalStatusCode"] == (200 if "garbage" in behavior else 500)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_exhausted_provider_quota_is_not_retried(client, fakes, provider):
    """OpenAI's insufficient_quota (429) and Anthropic's low credit balance are not rate limits:
    ServiceQuotaExceededException, which SDKs do not retry."""
    fakes[provider].script("*", {"status": 429, "quota": True})
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=SERVED[provider][0], messages=user("x"))
    assert ei.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bad_provider_key_is_access_denied_and_never_leaked(client):
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="badkey-model", messages=user("hi"))
    err = ei.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert "sk-wrong" not in err["Message"] and "****" not in err["Message"]
    assert "providers.badkey.keys" in err["Message"]


def test_unknown_upstream_model(client, fakes):
    fakes["openai"].script("*", {"status": 404})
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="openai/no-such-model", messages=user("hi"))
    assert ei.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_connection_refused_is_service_unavailable(client):
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="down-model", messages=user("hi"))
    assert ei.value.response["Error"]["Code"] == "ServiceUnavailableException"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "mistral"])
@pytest.mark.parametrize("then", ["cut", "error", "end"])
def test_stream_failure_mid_way_is_an_exception_event(client, fakes, provider, then):
    fakes[provider].script("*", {"stream_events": 3, "then": then})
    resp = client.converse_stream(modelId=SERVED[provider][0], messages=user("a long answer please"))
    seen = []
    with pytest.raises(EventStreamError) as ei:
        for e in resp["stream"]:
            seen.append(next(iter(e)))
    assert seen and seen[0] == "messageStart"
    assert "messageStop" not in seen, "a cut stream must not look complete"
    assert ei.value.response["Error"]["Code"] in ("modelStreamErrorException", "serviceUnavailableException",
                                                  "internalServerException")


def test_stream_error_before_first_event_is_a_plain_http_error(client, fakes):
    fakes["openai"].script("*", {"status": 429})
    with pytest.raises(ClientError) as ei:
        client.converse_stream(modelId=SERVED["openai"][0], messages=user("x"))
    assert ei.value.response["Error"]["Code"] == "ThrottlingException"


def test_request_log_names_provider_and_upstream_model(client, gw):
    client.converse(modelId="openai/gpt-4o-mini", messages=user("logged"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = [r for r in request_log(gw.data_dir) if r.get("model") == "openai/gpt-4o-mini"]
        if rows:
            break
        time.sleep(0.1)
    assert rows[-1]["provider"] == "openai" and rows[-1]["error"] == ""
    assert rows[-1]["upstream_model"] == "gpt-4o-mini"


def test_stream_that_is_not_sse_is_a_model_error_before_the_head(client, fakes):
    fakes["mistral"].script("*", {"garbage": True})
    with pytest.raises(ClientError) as ei:
        client.converse_stream(modelId=SERVED["mistral"][0], messages=user("x"))
    assert ei.value.response["Error"]["Code"] == "ModelErrorException"
    assert "event stream" in ei.value.response["Error"]["Message"]


def test_stalled_stream_times_out_with_an_exception_event(client, fakes):
    fakes["openai"].script("*", {"event_delay": 2.0})     # read_timeout_seconds is 1.5 here
    resp = client.converse_stream(modelId=SERVED["openai"][0], messages=user("slow one"))
    t0 = time.monotonic()
    with pytest.raises(EventStreamError) as ei:
        for _ in resp["stream"]:
            pass
    assert ei.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert "read_timeout_seconds" in ei.value.response["Error"]["Message"]
    assert time.monotonic() - t0 < 6
