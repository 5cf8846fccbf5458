"""Claude on Bedrock InvokeModel (workers/formats/anthropic/invoke.py): the Messages body and the
legacy Text Completions body, parsed, rendered and streamed as bedrock-protocol.md 6.1 documents."""
from __future__ import annotations

import json

import pytest

from finops.shared.model import (ChatResponse, ImageBlock, MessageStart, ReasoningBlock, TextBlock, ToolChoice,
                                 ToolResultBlock, ToolUseBlock, Usage)
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from finops.workers.formats.common import response_to_events
from tests.unit.formats.family_support import (ANTH, CLAUDE3, JPEG, METRICS, MSGS, PNG, b64, fam, feed_all,
                                               raises, roles, text_events)


# --- Anthropic Messages -------------------------------------------------------------------------

def test_anthropic_parse_documented_request():
    req = fam("anthropic-messages").parse_request({
        "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["computer-use-2024-10-22"],
        "max_tokens": 1024, "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                                      "data": b64(JPEG)}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "found",
                                          "is_error": False},
                                         {"type": "tool_result", "tool_use_id": "toolu_02",
                                          "content": [{"type": "text", "text": "bad"}], "is_error": True}]}],
        "temperature": 1.0, "top_p": 0.999, "top_k": 250, "stop_sequences": ["\n\nHuman:"],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert req.system == ("Be terse.",) and req.max_tokens == 1024
    assert (req.temperature, req.top_p, req.top_k, req.stop_sequences) == (1.0, 0.999, 250, ("\n\nHuman:",))
    assert req.messages[0].content[1] == ImageBlock("jpeg", JPEG)
    assert req.messages[1].content == (ReasoningBlock("hmm", "sig"), ToolUseBlock("toolu_01", "lookup", {"q": "x"}))
    assert req.messages[2].content == (ToolResultBlock("toolu_01", [TextBlock("found")], "success"),
                                       ToolResultBlock("toolu_02", [TextBlock("bad")], "error"))
    assert req.tools[0].name == "lookup" and req.tool_choice == ToolChoice("tool", "lookup")
    assert req.extra == {"anthropic_beta": ["computer-use-2024-10-22"],
                         "thinking": {"type": "enabled", "budget_tokens": 2000}}


def test_anthropic_parse_string_content_and_system():
    req = fam("anthropic-messages").parse_request({**ANTH, "system": "sys",
                                                   "messages": [{"role": "user", "content": "Write a haiku about coding."}]})
    assert req.system == ("sys",) and roles(req) == [("user", "Write a haiku about coding.")]


ANTH_ERRORS = [
    ("version-missing", {"max_tokens": 5, "messages": MSGS["messages"]}, "anthropic_version",
     'required, must be "bedrock-2023-05-31"'),
    ("version-wrong", {**ANTH, "anthropic_version": "2023-06-01"}, "anthropic_version", "bedrock-2023-05-31"),
    ("max-tokens-missing", {k: v for k, v in ANTH.items() if k != "max_tokens"}, "max_tokens", "required"),
    ("max-tokens-zero", {**ANTH, "max_tokens": 0}, "max_tokens", "at least 1"),
    ("messages-missing", {k: v for k, v in ANTH.items() if k != "messages"}, "messages", "required"),
    ("messages-empty", {**ANTH, "messages": []}, "messages", "non-empty"),
    ("role", {**ANTH, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "user, assistant"),
    ("content-blank", {**ANTH, "messages": [{"role": "user", "content": ""}]}, "messages[0].content", "blank"),
    ("block-type", {**ANTH, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type", "unknown content block type 'video'"),
    ("image-media", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": b64(PNG)}}]}]},
     "messages[0].content[0].source.media_type", "image/jpeg"),
    ("image-mismatch", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/jpeg", "data": b64(PNG)}}]}]},
     "messages[0].content[0].source.data", "not a valid jpeg image"),
    ("image-url", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "url", "url": "https://x/y.png"}}]}]}, "messages[0].content[0].source.type", "not supported"),
    ("temperature", {**ANTH, "temperature": 1.5}, "temperature", "between 0 and 1"),
    ("tool-typed", {**ANTH, "tools": [{"type": "computer_20241022", "name": "computer"}]}, "tools[0].type",
     "not supported"),
    ("tool-schema", {**ANTH, "tools": [{"name": "x"}]}, "tools[0].input_schema", "JSON object"),
    ("tool-choice", {**ANTH, "tool_choice": {"type": "sometimes"}}, "tool_choice.type", "auto, any, tool, none"),
    ("tool-choice-name", {**ANTH, "tools": [{"name": "a", "input_schema": {}}],
                          "tool_choice": {"type": "tool", "name": "b"}}, "tool_choice.name", "not in tools"),
    ("tool-use-no-tools", {**ANTH, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]}, "tools", "must be defined"),
]


@pytest.mark.parametrize("b,path,text", [c[1:] for c in ANTH_ERRORS], ids=[c[0] for c in ANTH_ERRORS])
def test_anthropic_errors(b, path, text):
    msg = raises(fam("anthropic-messages").parse_request, b)
    assert msg.startswith(path + ": ") and text in msg, msg


def test_anthropic_render_response():
    resp = ChatResponse(content=[ReasoningBlock("t", "s"), TextBlock("42"),
                                 ToolUseBlock("toolu_1", "f", {"a": 1})],
                        stop_reason="tool_use", usage=Usage(30, 265, 3, 4))
    out = fam("anthropic-messages").render_response(resp, "us." + CLAUDE3, response_id="msg_bdrk_X")
    assert out == {"id": "msg_bdrk_X", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
                   "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                               {"type": "text", "text": "42"},
                               {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
                   "stop_reason": "tool_use", "stop_sequence": None,
                   "usage": {"input_tokens": 30, "output_tokens": 265, "cache_creation_input_tokens": 4,
                             "cache_read_input_tokens": 3}}


def test_anthropic_render_default_id_and_stop_sequence():
    resp = ChatResponse(content=[TextBlock("x")], stop_reason="stop_sequence", stop_sequence="END")
    out = fam("anthropic-messages").render_response(resp, CLAUDE3)
    assert out["id"].startswith("msg_bdrk_") and out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"


def test_anthropic_stream_matches_documented_sequence():
    enc = fam("anthropic-messages").stream_encoder(CLAUDE3, input_tokens=30, response_id="abc")
    chunks = feed_all(enc, text_events("42"))
    assert chunks == [
        {"type": "message_start", "message": {"id": "msg_bdrk_abc", "type": "message", "role": "assistant",
                                              "model": "claude-3-haiku-20240307", "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "42"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop", METRICS_KEY: METRICS},
    ]


def test_anthropic_stream_tool_and_thinking_blocks():
    resp = ChatResponse(content=[ReasoningBlock("hm", "sg"), TextBlock("ok"),
                                 ToolUseBlock("toolu_9", "f", {"x": 1})],
                        stop_reason="tool_use", usage=Usage(1, 2), latency_ms=3)
    chunks = feed_all(fam("anthropic-messages").stream_encoder(CLAUDE3), response_to_events(resp))
    types = [(c["type"], c.get("index"), (c.get("content_block") or c.get("delta") or {}).get("type")) for c in chunks]
    assert types == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None), ("message_delta", None, None), ("message_stop", None, None)]
    assert chunks[8]["content_block"] == {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}
    assert json.loads(chunks[9]["delta"]["partial_json"]) == {"x": 1}
    assert chunks[11]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_stream_input_tokens_from_message_start():
    enc = fam("anthropic-messages").stream_encoder(CLAUDE3)
    first = enc.feed(MessageStart(Usage(77, 0)))
    assert first[0]["message"]["usage"]["input_tokens"] == 77


# --- Claude text completions --------------------------------------------------------------------

def test_claude_text_parse_and_render():
    f = fam("anthropic-text")
    req = f.parse_request({"prompt": "\n\nHuman: Tell me a joke\n\nAssistant:", "max_tokens_to_sample": 300,
                           "temperature": 0.5, "top_k": 250, "top_p": 1, "stop_sequences": ["\n\nHuman:"]})
    assert roles(req) == [("user", "Tell me a joke")]
    assert (req.max_tokens, req.top_k, req.stop_sequences) == (300, 250, ("\n\nHuman:",))
    out = f.render_response(ChatResponse(content=[TextBlock(" Why?")]), "anthropic.claude-v2")
    assert out == {"type": "completion", "completion": " Why?", "stop_reason": "stop_sequence", "stop": "\n\nHuman:"}
    out = f.render_response(ChatResponse(content=[TextBlock("x")], stop_reason="max_tokens"), "anthropic.claude-v2")
    assert out["stop_reason"] == "max_tokens" and out["stop"] is None


def test_claude_text_errors():
    f = fam("anthropic-text")
    assert raises(f.parse_request, {"prompt": "\n\nHuman: x\n\nAssistant:"}).startswith("max_tokens_to_sample: required")
    assert raises(f.parse_request, {"max_tokens_to_sample": 5}).startswith("prompt: required")


def test_claude_text_stream():
    chunks = feed_all(fam("anthropic-text").stream_encoder("anthropic.claude-v2"), text_events("Hel", "lo"))
    assert chunks == [{"type": "completion", "completion": "Hel", "stop_reason": None, "stop": None},
                      {"type": "completion", "completion": "lo", "stop_reason": None, "stop": None},
                      {"type": "completion", "completion": "", "stop_reason": "stop_sequence", "stop": "\n\nHuman:",
                       METRICS_KEY: METRICS}]
