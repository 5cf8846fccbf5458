"""OpenAI-like InvokeModel bodies (workers/formats/openai/invoke.py): the request checks every
OpenAI-style family shares (openai-chat, mistral-chat, ai21-jamba), images as data URLs, and the
generic body's stream."""
from __future__ import annotations

import json

import pytest

from finops.shared.model import ChatResponse, ImageBlock, TextBlock, ToolUseBlock, Usage
from finops.workers.formats.common import response_to_events
from tests.unit.formats.family_support import MSGS, PNG, b64, fam, feed_all, raises


OPENAI_ERRORS = [
    ("messages-missing", {}, "messages", "required"),
    ("role", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "system, user, assistant, tool"),
    ("only-system", {"messages": [{"role": "system", "content": "x"}]}, "messages", "only system"),
    ("blank", {"messages": [{"role": "user", "content": " "}]}, "messages[0].content", "blank"),
    ("args-json", {"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{bad"}}]}], "tools": [
        {"type": "function", "function": {"name": "f"}}]}, "messages[0].tool_calls[0].function.arguments", "valid JSON"),
    ("tool-id", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "string"),
    ("image-url", {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                               "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url", "data:image"),
    ("tool-choice", {**MSGS, "tool_choice": "maybe"}, "tool_choice", "auto, any"),
    ("n", {**MSGS, "n": 2}, "n", "only 1"),
    ("temperature", {**MSGS, "temperature": 5}, "temperature", "between"),
    ("tools-needed", {"messages": [{"role": "tool", "tool_call_id": "a", "content": "x"}]}, "tools", "must be defined"),
]


@pytest.mark.parametrize("family", ["mistral-chat", "ai21-jamba", "openai-chat"])
@pytest.mark.parametrize("b,path,text", [c[1:] for c in OPENAI_ERRORS], ids=[c[0] for c in OPENAI_ERRORS])
def test_openai_like_errors(family, b, path, text):
    msg = raises(fam(family).parse_request, b)
    assert msg.startswith(path + ": ") and text in msg, msg


def test_openai_like_data_url_image_and_parts():
    req = fam("openai-chat").parse_request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}]}],
        "max_completion_tokens": 9, "stop": "END", "model": "ignored"})
    assert req.messages[0].content == (TextBlock("What is this?"), ImageBlock("png", PNG))
    assert req.max_tokens == 9 and req.stop_sequences == ("END",) and "model" not in req.extra


def test_openai_generic_stream_tool_calls():
    resp = ChatResponse(content=[ToolUseBlock("call_1", "f", {"a": 1})],
                        stop_reason="tool_use", usage=Usage(1, 1))
    chunks = feed_all(fam("openai-chat").stream_encoder("openai.gpt-oss-120b-1:0"), response_to_events(resp))
    assert chunks[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]
    assert json.loads(chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    out = fam("openai-chat").render_response(resp, "openai.gpt-oss-120b-1:0")
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"
