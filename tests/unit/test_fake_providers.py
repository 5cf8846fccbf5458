"""tests/helpers/fake_providers.py driven by a plain httpx client over loopback.

Each fake must answer like its provider: the documented non-stream and SSE shapes, the real auth and
validation errors, and every scripted failure must reach the client the way it would from the real
service (status and body, dropped connection, truncated or erroring stream).
"""
from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

from tests.helpers.fake_providers import (GARBAGE, FakeAnthropic, FakeMistral, FakeOpenAI, mask_key,
                                          parse_sse, tokens)

OA_KEY, AN_KEY, MI_KEY = "sk-test-openai", "sk-ant-test", "mistral-test-key"
OA_H = {"Authorization": f"Bearer {OA_KEY}"}
AN_H = {"x-api-key": AN_KEY, "anthropic-version": "2023-06-01"}
MI_H = {"Authorization": f"Bearer {MI_KEY}"}
HELLO = [{"role": "user", "content": "hello big world"}]
WEATHER_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]},
    "hourly": {"type": "boolean"}}, "required": ["city"]}
OA_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                              "parameters": WEATHER_SCHEMA}},
            {"type": "function", "function": {"name": "get_time", "parameters": {
                "type": "object", "properties": {"zone": {"type": "string"}}}}}]
AN_TOOLS = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}}]


@pytest.fixture
def http():
    with httpx.Client(trust_env=False, verify=False, timeout=10) as c:
        yield c


@pytest.fixture
def oa():
    with FakeOpenAI() as f:
        yield f


@pytest.fixture
def an():
    with FakeAnthropic() as f:
        yield f


@pytest.fixture
def mi():
    with FakeMistral() as f:
        yield f


def oa_post(http, fake, body, headers=OA_H, **kw):
    return http.post(fake.url + "/chat/completions", json=body, headers=headers, **kw)


def an_post(http, fake, body, headers=AN_H, **kw):
    return http.post(fake.url + "/v1/messages", json=body, headers=headers, **kw)


def mi_post(http, fake, body, headers=MI_H, **kw):
    return http.post(fake.url + "/chat/completions", json=body, headers=headers, **kw)


def chat(model="gpt-4o-mini", messages=HELLO, **kw):
    return {"model": model, "messages": messages, **kw}


def claude(messages=HELLO, model="claude-sonnet-4-5", max_tokens=100, **kw):
    return {"model": model, "max_tokens": max_tokens, "messages": messages, **kw}


def data_events(body: bytes) -> list:
    """OpenAI/Mistral SSE body -> [parsed chunk dict | "[DONE]"]."""
    out = []
    for event, data in parse_sse(body):
        assert event is None
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def anthropic_events(body: bytes) -> list[dict]:
    out = []
    for event, data in parse_sse(body):
        doc = json.loads(data)
        assert doc["type"] == event
        out.append(doc)
    return out


def oa_stream_parts(chunks):
    """(text, {index: (id, name, [argument fragments])}, finish_reasons) of OpenAI-style chunks."""
    text, calls, finishes = "", {}, []
    for c in chunks:
        if c == "[DONE]" or not c.get("choices"):
            continue
        ch = c["choices"][0]
        text += ch["delta"].get("content") or ""
        for tc in ch["delta"].get("tool_calls") or []:
            entry = calls.setdefault(tc["index"], [None, None, []])
            if tc.get("id"):
                entry[0], entry[1] = tc["id"], tc["function"]["name"]
            if tc["function"].get("arguments"):
                entry[2].append(tc["function"]["arguments"])
        if ch["finish_reason"]:
            finishes.append(ch["finish_reason"])
    return text, calls, finishes


# --- helpers ------------------------------------------------------------------------------------

def test_mask_key_tokens_and_parse_sse():
    assert mask_key("sk-test-openai") == "sk-te*****enai"
    assert mask_key("sk-proj-abcdefghijklmnopqrstuvwxyz0123") == "sk-proj-" + "*" * 26 + "0123"
    assert mask_key("short") == "*****"
    assert tokens("") == 1 and tokens("a  b\nc") == 3
    assert parse_sse(b"event: a\ndata: 1\n\n: comment\n\ndata: x\ndata: y\r\n\r\n") == [("a", "1"), (None, "x\ny")]


# --- OpenAI -------------------------------------------------------------------------------------

def test_openai_non_stream_shape_usage_and_recording(oa, http):
    r = oa_post(http, oa, chat(messages=[{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": [{"type": "text", "text": "hello"},
                                                                      {"type": "image_url", "image_url": {"url": "x"}},
                                                                      {"type": "text", "text": "big world"}]}]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", doc["id"])
    assert doc["object"] == "chat.completion" and doc["model"] == "gpt-4o-mini"
    assert isinstance(doc["created"], int)
    assert doc["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "fake-openai: hello big world",
                                                       "refusal": None, "annotations": []},
                               "logprobs": None, "finish_reason": "stop"}]
    assert doc["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9,
                            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                          "accepted_prediction_tokens": 0,
                                                          "rejected_prediction_tokens": 0}}
    rec = oa.last_request
    assert (rec.method, rec.path, rec.model, rec.status) == ("POST", "/v1/chat/completions", "gpt-4o-mini", 200)
    assert rec.headers["authorization"] == f"Bearer {OA_KEY}"
    assert rec.json["messages"][0]["content"] == "be brief" and json.loads(rec.body) == rec.json
    assert rec.request_id == r.headers["x-request-id"] and rec.received_at <= time.time()
    assert oa.url == f"http://127.0.0.1:{oa.port}/v1"


def test_openai_stream_shape_without_and_with_usage(oa, http):
    r = oa_post(http, oa, chat(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    chunks = data_events(r.content)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in body)
    assert len({c["id"] for c in body}) == 1
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"]["content"] for c in body[1:-1]]
    assert len(contents) >= 2 and "".join(contents) == "fake-openai: hello big world"
    assert body[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}

    r = oa_post(http, oa, chat(stream=True, stream_options={"include_usage": True}, max_completion_tokens=50))
    chunks = data_events(r.content)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 3
    assert usage_chunk["usage"]["completion_tokens"] == 4 and usage_chunk["usage"]["total_tokens"] == 7
    assert all(c["usage"] is None for c in chunks[:-2])
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_call_forced_named_and_by_name(oa, http):
    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "Paris"}], tools=OA_TOOLS,
                               tool_choice="required"))
    msg = r.json()["choices"][0]["message"]
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["content"] == "fake-openai: calling get_weather"
    [call] = msg["tool_calls"]
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call["id"]) and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 1, "unit": "c", "hourly": True}

    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "Paris"}], tools=OA_TOOLS,
                               tool_choice={"type": "function", "function": {"name": "get_time"}}))
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time" and json.loads(call["function"]["arguments"]) == {"zone": "Paris"}

    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "what is GET_TIME in Oslo"}], tools=OA_TOOLS))
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"

    for choice in ("auto", "none"):
        r = oa_post(http, oa, chat(tools=OA_TOOLS, tool_choice=choice))
        assert "tool_calls" not in r.json()["choices"][0]["message"]
        assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "get_weather"}], tools=OA_TOOLS,
                               tool_choice="none"))
    assert "tool_calls" not in r.json()["choices"][0]["message"]


def test_openai_stream_tool_calls_split_arguments(oa, http):
    oa.script("*", {"tool_calls": 2})
    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "Rome"}], tools=OA_TOOLS, stream=True))
    chunks = data_events(r.content)
    text, calls, finishes = oa_stream_parts(chunks)
    assert text == "fake-openai: calling get_weather" and finishes == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    for cid, name, frags in calls.values():
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", cid) and name == "get_weather"
        assert len(frags) >= 2
        assert json.loads("".join(frags)) == {"city": "Rome", "days": 1, "unit": "c", "hourly": True}
    assert calls[0][0] != calls[1][0]
    first = next(c for c in chunks[:-1] if c["choices"][0]["delta"].get("tool_calls"))
    frag = first["choices"][0]["delta"]["tool_calls"][0]
    assert frag["function"] == {"name": "get_weather", "arguments": ""} and frag["type"] == "function"


def test_openai_tool_result_answer_and_multiple_calls(oa, http):
    oa.script("gpt-4o-mini", {"tool_calls": 3})
    r = oa_post(http, oa, chat(messages=[{"role": "user", "content": "x"}], tools=OA_TOOLS))
    calls = r.json()["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 3 and len({c["id"] for c in calls}) == 3
    oa.clear_scripts()
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": c["id"], "type": "function", "function": c["function"]} for c in calls[:2]]},
               {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
               {"role": "tool", "tool_call_id": calls[1]["id"], "content": [{"type": "text", "text": "warm"}]}]
    r = oa_post(http, oa, chat(messages=history, tools=OA_TOOLS))
    assert r.json()["choices"][0]["message"]["content"] == "fake-openai: tool said sunny warm"
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_openai_max_tokens_stop_reasoning_and_cached(http):
    with FakeOpenAI(cached_tokens=7) as oa:
        r = oa_post(http, oa, chat(max_tokens=2))
        doc = r.json()
        assert doc["choices"][0]["message"]["content"] == "fake-openai: hello"
        assert doc["choices"][0]["finish_reason"] == "length"
        assert doc["usage"]["prompt_tokens"] == 3 + 7 and doc["usage"]["completion_tokens"] == 2
        assert doc["usage"]["prompt_tokens_details"]["cached_tokens"] == 7

        r = oa_post(http, oa, chat(stop=["big"], max_completion_tokens=100))
        assert r.json()["choices"][0]["message"]["content"] == "fake-openai: hello "
        assert r.json()["choices"][0]["finish_reason"] == "stop"

        oa.script("*", {"reasoning": "let me think", "cached_tokens": 0})
        r = oa_post(http, oa, chat())
        msg, usage = r.json()["choices"][0]["message"], r.json()["usage"]
        assert msg["reasoning_content"] == "let me think"
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 3 and usage["completion_tokens"] == 7
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        r = oa_post(http, oa, chat(stream=True))
        deltas = [c["choices"][0]["delta"] for c in data_events(r.content)[:-1]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "let me think"


def test_openai_auth_errors_mask_the_key(http):
    with FakeOpenAI(api_keys=("sk-the-right-key",)) as oa:
        r = oa_post(http, oa, chat(), headers={"Authorization": f"Bearer {OA_KEY}"})
        assert r.status_code == 401
        err = r.json()["error"]
        assert err == {"message": "Incorrect API key provided: sk-te*****enai. You can find your API key at "
                                  "https://platform.openai.com/account/api-keys.",
                       "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        assert OA_KEY not in r.text
        r = oa_post(http, oa, chat(), headers={})
        assert r.status_code == 401 and r.json()["error"]["message"].startswith("You didn't provide an API key.")
        assert r.json()["error"]["code"] is None
        oa.script("*", {"status": 401})       # a scripted 401 echoes the configured key, masked
        r = oa_post(http, oa, chat(), headers={"Authorization": "Bearer sk-the-right-key"})
        assert r.status_code == 401 and "sk-the-r****-key" not in r.text and mask_key("sk-the-right-key") in r.text
        assert len(oa.requests) == 3 and oa.requests[0].status == 401


@pytest.mark.parametrize("body, status, message, code, param", [
    ({"messages": []}, 400, "Invalid 'messages': empty array.", "empty_array", "messages"),
    ({"messages": None, "_drop": "messages"}, 400, "Missing required parameter: 'messages'.",
     "missing_required_parameter", "messages"),
    ({"foo": 1, "bar": 2}, 400, "Unrecognized request arguments supplied: foo, bar", None, None),
    ({"foo": 1}, 400, "Unrecognized request argument supplied: foo", None, None),
    ({"max_tokens": 5, "max_completion_tokens": 5}, 400,
     "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.",
     "invalid_parameter_combination", "max_tokens"),
    ({"stream_options": {"include_usage": True}}, 400,
     "The 'stream_options' parameter is only allowed when 'stream' is enabled.", None, "stream_options"),
    ({"messages": [{"role": "bot", "content": "x"}]}, 400, "Invalid value: 'bot'.", "invalid_value",
     "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "r"}]},
     400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
          "'tool_calls'.", None, "messages.[1].role"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                         "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_2", "content": "r"}]},
     400, "Invalid parameter: 'tool_call_id' of 'call_2' not found in 'tool_calls' of previous message.",
     None, "messages.[2].tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                         "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "user", "content": "y"}]},
     400, "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
          "'tool_call_id'. The following tool_call_ids did not have response messages: call_1", None,
     "messages.[1].role"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                         "function": {"name": "f", "arguments": {"a": 1}}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "r"}]},
     400, "Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string, but got an "
          "object instead.", "invalid_type", "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "c" * 41, "type": "function",
                                                         "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c" * 41, "content": "r"}]},
     400, "Invalid 'messages[1].tool_calls[0].id': string too long. Expected a string with maximum length 40, "
          "but got a string with length 41 instead.", "string_above_max_length", "messages[1].tool_calls[0].id"),
    ({"tools": [{"type": "function", "function": {"name": "n" * 65}}]}, 400,
     "Invalid 'tools[0].function.name': string too long.", "string_above_max_length", "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, 400,
     "Invalid 'tools[0].function.name': string does not match pattern.", "invalid_value", "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "ok", "description": "d" * 1025}}]}, 400,
     "Invalid 'tools[0].function.description': string too long. Expected a string with maximum length 1024",
     "string_above_max_length", "tools[0].function.description"),
])
def test_openai_validation(oa, http, body, status, message, code, param):
    req = chat()
    drop = body.pop("_drop", None)
    req.update(body)
    if drop:
        del req[drop]
    r = oa_post(http, oa, req)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"].startswith(message) and err["type"] == "invalid_request_error"
    assert (err["code"], err["param"]) == (code, param)


def test_openai_bad_json_missing_model_unknown_model_and_routes(http):
    with FakeOpenAI(models={"gpt-4o"}) as oa:
        r = http.post(oa.url + "/chat/completions", content=b"{nope", headers=OA_H)
        assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
        assert oa.last_request.json is None and oa.last_request.body == b"{nope"
        r = oa_post(http, oa, {"messages": HELLO})
        assert r.status_code == 400 and r.json()["error"]["message"] == "you must provide a model parameter"
        r = oa_post(http, oa, chat(model="gpt-9"))
        assert r.status_code == 404
        assert r.json()["error"] == {"message": "The model `gpt-9` does not exist or you do not have access to it.",
                                     "type": "invalid_request_error", "param": None, "code": "model_not_found"}
        assert oa_post(http, oa, chat(model="gpt-4o")).status_code == 200
        r = http.post(oa.url + "/completions", json=chat(), headers=OA_H)
        assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
        assert http.get(oa.url + "/chat/completions", headers=OA_H).status_code == 405


# --- Azure OpenAI -------------------------------------------------------------------------------

def test_azure_route_key_and_shapes(http):
    with FakeOpenAI(api_keys=("azure-key-1",), models={"my-gpt4o"}, azure=True) as az:
        assert az.url == f"http://127.0.0.1:{az.port}"
        url = az.url + "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
        r = http.post(url, json={"messages": HELLO}, headers={"api-key": "azure-key-1"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model"] == "my-gpt4o" and doc["choices"][0]["message"]["content"] == "fake-openai: hello big world"
        assert doc["prompt_filter_results"][0]["content_filter_results"]["hate"] == {"filtered": False,
                                                                                  "severity": "safe"}
        assert "content_filter_results" in doc["choices"][0]
        rec = az.last_request
        assert rec.model == "my-gpt4o" and rec.path.endswith("?api-version=2024-10-21")

        r = http.post(az.url + "/openai/deployments/my-gpt4o/chat/completions", json={"messages": HELLO},
                      headers={"api-key": "azure-key-1"})
        assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}
        r = http.post(url, json={"messages": HELLO}, headers={"Authorization": "Bearer azure-key-1"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "401"
        r = http.post(url, json={"messages": HELLO}, headers={"api-key": "wrong"})
        assert r.status_code == 401 and "invalid subscription key" in r.json()["error"]["message"]
        r = http.post(url.replace("my-gpt4o", "other"), json={"messages": HELLO}, headers={"api-key": "azure-key-1"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"

        r = http.post(url, json={"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
                      headers={"api-key": "azure-key-1"})
        chunks = data_events(r.content)
        assert chunks[0]["choices"] == [] and chunks[0]["id"] == "" and "prompt_filter_results" in chunks[0]
        assert chunks[1]["choices"][0]["delta"]["role"] == "assistant"
        text, _, finishes = oa_stream_parts(chunks)
        assert text == "fake-openai: hello big world" and finishes == ["stop"]
        assert chunks[-2]["usage"]["total_tokens"] == 7 and chunks[-1] == "[DONE]"


# --- Anthropic ----------------------------------------------------------------------------------

def test_anthropic_non_stream_shape_usage_and_cache(http):
    with FakeAnthropic(cached_tokens=11, cache_creation_tokens=4) as an:
        r = an_post(http, an, claude(system=[{"type": "text", "text": "be brief"}],
                                     messages=[{"role": "user", "content": [{"type": "text", "text": "hello big world"}]}]),
                    headers={**AN_H, "anthropic-beta": "prompt-caching-2024-07-31"})
        assert r.status_code == 200
        doc = r.json()
        assert re.fullmatch(r"msg_[A-Za-z0-9]{24}", doc["id"])
        assert {k: doc[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
            "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "stop_reason": "end_turn",
            "stop_sequence": None}
        assert doc["content"] == [{"type": "text", "text": "fake-anthropic: hello big world"}]
        assert doc["usage"] == {"input_tokens": 5, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 11,
                                "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
                                "output_tokens": 4, "service_tier": "standard"}
        assert r.headers["request-id"] == an.last_request.request_id
        assert an.last_request.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert an.url == f"http://127.0.0.1:{an.port}"


def test_anthropic_stream_event_order(an, http):
    r = an_post(http, an, claude(stream=True))
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = anthropic_events(r.content)
    types = [e["type"] for e in evs]
    assert types[:3] == ["message_start", "ping", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[3:-3]) == {"content_block_delta"} and len(types[3:-3]) >= 2
    start = evs[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 3
    assert "".join(e["delta"]["text"] for e in evs if e["type"] == "content_block_delta") == \
        "fake-anthropic: hello big world"
    assert evs[-2] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 4}}


def test_anthropic_tool_use_stream_and_non_stream(an, http):
    r = an_post(http, an, claude(messages=[{"role": "user", "content": "Lima"}], tools=AN_TOOLS,
                                 tool_choice={"type": "any"}))
    doc = r.json()
    assert doc["stop_reason"] == "tool_use"
    assert doc["content"][0] == {"type": "text", "text": "fake-anthropic: calling get_weather"}
    tu = doc["content"][1]
    assert tu["type"] == "tool_use" and re.fullmatch(r"toolu_[A-Za-z0-9]{24}", tu["id"])
    assert tu["name"] == "get_weather" and tu["input"] == {"city": "Lima", "days": 1, "unit": "c", "hourly": True}

    r = an_post(http, an, claude(messages=[{"role": "user", "content": "Lima"}], tools=AN_TOOLS,
                                 tool_choice={"type": "tool", "name": "get_time"}, stream=True))
    evs = anthropic_events(r.content)
    starts = [e for e in evs if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    assert starts[1]["index"] == 1 and starts[1]["content_block"]["name"] == "get_time"
    assert starts[1]["content_block"]["input"] == {}
    parts = [e["delta"]["partial_json"] for e in evs
             if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"]
    assert parts[0] == "" and len([p for p in parts if p]) >= 2
    assert json.loads("".join(parts)) == {"zone": "Lima"}
    assert evs[-2]["delta"]["stop_reason"] == "tool_use"

    r = an_post(http, an, claude(tools=AN_TOOLS, tool_choice={"type": "none"},
                                 messages=[{"role": "user", "content": "get_weather please"}]))
    assert r.json()["stop_reason"] == "end_turn"
    r = an_post(http, an, claude(tools=AN_TOOLS, messages=[{"role": "user", "content": "get_weather please"}]))
    assert r.json()["content"][1]["name"] == "get_weather"


def test_anthropic_tool_result_thinking_and_stop_sequence(an, http):
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                                 {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                  "input": {"city": "x"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                             "content": [{"type": "text", "text": "rainy"}]}]}]
    r = an_post(http, an, claude(messages=history, tools=AN_TOOLS))
    assert r.json()["content"] == [{"type": "text", "text": "fake-anthropic: tool said rainy"}]
    assert r.json()["usage"]["input_tokens"] == 3

    r = an_post(http, an, claude(stop_sequences=["big", "zzz"]))
    assert r.json()["content"][0]["text"] == "fake-anthropic: hello "
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "big")
    r = an_post(http, an, claude(max_tokens=1))
    assert r.json()["content"][0]["text"] == "fake-anthropic:" and r.json()["stop_reason"] == "max_tokens"

    an.script("*", {"reasoning": "hmm let me see"})
    r = an_post(http, an, claude(thinking={"type": "enabled", "budget_tokens": 1024}))
    think = r.json()["content"][0]
    assert think["type"] == "thinking" and think["thinking"] == "hmm let me see" and think["signature"]
    evs = anthropic_events(an_post(http, an, claude(stream=True)).content)
    assert evs[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [e["delta"]["type"] for e in evs if e["type"] == "content_block_delta" and e["index"] == 0]
    assert kinds[-1] == "signature_delta" and set(kinds[:-1]) == {"thinking_delta"}


def test_anthropic_auth_and_version_header(an, http):
    r = an_post(http, an, claude(), headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401
    assert r.json()["type"] == "error" and r.json()["error"] == {"type": "authentication_error",
                                                                 "message": "x-api-key header is required"}
    assert r.json()["request_id"] == r.headers["request-id"]
    r = an_post(http, an, claude(), headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid x-api-key"
    r = an_post(http, an, claude(), headers={"x-api-key": AN_KEY})
    assert r.status_code == 400 and r.json()["error"] == {"type": "invalid_request_error",
                                                          "message": "anthropic-version: header is required"}


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.pop("max_tokens"), "max_tokens: Field required"),
    (lambda b: b.pop("model"), "model: Field required"),
    (lambda b: b.update(foo=1), "foo: Extra inputs are not permitted"),
    (lambda b: b.update(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (lambda b: b.update(messages=[]), "messages: at least one message is required"),
    (lambda b: b.update(messages=[{"role": "system", "content": "x"}]),
     "messages.0.role: Input should be 'user' or 'assistant'"),
    (lambda b: b.update(messages=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]),
     'messages: first message must use the "user" role'),
    (lambda b: b.update(messages=[{"role": "user", "content": "x"},
                                  {"role": "assistant", "content": "ok"},
                                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                                                "content": "r"}]}]),
     "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. Each `tool_result` "
     "block must have a corresponding `tool_use` block in the previous message."),
    (lambda b: b.update(messages=[{"role": "user", "content": "x"},
                                  {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                                     "name": "f", "input": {}}]},
                                  {"role": "user", "content": "never mind"}]),
     "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. Each "
     "`tool_use` block must have a corresponding `tool_result` block in the next message."),
])
def test_anthropic_validation(an, http, mutate, message):
    body = claude()
    mutate(body)
    r = an_post(http, an, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_anthropic_consecutive_roles_allowed_and_unknown_model(http):
    with FakeAnthropic(models={"claude-sonnet-4-5"}) as an:
        msgs = [{"role": "user", "content": "first"}, {"role": "user", "content": "second"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_b", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "A"}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "B"}]}]
        r = an_post(http, an, claude(messages=msgs))
        assert r.status_code == 200, r.text
        assert r.json()["content"][0]["text"] == "fake-anthropic: tool said B"
        r = an_post(http, an, claude(model="claude-nope"))
        assert r.status_code == 404 and r.json()["error"] == {"type": "not_found_error", "message": "model: claude-nope"}
        r = http.post(an.url + "/v1/complete", json=claude(), headers=AN_H)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = http.post(an.url + "/v1/messages?beta=true", json=claude(), headers=AN_H)
        assert r.status_code == 200 and an.last_request.path == "/v1/messages?beta=true"


def test_anthropic_count_tokens(http):
    with FakeAnthropic(models={"claude-sonnet-4-5"}, cached_tokens=9) as an:
        url = an.url + "/v1/messages/count_tokens"
        body = {"model": "claude-sonnet-4-5", "system": "be brief",
                "messages": [{"role": "user", "content": "count these words please"}], "tools": AN_TOOLS}
        r = http.post(url, json=body, headers=AN_H)
        assert r.status_code == 200 and r.json() == {"input_tokens": 6}
        assert an.last_request.path == "/v1/messages/count_tokens" and an.last_request.model == "claude-sonnet-4-5"
        r = http.post(url, json=dict(body, max_tokens=10), headers=AN_H)
        assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens: Extra inputs are not permitted"
        r = http.post(url, json=dict(body, messages=[{"role": "assistant", "content": "x"}]), headers=AN_H)
        assert r.status_code == 400 and "first message" in r.json()["error"]["message"]
        r = http.post(url, json=dict(body, model="claude-nope"), headers=AN_H)
        assert r.status_code == 404
        r = http.post(url, json=body, headers={"x-api-key": AN_KEY})
        assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
        an.script("*", {"status": 529, "times": 1})
        assert http.post(url, json=body, headers=AN_H).status_code == 529


# --- Mistral ------------------------------------------------------------------------------------

def test_mistral_non_stream_and_stream(mi, http):
    r = mi_post(http, mi, chat(model="mistral-small-latest"))
    doc = r.json()
    assert r.status_code == 200 and doc["object"] == "chat.completion" and doc["model"] == "mistral-small-latest"
    assert doc["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "fake-mistral: hello big world",
                                                       "tool_calls": None}, "finish_reason": "stop"}]
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert r.headers["mistral-correlation-id"] == mi.last_request.request_id

    chunks = data_events(mi_post(http, mi, chat(model="mistral-small-latest", stream=True)).content)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert all("usage" not in c for c in chunks[:-2])
    text, _, _ = oa_stream_parts(chunks)
    assert text == "fake-mistral: hello big world"


def test_mistral_tool_calls_whole_or_split(mi, http):
    body = chat(model="mistral-large-latest", messages=[{"role": "user", "content": "Oslo"}], tools=OA_TOOLS,
                tool_choice="any")
    r = mi_post(http, mi, body)
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call["id"]) and call["index"] == 0
    assert json.loads(call["function"]["arguments"])["city"] == "Oslo"
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"

    mi.script("*", {"tool_calls": 2})
    chunks = data_events(mi_post(http, mi, dict(body, stream=True)).content)
    with_calls = [c for c in chunks[:-1] if c["choices"][0]["delta"].get("tool_calls")]
    assert len(with_calls) == 1
    calls = with_calls[0]["choices"][0]["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert all(json.loads(c["function"]["arguments"])["city"] == "Oslo" for c in calls)

    mi.script("*", {"split_args": True})
    chunks = data_events(mi_post(http, mi, dict(body, stream=True)).content)
    _, calls, finishes = oa_stream_parts(chunks)
    [(cid, name, frags)] = calls.values()
    assert re.fullmatch(r"[A-Za-z0-9]{9}", cid) and name == "get_weather" and len(frags) >= 2
    assert json.loads("".join(frags))["city"] == "Oslo" and finishes == ["tool_calls"]
    assert "usage" in chunks[-2]


def test_mistral_tool_result_answer(mi, http):
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "x"}}}]},
               {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather", "content": "foggy"}]
    r = mi_post(http, mi, chat(model="m", messages=history, tools=OA_TOOLS))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "fake-mistral: tool said foggy"


@pytest.mark.parametrize("where", ["assistant", "tool"])
def test_mistral_tool_call_id_format(mi, http, where):
    good, bad = "abcDEF123", "call_abc123"
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": bad if where == "assistant" else good, "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": bad if where == "tool" else good, "content": "foggy"}]
    r = mi_post(http, mi, chat(model="m", messages=history))
    assert r.status_code == 400
    assert r.json() == {"object": "error", "message": f"Tool call id was {bad} but must be a-z, A-Z, 0-9, with a "
                                                      "length of 9.",
                        "type": "invalid_function_call", "param": None, "code": "3280"}


def test_mistral_unprocessable_fields_auth_and_model(http):
    with FakeMistral(models={"mistral-small-latest"}) as mi:
        r = mi_post(http, mi, chat(model="mistral-small-latest", stream=True, stream_options={"include_usage": True}))
        assert r.status_code == 422
        doc = r.json()
        assert doc["object"] == "error" and doc["type"] == "invalid_request_error"
        assert doc["message"]["detail"] == [{"type": "extra_forbidden", "loc": ["body", "stream_options", "include_usage"],
                                             "msg": "Extra inputs are not permitted", "input": True}]
        r = mi_post(http, mi, chat(model="mistral-small-latest", user="u1", seed=3))
        assert r.status_code == 422 and [d["loc"] for d in r.json()["message"]["detail"]] == [["body", "user"],
                                                                                          ["body", "seed"]]
        r = mi_post(http, mi, chat(model="mistral-small-latest", messages=[
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": "z"},
            {"role": "user", "content": "w", "name": "bob"}]))
        assert r.status_code == 422
        assert [d["loc"] for d in r.json()["message"]["detail"]] == [
            ["body", "messages", 1, "assistant", "reasoning_content"], ["body", "messages", 2, "user", "name"]]
        r = mi_post(http, mi, {"messages": HELLO})
        assert r.status_code == 422 and r.json()["message"]["detail"][0]["type"] == "missing"
        r = mi_post(http, mi, chat(model="mistral-small-latest", messages=[]))
        assert r.status_code == 422 and r.json()["message"]["detail"][0]["type"] == "too_short"

        r = mi_post(http, mi, chat(model="mistral-small-latest"), headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json() == {"detail": "Unauthorized"}
        assert mi_post(http, mi, chat(model="mistral-small-latest"), headers={}).status_code == 401

        r = mi_post(http, mi, chat(model="mistral-giant"))
        assert r.status_code == 400
        assert r.json() == {"object": "error", "message": "Invalid model: mistral-giant", "type": "invalid_model",
                            "param": None, "code": "1500"}
        r = http.post(mi.url + "/models", json={}, headers=MI_H)
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


# --- scripted behaviours (all providers) --------------------------------------------------------

@pytest.fixture(params=["openai", "anthropic", "mistral"])
def any_fake(request):
    cls, post, body = {"openai": (FakeOpenAI, oa_post, chat()),
                       "anthropic": (FakeAnthropic, an_post, claude()),
                       "mistral": (FakeMistral, mi_post, chat(model="mistral-small-latest"))}[request.param]
    with cls() as fake:
        yield request.param, fake, (lambda http, b=None, **kw: post(http, fake, body if b is None else b, **kw)), body


def test_times_and_model_specific_scripts(any_fake, http):
    name, fake, post, body = any_fake
    model = body["model"]
    fake.script("*", {"text": "from star"})
    fake.script(model, {"text": "just once", "times": 1})
    texts = []
    for _ in range(3):
        doc = post(http).json()
        texts.append(doc["content"][0]["text"] if name == "anthropic" else doc["choices"][0]["message"]["content"])
    assert texts == ["just once", "from star", "from star"]
    fake.script("*", None)
    doc = post(http).json()
    text = doc["content"][0]["text"] if name == "anthropic" else doc["choices"][0]["message"]["content"]
    assert text.startswith(f"fake-{name}: ")
    assert [r.model for r in fake.requests_for(model)] == [model] * 4
    fake.reset()
    assert fake.requests == []


@pytest.mark.parametrize("status", [429, 500, 503, 529, 400])
def test_scripted_status_errors(any_fake, http, status):
    name, fake, post, _ = any_fake
    fake.script("*", {"status": status, "times": 1})
    r = post(http)
    assert r.status_code == status
    doc = r.json()
    if name == "openai":
        err = doc["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        if status == 429:
            assert err["code"] == "rate_limit_exceeded" and r.headers["retry-after"] == "1"
        if status >= 500:
            assert err["type"] == "server_error"
    elif name == "anthropic":
        assert doc["type"] == "error" and doc["error"]["message"] and doc["request_id"]
        expected = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error", 400: "invalid_request_error",
                    503: "api_error"}[status]
        assert doc["error"]["type"] == expected
    else:
        assert doc["message"]
        if status == 429:
            assert doc == {"message": "Requests rate limit exceeded"} and r.headers["retry-after"] == "1"
        else:
            assert doc["object"] == "error"
    assert post(http).status_code == 200      # times: 1


def test_scripted_error_overrides_body_headers_and_quota(oa, an, http):
    oa.script("*", {"status": 429, "quota": True})
    r = oa_post(http, oa, chat())
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert r.json()["error"]["code"] == "insufficient_quota" and r.json()["error"]["type"] == "insufficient_quota"
    oa.script("*", {"status": 503, "message": "custom words", "code": "x1", "headers": {"Retry-After": "7"}})
    r = oa_post(http, oa, chat())
    assert r.json()["error"]["message"] == "custom words" and r.json()["error"]["code"] == "x1"
    assert r.headers["retry-after"] == "7"
    oa.script("*", {"status": 502, "body": {"weird": True}})
    r = oa_post(http, oa, chat())
    assert r.status_code == 502 and r.json() == {"weird": True}
    oa.script("*", {"body": {"id": "canned"}})
    assert oa_post(http, oa, chat()).json() == {"id": "canned"}
    oa.script("*", {"headers": {"x-extra": "1"}})
    r = oa_post(http, oa, chat())
    assert r.status_code == 200 and r.headers["x-extra"] == "1"
    r = oa_post(http, oa, chat(foo=1))                 # script headers also ride on validation errors
    assert r.status_code == 400 and r.headers["x-extra"] == "1"

    an.script("*", {"status": 400, "quota": True})
    r = an_post(http, an, claude())
    assert r.status_code == 400 and "credit balance is too low" in r.json()["error"]["message"]


def test_a_script_for_one_api_key(http):
    with FakeOpenAI(api_keys=("sk-spent", "sk-fine")) as oa, \
            FakeAnthropic(api_keys=("sk-ant-spent", "sk-ant-fine")) as an:
        oa.script("*", {"status": 429, "quota": True, "api_key": "sk-spent", "times": 2})
        fine = {"Authorization": "Bearer sk-fine"}
        spent = {"Authorization": "Bearer sk-spent"}
        assert oa_post(http, oa, chat(), headers=fine).status_code == 200     # not counted down
        assert oa_post(http, oa, chat(), headers=spent).json()["error"]["code"] == "insufficient_quota"
        # an exact model script that does not apply to the key gives way to the "*" one
        oa.script("m-other", {"status": 503, "api_key": "sk-fine"})
        assert oa_post(http, oa, chat(model="m-other"), headers=spent).status_code == 429
        assert oa_post(http, oa, chat(), headers=spent).status_code == 200   # times: 2 used up
        an.script("*", {"status": 400, "quota": True, "api_key": "sk-ant-spent"})
        assert an_post(http, an, claude(), headers={**AN_H, "x-api-key": "sk-ant-fine"}).status_code == 200
        r = an_post(http, an, claude(), headers={**AN_H, "x-api-key": "sk-ant-spent"})
        assert r.status_code == 400 and "credit balance is too low" in r.json()["error"]["message"]


def test_garbage_non_stream_and_stream(any_fake, http):
    name, fake, post, body = any_fake
    fake.script("*", {"garbage": True})
    r = post(http)
    assert r.status_code == 200 and r.content == GARBAGE
    with pytest.raises(ValueError):
        r.json()
    fake.script("*", {"garbage": "<html>oops</html>", "status": 502})
    r = post(http)
    assert r.status_code == 502 and r.text == "<html>oops</html>"
    fake.script("*", {"garbage": True})
    r = post(http, dict(body, stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == GARBAGE and parse_sse(r.content) == []


def test_delay_and_event_delay(any_fake, http):
    _, fake, post, body = any_fake
    fake.script("*", {"delay": 0.3, "times": 1})
    t0 = time.monotonic()
    assert post(http).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    fake.script("*", {"event_delay": 0.03})
    t0 = time.monotonic()
    with http.stream("POST", fake.url + ("/v1/messages" if fake.provider == "anthropic" else "/chat/completions"),
                     json=dict(body, stream=True),
                     headers={"openai": OA_H, "anthropic": AN_H, "mistral": MI_H}[fake.provider]) as r:
        arrivals = [time.monotonic() - t0 for _ in r.iter_raw()]
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] >= 0.1


def test_delay_is_a_read_timeout(oa):
    oa.script("*", {"delay": 1.0})
    with httpx.Client(trust_env=False, verify=False, timeout=httpx.Timeout(5, read=0.2)) as c:
        with pytest.raises(httpx.ReadTimeout):
            oa_post(c, oa, chat())


def test_reset_drops_the_connection(any_fake, http):
    _, fake, post, _ = any_fake
    fake.script("*", {"reset": True, "times": 1})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(http)
    assert fake.requests[-1].status is None
    assert post(http).status_code == 200


def test_stream_cut(any_fake, http):
    name, fake, post, body = any_fake
    fake.script("*", {"then": "cut"})
    url = fake.url + ("/v1/messages" if name == "anthropic" else "/chat/completions")
    headers = {"openai": OA_H, "anthropic": AN_H, "mistral": MI_H}[name]
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", url, json=dict(body, stream=True), headers=headers) as r:
            for part in r.iter_raw():
                got += part
    assert b"[DONE]" not in got and b"message_stop" not in got and b"finish_reason\": \"stop" not in got
    assert b"fake-" in got                         # the content arrived before the cut
    fake.script("*", {"then": "cut", "stream_events": 1})
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", url, json=dict(body, stream=True), headers=headers) as r:
            for part in r.iter_raw():
                got += part
    assert len(parse_sse(got.rsplit(b"\n\n", 1)[0] + b"\n\n")) == 1
    fake.script("*", {"then": "cut"})
    with pytest.raises(httpx.RemoteProtocolError):   # non-stream: half the announced body
        post(http)


def test_stream_then_error(any_fake, http):
    name, fake, post, body = any_fake
    fake.script("*", {"then": "error", "stream_events": 2})
    r = post(http, dict(body, stream=True))
    assert r.status_code == 200
    events = parse_sse(r.content)
    assert len(events) == 3
    if name == "anthropic":
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1]) == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    elif name == "openai":
        err = json.loads(events[-1][1])["error"]
        assert err["type"] == "server_error" and err["message"]
    else:
        assert json.loads(events[-1][1])["object"] == "error"
    fake.script("*", {"then": "error", "message": "boom"})   # default: after all the content
    events = parse_sse(post(http, dict(body, stream=True)).content)
    assert "boom" in events[-1][1] and "fake-" in "".join(d for _, d in events)


def test_stream_then_end_truncates_silently(any_fake, http):
    name, fake, post, body = any_fake
    fake.script("*", {"then": "end"})
    r = post(http, dict(body, stream=True))
    raw = r.content
    assert r.status_code == 200 and b"[DONE]" not in raw and b"message_stop" not in raw and b"message_delta" not in raw
    assert b"finish_reason\": \"stop" not in raw
    text = "".join((json.loads(d).get("delta") or {}).get("text", "") if name == "anthropic" else
                   "".join(c["delta"].get("content") or "" for c in json.loads(d)["choices"])
                   for _, d in parse_sse(raw))
    assert text == f"fake-{name}: hello big world"
    fake.script("*", {"stream_events": 1})
    assert len(parse_sse(post(http, dict(body, stream=True)).content)) == 1


def test_scripted_events_and_text(an, oa, http):
    an.script("*", {"events": [{"type": "message_start", "message": {"id": "m"}}, {"type": "message_stop"}]})
    r = an_post(http, an, claude(stream=True))
    assert parse_sse(r.content) == [("message_start", '{"type": "message_start", "message": {"id": "m"}}'),
                                    ("message_stop", '{"type": "message_stop"}')]
    oa.script("*", {"events": [{"choices": []}, "[DONE]", b": raw comment\n\n"]})
    r = oa_post(http, oa, chat(stream=True))
    assert r.content == b'data: {"choices": []}\n\ndata: [DONE]\n\n: raw comment\n\n'
    oa.script("*", {"text": "one two three four", "times": 1})
    r = oa_post(http, oa, chat(max_tokens=3))
    assert r.json()["choices"][0]["message"]["content"] == "one two three"
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_keep_alive_reuse(any_fake, http):
    _, fake, post, body = any_fake
    assert post(http).status_code == 200
    assert post(http, dict(body, stream=True)).status_code == 200
    fake.script("*", {"status": 429, "times": 1})
    assert post(http).status_code == 429
    assert post(http).status_code == 200
    addrs = {r.client_address for r in fake.requests}
    assert len(addrs) == 1 and len(fake.requests) == 4
    fake.script("*", {"reset": True, "times": 1})
    with pytest.raises(httpx.TransportError):
        post(http)
    assert post(http).status_code == 200
    assert fake.requests[-1].client_address not in addrs     # a fresh connection after the reset


def test_concurrent_connections_and_stop(oa):
    oa.script("*", {"delay": 0.3})
    results = []

    def call():
        with httpx.Client(trust_env=False, verify=False, timeout=5) as c:
            results.append(oa_post(c, oa, chat()).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4 and time.monotonic() - t0 < 1.0   # served in parallel
    oa.script("*", {"delay": 30})
    outcome = []

    def stuck():
        with httpx.Client(trust_env=False, verify=False, timeout=5) as c:
            try:
                outcome.append(oa_post(c, oa, chat()).status_code)
            except httpx.TransportError as e:
                outcome.append(type(e))

    t = threading.Thread(target=stuck)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    oa.stop()                                          # interrupts the scripted delay, drops the connection
    t.join(3)
    assert time.monotonic() - t0 < 3 and not t.is_alive()
    assert len(outcome) == 1 and outcome[0] in (httpx.RemoteProtocolError, httpx.ReadError)
    with pytest.raises(RuntimeError):
        oa.url


def test_anthropic_prompt_cache_writes_then_reads_a_marked_prefix(an, http):
    system = [{"type": "text", "text": "one two three four five", "cache_control": {"type": "ephemeral"}}]
    first = an_post(http, an, claude(system=system, messages=[{"role": "user", "content": "q one"}])).json()["usage"]
    second = an_post(http, an, claude(system=system, messages=[{"role": "user", "content": "q two"}])).json()["usage"]
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"], first["input_tokens"]) == (5, 0, 2)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"], second["input_tokens"]) == (0, 5, 2)
    plain = an_post(http, an, claude(system="one two three four five")).json()["usage"]
    assert plain["cache_read_input_tokens"] == plain["cache_creation_input_tokens"] == 0


def test_anthropic_prompt_cache_splits_writes_by_ttl(an, http):
    one_hour = {"type": "ephemeral", "ttl": "1h"}
    system = [{"type": "text", "text": "alpha beta gamma", "cache_control": one_hour},
              {"type": "text", "text": "delta epsilon", "cache_control": {"type": "ephemeral"}}]
    u = an_post(http, an, claude(system=system, messages=[{"role": "user", "content": "q"}])).json()["usage"]
    assert u["cache_creation_input_tokens"] == 5
    assert u["cache_creation"] == {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}


def test_anthropic_short_prefixes_are_silently_not_cached(http):
    with FakeAnthropic(cache_min_tokens=10) as f:
        system = [{"type": "text", "text": "too short", "cache_control": {"type": "ephemeral"}}]
        for _ in range(2):
            u = an_post(http, f, claude(system=system)).json()["usage"]
            assert u["cache_read_input_tokens"] == u["cache_creation_input_tokens"] == 0


def test_anthropic_refuses_a_fifth_breakpoint(an, http):
    eph = {"type": "ephemeral"}
    content = [{"type": "text", "text": f"t{i}", "cache_control": eph} for i in range(5)]
    r = an_post(http, an, claude(messages=[{"role": "user", "content": content}]))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "A maximum of 4 blocks with cache_control may be provided. Found 5."


def test_embeddings_endpoints_answer_the_documented_shape(oa, mi, http):
    r = http.post(oa.url + "/embeddings", headers=OA_H, json={"model": "text-embedding-3-small",
                                                              "input": ["one two", "three"], "dimensions": 8})
    doc = r.json()
    assert r.status_code == 200 and doc["object"] == "list" and doc["model"] == "text-embedding-3-small"
    assert [d["index"] for d in doc["data"]] == [0, 1] and all(d["object"] == "embedding" for d in doc["data"])
    assert len(doc["data"][0]["embedding"]) == 8 and doc["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert oa.requests[-1].path == "/v1/embeddings"
    r = http.post(mi.url + "/embeddings", headers=MI_H, json={"model": "mistral-embed", "input": "x"})
    doc = r.json()
    assert len(doc["data"][0]["embedding"]) == 1024 and doc["id"] and doc["usage"]["completion_tokens"] == 0
    assert http.post(oa.url + "/embeddings", headers=OA_H, json={"model": "m", "input": []}).status_code == 400
