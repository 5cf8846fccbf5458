"""Converse / ConverseStream / CountTokens translation (workers/formats/bedrock/converse.py).

Wire shapes are checked against botocore's own parser and service model, so a union object with two
members, a missing required member or a wrongly wrapped stream payload fails here, not in a client.
"""
from __future__ import annotations

import base64
import json

import botocore.parsers
import botocore.session
import pytest
from botocore.parsers import ResponseParserError

from finops.shared.errors import GatewayError
from finops.shared.model import (BlockStop, ChatResponse, DocumentBlock, ImageBlock, JsonBlock, MessageStart,
                                 MessageStop, Metadata, ReasoningBlock, ReasoningDelta, ReasoningSignatureDelta,
                                 RedactedReasoningBlock, RedactedReasoningDelta, TextBlock, TextDelta, ToolChoice,
                                 ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart, Usage)
from finops.workers.formats.bedrock import converse as cv
from finops.workers.formats import common
from finops.workers.formats.common import response_to_events

PNG = b"\x89PNG\r\n\x1a\nfakepng"          # what the VERIFIED boto3 request carried
PNG_B64 = "iVBORw0KGgpmYWtlcG5n"
JPEG = b"\xff\xd8\xff\xe0fakejpeg"
GIF = b"GIF89afakegif"
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 "
PDF = b"%PDF-1.4 fake"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- botocore as the judge ----------------------------------------------------------------------

_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")


def boto_parse(body: dict, op: str = "Converse") -> dict:
    """Parse `body` as botocore would parse a 200 response of `op`; raises on shape violations."""
    parser = botocore.parsers.create_parser("rest-json")
    shape = _MODEL.operation_model(op).output_shape
    return parser.parse({"status_code": 200, "headers": {}, "body": json.dumps(body).encode()}, shape)


def boto_parse_event(event_type: str, payload: dict) -> dict:
    """Parse one ConverseStream frame as botocore's EventStream does, and insist that the event's
    required members came through (a payload wrapped in its event name parses to {})."""
    parser = botocore.parsers.EventStreamJSONParser()
    shape = _MODEL.shape_for("ConverseStreamOutput")
    parsed = parser.parse({"status_code": 200, "body": json.dumps(payload).encode(),
                           "headers": {":event-type": event_type, ":message-type": "event",
                                       ":content-type": "application/json"}}, shape)
    required = shape.members[event_type].required_members
    missing = [m for m in required if m not in parsed.get(event_type, {})]
    assert not missing, f"{event_type} lost required members {missing}: {payload}"
    return parsed


def test_boto_event_judge_rejects_wrapped_and_double_payloads():
    with pytest.raises(AssertionError, match="lost required"):
        boto_parse_event("contentBlockDelta", {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "a"}}})
    with pytest.raises(ResponseParserError, match="one and only one"):
        boto_parse_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a", "toolUse": {"input": ""}}})


def test_boto_judge_rejects_two_union_members():
    # the judge must be able to fail, or the render tests below prove nothing
    bad = {"output": {"message": {"role": "assistant", "content": [{"text": "a", "toolUse": {
        "toolUseId": "t", "name": "n", "input": {}}}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}
    with pytest.raises(ResponseParserError, match="one and only one"):
        boto_parse(bad)


def user(*blocks) -> dict:
    return {"role": "user", "content": list(blocks)}


def body(*msgs, **kw) -> dict:
    return {"messages": list(msgs) or [user({"text": "Hello"})], **kw}


def raises(b, *, fn=cv.parse_request) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        fn(b)
    assert ei.value.code == "ValidationException" and ei.value.status == 400
    return ei.value


# --- parse_request: documented examples ---------------------------------------------------------

def test_parse_minimal_hello():
    req = cv.parse_request({"messages": [{"role": "user", "content": [{"text": "Hello!"}]}]})
    assert [(m.role, m.content) for m in req.messages] == [("user", (TextBlock("Hello!"),))]
    assert req.system == () and req.max_tokens is None and req.tools == () and req.extra == {}


def test_parse_full_request():
    req = cv.parse_request({
        "messages": [user({"text": "Tell me a story about a brave knight."})],
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}},
                   {"guardContent": {"text": {"text": "guard me"}}}, {"text": "Second."}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        "additionalModelRequestFields": {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        "additionalModelResponseFieldPaths": ["/stop_sequence"],
        "requestMetadata": {"team": "search", "env": "prod"},
        "performanceConfig": {"latency": "optimized"},
        "guardrailConfig": {"guardrailIdentifier": "g1", "guardrailVersion": "DRAFT", "trace": "enabled"},
        "serviceTier": {"type": "flex"},
    })
    assert req.system == ("You are terse.", "Second.")
    assert (req.max_tokens, req.temperature, req.top_p, req.stop_sequences) == (512, 0.5, 0.9, ("END",))
    assert req.top_k == 5
    assert req.extra == {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_parse_options_returns_gateway_fields():
    b = body(requestMetadata={"k": "v"}, performanceConfig={"latency": "standard"},
             additionalModelResponseFieldPaths=["/stop_sequence"], serviceTier={"type": "default"},
             guardrailConfig={"guardrailIdentifier": "g", "guardrailVersion": "1",
                              "streamProcessingMode": "async"},
             outputConfig={"textFormat": {"type": "json_schema"}})
    opts = cv.parse_options(b)
    assert set(opts) == {"requestMetadata", "performanceConfig", "additionalModelResponseFieldPaths",
                         "serviceTier", "guardrailConfig", "outputConfig"}
    assert cv.parse_options(body()) == {}


def test_parse_tool_conversation():
    tools = {"tools": [{"toolSpec": {"name": "top_song", "description": "Most popular song",
                                     "inputSchema": {"json": {"type": "object", "properties": {
                                         "sign": {"type": "string"}}, "required": ["sign"]}}}},
                       {"cachePoint": {"type": "default"}}],
             "toolChoice": {"tool": {"name": "top_song"}}}
    req = cv.parse_request({"messages": [
        user({"text": "What is the most popular song on WZPZ?"}),
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "need the tool", "signature": "sig=="}}},
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song",
                         "input": {"sign": "WZPZ"}}}]},
        user({"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                             "content": [{"json": {"song": "Elemental Hotel"}}, {"text": "ok"},
                                         {"image": {"format": "png", "source": {"bytes": PNG_B64}}}],
                             "status": "success"}}),
    ], "toolConfig": tools})
    assert [t.name for t in req.tools] == ["top_song"]
    assert req.tools[0].input_schema["required"] == ["sign"]
    assert req.tool_choice == ToolChoice("tool", "top_song")
    a = req.messages[1].content
    assert a[0] == ReasoningBlock("need the tool", "sig==")
    assert a[2] == ToolUseBlock("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", {"sign": "WZPZ"})
    tr = req.messages[2].content[0]
    assert tr.content == (JsonBlock({"song": "Elemental Hotel"}), TextBlock("ok"), ImageBlock("png", PNG))
    assert tr.status == "success"


@pytest.mark.parametrize("choice,expect", [({"auto": {}}, ToolChoice("auto")), ({"any": {}}, ToolChoice("any")),
                                           ({"auto": {}, "any": None}, ToolChoice("auto"))])
def test_parse_tool_choice(choice, expect):
    b = body(toolConfig={"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}], "toolChoice": choice})
    assert cv.parse_request(b).tool_choice == expect


def test_tool_status_defaults_to_success():
    b = body(user({"toolResult": {"toolUseId": "a", "content": []}}),
             toolConfig={"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}]})
    assert cv.parse_request(b).messages[0].content[0].status == "success"


@pytest.mark.parametrize("fmt,data", [("png", PNG), ("jpeg", JPEG), ("gif", GIF), ("webp", WEBP),
                                      ("gif", b"GIF87a....")])
def test_parse_images_become_raw_bytes(fmt, data):
    req = cv.parse_request(body(user({"text": "what is this?"},
                                     {"image": {"format": fmt, "source": {"bytes": b64(data)}}})))
    assert req.messages[0].content[1] == ImageBlock(fmt, data)


def test_parse_documents():
    req = cv.parse_request(body(user(
        {"document": {"format": "pdf", "name": "Report 2024", "source": {"bytes": b64(PDF)}}},
        {"document": {"format": "md", "name": "notes", "source": {"text": "# hi"}, "context": "ctx"}},
        {"document": {"name": "parts", "source": {"content": [{"text": "a"}, {"text": "b"}]}}},
        {"text": "Summarise"})))
    c = req.messages[0].content
    assert c[0] == DocumentBlock("Report 2024", "pdf", data=PDF)
    assert c[1] == DocumentBlock("notes", "md", text="# hi", context="ctx")
    assert c[2] == DocumentBlock("parts", "txt", text="a\nb")


def test_parse_guard_citations_cachepoint_blocks():
    req = cv.parse_request(body(
        user({"guardContent": {"text": {"text": "check me", "qualifiers": ["query"]}}},
             {"cachePoint": {"type": "default"}},
             {"guardContent": {"image": {"format": "jpeg", "source": {"bytes": b64(JPEG)}}}}),
        {"role": "assistant", "content": [{"citationsContent": {"content": [{"text": "cited "}, {"text": "answer"}],
                                                                "citations": []}}]},
        user({"reasoningContent": {"redactedContent": b64(b"\x00secret")}})))
    assert req.messages[0].content == (TextBlock("check me"), ImageBlock("jpeg", JPEG))
    assert req.messages[1].content == (TextBlock("cited answer"),)
    assert req.messages[2].content == (RedactedReasoningBlock(b"\x00secret"),)


def test_null_union_members_are_absent():
    req = cv.parse_request(body(user({"text": "hi", "image": None})))
    assert req.messages[0].content == (TextBlock("hi"),)


def test_unknown_top_level_fields_are_ignored():
    assert cv.parse_request(body(p="padding", futureField={"x": 1})).messages


# --- parse_request: every validation error names its field --------------------------------------

TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
IMG = lambda fmt, data: {"image": {"format": fmt, "source": {"bytes": data}}}  # noqa: E731

ERROR_CASES = [
    ("not-object", ["x"], "body", "JSON object"),
    ("messages-missing", {}, "messages", "required"),
    ("messages-empty", {"messages": []}, "messages", "non-empty"),
    ("messages-not-list", {"messages": {"role": "user"}}, "messages", "list"),
    ("message-not-object", {"messages": ["hi"]}, "messages[0]", "JSON object"),
    ("role-bad", {"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "messages[0].role", "user, assistant"),
    ("role-missing", {"messages": [{"content": [{"text": "x"}]}]}, "messages[0].role", "expected one of"),
    ("content-missing", {"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    ("content-empty", {"messages": [{"role": "user", "content": []}]}, "messages[0].content", "non-empty"),
    ("content-string", {"messages": [{"role": "user", "content": "hi"}]}, "messages[0].content", "list"),
    ("block-empty", body(user({})), "messages[0].content[0]", "exactly one member"),
    ("block-two", body(user({"text": "a", "image": IMG("png", PNG_B64)})), "messages[0].content[0]",
     "2 members (text, image)"),
    ("block-unknown", body(user({"text": "ok"}), user({"foo": 1})), "messages[1].content[0]",
     "unknown content block 'foo'; expected one of text, image, document, toolUse, toolResult"),
    ("text-blank", body(user({"text": "  "})), "messages[0].content[0].text", "blank"),
    ("text-not-str", body(user({"text": 5})), "messages[0].content[0].text", "string"),
    ("only-cachepoint", body(user({"cachePoint": {"type": "default"}})), "messages[0].content", "cachePoint"),
    ("video", body(user({"video": {"format": "mp4", "source": {"bytes": "AAAA"}}})),
     "messages[0].content[0].video", "not supported"),
    ("audio", body(user({"audio": {"format": "mp3", "source": {"bytes": "AAAA"}}})),
     "messages[0].content[0].audio", "not supported"),
    ("image-format", body(user(IMG("bmp", PNG_B64))), "messages[0].content[0].image.format",
     "png, jpeg, gif, webp"),
    ("image-source-missing", body(user({"image": {"format": "png"}})), "messages[0].content[0].image.source",
     "required"),
    ("image-bad-base64", body(user(IMG("png", "not base64!!"))), "messages[0].content[0].image.source.bytes",
     "not valid base64"),
    ("image-bytes-not-str", body(user(IMG("png", 123))), "messages[0].content[0].image.source.bytes", "base64"),
    ("image-magic-mismatch", body(user(IMG("jpeg", PNG_B64))), "messages[0].content[0].image.source.bytes",
     "not a valid jpeg image (they look like png)"),
    ("image-not-image", body(user(IMG("png", b64(b"hello world")))), "messages[0].content[0].image.source.bytes",
     "no known image signature"),
    ("image-empty", body(user(IMG("png", ""))), "messages[0].content[0].image.source.bytes", "empty"),
    ("image-s3", body(user({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k.png"}}}})),
     "messages[0].content[0].image.source.s3Location", "S3 sources are not supported by this gateway"),
    ("image-two-sources", body(user({"image": {"format": "png", "source": {
        "bytes": PNG_B64, "s3Location": {"uri": "s3://b/k"}}}})), "messages[0].content[0].image.source",
     "exactly one member"),
    ("doc-s3", body(user({"document": {"format": "pdf", "name": "d", "source": {"s3Location": {"uri": "s3://b/k"}}}})),
     "messages[0].content[0].document.source.s3Location", "S3 sources are not supported"),
    ("doc-name-missing", body(user({"document": {"format": "pdf", "source": {"bytes": b64(PDF)}}})),
     "messages[0].content[0].document.name", "string"),
    ("doc-name-long", body(user({"document": {"format": "pdf", "name": "n" * 201, "source": {"bytes": b64(PDF)}}})),
     "messages[0].content[0].document.name", "at most 200"),
    ("doc-format", body(user({"document": {"format": "exe", "name": "d", "source": {"bytes": b64(PDF)}}})),
     "messages[0].content[0].document.format", "pdf, csv"),
    ("doc-bytes-no-format", body(user({"document": {"name": "d", "source": {"bytes": b64(PDF)}}})),
     "messages[0].content[0].document.format", "required"),
    ("doc-citations", body(user({"document": {"format": "txt", "name": "d", "source": {"text": "x"},
                                              "citations": {"enabled": True}}})),
     "messages[0].content[0].document.citations", "not supported"),
    ("tooluse-no-config", body(user({"text": "x"}), {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]}), "toolConfig",
     "must be defined when messages contain toolUse"),
    ("tooluse-id-pattern", body({"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "bad id!", "name": "get_weather", "input": {}}}]}, toolConfig=TOOLS),
     "messages[0].content[0].toolUse.toolUseId", "does not match"),
    ("tooluse-input-missing", body({"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather"}}]}, toolConfig=TOOLS),
     "messages[0].content[0].toolUse.input", "required"),
    ("toolresult-content-missing", body(user({"toolResult": {"toolUseId": "t1"}}), toolConfig=TOOLS),
     "messages[0].content[0].toolResult.content", "required"),
    ("toolresult-status", body(user({"toolResult": {"toolUseId": "t1", "content": [], "status": "ok"}}),
                               toolConfig=TOOLS), "messages[0].content[0].toolResult.status", "success, error"),
    ("toolresult-item-unknown", body(user({"toolResult": {"toolUseId": "t1", "content": [{"xml": "<a/>"}]}}),
                                     toolConfig=TOOLS),
     "messages[0].content[0].toolResult.content[0]", "unknown tool result block 'xml'"),
    ("reasoning-two", body({"role": "assistant", "content": [{"reasoningContent": {
        "reasoningText": {"text": "a"}, "redactedContent": "AAAA"}}]}),
     "messages[0].content[0].reasoningContent", "exactly one member"),
    ("system-not-list", body(system="be nice"), "system", "list"),
    ("system-unknown", body(system=[{"image": {}}]), "system[0]", "unknown system block 'image'"),
    ("system-blank", body(system=[{"text": ""}]), "system[0].text", "blank"),
    ("maxTokens-zero", body(inferenceConfig={"maxTokens": 0}), "inferenceConfig.maxTokens", "at least 1"),
    ("maxTokens-str", body(inferenceConfig={"maxTokens": "10"}), "inferenceConfig.maxTokens", "integer"),
    ("maxTokens-float", body(inferenceConfig={"maxTokens": 1.5}), "inferenceConfig.maxTokens", "integer"),
    ("maxTokens-bool", body(inferenceConfig={"maxTokens": True}), "inferenceConfig.maxTokens", "integer"),
    ("temperature-high", body(inferenceConfig={"temperature": 1.5}), "inferenceConfig.temperature", "between 0 and 1"),
    ("temperature-neg", body(inferenceConfig={"temperature": -0.1}), "inferenceConfig.temperature", "between 0 and 1"),
    ("temperature-str", body(inferenceConfig={"temperature": "hot"}), "inferenceConfig.temperature", "number"),
    ("topP-high", body(inferenceConfig={"topP": 2}), "inferenceConfig.topP", "between 0 and 1"),
    ("stop-not-list", body(inferenceConfig={"stopSequences": "END"}), "inferenceConfig.stopSequences", "list"),
    ("stop-not-str", body(inferenceConfig={"stopSequences": ["a", 3]}), "inferenceConfig.stopSequences[1]", "string"),
    ("inference-not-object", body(inferenceConfig=[1]), "inferenceConfig", "JSON object"),
    ("tools-missing", body(toolConfig={}), "toolConfig.tools", "required"),
    ("tools-empty", body(toolConfig={"tools": []}), "toolConfig.tools", "non-empty"),
    ("tools-only-cachepoint", body(toolConfig={"tools": [{"cachePoint": {"type": "default"}}]}), "toolConfig.tools",
     "no toolSpec"),
    ("tool-unknown", body(toolConfig={"tools": [{"function": {}}]}), "toolConfig.tools[0]", "unknown tool 'function'"),
    ("tool-name-pattern", body(toolConfig={"tools": [{"toolSpec": {"name": "get weather", "inputSchema": {"json": {}}}}]}),
     "toolConfig.tools[0].toolSpec.name", "[a-zA-Z0-9_-]+"),
    ("tool-name-long", body(toolConfig={"tools": [{"toolSpec": {"name": "a" * 65, "inputSchema": {"json": {}}}}]}),
     "toolConfig.tools[0].toolSpec.name", "at most 64"),
    ("tool-name-dup", body(toolConfig={"tools": [{"toolSpec": {"name": "a", "inputSchema": {"json": {}}}},
                                                 {"toolSpec": {"name": "a", "inputSchema": {"json": {}}}}]}),
     "toolConfig.tools[1].toolSpec.name", "duplicate"),
    ("tool-schema-missing", body(toolConfig={"tools": [{"toolSpec": {"name": "a"}}]}),
     "toolConfig.tools[0].toolSpec.inputSchema", "required"),
    ("tool-schema-not-object", body(toolConfig={"tools": [{"toolSpec": {"name": "a", "inputSchema": {"json": "x"}}}]}),
     "toolConfig.tools[0].toolSpec.inputSchema.json", "JSON object"),
    ("tool-desc-blank", body(toolConfig={"tools": [{"toolSpec": {"name": "a", "description": "",
                                                                 "inputSchema": {"json": {}}}}]}),
     "toolConfig.tools[0].toolSpec.description", "blank"),
    ("system-tool", body(toolConfig={"tools": [{"systemTool": {"name": "nova_grounding"}}]}),
     "toolConfig.tools[0].systemTool", "not supported"),
    ("choice-two", body(toolConfig={**TOOLS, "toolChoice": {"auto": {}, "any": {}}}), "toolConfig.toolChoice",
     "exactly one member"),
    ("choice-none", body(toolConfig={**TOOLS, "toolChoice": {}}), "toolConfig.toolChoice", "exactly one member"),
    ("choice-unknown", body(toolConfig={**TOOLS, "toolChoice": {"none": {}}}), "toolConfig.toolChoice",
     "unknown tool choice 'none'"),
    ("choice-tool-missing", body(toolConfig={**TOOLS, "toolChoice": {"tool": {"name": "nope"}}}),
     "toolConfig.toolChoice.tool.name", "not in toolConfig.tools"),
    ("choice-tool-no-name", body(toolConfig={**TOOLS, "toolChoice": {"tool": {}}}),
     "toolConfig.toolChoice.tool.name", "string"),
    ("extra-not-object", body(additionalModelRequestFields=[1]), "additionalModelRequestFields", "JSON object"),
    ("response-paths", body(additionalModelResponseFieldPaths=["stop_sequence"]),
     "additionalModelResponseFieldPaths[0]", "JSON pointer"),
    ("metadata-empty", body(requestMetadata={}), "requestMetadata", "1 to 16"),
    ("metadata-value", body(requestMetadata={"k": "bad<value>"}), "requestMetadata.k", "does not match"),
    ("latency", body(performanceConfig={"latency": "fast"}), "performanceConfig.latency", "standard, optimized"),
    ("service-tier", body(serviceTier={"type": "gold"}), "serviceTier.type", "priority"),
    ("guardrail-id", body(guardrailConfig={"guardrailVersion": "1"}), "guardrailConfig.guardrailIdentifier",
     "string"),
    ("prompt-variables", body(promptVariables={"x": {"text": "y"}}), "promptVariables", "prompt-management"),
]


@pytest.mark.parametrize("b,path,text", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_parse_request_errors_name_the_field(b, path, text):
    msg = raises(b).message
    assert msg.startswith(path + ": "), msg
    assert text in msg, msg


# --- CountTokens --------------------------------------------------------------------------------

def test_count_tokens_converse():
    kind, req = cv.parse_count_tokens({"input": {"converse": {
        "messages": [user({"text": "count me"})], "system": [{"text": "sys"}],
        "toolConfig": TOOLS, "additionalModelRequestFields": {"x": 1}}}})
    assert kind == "converse"
    assert req.messages[0].content == (TextBlock("count me"),)
    assert req.system == ("sys",) and req.tools[0].name == "get_weather" and req.extra == {"x": 1}


def test_count_tokens_invoke_model_body_is_decoded():
    # VERIFIED wire value from boto3: body b'{"messages":[]}' arrives as base64
    assert cv.parse_count_tokens({"input": {"invokeModel": {"body": "eyJtZXNzYWdlcyI6W119"}}}) == (
        "invokeModel", b'{"messages":[]}')


COUNT_ERRORS = [
    ("not-object", "x", "body", "JSON object"),
    ("input-missing", {}, "input", "required"),
    ("input-both", {"input": {"converse": {}, "invokeModel": {}}}, "input", "exactly one member"),
    ("input-unknown", {"input": {"chat": {}}}, "input", "unknown CountTokens input 'chat'"),
    ("converse-messages", {"input": {"converse": {"messages": []}}}, "input.converse.messages", "non-empty"),
    ("converse-block", {"input": {"converse": {"messages": [user({"bad": 1})]}}},
     "input.converse.messages[0].content[0]", "unknown content block"),
    ("invoke-body-missing", {"input": {"invokeModel": {}}}, "input.invokeModel.body", "required"),
    ("invoke-body-b64", {"input": {"invokeModel": {"body": "{not b64}"}}}, "input.invokeModel.body", "base64"),
]


@pytest.mark.parametrize("b,path,text", [c[1:] for c in COUNT_ERRORS], ids=[c[0] for c in COUNT_ERRORS])
def test_count_tokens_errors(b, path, text):
    msg = raises(b, fn=cv.parse_count_tokens).message
    assert msg.startswith(path + ": ") and text in msg, msg


# --- render_response ----------------------------------------------------------------------------

FULL = ChatResponse(
    content=[ReasoningBlock("think", "sig"),
             TextBlock("Here you go."),
             ToolUseBlock("tooluse_1", "top_song", {"sign": "WZPZ"}),
             ImageBlock("png", PNG),
             RedactedReasoningBlock(b"\x01\x02")],
    stop_reason="tool_use", usage=Usage(12, 34, 5, 7), latency_ms=321, stop_sequence=None)


def test_usage_cache_details_split_writes_by_ttl():
    """cacheDetails (bedrock-protocol.md 1.6): the cache writes by TTL, 1h before 5m, only the TTLs
    that wrote; none without writes."""
    u = Usage(10, 2, 0, 100, cache_write_1h_tokens=60).to_converse()
    assert u["cacheWriteInputTokens"] == 100
    assert u["cacheDetails"] == [{"ttl": "1h", "inputTokens": 60}, {"ttl": "5m", "inputTokens": 40}]
    assert Usage(1, 1, 0, 50, cache_write_1h_tokens=50).to_converse()["cacheDetails"] == [
        {"ttl": "1h", "inputTokens": 50}]
    assert "cacheDetails" not in Usage(1, 1, 3).to_converse()
    assert Usage(1, 1, 0, 50, cache_write_1h_tokens=50).to_wire()["cw1h"] == 50
    assert "cw1h" not in Usage(1, 1, 0, 50).to_wire()


def test_render_response_documented_shape():
    out = cv.render_response(FULL)
    assert out["output"]["message"]["role"] == "assistant"
    assert out["stopReason"] == "tool_use"
    assert out["usage"] == {"inputTokens": 12, "outputTokens": 34, "totalTokens": 46,
                            "cacheReadInputTokens": 5, "cacheWriteInputTokens": 7,
                            "cacheDetails": [{"ttl": "5m", "inputTokens": 7}]}
    assert out["metrics"] == {"latencyMs": 321}
    c = out["output"]["message"]["content"]
    assert c[0] == {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig"}}}
    assert c[1] == {"text": "Here you go."}
    assert c[2] == {"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}}
    assert c[3] == {"image": {"format": "png", "source": {"bytes": PNG_B64}}}
    assert c[4] == {"reasoningContent": {"redactedContent": b64(b"\x01\x02")}}
    assert all(len(b) == 1 for b in c)
    json.dumps(out)  # no bytes left


def test_render_response_parses_with_botocore():
    parsed = boto_parse(cv.render_response(FULL))
    c = parsed["output"]["message"]["content"]
    assert c[3]["image"]["source"]["bytes"] == PNG          # botocore decoded our base64
    assert c[4]["reasoningContent"]["redactedContent"] == b"\x01\x02"
    assert parsed["usage"]["totalTokens"] == 46 and parsed["metrics"]["latencyMs"] == 321


def test_a_block_is_one_member_and_nothing_else_is_a_block():
    # the old dict blocks could (by a provider bug) hold several members; typed blocks cannot
    with pytest.raises(TypeError):
        ChatResponse(content=[{"text": "a", "toolUse": {"toolUseId": "t", "name": "n", "input": {}}}])
    out = cv.render_response(ChatResponse(content=[TextBlock("a"), ToolUseBlock("t", "n", {}), TextBlock("b")]))
    assert out["output"]["message"]["content"] == [
        {"text": "a"}, {"toolUse": {"toolUseId": "t", "name": "n", "input": {}}}, {"text": "b"}]
    boto_parse(out)


def test_render_document_and_tool_result_blocks_parse():
    resp = ChatResponse(content=[DocumentBlock("d", "pdf", data=PDF), DocumentBlock("t", "txt", text="hello"),
                                 ToolResultBlock("t1", [TextBlock("x"), JsonBlock({"a": 1})], "error")])
    parsed = boto_parse(cv.render_response(resp))
    c = parsed["output"]["message"]["content"]
    assert c[0]["document"]["source"]["bytes"] == PDF
    assert c[1]["document"]["source"]["text"] == "hello"
    assert c[2]["toolResult"]["status"] == "error"


def test_an_unknown_stop_reason_cannot_be_rendered():
    with pytest.raises(ValueError):
        ChatResponse(content=[], stop_reason="stop")
    with pytest.raises(ValueError):
        MessageStop("stop")
    assert cv.render_response(ChatResponse(content=[], stop_reason="max_tokens"))["stopReason"] == "max_tokens"


def test_render_usage_without_cache_fields():
    out = cv.render_response(ChatResponse(content=[TextBlock("x")], usage=Usage(1, 2)))
    assert out["usage"] == {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}


def test_render_additional_response_fields_when_asked():
    resp = ChatResponse(content=[TextBlock("x")], stop_reason="stop_sequence", stop_sequence="END")
    assert "additionalModelResponseFields" not in cv.render_response(resp)
    out = cv.render_response(resp, response_field_paths=["/stop_sequence"])
    assert out["additionalModelResponseFields"] == {"stop_sequence": "END"}
    boto_parse(out)


def test_rendered_content_parses_back_to_the_same_canonical_blocks():
    content = (*(b for b in FULL.content if type(b) is not ImageBlock), ImageBlock("png", PNG))
    wire = cv.render_response(ChatResponse(content=content))["output"]["message"]["content"]
    req = cv.parse_request({"messages": [user({"text": "q"}), {"role": "assistant", "content": wire}],
                            "toolConfig": {"tools": [{"toolSpec": {"name": "top_song", "inputSchema": {"json": {}}}}]}})
    assert req.messages[1].content == content


# --- streams ------------------------------------------------------------------------------------

def test_stream_payload_each_kind():
    u = Usage(3, 4, 1, 0)
    cases = [
        (MessageStart(), "messageStart", {"role": "assistant"}),
        (ToolUseStart(1, "t1", "n"), "contentBlockStart",
         {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "n"}}}),
        (TextDelta(0, "Hel"), "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        (ToolInputDelta(1, "{\"a\":"), "contentBlockDelta",
         {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        (ReasoningDelta(2, "hm"), "contentBlockDelta",
         {"contentBlockIndex": 2, "delta": {"reasoningContent": {"text": "hm"}}}),
        (ReasoningSignatureDelta(2, "s"), "contentBlockDelta",
         {"contentBlockIndex": 2, "delta": {"reasoningContent": {"signature": "s"}}}),
        (RedactedReasoningDelta(2, b"\x00"), "contentBlockDelta",
         {"contentBlockIndex": 2, "delta": {"reasoningContent": {"redactedContent": "AA=="}}}),
        (BlockStop(2), "contentBlockStop", {"contentBlockIndex": 2}),
        (MessageStop("end_turn"), "messageStop", {"stopReason": "end_turn"}),
        (Metadata(u, 42), "metadata",
         {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7, "cacheReadInputTokens": 1},
          "metrics": {"latencyMs": 42}}),
    ]
    for ev, name, payload in cases:
        assert cv.stream_payload(ev) == (name, payload)
        parsed = boto_parse_event(name, payload)
        assert name in parsed, (name, parsed)  # botocore accepted it as that union member


def test_stream_payload_of_anything_else_is_a_programming_error():
    with pytest.raises(TypeError):
        cv.stream_payload(TextBlock("not an event"))


def test_response_to_events_plain_text_has_no_block_start():
    resp = ChatResponse(content=[TextBlock("42")], usage=Usage(8, 4), latency_ms=511)
    frames = [cv.stream_payload(e) for e in response_to_events(resp)]
    assert frames == [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "42"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 8, "outputTokens": 4, "totalTokens": 12}, "metrics": {"latencyMs": 511}}),
    ]


def test_response_to_events_matches_the_verified_13_event_sequence():
    # bedrock-protocol.md 2.1: reasoning (text, signature), stop, text, stop, toolUse start, deltas, stop ...
    resp = ChatResponse(content=[ReasoningBlock("think", "sig"), TextBlock("Hello"),
                                 ToolUseBlock("t1", "calc", {"x": 1})],
                        stop_reason="tool_use", usage=Usage(1, 2), latency_ms=5)
    frames = [cv.stream_payload(e) for e in response_to_events(resp)]
    assert [f[0] for f in frames] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
        "contentBlockDelta", "contentBlockStop",
        "contentBlockStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
    assert frames[6][1] == {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t1", "name": "calc"}}}
    assert json.loads(frames[7][1]["delta"]["toolUse"]["input"]) == {"x": 1}
    assert frames[9][1] == {"stopReason": "tool_use"}
    for name, payload in frames:
        boto_parse_event(name, payload)


def test_response_to_events_indices_and_image():
    resp = ChatResponse(content=[TextBlock("a"), ImageBlock("png", PNG), TextBlock("b")])
    evs = response_to_events(resp)
    assert [(type(e).__name__, e.index) for e in evs if hasattr(e, "index")] == [
        ("TextDelta", 0), ("BlockStop", 0), ("ImageStart", 1), ("ImageDelta", 1), ("BlockStop", 1),
        ("TextDelta", 2), ("BlockStop", 2)]
    for e in evs:
        boto_parse_event(*cv.stream_payload(e))


def test_events_reassemble_to_the_response():
    """What a client rebuilds from the frames equals the rendered non-stream answer."""
    resp = ChatResponse(content=[TextBlock("Hi "), ToolUseBlock("t9", "f", {"q": [1, 2]})],
                        stop_reason="tool_use", usage=Usage(2, 3), latency_ms=9)
    blocks: dict[int, dict] = {}
    stop = None
    for e in response_to_events(resp):
        name, p = cv.stream_payload(e)
        if name == "contentBlockStart":
            blocks[p["contentBlockIndex"]] = {"toolUse": {**p["start"]["toolUse"], "input": ""}}
        elif name == "contentBlockDelta":
            d = p["delta"]
            b = blocks.setdefault(p["contentBlockIndex"], {"text": ""} if "text" in d else {})
            if "text" in d:
                b["text"] += d["text"]
            else:
                b["toolUse"]["input"] += d["toolUse"]["input"]
        elif name == "messageStop":
            stop = p["stopReason"]
    blocks[1]["toolUse"]["input"] = json.loads(blocks[1]["toolUse"]["input"])
    assert [blocks[i] for i in sorted(blocks)] == cv.render_response(resp)["output"]["message"]["content"]
    assert stop == "tool_use"


@pytest.mark.parametrize("module", [cv, common], ids=["converse", "common"])
def test_module_reads_no_clock_or_randomness(module):
    src = open(module.__file__).read()
    for banned in ("import trio", "import httpx", "import zmq", "import time", "import random", "datetime", "uuid"):
        assert banned not in src, banned
