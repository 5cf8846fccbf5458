"""Converse / ConverseStream / CountTokens bodies <-> the canonical model. Pure.

Direction is in the names: `parse_*` turns a wire body (already JSON-decoded) into canonical
objects, validating it the way Bedrock would; `render_*` and `stream_payload` turn canonical objects
into wire dicts, ready for `json.dumps`.

Validation failures raise `errors.validation(...)` (HTTP 400 ValidationException). Every message
starts with the path of the bad field, e.g. ``messages[1].content[0].image.format``, then says what
is wrong and what to send instead.

Wire facts this module relies on (bedrock-protocol.md 1.4-1.6, 1.9, 2.1):

- Content blocks, tools, tool choices, system blocks and image/document sources are tagged unions:
  exactly one member per object. A member set to ``null`` counts as absent, as it does in botocore.
- Blobs (``image.source.bytes`` ...) are base64 strings in the JSON; canonical blocks hold raw bytes.
- ConverseStream payloads are the member's inner structure (``{"contentBlockIndex": 0, "delta": ...}``),
  never wrapped in the member name, and no ``contentBlockStart`` is sent for text blocks.

cachePoint blocks (in system, messages and toolConfig.tools) carry nothing for the model: they are
kept as `ChatRequest.cache_points` (where each one stood), at most four per request (more is a
ValidationException, as on Bedrock), for providers that place cache breakpoints (Anthropic).

Gateway-level request fields that are not about the model (guardrailConfig, requestMetadata,
performanceConfig, serviceTier, additionalModelResponseFieldPaths, outputConfig) are validated by
`parse_request` but do not fit `ChatRequest`; `parse_options` returns them for the pipeline.

The field checks (`want_*`, `one_member`, `fail`) are `formats/common.py`'s.
"""
from __future__ import annotations

import re

import msgspec
from typing import Any

from finops.shared import errors
from finops.shared.model import (CACHE_TTLS, DOCUMENT_FORMATS, IMAGE_FORMATS, MAX_CACHE_POINTS, BlockStop,
                                 CachePoint, ChatRequest, ChatResponse,
                                 DocumentBlock, ImageBlock, ImageDelta, ImageStart, JsonBlock, Message,
                                 MessageStart, MessageStop, Metadata, ReasoningBlock, ReasoningDelta,
                                 ReasoningSignatureDelta, RedactedReasoningBlock, RedactedReasoningDelta,
                                 StreamEvent, TextBlock, TextDelta, Tool, ToolChoice, ToolInputDelta,
                                 ToolResultBlock, ToolUseBlock, ToolUseStart)

from ..common import (TOOL_NAME, b64, check_image_bytes, check_tool_blocks_need_config, decode_b64, fail,
                      one_member, type_name, want_bool, want_dict, want_enum, want_int, want_list, want_num,
                      want_str, want_str_list)

# --- images and documents -----------------------------------------------------------------------


def _s3_unsupported(path: str) -> errors.GatewayError:
    return fail(path, "S3 sources are not supported by this gateway; send the content inline as bytes")


def parse_image(v: Any, path: str, *, formats=IMAGE_FORMATS) -> ImageBlock:
    """A Converse ImageBlock."""
    want_dict(v, path)
    fmt = want_enum(v.get("format"), f"{path}.format", formats)
    if v.get("source") is None:
        raise fail(f"{path}.source", "required; send {\"bytes\": <base64>}")
    kind, src = one_member(v["source"], f"{path}.source", ("bytes", "s3Location"), "image source")
    if kind == "s3Location":
        raise _s3_unsupported(f"{path}.source.s3Location")
    data = check_image_bytes(decode_b64(src, f"{path}.source.bytes"), fmt, f"{path}.source.bytes")
    return ImageBlock(fmt, data)


def parse_document(v: Any, path: str) -> DocumentBlock:
    """A Converse DocumentBlock (a text source, or a content list joined into one, becomes text)."""
    want_dict(v, path)
    name = want_str(v.get("name"), f"{path}.name", nonblank=True, max_len=200)
    fmt = v.get("format")
    if fmt is not None:
        want_enum(fmt, f"{path}.format", DOCUMENT_FORMATS)
    if v.get("source") is None:
        raise fail(f"{path}.source", "required; send one of bytes, text, content")
    kind, src = one_member(v["source"], f"{path}.source", ("bytes", "s3Location", "text", "content"),
                           "document source")
    data = text = None
    if kind == "s3Location":
        raise _s3_unsupported(f"{path}.source.s3Location")
    if kind == "bytes":
        if fmt is None:
            raise fail(f"{path}.format", f"required for a bytes source; one of {', '.join(DOCUMENT_FORMATS)}")
        data = decode_b64(src, f"{path}.source.bytes")
        if not data:
            raise fail(f"{path}.source.bytes", "is empty; send the document bytes")
    elif kind == "text":
        text = want_str(src, f"{path}.source.text", nonblank=True)
    else:
        parts = want_list(src, f"{path}.source.content", min_len=1, what="{text} blocks")
        text = "\n".join(want_str(want_dict(p, f"{path}.source.content[{i}]").get("text"),
                                  f"{path}.source.content[{i}].text")
                         for i, p in enumerate(parts))
    context = want_str(v["context"], f"{path}.context") if v.get("context") is not None else None
    cit = v.get("citations")
    if cit is not None and want_bool(want_dict(cit, f"{path}.citations").get("enabled"),
                                     f"{path}.citations.enabled"):
        raise fail(f"{path}.citations", "citations are not supported by this gateway; "
                   "remove citations or set enabled to false")
    return DocumentBlock(name, fmt or "txt", data, text, context)


# --- content blocks -----------------------------------------------------------------------------

BLOCK_MEMBERS = ("text", "image", "document", "toolUse", "toolResult", "reasoningContent",
                 "cachePoint", "guardContent", "citationsContent", "video", "audio", "searchResult",
                 "toolAddition", "toolRemoval")
TOOL_RESULT_MEMBERS = ("json", "text", "image", "document", "video", "searchResult")
TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]+")


def parse_tool_use(v: Any, path: str) -> ToolUseBlock:
    want_dict(v, path)
    tid = want_str(v.get("toolUseId"), f"{path}.toolUseId", max_len=64, pattern=TOOL_USE_ID)
    name = want_str(v.get("name"), f"{path}.name", max_len=64, pattern=TOOL_NAME)
    if "input" not in v:
        raise fail(f"{path}.input", "required; send the tool input as a JSON value")
    return ToolUseBlock(tid, name, v["input"])


def parse_tool_result(v: Any, path: str) -> ToolResultBlock:
    want_dict(v, path)
    tid = want_str(v.get("toolUseId"), f"{path}.toolUseId", max_len=64, pattern=TOOL_USE_ID)
    if v.get("content") is None:
        raise fail(f"{path}.content", "required; send a list of {text} or {json} blocks")
    items = want_list(v["content"], f"{path}.content", what="tool result blocks")
    content = []
    for i, item in enumerate(items):
        p = f"{path}.content[{i}]"
        kind, val = one_member(item, p, TOOL_RESULT_MEMBERS, "tool result block")
        if kind == "json":
            content.append(JsonBlock(val))
        elif kind == "text":
            content.append(TextBlock(want_str(val, f"{p}.text")))
        elif kind == "image":
            content.append(parse_image(val, f"{p}.image"))
        elif kind == "document":
            content.append(parse_document(val, f"{p}.document"))
        else:
            raise fail(f"{p}.{kind}", f"{kind} tool results are not supported by this gateway; "
                       "send text, json, image or document")
    status = v.get("status")
    if status is not None:
        want_enum(status, f"{path}.status", ("success", "error"))
    return ToolResultBlock(tid, content, status or "success")


def parse_reasoning(v: Any, path: str) -> ReasoningBlock | RedactedReasoningBlock:
    kind, val = one_member(v, path, ("reasoningText", "redactedContent"), "reasoning block")
    if kind == "redactedContent":
        return RedactedReasoningBlock(decode_b64(val, f"{path}.redactedContent"))
    want_dict(val, f"{path}.reasoningText")
    text = want_str(val.get("text"), f"{path}.reasoningText.text")
    sig = val.get("signature")
    if sig is not None:
        want_str(sig, f"{path}.reasoningText.signature")
    return ReasoningBlock(text, sig)


def _parse_guard(v: Any, path: str) -> TextBlock | ImageBlock:
    kind, val = one_member(v, path, ("text", "image"), "guard content block")
    if kind == "text":
        want_dict(val, f"{path}.text")
        return TextBlock(want_str(val.get("text"), f"{path}.text.text", nonblank=True))
    return parse_image(val, f"{path}.image", formats=("png", "jpeg"))


def _parse_citations(v: Any, path: str) -> TextBlock:
    want_dict(v, path)
    parts = want_list(v.get("content", []), f"{path}.content", what="{text} blocks")
    return TextBlock("".join(want_str(want_dict(p, f"{path}.content[{i}]").get("text"),
                                      f"{path}.content[{i}].text") for i, p in enumerate(parts)))


def parse_block(v: Any, path: str):
    """One Converse ContentBlock -> a canonical block, or None for a block that carries nothing
    for the model (cachePoint)."""
    kind, val = one_member(v, path, BLOCK_MEMBERS, "content block")
    if kind == "text":
        return TextBlock(want_str(val, f"{path}.text", nonblank=True))
    if kind == "image":
        return parse_image(val, f"{path}.image")
    if kind == "document":
        return parse_document(val, f"{path}.document")
    if kind == "toolUse":
        return parse_tool_use(val, f"{path}.toolUse")
    if kind == "toolResult":
        return parse_tool_result(val, f"{path}.toolResult")
    if kind == "reasoningContent":
        return parse_reasoning(val, f"{path}.reasoningContent")
    if kind == "cachePoint":
        parse_cache_point(val, f"{path}.cachePoint")
        return None
    if kind == "guardContent":
        return _parse_guard(val, f"{path}.guardContent")
    if kind == "citationsContent":
        return _parse_citations(val, f"{path}.citationsContent")
    raise fail(f"{path}.{kind}", f"{kind} blocks are not supported by this gateway; "
               "send text, image, document, toolUse, toolResult or reasoningContent")


def parse_cache_point(v: Any, path: str) -> str | None:
    """A Converse CachePointBlock ({"type": "default", "ttl"?: "5m"|"1h"}) -> its ttl (None when absent)."""
    want_dict(v, path)
    want_enum(v.get("type"), f"{path}.type", ("default",))
    ttl = v.get("ttl")
    return None if ttl is None else want_enum(ttl, f"{path}.ttl", CACHE_TTLS)


def check_cache_points(points: list[CachePoint]) -> None:
    """At most MAX_CACHE_POINTS checkpoints in one request, as Bedrock (and Anthropic) allow."""
    if len(points) > MAX_CACHE_POINTS:
        raise fail("cachePoint", f"the request has {len(points)} cachePoint blocks (in toolConfig.tools, "
                   f"system and messages together); at most {MAX_CACHE_POINTS} are allowed: remove "
                   f"{len(points) - MAX_CACHE_POINTS}, keeping the ones that end the longest stable prefixes")


def parse_messages(v: Any, path: str = "messages", points: list | None = None) -> list[Message]:
    """Converse messages -> canonical messages. cachePoint blocks are dropped from the content and,
    when `points` is a list, appended to it as CachePoints."""
    if v is None:
        raise fail(path, "required; send at least one message, e.g. "
                   "[{\"role\": \"user\", \"content\": [{\"text\": \"Hello\"}]}]")
    want_list(v, path, min_len=1, what="messages")
    out = []
    for i, m in enumerate(v):
        p = f"{path}[{i}]"
        want_dict(m, p)
        role = want_enum(m.get("role"), f"{p}.role", ("user", "assistant"))
        content = m.get("content")
        if content is None:
            raise fail(f"{p}.content", "required; send a non-empty list of content blocks")
        want_list(content, f"{p}.content", min_len=1, what="content blocks")
        blocks = []
        for j, raw in enumerate(content):
            b = parse_block(raw, f"{p}.content[{j}]")
            if b is not None:
                blocks.append(b)
            elif points is not None:
                ttl = parse_cache_point(raw["cachePoint"], f"{p}.content[{j}].cachePoint")
                points.append(CachePoint("messages", len(blocks), len(out), ttl))
        if not blocks:
            raise fail(f"{p}.content", "has only cachePoint blocks; add the message content")
        out.append(Message(role, blocks))
    return out


def parse_system(v: Any, path: str = "system", points: list | None = None) -> list[str]:
    """Converse system blocks -> their texts; cachePoints go to `points` when it is a list."""
    want_list(v, path, what="system blocks")
    texts = []
    for i, b in enumerate(v):
        p = f"{path}[{i}]"
        kind, val = one_member(b, p, ("text", "guardContent", "cachePoint"), "system block")
        if kind == "text":
            texts.append(want_str(val, f"{p}.text", nonblank=True))
        elif kind == "cachePoint":
            ttl = parse_cache_point(val, f"{p}.cachePoint")
            if points is not None:
                points.append(CachePoint("system", len(texts), 0, ttl))
        else:
            want_dict(val, f"{p}.{kind}")
    return texts


def parse_inference_config(v: Any, path: str = "inferenceConfig", *, nova: bool = False) -> dict:
    """The ChatRequest fields max_tokens, temperature, top_p, stop_sequences (and top_k for Nova)
    that `v` sets."""
    want_dict(v, path)
    out: dict = {}
    mt = v.get("maxTokens")
    if nova and mt is None:
        mt = v.get("max_new_tokens")
        key = "max_new_tokens"
    else:
        key = "maxTokens"
    if mt is not None:
        out["max_tokens"] = want_int(mt, f"{path}.{key}", lo=1)
    if v.get("temperature") is not None:
        out["temperature"] = want_num(v["temperature"], f"{path}.temperature", lo=0, hi=1)
    if v.get("topP") is not None:
        out["top_p"] = want_num(v["topP"], f"{path}.topP", lo=0, hi=1)
    if nova and v.get("topK") is not None:
        out["top_k"] = want_int(v["topK"], f"{path}.topK", lo=1)
    if v.get("stopSequences") is not None:
        out["stop_sequences"] = want_str_list(v["stopSequences"], f"{path}.stopSequences", max_len=2500)
    return out


def parse_tool_config(v: Any, path: str = "toolConfig",
                      points: list | None = None) -> tuple[list[Tool], ToolChoice | None]:
    want_dict(v, path)
    if v.get("tools") is None:
        raise fail(f"{path}.tools", "required; send at least one {\"toolSpec\": {...}}")
    raw = want_list(v["tools"], f"{path}.tools", min_len=1, what="tools")
    tools: list[Tool] = []
    seen = set()
    for i, t in enumerate(raw):
        p = f"{path}.tools[{i}]"
        kind, spec = one_member(t, p, ("toolSpec", "systemTool", "cachePoint"), "tool")
        if kind == "cachePoint":
            ttl = parse_cache_point(spec, f"{p}.cachePoint")
            if points is not None:
                points.append(CachePoint("tools", len(tools), 0, ttl))
            continue
        if kind == "systemTool":
            raise fail(f"{p}.systemTool", "system tools are not supported by this gateway; "
                       "define the tool with toolSpec")
        p += ".toolSpec"
        want_dict(spec, p)
        name = want_str(spec.get("name"), f"{p}.name", max_len=64, pattern=TOOL_NAME)
        if name in seen:
            raise fail(f"{p}.name", f"duplicate tool name {name!r}; tool names must be unique")
        seen.add(name)
        desc = spec.get("description")
        if desc is not None:
            want_str(desc, f"{p}.description", nonblank=True)
        if spec.get("inputSchema") is None:
            raise fail(f"{p}.inputSchema", "required; send {\"json\": {\"type\": \"object\", ...}}")
        _, schema = one_member(spec["inputSchema"], f"{p}.inputSchema", ("json",), "input schema")
        want_dict(schema, f"{p}.inputSchema.json")
        if spec.get("strict") is not None:
            want_bool(spec["strict"], f"{p}.strict")
        tools.append(Tool(name, desc or "", schema))
    if not tools:
        raise fail(f"{path}.tools", "has no toolSpec entries; define at least one tool")
    choice = None
    if v.get("toolChoice") is not None:
        cp = f"{path}.toolChoice"
        kind, val = one_member(v["toolChoice"], cp, ("auto", "any", "tool"), "tool choice")
        want_dict(val, f"{cp}.{kind}")
        if kind == "tool":
            name = want_str(val.get("name"), f"{cp}.tool.name", max_len=64, pattern=TOOL_NAME)
            if name not in seen:
                raise fail(f"{cp}.tool.name", f"names tool {name!r}, which is not in {path}.tools; "
                           f"use one of {', '.join(sorted(seen))}")
            choice = ToolChoice("tool", name)
        else:
            choice = ToolChoice(kind)
    return tools, choice


# --- requests -----------------------------------------------------------------------------------

def _extra_fields(v: Any, path: str) -> dict:
    """additionalModelRequestFields -> the ChatRequest fields: extra, and top_k when it names one."""
    extra = dict(want_dict(v, path))
    out: dict = {}
    for key in ("top_k", "topK"):
        if key in extra and isinstance(extra[key], int) and not isinstance(extra[key], bool):
            out["top_k"] = extra.pop(key)
    out["extra"] = extra
    return out


def _parse_chat(body: Any, prefix: str, *, inference: bool) -> ChatRequest:
    want_dict(body, prefix.rstrip(".") or "body")
    tool_points: list = []
    system_points: list = []
    message_points: list = []
    fields: dict = {"messages": parse_messages(body.get("messages"), f"{prefix}messages", message_points)}
    if body.get("system") is not None:
        fields["system"] = parse_system(body["system"], f"{prefix}system", system_points)
    if inference and body.get("inferenceConfig") is not None:
        fields.update(parse_inference_config(body["inferenceConfig"], f"{prefix}inferenceConfig"))
    if body.get("toolConfig") is not None:
        fields["tools"], fields["tool_choice"] = parse_tool_config(body["toolConfig"], f"{prefix}toolConfig",
                                                                   tool_points)
    points = tool_points + system_points + message_points     # prefix order: tools, system, messages
    check_cache_points(points)
    if points:
        fields["cache_points"] = points
    check_tool_blocks_need_config(fields["messages"], bool(fields.get("tools")), f"{prefix}toolConfig")
    if body.get("additionalModelRequestFields") is not None:
        fields.update(_extra_fields(body["additionalModelRequestFields"], f"{prefix}additionalModelRequestFields"))
    return ChatRequest(**fields)


def parse_request(body: Any) -> ChatRequest:
    """A Converse or ConverseStream body -> ChatRequest.

    Raises:
        GatewayError(ValidationException): naming the first bad field.
    """
    if not isinstance(body, dict):
        raise fail("body", f"must be a JSON object, got {type_name(body)}")
    req = _parse_chat(body, "", inference=True)
    options = parse_options(body)
    tier = options.get("serviceTier", {}).get("type")
    return msgspec.structs.replace(req, service_tier=tier) if tier else req


_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")


def with_output_cap(body: dict, cap: int) -> dict:
    """A copy of a Converse body that asks for at most `cap` output tokens
    (`inferenceConfig.maxTokens`); the body is not changed."""
    cfg = body.get("inferenceConfig")
    return {**body, "inferenceConfig": {**(cfg if isinstance(cfg, dict) else {}), "maxTokens": cap}}


def parse_options(body: dict) -> dict:
    """The gateway-level Converse fields (not model input), validated; absent ones are left out.

    Keys: guardrailConfig, additionalModelResponseFieldPaths, requestMetadata, performanceConfig,
    serviceTier, outputConfig.
    """
    out: dict = {}
    if body.get("promptVariables") is not None:
        raise fail("promptVariables", "only valid with a prompt-management ARN, which this gateway "
                   "does not serve; put the text into messages instead")
    g = body.get("guardrailConfig")
    if g is not None:
        want_dict(g, "guardrailConfig")
        want_str(g.get("guardrailIdentifier"), "guardrailConfig.guardrailIdentifier", nonblank=True)
        want_str(g.get("guardrailVersion"), "guardrailConfig.guardrailVersion", nonblank=True)
        if g.get("trace") is not None:
            want_enum(g["trace"], "guardrailConfig.trace", ("enabled", "disabled", "enabled_full"))
        if g.get("streamProcessingMode") is not None:
            want_enum(g["streamProcessingMode"], "guardrailConfig.streamProcessingMode", ("sync", "async"))
        out["guardrailConfig"] = g
    paths = body.get("additionalModelResponseFieldPaths")
    if paths is not None:
        want_str_list(paths, "additionalModelResponseFieldPaths", max_len=10)
        for i, p in enumerate(paths):
            if not p.startswith("/"):
                raise fail(f"additionalModelResponseFieldPaths[{i}]",
                           f"{p!r} is not a JSON pointer; start it with '/', e.g. '/stop_sequence'")
        out["additionalModelResponseFieldPaths"] = list(paths)
    md = body.get("requestMetadata")
    if md is not None:
        want_dict(md, "requestMetadata")
        if not 1 <= len(md) <= 16:
            raise fail("requestMetadata", f"has {len(md)} entries; send 1 to 16")
        for k, val in md.items():
            want_str(k, "requestMetadata", max_len=256)
            if not k:
                raise fail("requestMetadata", "has an empty key")
            want_str(val, f"requestMetadata.{k}", pattern=_METADATA_VALUE,
                     hint="; use letters, digits, spaces and :_@$#=/+,-. (at most 256)")
        out["requestMetadata"] = md
    pc = body.get("performanceConfig")
    if pc is not None:
        want_dict(pc, "performanceConfig")
        if pc.get("latency") is not None:
            want_enum(pc["latency"], "performanceConfig.latency", ("standard", "optimized"))
        out["performanceConfig"] = pc
    st = body.get("serviceTier")
    if st is not None:
        want_dict(st, "serviceTier")
        want_enum(st.get("type"), "serviceTier.type", ("priority", "default", "flex", "reserved"))
        out["serviceTier"] = st
    oc = body.get("outputConfig")
    if oc is not None:
        out["outputConfig"] = want_dict(oc, "outputConfig")
    return out


def parse_count_tokens(body: Any) -> tuple[str, ChatRequest | bytes]:
    """A CountTokens body -> ("converse", ChatRequest) or ("invokeModel", raw native body bytes).

    The invokeModel body is only base64-decoded here; the caller parses it with the model's family.
    """
    if not isinstance(body, dict):
        raise fail("body", f"must be a JSON object, got {type_name(body)}")
    if body.get("input") is None:
        raise fail("input", "required; send {\"converse\": {\"messages\": [...]}} or "
                   "{\"invokeModel\": {\"body\": <base64 of the native body>}}")
    kind, val = one_member(body["input"], "input", ("converse", "invokeModel"), "CountTokens input")
    if kind == "converse":
        return "converse", _parse_chat(val, "input.converse.", inference=False)
    want_dict(val, "input.invokeModel")
    if val.get("body") is None:
        raise fail("input.invokeModel.body", "required; send the native request body, base64-encoded")
    return "invokeModel", decode_b64(val["body"], "input.invokeModel.body")


# --- responses ----------------------------------------------------------------------------------

def _render_image(img: ImageBlock) -> dict:
    return {"image": {"format": img.format, "source": {"bytes": b64(img.data)}}}


def _render_document(d: DocumentBlock) -> dict:
    out: dict = {"name": d.name or "document"}
    if d.format:
        out["format"] = d.format
    out["source"] = {"bytes": b64(d.data)} if d.data is not None else {"text": d.text}
    if d.context:
        out["context"] = d.context
    return {"document": out}


def _render_reasoning(r: ReasoningBlock) -> dict:
    rt = {"text": r.text}
    if r.signature:
        rt["signature"] = r.signature
    return {"reasoningContent": {"reasoningText": rt}}


def _render_tool_result(t: ToolResultBlock) -> dict:
    content = []
    for c in t.content:
        match c:
            case TextBlock():
                content.append({"text": c.text})
            case JsonBlock():
                content.append({"json": c.value})
            case ImageBlock():
                content.append(_render_image(c))
            case DocumentBlock():
                content.append(_render_document(c))
    return {"toolResult": {"toolUseId": t.tool_use_id, "content": content, "status": t.status}}


def render_block(b) -> dict:
    """A canonical block -> a Converse ContentBlock."""
    match b:
        case TextBlock():
            return {"text": b.text}
        case ToolUseBlock():
            return {"toolUse": {"toolUseId": b.tool_use_id, "name": b.name, "input": b.input}}
        case ReasoningBlock():
            return _render_reasoning(b)
        case RedactedReasoningBlock():
            return {"reasoningContent": {"redactedContent": b64(b.data)}}
        case ImageBlock():
            return _render_image(b)
        case DocumentBlock():
            return _render_document(b)
        case ToolResultBlock():
            return _render_tool_result(b)
    raise TypeError(f"not a content block: {type(b).__name__}")


def render_blocks(content) -> list[dict]:
    """Canonical blocks -> Converse ContentBlocks."""
    return [render_block(b) for b in content]


def render_response(resp: ChatResponse, *, response_field_paths: list[str] | None = None) -> dict:
    """ChatResponse -> the Converse response JSON.

    Args:
        response_field_paths: the request's additionalModelResponseFieldPaths; "/stop_sequence"
            adds {"additionalModelResponseFields": {"stop_sequence": ...}}.
    """
    out = {
        "output": {"message": {"role": "assistant", "content": render_blocks(resp.content)}},
        "stopReason": resp.stop_reason,
        "usage": resp.usage.to_converse(),
        "metrics": {"latencyMs": int(resp.latency_ms)},
    }
    if response_field_paths and "/stop_sequence" in response_field_paths:
        out["additionalModelResponseFields"] = {"stop_sequence": resp.stop_sequence}
    return out


# --- streams ------------------------------------------------------------------------------------

def _delta(index: int, delta: dict) -> tuple[str, dict]:
    return "contentBlockDelta", {"contentBlockIndex": index, "delta": delta}


_PAYLOADS = {
    TextDelta: lambda ev: _delta(ev.index, {"text": ev.text}),
    ToolInputDelta: lambda ev: _delta(ev.index, {"toolUse": {"input": ev.input}}),
    ReasoningDelta: lambda ev: _delta(ev.index, {"reasoningContent": {"text": ev.text}}),
    ReasoningSignatureDelta: lambda ev: _delta(ev.index, {"reasoningContent": {"signature": ev.signature}}),
    RedactedReasoningDelta: lambda ev: _delta(ev.index, {"reasoningContent": {"redactedContent": b64(ev.data)}}),
    ImageDelta: lambda ev: _delta(ev.index, {"image": {"source": {"bytes": b64(ev.data)}}}),
    MessageStart: lambda ev: ("messageStart", {"role": "assistant"}),
    ToolUseStart: lambda ev: ("contentBlockStart", {"contentBlockIndex": ev.index, "start": {
        "toolUse": {"toolUseId": ev.tool_use_id, "name": ev.name}}}),
    ImageStart: lambda ev: ("contentBlockStart", {"contentBlockIndex": ev.index, "start": {
        "image": {"format": ev.format}}}),
    BlockStop: lambda ev: ("contentBlockStop", {"contentBlockIndex": ev.index}),
    MessageStop: lambda ev: ("messageStop", {"stopReason": ev.stop_reason}),
    Metadata: lambda ev: ("metadata", {"usage": ev.usage.to_converse(), "metrics": {"latencyMs": int(ev.latency_ms)}}),
}


def stream_payload(ev: StreamEvent) -> tuple[str, dict]:
    """A canonical stream event -> (ConverseStream event type, payload).

    The payload is the union member's inner structure, e.g.
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}).
    Raises TypeError for anything that is not a canonical stream event (a programming error).
    """
    render = _PAYLOADS.get(type(ev))
    if render is None:
        raise TypeError(f"not a canonical stream event: {type(ev).__name__}")
    return render(ev)
