"""The Anthropic Messages API format (workers/formats/anthropic/api.py).

Unit tests pin each mapping rule of the module docstring; the property tests run the translator
against the Bedrock Claude family (workers/formats/anthropic/invoke.py), which reads and writes
the same Messages shapes in the other direction:

    canonical request  -> build_request  -> family parse_request    == the request
    canonical response -> family render  -> parse_response          == the response
    canonical stream   -> family encoder -> StreamDecoder           == the stream (assembled)
"""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from finops.shared.errors import GatewayError
from finops.shared.model import (IMAGE_FORMATS, BlockDelta, BlockStart, BlockStop, ChatRequest, ChatResponse,
                                 DocumentBlock, ImageBlock, JsonBlock, Message, MessageStart, MessageStop,
                                 Metadata, ReasoningBlock, ReasoningDelta, ReasoningSignatureDelta,
                                 RedactedReasoningBlock, RedactedReasoningDelta, StreamEvent, TextBlock, TextDelta,
                                 Tool, ToolChoice, ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart,
                                 Usage, estimate_tokens)
from finops.workers.formats.bedrock import converse as cv
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from finops.workers.formats.anthropic.invoke import ANTHROPIC_VERSION, MESSAGES
from finops.workers.formats.anthropic import api as am


PNG = b"\x89PNG\r\n\x1a\nfakepng"
JPEG = b"\xff\xd8\xff\xe0fakejpeg"
GIF = b"GIF89afakegif"
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 "
PDF = b"%PDF-1.4 fake"
CLAUDE3 = "anthropic.claude-3-haiku-20240307-v1:0"
D = am.AnthropicDialect(provider="anth")
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def user(*blocks) -> Message:
    return Message("user", list(blocks))


def req_of(*blocks, **kw) -> ChatRequest:
    return ChatRequest(messages=[user(*blocks)], **kw)


def build(req: ChatRequest, *, stream=False, dialect=D) -> dict:
    return am.to_anthropic_request(req, "claude-x", stream=stream, dialect=dialect)


def blocks_of(req: ChatRequest, **kw) -> list[dict]:
    return build(req, **kw)["messages"][0]["content"]


def error_of(fn, *a, **kw) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        fn(*a, **kw)
    return ei.value


# --- request: top level -------------------------------------------------------------------------

def test_minimal_request_has_only_required_fields():
    body = build(req_of(TextBlock("hi")))
    assert body == {"model": "claude-x", "max_tokens": 4096,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_max_tokens_from_request_else_dialect_default():
    assert build(req_of(TextBlock("hi"), max_tokens=77))["max_tokens"] == 77
    d = am.AnthropicDialect(provider="anth", default_max_tokens=123)
    assert build(req_of(TextBlock("hi")), dialect=d)["max_tokens"] == 123


def test_dialect_defaults_and_is_frozen():
    d = am.AnthropicDialect("p")
    assert (d.provider, d.default_max_tokens, d.passthrough_fields) == ("p", 4096, frozenset())
    with pytest.raises(Exception):
        d.provider = "q"


def test_system_blocks_and_omission():
    assert build(req_of(TextBlock("hi"), system=["a", "", "b"]))["system"] == [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "system" not in build(req_of(TextBlock("hi"), system=[]))
    assert "system" not in build(req_of(TextBlock("hi"), system=[""]))


def test_sampling_parameters_and_stop_sequences():
    body = build(req_of(TextBlock("hi"), temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["END", "##"]))
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop_sequences"]) == (0.5, 0.9, 40, ["END", "##"])
    body = build(req_of(TextBlock("hi"), temperature=0.0, top_k=0))
    assert body["temperature"] == 0.0 and body["top_k"] == 0       # zero is a value, not absence
    body = build(req_of(TextBlock("hi"), stop_sequences=[]))
    assert not {"temperature", "top_p", "top_k", "stop_sequences"} & set(body)


def test_stream_flag_only_when_streaming():
    assert build(req_of(TextBlock("hi")), stream=True)["stream"] is True
    assert "stream" not in build(req_of(TextBlock("hi")), stream=False)


def test_roles_and_order_kept_and_tool_calls_stay_in_one_message():
    req = ChatRequest(messages=[
        user(TextBlock("weather in A and B?")),
        Message("assistant", [TextBlock("checking"),
                              ToolUseBlock("t1", "w", {"c": "A"}),
                              ToolUseBlock("t2", "w", {"c": "B"})]),
        user(ToolResultBlock("t1", [TextBlock("sun")], "success"),
             ToolResultBlock("t2", [TextBlock("rain")], "success")),
    ], tools=[Tool("w", "", {"type": "object"})])
    msgs = build(req)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "A"}},
        {"type": "tool_use", "id": "t2", "name": "w", "input": {"c": "B"}}]
    assert [b["tool_use_id"] for b in msgs[2]["content"]] == ["t1", "t2"]


# --- request: content blocks --------------------------------------------------------------------

@pytest.mark.parametrize("fmt,data,media", [("png", PNG, "image/png"), ("jpeg", JPEG, "image/jpeg"),
                                            ("gif", GIF, "image/gif"), ("webp", WEBP, "image/webp")])
def test_image_block(fmt, data, media):
    assert blocks_of(req_of(ImageBlock(fmt, data))) == [
        {"type": "image", "source": {"type": "base64", "media_type": media, "data": b64(data)}}]


def test_an_image_of_another_format_cannot_be_built():
    # the formats refuse it first (a ValidationException naming the field); the API has a media type for each
    with pytest.raises(ValueError):
        ImageBlock("bmp", b"BM")
    assert set(am.IMAGE_MEDIA_TYPES) == set(IMAGE_FORMATS)


def test_pdf_document():
    out = blocks_of(req_of(DocumentBlock("report", "pdf", data=PDF)))
    assert out == [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                   "data": b64(PDF)}, "title": "report"}]


@pytest.mark.parametrize("fmt", am.TEXT_DOCUMENT_FORMATS)
def test_text_documents_from_text_or_utf8_bytes(fmt):
    want = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "héllo"},
            "title": "n"}
    assert blocks_of(req_of(DocumentBlock("n", fmt, text="héllo"))) == [want]
    assert blocks_of(req_of(DocumentBlock("n", fmt, data="héllo".encode()))) == [want]


def test_document_with_text_source_is_plain_text_whatever_its_format():
    out = blocks_of(req_of(DocumentBlock("n", "pdf", text="extracted")))
    assert out[0]["source"] == {"type": "text", "media_type": "text/plain", "data": "extracted"}


def test_document_context_and_default_title():
    out = blocks_of(req_of(DocumentBlock("", "txt", text="t", context="from the wiki")))
    assert out[0]["title"] == "document" and out[0]["context"] == "from the wiki"
    assert "context" not in blocks_of(req_of(DocumentBlock("n", "txt", text="t")))[0]


def test_text_document_bytes_not_utf8_is_refused():
    e = error_of(build, req_of(TextBlock("x"), DocumentBlock("n", "csv", data=b"\xff\xfe")))
    assert e.code == "ValidationException"
    assert e.message.startswith("messages[0].content[1].document.source.bytes: ")
    assert "'anth'" in e.message and "UTF-8" in e.message


@pytest.mark.parametrize("fmt", am.OFFICE_FORMATS)
def test_office_documents_are_refused_naming_provider_format_path_and_fix(fmt):
    req = ChatRequest(messages=[user(TextBlock("a")), Message("assistant", [TextBlock("b")]),
                                user(TextBlock("c"), DocumentBlock("n", fmt, data=b"PK"))])
    e = error_of(build, req)
    assert e.code == "ValidationException" and e.status == 400
    assert e.message.startswith("messages[2].content[1]: ")
    assert "'anth'" in e.message and f"{fmt} documents" in e.message and "PDF" in e.message and "txt" in e.message


def test_office_document_inside_tool_result_names_the_nested_path():
    req = req_of(ToolResultBlock("t", [TextBlock("ok"), DocumentBlock("n", "xlsx", data=b"PK")], "success"))
    e = error_of(build, req)
    assert e.message.startswith("messages[0].content[0].toolResult.content[1]: ") and "xlsx" in e.message


def test_tool_use_block():
    out = blocks_of(req_of(ToolUseBlock("toolu_1", "f", {"a": [1, 2]})))
    assert out == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}]


def test_tool_result_content_kinds():
    items = [TextBlock("plain"), JsonBlock({"b": 1, "a": ["x", None]}), TextBlock(""), ImageBlock("png", PNG),
             DocumentBlock("d", "txt", text="doc")]
    out = blocks_of(req_of(ToolResultBlock("t", items)))
    assert out == [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "text", "text": "plain"},
        {"type": "text", "text": '{"b":1,"a":["x",null]}'},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "d"}]}]


def test_tool_result_json_is_compact_and_keeps_unicode():
    out = blocks_of(req_of(ToolResultBlock("t", [JsonBlock({"k": "é", "n": [1, 2]})], "success")))
    assert out[0]["content"][0]["text"] == '{"k":"é","n":[1,2]}'


@pytest.mark.parametrize("status,flag", [("error", True), ("success", None), (None, None)])
def test_tool_result_is_error_only_on_error(status, flag):
    t = ToolResultBlock("t", [TextBlock("x")]) if status is None else ToolResultBlock("t", [TextBlock("x")], status)
    out = blocks_of(req_of(t))[0]
    assert out.get("is_error") is flag and ("is_error" in out) == (flag is True)


def test_tool_result_content_of_another_kind_cannot_be_built():
    with pytest.raises(TypeError):
        ToolResultBlock("t", [{"video": {}}])
    with pytest.raises(TypeError):
        ToolResultBlock("t", [ToolUseBlock("t", "n", {})])


def test_reasoning_blocks():
    out = build(ChatRequest(messages=[user(TextBlock("q")), Message("assistant", [
        ReasoningBlock("think", "sig"),
        ReasoningBlock("unsigned"),
        RedactedReasoningBlock(b"\x00\x01secret"),
        TextBlock("a")])]))["messages"][1]["content"]
    assert out == [{"type": "thinking", "thinking": "think", "signature": "sig"},
                   {"type": "redacted_thinking", "data": b64(b"\x00\x01secret")},
                   {"type": "text", "text": "a"}]


def test_a_block_of_an_unknown_kind_cannot_be_built():
    with pytest.raises(TypeError):
        req_of(TextBlock("x"), {"video": {"format": "mp4"}})


# --- request: tools and tool choice -------------------------------------------------------------

def test_tools_description_omitted_when_empty():
    body = build(req_of(TextBlock("x"), tools=[Tool("a", "does a", {"type": "object", "properties": {"q": {}}}),
                                              Tool("b", "", {"type": "object"})]))
    assert body["tools"] == [
        {"name": "a", "description": "does a", "input_schema": {"type": "object", "properties": {"q": {}}}},
        {"name": "b", "input_schema": {"type": "object"}}]
    assert "tools" not in build(req_of(TextBlock("x")))


@pytest.mark.parametrize("choice,wire", [(ToolChoice("auto"), {"type": "auto"}), (ToolChoice("any"), {"type": "any"}),
                                         (ToolChoice("none"), {"type": "none"}),
                                         (ToolChoice("tool", "a"), {"type": "tool", "name": "a"})])
def test_tool_choice(choice, wire):
    body = build(req_of(TextBlock("x"), tools=[Tool("a")], tool_choice=choice))
    assert body["tool_choice"] == wire


def test_tool_choice_is_never_dropped_and_unknown_cannot_be_built():
    assert build(req_of(TextBlock("x"), tool_choice=ToolChoice("none")))["tool_choice"] == {"type": "none"}
    assert "tool_choice" not in build(req_of(TextBlock("x"), tools=[Tool("a")]))
    with pytest.raises(ValueError):
        ToolChoice("sometimes")
    with pytest.raises(ValueError):
        ToolChoice("tool")          # a tool choice of kind "tool" names the tool
    with pytest.raises(TypeError):
        req_of(TextBlock("x"), tools=[Tool("a")], tool_choice={"auto": {}})


# --- request: extra fields ----------------------------------------------------------------------

def test_documented_extra_fields_pass():
    extra = {"thinking": {"type": "enabled", "budget_tokens": 2000}, "metadata": {"user_id": "u1"},
             "service_tier": "auto", "container": "c1",
             "mcp_servers": [{"type": "url", "url": "https://m", "name": "m"}],
             "context_management": {"edits": []}, "output_config": {"effort": "low"},
             "output_format": {"type": "json_schema", "schema": {}}, "inference_geo": "us"}
    body = build(req_of(TextBlock("x"), extra=dict(extra)))
    assert {k: body[k] for k in extra} == extra
    assert set(extra) == am.REQUEST_FIELDS


def test_bedrock_and_foreign_extra_fields_are_dropped():
    req = req_of(TextBlock("x"), extra={"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["b1"],
                                       "inferenceConfig": {}, "reasoning_config": {}, "max_tokens": 5,
                                       "messages": [], "model": "other", "stream": True,
                                       "thinking": {"type": "disabled"}})
    body = build(req)
    assert set(body) == {"model", "max_tokens", "messages", "thinking"}
    assert body["model"] == "claude-x" and body["max_tokens"] == 4096 and body["messages"][0]["content"]
    assert am.dropped_extra(req, D) == ["anthropic_version", "inferenceConfig", "max_tokens", "messages", "model",
                                        "reasoning_config", "stream"]


def test_slot_fields_from_extra_only_when_the_slot_is_empty():
    body = build(req_of(TextBlock("x"), extra={"top_k": 250, "temperature": 0.2, "stop_sequences": ["S"]}))
    assert (body["top_k"], body["temperature"], body["stop_sequences"]) == (250, 0.2, ["S"])
    body = build(req_of(TextBlock("x"), top_k=5, temperature=0.9, stop_sequences=["T"],
                        extra={"top_k": 250, "temperature": 0.2, "stop_sequences": ["S"]}))
    assert (body["top_k"], body["temperature"], body["stop_sequences"]) == (5, 0.9, ["T"])


def test_passthrough_fields_from_dialect_but_never_owned_ones():
    d = am.AnthropicDialect(provider="anth", passthrough_fields=frozenset({"speed", "model", "stream"}))
    body = build(req_of(TextBlock("x"), extra={"speed": "fast", "model": "evil", "stream": True, "other": 1}),
                 dialect=d)
    assert body["speed"] == "fast" and body["model"] == "claude-x" and "stream" not in body and "other" not in body


def test_extra_is_not_mutated():
    extra = {"anthropic_beta": ["a"], "thinking": {"type": "enabled", "budget_tokens": 1024}}
    req = req_of(TextBlock("x"), extra=extra)
    build(req)
    assert req.extra == {"anthropic_beta": ["a"], "thinking": {"type": "enabled", "budget_tokens": 1024}}


@pytest.mark.parametrize("value,header", [(["a", "b"], "a,b"), ("a", "a"), (["a"], "a"), ([], None), (None, None),
                                          ("", None), ([" a ", "", 3, "b"], "a,b"), ({"x": 1}, None)])
def test_beta_header(value, header):
    extra = {} if value is None else {"anthropic_beta": value}
    assert am.beta_header(req_of(TextBlock("x"), extra=extra)) == header


# --- response -----------------------------------------------------------------------------------

DOC = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
       "content": [{"type": "thinking", "thinking": "let me see", "signature": "SIG"},
                   {"type": "redacted_thinking", "data": b64(b"\x01\x02opaque")},
                   {"type": "text", "text": "Hello", "citations": [{"type": "char_location"}]},
                   {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"q": "x"}},
                   {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                   {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
       "stop_reason": "tool_use", "stop_sequence": None,
       "usage": {"input_tokens": 30, "output_tokens": 265, "cache_read_input_tokens": 7,
                 "cache_creation_input_tokens": 9, "server_tool_use": {"web_search_requests": 1}}}


def test_parse_response_blocks_usage_model():
    r = am.from_anthropic_response(DOC, provider="anth")
    assert r.content == (ReasoningBlock("let me see", "SIG"), RedactedReasoningBlock(b"\x01\x02opaque"),
                         TextBlock("Hello"), ToolUseBlock("toolu_1", "f", {"a": 1}))
    assert r.stop_reason == "tool_use" and r.stop_sequence is None and r.model == "claude-sonnet-4-5"
    assert r.usage == Usage(30, 265, 7, 9)


@pytest.mark.parametrize("wire,canon", [("end_turn", "end_turn"), ("max_tokens", "max_tokens"),
                                        ("stop_sequence", "stop_sequence"), ("tool_use", "tool_use"),
                                        ("pause_turn", "end_turn"), ("refusal", "content_filtered"),
                                        ("model_context_window_exceeded", "model_context_window_exceeded"),
                                        (None, "end_turn"), ("something_new", "end_turn")])
def test_parse_response_stop_reasons(wire, canon):
    assert am.from_anthropic_response({"content": [], "stop_reason": wire}, provider="p").stop_reason == canon


def test_parse_response_stop_sequence():
    r = am.from_anthropic_response({"content": [{"type": "text", "text": "a"}], "stop_reason": "stop_sequence",
                           "stop_sequence": "END"}, provider="p")
    assert (r.stop_reason, r.stop_sequence) == ("stop_sequence", "END")


def test_parse_response_missing_or_null_usage_fields_are_zero():
    r = am.from_anthropic_response({"content": [], "usage": {"input_tokens": 3, "output_tokens": 4,
                                                    "cache_read_input_tokens": None}}, provider="p")
    assert r.usage == Usage(3, 4, 0, 0)
    r = am.from_anthropic_response({"content": []}, provider="p")
    assert r.usage == Usage() and r.model == "" and r.stop_reason == "end_turn"


def test_parse_response_thinking_without_signature_and_tool_without_input():
    r = am.from_anthropic_response({"content": [{"type": "thinking", "thinking": "t"},
                                       {"type": "tool_use", "id": "i", "name": "n"}]}, provider="p")
    assert r.content == (ReasoningBlock("t"), ToolUseBlock("i", "n", {}))


def test_parse_response_redacted_data_that_is_not_base64_is_kept_as_bytes():
    r = am.from_anthropic_response({"content": [{"type": "redacted_thinking", "data": "not base64!"}]}, provider="p")
    assert r.content == (RedactedReasoningBlock(b"not base64!"),)


@pytest.mark.parametrize("doc,problem", [
    ({"type": "error", "error": {"type": "api_error", "message": "boom"}}, "not an Anthropic Messages response"),
    ({"content": "hello"}, "not an Anthropic Messages response"),
    ([1, 2], "not an Anthropic Messages response"),
    ({"content": ["text"]}, "content[0] is not an object"),
    ({"content": [{"type": "text"}]}, "content[0] (text) has no string 'text'"),
    ({"content": [{"type": "tool_use", "name": "f", "input": {}}]}, "content[0] (tool_use) has no string 'id'"),
    ({"content": [{"type": "thinking", "thinking": 3}]}, "has no string 'thinking'"),
    ({"content": [{"type": "redacted_thinking"}]}, "has no string 'data'"),
])
def test_parse_response_unreadable_is_model_error(doc, problem):
    e = error_of(am.from_anthropic_response, doc, provider="anth")
    assert e.code == "ModelErrorException" and e.status == 424 and e.extra == {"originalStatusCode": 200}
    assert "'anth'" in e.message and problem in e.message, e.message


# --- stream -------------------------------------------------------------------------------------

def sse(*events) -> list[tuple[str, dict]]:
    return [(e["type"], e) for e in events]


def msg_start(input_tokens=25, **usage):
    return {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1, **usage}}}


def cb_start(i, block):
    return {"type": "content_block_start", "index": i, "content_block": block}


def cb_delta(i, delta):
    return {"type": "content_block_delta", "index": i, "delta": delta}


def cb_stop(i):
    return {"type": "content_block_stop", "index": i}


def msg_delta(stop="end_turn", out=15, seq=None, **usage):
    return {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": seq},
            "usage": {"output_tokens": out, **usage}}


MSG_STOP = {"type": "message_stop"}
PING = {"type": "ping"}


def decode(events, *, input_tokens=11, provider="anth", finish=True) -> list[StreamEvent]:
    dec = am.AnthropicStreamDecoder(provider, input_tokens)
    out = []
    for name, data in events:
        out += dec.feed(name, data)
    if finish:
        out += dec.finish()
    return out


def kinds(evs) -> list[str]:
    return [type(e).__name__ for e in evs]


def check_order(evs: list[StreamEvent]) -> None:
    """ConverseStream order: MessageStart, blocks (tool blocks announced first, deltas, one stop),
    MessageStop, Metadata; block indexes 0, 1, 2 ... in order."""
    assert type(evs[0]) is MessageStart and type(evs[-2]) is MessageStop and type(evs[-1]) is Metadata
    stopped, announced, seen = [], set(), []
    for e in evs[1:-2]:
        assert isinstance(e, BlockStart | BlockDelta | BlockStop), e
        assert e.index not in stopped, e
        if not seen or seen[-1] != e.index:
            assert e.index == len(seen), (e, seen)
            seen.append(e.index)
        if type(e) is ToolUseStart:
            announced.add(e.index)
        if type(e) is ToolInputDelta:
            assert e.index in announced
        if type(e) is BlockStop:
            stopped.append(e.index)
    assert stopped == seen
    for e in evs:
        cv.stream_payload(e)    # every event renders as ConverseStream


def test_stream_documented_text_answer():
    evs = decode(sse(msg_start(), cb_start(0, {"type": "text", "text": ""}), PING,
                     cb_delta(0, {"type": "text_delta", "text": "Hello"}),
                     cb_delta(0, {"type": "text_delta", "text": "!"}), cb_stop(0),
                     msg_delta("end_turn", 15), MSG_STOP))
    assert evs == [MessageStart(Usage(25, 0, 0, 0)), TextDelta(0, "Hello"), TextDelta(0, "!"), BlockStop(0),
                   MessageStop("end_turn"), Metadata(Usage(25, 15, 0, 0))]
    check_order(evs)


def test_stream_tool_thinking_redacted_and_skipped_blocks_are_renumbered():
    evs = decode(sse(
        msg_start(10, cache_read_input_tokens=4, cache_creation_input_tokens=6),
        cb_start(0, {"type": "thinking", "thinking": ""}),
        cb_delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
        cb_delta(0, {"type": "signature_delta", "signature": "SIG"}), cb_stop(0),
        cb_start(1, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
        cb_delta(1, {"type": "input_json_delta", "partial_json": "{\"q\":1}"}), cb_stop(1),
        cb_start(2, {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []}), cb_stop(2),
        cb_start(3, {"type": "redacted_thinking", "data": b64(b"opaque")}), cb_stop(3),
        cb_start(4, {"type": "text", "text": ""}),
        cb_delta(4, {"type": "text_delta", "text": "ok"}),
        cb_delta(4, {"type": "citations_delta", "citation": {"type": "char_location"}}), cb_stop(4),
        cb_start(5, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        cb_delta(5, {"type": "input_json_delta", "partial_json": ""}),
        cb_delta(5, {"type": "input_json_delta", "partial_json": "{\"a\":"}),
        cb_delta(5, {"type": "input_json_delta", "partial_json": "1}"}), cb_stop(5),
        msg_delta("tool_use", 40), MSG_STOP))
    assert evs == [
        MessageStart(Usage(10, 0, 4, 6)),
        ReasoningDelta(0, "hmm"), ReasoningSignatureDelta(0, "SIG"), BlockStop(0),
        RedactedReasoningDelta(1, b"opaque"), BlockStop(1),
        TextDelta(2, "ok"), BlockStop(2),
        ToolUseStart(3, "toolu_1", "f"), ToolInputDelta(3, "{\"a\":"), ToolInputDelta(3, "1}"), BlockStop(3),
        MessageStop("tool_use"),
        Metadata(Usage(10, 40, 4, 6))]
    check_order(evs)


def test_stream_start_block_content_is_emitted_as_deltas():
    evs = decode(sse(msg_start(), cb_start(0, {"type": "text", "text": "Pre"}),
                     cb_delta(0, {"type": "text_delta", "text": "fix"}), cb_stop(0),
                     cb_start(1, {"type": "thinking", "thinking": "t", "signature": "s"}), cb_stop(1),
                     cb_start(2, {"type": "tool_use", "id": "i", "name": "n", "input": {"k": "v"}}), cb_stop(2),
                     msg_delta(), MSG_STOP))
    assert evs[1:-2] == [
        TextDelta(0, "Pre"), TextDelta(0, "fix"), BlockStop(0),
        ReasoningDelta(1, "t"), ReasoningSignatureDelta(1, "s"), BlockStop(1),
        ToolUseStart(2, "i", "n"), ToolInputDelta(2, '{"k":"v"}'), BlockStop(2)]


def test_stream_tool_without_input_gets_an_empty_object():
    evs = decode(sse(msg_start(), cb_start(0, {"type": "tool_use", "id": "i", "name": "now", "input": {}}),
                     cb_delta(0, {"type": "input_json_delta", "partial_json": ""}), cb_stop(0),
                     msg_delta("tool_use"), MSG_STOP))
    assert evs[1:-2] == [ToolUseStart(0, "i", "now"), ToolInputDelta(0, "{}"), BlockStop(0)]


@pytest.mark.parametrize("wire,canon", [("pause_turn", "end_turn"), ("refusal", "content_filtered"),
                                        ("max_tokens", "max_tokens"), (None, "end_turn"),
                                        ("model_context_window_exceeded", "model_context_window_exceeded")])
def test_stream_stop_reasons(wire, canon):
    evs = decode(sse(msg_start(), msg_delta(wire), MSG_STOP))
    assert evs[-2] == MessageStop(canon)


def test_stream_stop_sequence_travels_on_message_stop():
    evs = decode(sse(msg_start(), cb_start(0, {"type": "text", "text": ""}),
                     cb_delta(0, {"type": "text_delta", "text": "a"}), cb_stop(0),
                     msg_delta("stop_sequence", 2, seq="END"), MSG_STOP))
    assert evs[-2] == MessageStop("stop_sequence", "END")


def test_stream_usage_is_cumulative_and_message_delta_may_carry_input():
    evs = decode(sse(msg_start(5), msg_delta(None, 3), msg_delta("end_turn", 9, input_tokens=6,
                                                                cache_read_input_tokens=2), MSG_STOP))
    assert evs[-1] == Metadata(Usage(6, 9, 2, 0))


def test_stream_without_provider_usage_estimates():
    start = {"type": "message_start", "message": {"role": "assistant", "content": []}}
    evs = decode(sse(start, cb_start(0, {"type": "text", "text": ""}),
                     cb_delta(0, {"type": "text_delta", "text": "x" * 40}), cb_stop(0),
                     {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, MSG_STOP), input_tokens=33)
    assert evs[0] == MessageStart()
    assert evs[-1] == Metadata(Usage(33, estimate_tokens("x" * 40), 0, 0))


def test_stream_event_name_from_data_when_no_event_line():
    evs = decode([(None, e) for e in (msg_start(), cb_start(0, {"type": "text", "text": ""}),
                                      cb_delta(0, {"type": "text_delta", "text": "hi"}), cb_stop(0),
                                      msg_delta(), MSG_STOP)])
    assert kinds(evs) == ["MessageStart", "TextDelta", "BlockStop", "MessageStop", "Metadata"]


def test_stream_ignores_ping_unknown_events_and_anything_after_message_stop():
    evs = decode(sse(msg_start(), PING, {"type": "brand_new_event", "x": 1}, msg_delta(), MSG_STOP, PING,
                     cb_start(0, {"type": "text", "text": "late"}), MSG_STOP))
    assert kinds(evs) == ["MessageStart", "MessageStop", "Metadata"]


def test_stream_message_stop_closes_blocks_left_open():
    evs = decode(sse(msg_start(), cb_start(0, {"type": "tool_use", "id": "i", "name": "n", "input": {}}),
                     cb_delta(0, {"type": "input_json_delta", "partial_json": "{}"}), msg_delta(), MSG_STOP))
    assert kinds(evs) == ["MessageStart", "ToolUseStart", "ToolInputDelta", "BlockStop", "MessageStop", "Metadata"]


def test_stream_delta_without_block_start_opens_a_block():
    evs = decode(sse(msg_start(), cb_delta(0, {"type": "text_delta", "text": "x"}), cb_stop(0), msg_delta(), MSG_STOP))
    assert evs[1:3] == [TextDelta(0, "x"), BlockStop(0)]


def test_stream_message_start_is_emitted_once():
    evs = decode(sse(msg_start(), msg_start(), msg_delta(), MSG_STOP))
    assert kinds(evs) == ["MessageStart", "MessageStop", "Metadata"]


@pytest.mark.parametrize("err,code", [
    ({"type": "overloaded_error", "message": "Overloaded"}, "ServiceUnavailableException"),
    ({"type": "api_error", "message": "Internal server error"}, "ServiceUnavailableException"),
    ({"type": "rate_limit_error", "message": "slow down"}, "ThrottlingException"),
    ({"type": "invalid_request_error", "message": "bad"}, "ModelStreamErrorException"),
])
def test_stream_error_event_raises_mapped_error(err, code):
    dec = am.AnthropicStreamDecoder("anth", 1)
    dec.feed("message_start", msg_start())
    e = error_of(dec.feed, "error", {"type": "error", "error": err})
    assert e.code == code and "'anth'" in e.message and err["message"] in e.message


def test_stream_error_event_without_event_line():
    e = error_of(am.AnthropicStreamDecoder("anth", 1).feed, None, {"type": "error", "error": {"type": "overloaded_error",
                                                                                     "message": "x"}})
    assert e.code == "ServiceUnavailableException"


@pytest.mark.parametrize("events,what", [
    ([], "no message_start"),
    ([msg_start()], "no message_stop"),
    ([msg_start(), cb_start(0, {"type": "text", "text": ""}), cb_delta(0, {"type": "text_delta", "text": "a"})],
     "content block 0 was still open"),
    ([msg_start(), msg_delta()], "no message_stop"),
])
def test_stream_cut_before_message_stop(events, what):
    dec = am.AnthropicStreamDecoder("anth", 1)
    for e in events:
        dec.feed(e["type"], e)
    err = error_of(dec.finish)
    assert err.code == "ModelStreamErrorException" and "'anth'" in err.message and what in err.message


def test_stream_finish_twice_reports_metadata_once():
    dec = am.AnthropicStreamDecoder("anth", 1)
    for name, data in sse(msg_start(), msg_delta(), MSG_STOP):
        dec.feed(name, data)
    assert kinds(dec.finish()) == ["Metadata"] and dec.finish() == []


@pytest.mark.parametrize("name,data,problem", [
    ("content_block_start", {"type": "content_block_start", "content_block": {"type": "text"}}, "integer \"index\""),
    ("content_block_start", {"type": "content_block_start", "index": 0}, "content_block"),
    ("content_block_start", cb_start(0, {"type": "tool_use", "input": {}}), "\"id\" and \"name\""),
    ("content_block_delta", {"type": "content_block_delta", "index": 0}, "\"delta\" object"),
    ("content_block_stop", {"type": "content_block_stop", "index": "0"}, "integer \"index\""),
    ("message_start", [1], "not a JSON object"),
])
def test_stream_malformed_events(name, data, problem):
    dec = am.AnthropicStreamDecoder("anth", 1)
    e = error_of(dec.feed, name, data)
    assert e.code == "ModelErrorException" and problem in e.message, e.message


# --- native pass-through ------------------------------------------------------------------------

BEDROCK_BODY = {"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["b1", "b2"], "max_tokens": 100,
                "system": "s", "messages": [{"role": "user", "content": "hi"}], "top_k": 5,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}], "cache_whatever": {"x": 1}}


def test_native_request_non_streaming():
    body = dict(BEDROCK_BODY, stream=True)
    out, headers = am.native_request(body, "claude-up", stream=False)
    assert out == {"model": "claude-up", "max_tokens": 100, "system": "s",
                   "messages": [{"role": "user", "content": "hi"}], "top_k": 5,
                   "tools": [{"type": "web_search_20250305", "name": "web_search"}], "cache_whatever": {"x": 1}}
    assert headers == [("anthropic-beta", "b1,b2")]
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["stream"] is True   # input untouched


def test_native_request_streaming_and_no_beta():
    body = {k: v for k, v in BEDROCK_BODY.items() if k != "anthropic_beta"}
    out, headers = am.native_request({**body, "model": "client-said"}, "claude-up", stream=True)
    assert out["stream"] is True and out["model"] == "claude-up" and "anthropic_version" not in out
    assert headers == []
    _, headers = am.native_request({**body, "anthropic_beta": "one"}, "m", stream=False)
    assert headers == [("anthropic-beta", "one")]


def test_native_usage():
    assert am.native_usage(DOC) == Usage(30, 265, 7, 9)
    assert am.native_usage({"content": []}) == Usage()


def test_native_stream_tracker():
    t = am.NativeStreamTracker("anth")
    assert (t.usage, t.done, t.stop_reason) == (Usage(), False, None)
    for name, data in sse(msg_start(12, cache_read_input_tokens=3), PING, cb_start(0, {"type": "text", "text": ""}),
                          cb_delta(0, {"type": "text_delta", "text": "x"}), cb_stop(0)):
        t.feed(name, data)
    assert t.usage == Usage(12, 1, 3, 0) and not t.done
    t.feed("message_delta", msg_delta("pause_turn", 20))
    assert t.stop_reason == "pause_turn" and t.usage.output_tokens == 20 and not t.done
    t.feed(None, MSG_STOP)
    assert t.done and t.usage == Usage(12, 20, 3, 0)


def test_native_stream_tracker_error_and_default_provider():
    t = am.NativeStreamTracker()
    e = error_of(t.feed, "error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    assert e.code == "ServiceUnavailableException" and "'anthropic'" in e.message
    e = error_of(am.NativeStreamTracker("x").feed, "error", {"type": "error", "error": {"type": "invalid_request_error",
                                                                                     "message": "no"}})
    assert e.code == "ModelStreamErrorException"


# --- property tests against the Bedrock Claude family -------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
IDENT = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | ANY_TEXT
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(IDENT, kids, max_size=3), max_leaves=6)
JSON_OBJ = st.dictionaries(IDENT, JSON, max_size=3)
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "gif": b"GIF89a", "webp": b"RIFF\x00\x00\x00\x00WEBP"}
IMAGE = st.builds(lambda fmt, tail: ImageBlock(fmt, MAGIC[fmt] + tail), st.sampled_from(sorted(MAGIC)),
                  st.binary(max_size=8))
PDF_DOC = st.builds(lambda name, data: DocumentBlock(name, "pdf", data=data), TEXT, st.binary(min_size=1, max_size=16))
TEXT_DOC = st.builds(lambda fmt, name, text, as_bytes: DocumentBlock(name, fmt, data=text.encode()) if as_bytes
                     else DocumentBlock(name, fmt, text=text),
                     st.sampled_from(am.TEXT_DOCUMENT_FORMATS), TEXT, ANY_TEXT, st.booleans())
REASONING = (st.builds(ReasoningBlock, ANY_TEXT, st.none() | IDENT)
             | st.builds(RedactedReasoningBlock, st.binary(max_size=16)))


def tool_blocks(names: list[str]):
    use = st.builds(ToolUseBlock, IDENT, st.sampled_from(names), JSON_OBJ)
    item = st.builds(TextBlock, ANY_TEXT) | st.builds(JsonBlock, JSON) | IMAGE | TEXT_DOC
    result = st.builds(ToolResultBlock, IDENT, st.lists(item, max_size=3), st.sampled_from(["success", "error"]))
    return use | result


@st.composite
def chat_requests(draw) -> ChatRequest:
    names = draw(st.lists(st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True), max_size=3, unique=True))
    tools = [Tool(n, draw(ANY_TEXT), {"type": "object", "properties": draw(st.dictionaries(IDENT, st.just({}),
                                                                                       max_size=2))})
             for n in names]
    block = st.builds(TextBlock, TEXT) | IMAGE | PDF_DOC | TEXT_DOC | REASONING
    if names:
        block = block | tool_blocks(names)
    messages = draw(st.lists(st.builds(Message, st.sampled_from(["user", "assistant"]),
                                       st.lists(block, min_size=1, max_size=4)), min_size=1, max_size=4))
    choices = [st.none(), st.sampled_from([ToolChoice("auto"), ToolChoice("any"), ToolChoice("none")])]
    if names:
        choices.append(st.builds(lambda n: ToolChoice("tool", n), st.sampled_from(names)))
    extra = draw(st.fixed_dictionaries({}, optional={
        "thinking": st.builds(lambda n: {"type": "enabled", "budget_tokens": n}, st.integers(1024, 9999)),
        "metadata": st.builds(lambda u: {"user_id": u}, IDENT),
        "service_tier": st.sampled_from(["auto", "standard_only"]),
        "anthropic_beta": st.lists(IDENT, min_size=1, max_size=2)}))
    return ChatRequest(
        messages=messages, system=draw(st.lists(TEXT, max_size=2)),
        max_tokens=draw(st.none() | st.integers(1, 100_000)),
        temperature=draw(st.none() | st.floats(0, 1)), top_p=draw(st.none() | st.floats(0, 1)),
        top_k=draw(st.none() | st.integers(0, 500)), stop_sequences=draw(st.lists(TEXT, max_size=2)),
        tools=tools, tool_choice=draw(st.one_of(*choices)), extra=extra)


def as_family_reads(block):
    """What the family reads back for a block we sent: documents come back as txt text or pdf
    bytes named by their title, tool-result JSON as its compact text, empty texts are not sent."""
    if type(block) is DocumentBlock:
        if block.format == "pdf":
            return DocumentBlock(block.name, "pdf", data=block.data)
        return DocumentBlock(block.name, "txt", text=block.text if block.text is not None else block.data.decode())
    if type(block) is ToolResultBlock:
        content = []
        for c in block.content:
            if type(c) is JsonBlock:
                content.append(TextBlock(json.dumps(c.value, separators=(",", ":"), ensure_ascii=False)))
            elif type(c) is TextBlock:
                if c.text:
                    content.append(c)
            else:
                content.append(as_family_reads(c))
        return ToolResultBlock(block.tool_use_id, content, block.status)
    return block


@PROPS
@given(chat_requests(), st.booleans())
def test_property_request_round_trips_through_the_family(req, stream):
    body = am.to_anthropic_request(req, "claude-x", stream=stream, dialect=D)
    assert body["model"] == "claude-x" and body.get("stream") is (True if stream else None)
    assert "anthropic_beta" not in body and "anthropic_version" not in body
    json.dumps(body)                              # the body is JSON-ready
    bedrock = {k: v for k, v in body.items() if k not in ("model", "stream")}
    bedrock["anthropic_version"] = ANTHROPIC_VERSION
    def unsigned(b):   # reasoning another provider produced: Anthropic refuses it, so it is not sent
        return type(b) is ReasoningBlock and not b.signature
    want = [(m.role, tuple(as_family_reads(b) for b in m.content if not unsigned(b))) for m in req.messages]
    assume(any(content for _, content in want))
    back = MESSAGES.parse_request(bedrock)
    assert [(m.role, m.content) for m in back.messages] == [w for w in want if w[1]]
    assert back.system == req.system
    assert back.tools == req.tools and back.tool_choice == req.tool_choice
    assert back.max_tokens == (req.max_tokens or D.default_max_tokens)
    assert (back.temperature, back.top_p, back.top_k, back.stop_sequences) == (
        req.temperature, req.top_p, req.top_k, req.stop_sequences)
    assert back.extra == {k: v for k, v in req.extra.items() if k != "anthropic_beta"}
    want_beta = ",".join(req.extra["anthropic_beta"]) if "anthropic_beta" in req.extra else None
    assert am.beta_header(req) == want_beta


RESPONSE_BLOCK = (st.builds(TextBlock, ANY_TEXT) | REASONING | st.builds(ToolUseBlock, IDENT, IDENT, JSON_OBJ))
INVERTIBLE_STOPS = ["end_turn", "tool_use", "max_tokens", "stop_sequence", "model_context_window_exceeded",
                    "content_filtered"]
USAGE = st.builds(Usage, *[st.integers(0, 10**6)] * 4)


@st.composite
def chat_responses(draw) -> ChatResponse:
    stop = draw(st.sampled_from(INVERTIBLE_STOPS))
    return ChatResponse(content=draw(st.lists(RESPONSE_BLOCK, max_size=5)), stop_reason=stop, usage=draw(USAGE),
                        stop_sequence=draw(TEXT) if stop == "stop_sequence" else None)


def signed(block):
    """The family writes a missing signature as "" (the API always sends one)."""
    if type(block) is ReasoningBlock:
        return ReasoningBlock(block.text, block.signature or "")
    return block


@PROPS
@given(chat_responses())
def test_property_response_round_trips_through_the_family(resp):
    doc = json.loads(json.dumps(MESSAGES.render_response(resp, CLAUDE3)))
    back = am.from_anthropic_response(doc, provider="anth")
    assert back.content == tuple(signed(b) for b in resp.content)
    assert (back.stop_reason, back.stop_sequence) == (resp.stop_reason, resp.stop_sequence)
    assert back.usage == resp.usage
    assert back.model == "claude-3-haiku-20240307"
    assert am.native_usage(doc) == resp.usage


def pieces(draw, text: str) -> list[str]:
    """`text` cut at random points (at least one piece, possibly empty)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=3))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a] or [""]


@st.composite
def canonical_streams(draw) -> tuple[list[StreamEvent], ChatResponse]:
    resp = draw(chat_responses())
    evs: list[StreamEvent] = [MessageStart()]
    for i, b in enumerate(resp.content):
        match b:
            case TextBlock():
                evs += [TextDelta(i, p) for p in pieces(draw, b.text)]
            case ToolUseBlock():
                evs.append(ToolUseStart(i, b.tool_use_id, b.name))
                evs += [ToolInputDelta(i, p) for p in pieces(draw, json.dumps(b.input, separators=(",", ":")))]
            case RedactedReasoningBlock():
                evs.append(RedactedReasoningDelta(i, b.data))
            case ReasoningBlock():
                evs += [ReasoningDelta(i, p) for p in pieces(draw, b.text)]
                if b.signature:
                    evs.append(ReasoningSignatureDelta(i, b.signature))
        evs.append(BlockStop(i))
    evs += [MessageStop(resp.stop_reason, resp.stop_sequence), Metadata(resp.usage, 5)]
    return evs, resp


def assemble(evs: list[StreamEvent]) -> list[tuple]:
    """Canonical stream -> one tuple per block: what a client concatenating the deltas ends up with."""
    blocks: dict[int, dict] = {}
    for e in evs:
        if not hasattr(e, "index"):
            continue
        b = blocks.setdefault(e.index, {})
        match e:
            case ToolUseStart():
                b["tool"] = (e.tool_use_id, e.name)
            case TextDelta():
                b["text"] = b.get("text", "") + e.text
            case ToolInputDelta():
                b["input"] = b.get("input", "") + e.input
            case ReasoningDelta():
                b["rtext"] = b.get("rtext", "") + e.text
            case ReasoningSignatureDelta():
                b["rsignature"] = b.get("rsignature", "") + e.signature
            case RedactedReasoningDelta():
                b["redacted"] = e.data
    out = []
    for i in sorted(blocks):
        b = blocks[i]
        if "tool" in b:
            out.append(("tool", *b["tool"], json.loads(b.get("input") or "{}")))
        elif "redacted" in b:
            out.append(("redacted", b["redacted"]))
        elif b.get("rtext") or b.get("rsignature"):
            out.append(("reasoning", b.get("rtext", ""), b.get("rsignature", "")))
        elif b.get("text"):
            out.append(("text", b["text"]))
        else:
            out.append(("empty",))           # an empty text or thinking block: nothing to show
    return out


@PROPS
@given(canonical_streams(), st.booleans())
def test_property_stream_round_trips_through_the_family_encoder(stream, event_lines):
    evs, resp = stream
    enc = MESSAGES.stream_encoder(CLAUDE3, input_tokens=resp.usage.input_tokens)
    chunks = [c for e in evs for c in enc.feed(e)]
    dec = am.AnthropicStreamDecoder("anth", 999)
    tracker = am.NativeStreamTracker("anth")
    got = []
    for c in json.loads(json.dumps(chunks, default=lambda b: base64.b64encode(b).decode())):
        data = {k: v for k, v in c.items() if k != METRICS_KEY}
        name = data["type"] if event_lines else None
        got += dec.feed(name, data)
        tracker.feed(name, data)
    got += dec.finish()
    check_order(got)
    assert assemble(got) == assemble(evs)
    assert [e.index for e in got if type(e) is BlockStop] == list(range(len(resp.content)))
    assert (got[-2].stop_reason, got[-2].stop_sequence) == (resp.stop_reason, resp.stop_sequence)
    usage = got[-1].usage
    assert (usage.input_tokens, usage.output_tokens) == (resp.usage.input_tokens, resp.usage.output_tokens)
    assert tracker.done and tracker.usage.output_tokens == resp.usage.output_tokens
    assert tracker.stop_reason == am.STOP_TO_ANTHROPIC[resp.stop_reason]


def test_unsigned_reasoning_from_another_provider_is_dropped():
    req = ChatRequest(messages=[
        Message("user", [TextBlock("q")]),
        Message("assistant", [ReasoningBlock("thought elsewhere")]),
        Message("assistant", [ReasoningBlock("mine", "sig"), TextBlock("a")]),
        Message("user", [TextBlock("more")])])
    body = am.to_anthropic_request(req, "claude", stream=False, dialect=am.AnthropicDialect(provider="p"))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "mine", "signature": "sig"}


# --- 1-hour cache writes (usage.cache_creation) --------------------------------------------------

CC = {"cache_creation_input_tokens": 100,
      "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70}}


def test_one_hour_cache_writes_are_read_from_cache_creation():
    doc = {"content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 5, "output_tokens": 2, **CC}}
    u = am.from_anthropic_response(doc, provider="p").usage
    assert (u.cache_write_tokens, u.cache_write_1h_tokens) == (100, 70)
    assert u.to_wire()["cw1h"] == 70
    assert u.to_converse()["cacheDetails"] == [{"ttl": "1h", "inputTokens": 70}, {"ttl": "5m", "inputTokens": 30}]
    assert am.native_usage(doc).cache_write_1h_tokens == 70
    # no cache_creation object (older answers): every write is a 5-minute one
    assert am.native_usage({"usage": {"input_tokens": 5, "cache_creation_input_tokens": 9}}).cache_write_1h_tokens == 0


def test_one_hour_cache_writes_in_streams():
    evs = decode(sse(msg_start(10, **CC), cb_start(0, {"type": "text", "text": ""}),
                     cb_delta(0, {"type": "text_delta", "text": "hi"}), cb_stop(0), msg_delta("end_turn", 3), MSG_STOP))
    assert evs[0] == MessageStart(Usage(10, 0, 0, 100, cache_write_1h_tokens=70))
    assert evs[-1] == Metadata(Usage(10, 3, 0, 100, cache_write_1h_tokens=70))
    t = am.NativeStreamTracker("anth")
    for name, data in sse(msg_start(10, **CC), msg_delta("end_turn", 3), MSG_STOP):
        t.feed(name, data)
    assert t.usage == Usage(10, 3, 0, 100, cache_write_1h_tokens=70)
