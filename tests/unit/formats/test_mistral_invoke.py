"""Mistral on Bedrock InvokeModel (workers/formats/mistral/invoke.py): the text and chat bodies
(bedrock-protocol.md 6.2)."""
from __future__ import annotations

from finops.shared.model import ChatResponse, TextBlock, ToolChoice, ToolResultBlock, ToolUseBlock, Usage
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from finops.workers.formats.common import response_to_events
from tests.unit.formats.family_support import METRICS, fam, feed_all, roles, text_events


# --- Mistral ------------------------------------------------------------------------------------

def test_mistral_text_parse_documented():
    req = fam("mistral-text").parse_request({"prompt": "<s>[INST] What is your favourite condiment? [/INST]",
                                             "max_tokens": 400, "stop": ["</s>"], "temperature": 0.7,
                                             "top_p": 0.7, "top_k": 50})
    assert roles(req) == [("user", "What is your favourite condiment?")]
    assert (req.max_tokens, req.stop_sequences, req.temperature, req.top_p, req.top_k) == (400, ("</s>",), 0.7, 0.7, 50)


def test_mistral_text_parse_product_doc_example():
    req = fam("mistral-text").parse_request({"prompt": "Say hello from Mistral using Invoke API.", "max_tokens": 50,
                                             "temperature": 0.7})
    assert roles(req) == [("user", "Say hello from Mistral using Invoke API.")] and req.max_tokens == 50


def test_mistral_text_render_and_stream():
    f = fam("mistral-text")
    assert f.render_response(ChatResponse(content=[TextBlock("Lemon")], stop_reason="max_tokens"), "m") == {
        "outputs": [{"text": "Lemon", "stop_reason": "length"}]}
    chunks = feed_all(f.stream_encoder("mistral.mistral-7b-instruct-v0:2"), text_events("Le", "mon"))
    assert chunks == [{"outputs": [{"text": "Le", "stop_reason": None}]},
                      {"outputs": [{"text": "mon", "stop_reason": None}]},
                      {"outputs": [{"text": "", "stop_reason": "stop"}], METRICS_KEY: METRICS}]


MISTRAL_CHAT_BODY = {
    "messages": [{"role": "system", "content": "You are a DJ."},
                 {"role": "user", "content": "What is the most popular song on WZPZ?"},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"id": "v6RMMiRlT", "function": {"name": "top_song", "arguments": "{\"sign\": \"WZPZ\"}"}}]},
                 {"role": "tool", "tool_call_id": "v6RMMiRlT", "content": "Elemental Hotel"}],
    "tools": [{"type": "function", "function": {"name": "top_song", "description": "Top song",
                                                "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}}}}],
    "tool_choice": "any", "max_tokens": 200, "top_p": 0.9, "temperature": 0.2}


def test_mistral_chat_parse_documented():
    req = fam("mistral-chat").parse_request(MISTRAL_CHAT_BODY)
    assert req.system == ("You are a DJ.",)
    assert req.messages[1].content == (ToolUseBlock("v6RMMiRlT", "top_song", {"sign": "WZPZ"}),)
    assert req.messages[2].content == (ToolResultBlock("v6RMMiRlT", [TextBlock("Elemental Hotel")], "success"),)
    assert req.tools[0].input_schema["properties"] == {"sign": {"type": "string"}}
    assert req.tool_choice == ToolChoice("any") and (req.max_tokens, req.top_p, req.temperature) == (200, 0.9, 0.2)


def test_mistral_chat_render_and_stream():
    f = fam("mistral-chat")
    resp = ChatResponse(content=[ToolUseBlock("c1", "top_song", {"sign": "WZPZ"})],
                        stop_reason="tool_use")
    out = f.render_response(resp, "mistral.mistral-large-2407-v1:0")
    assert out == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "top_song", "arguments": "{\"sign\": \"WZPZ\"}"}}]},
        "stop_reason": "tool_calls"}]}
    chunks = feed_all(f.stream_encoder("mistral.mistral-large-2407-v1:0"), response_to_events(
        ChatResponse(content=[TextBlock("Hi"), ToolUseBlock("c1", "f", {"a": 1})],
                     stop_reason="tool_use", usage=Usage(8, 4), latency_ms=511)))
    assert chunks[0] == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "stop_reason": None}]}
    assert chunks[1]["choices"][0]["message"]["tool_calls"] == [{"id": "c1", "function": {"name": "f",
                                                                                         "arguments": "{\"a\":1}"}}]
    assert chunks[-1]["choices"][0]["stop_reason"] == "tool_calls"
    assert chunks[-1][METRICS_KEY]["invocationLatency"] == 511
