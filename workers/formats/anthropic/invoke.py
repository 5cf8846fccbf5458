"""Anthropic Claude on Bedrock: the Messages format and the legacy Text Completions format. Pure.

bedrock-protocol.md 6.1. Messages bodies need ``anthropic_version: "bedrock-2023-05-31"`` and
``max_tokens``; fields the canonical model has no slot for (anthropic_beta, thinking, metadata ...)
travel in ChatRequest.extra. The stream is Anthropic's SSE events, one JSON object per chunk; a
text block gets its content_block_start when its first delta arrives, since canonical streams
only announce tool blocks.
"""
from __future__ import annotations

import re

from finops.shared.model import (BlockStart, BlockDelta, ChatRequest, ChatResponse, DocumentBlock, ImageBlock,
                                 Message, ReasoningBlock, ReasoningDelta, ReasoningSignatureDelta,
                                 RedactedReasoningBlock, RedactedReasoningDelta, TextBlock, Tool, ToolChoice,
                                 ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart, Usage, text_of)

from ..bedrock.invoke import (Family, PromptFamily, StreamEncoder, base_model_id, leftovers, take_sampling,
                              take_tools)
from ..common import (TOOL_NAME, b64, check_image_bytes, decode_b64, fail, make_id, want_bool, want_dict,
                      want_enum, want_list, want_str)

ANTHROPIC_VERSION = "bedrock-2023-05-31"
MEDIA_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
STOP_TO_ANTHROPIC = {"end_turn": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence",
         "tool_use": "tool_use", "model_context_window_exceeded": "model_context_window_exceeded",
         "content_filtered": "refusal", "guardrail_intervened": "end_turn"}
_DATED = re.compile(r"^(.*\d{8})-v\d+(?::\d+)?$")


def model_name(model_id: str, fallback: str = "") -> str:
    """anthropic.claude-3-haiku-20240307-v1:0 -> claude-3-haiku-20240307 (what Bedrock reports)."""
    base = base_model_id(model_id)
    if not base.startswith("anthropic."):
        return fallback or base
    base = base[len("anthropic."):]
    m = _DATED.match(base)
    return m.group(1) if m else base.split(":")[0]


# --- request ------------------------------------------------------------------------------------

def _parse_image_source(src, path: str) -> ImageBlock:
    want_dict(src, path)
    if src.get("type") != "base64":
        raise fail(f"{path}.type", f"{src.get('type')!r} is not supported by this gateway; "
                   "send {\"type\": \"base64\", \"media_type\": ..., \"data\": ...}")
    media = want_enum(src.get("media_type"), f"{path}.media_type", tuple(MEDIA_TYPES))
    fmt = MEDIA_TYPES[media]
    data = check_image_bytes(decode_b64(src.get("data"), f"{path}.data"), fmt, f"{path}.data")
    return ImageBlock(fmt, data)


def _parse_document(b: dict, path: str) -> DocumentBlock:
    src = want_dict(b.get("source"), f"{path}.source")
    name = b.get("title") if isinstance(b.get("title"), str) and b.get("title") else "document"
    st = src.get("type")
    if st == "base64":
        want_enum(src.get("media_type"), f"{path}.source.media_type", ("application/pdf",))
        data = decode_b64(src.get("data"), f"{path}.source.data")
        if not data:
            raise fail(f"{path}.source.data", "is empty; send the PDF bytes")
        return DocumentBlock(name, "pdf", data=data)
    if st == "text":
        return DocumentBlock(name, "txt", text=want_str(src.get("data"), f"{path}.source.data"))
    if st == "content":
        parts = want_list(src.get("content"), f"{path}.source.content", what="text blocks")
        return DocumentBlock(name, "txt", text="\n".join(
            want_str(want_dict(p, f"{path}.source.content[{i}]").get("text"), f"{path}.source.content[{i}].text")
            for i, p in enumerate(parts)))
    raise fail(f"{path}.source.type", f"{st!r} is not supported by this gateway; use base64, text or content")


def _parse_tool_result(b: dict, path: str) -> ToolResultBlock:
    tid = want_str(b.get("tool_use_id"), f"{path}.tool_use_id", nonblank=True)
    raw = b.get("content", "")
    content: list = []
    if isinstance(raw, str):
        if raw:
            content.append(TextBlock(raw))
    else:
        for i, c in enumerate(want_list(raw, f"{path}.content", what="text or image blocks")):
            p = f"{path}.content[{i}]"
            t = want_dict(c, p).get("type")
            if t == "text":
                content.append(TextBlock(want_str(c.get("text"), f"{p}.text")))
            elif t == "image":
                content.append(_parse_image_source(c.get("source"), f"{p}.source"))
            elif t == "document":
                content.append(_parse_document(c, p))
            else:
                raise fail(f"{p}.type", f"{t!r} is not valid in a tool_result; use text, image or document")
    err = b.get("is_error")
    if err is not None:
        want_bool(err, f"{path}.is_error")
    return ToolResultBlock(tid, content, "error" if err else "success")


def _parse_block(b, path: str):
    want_dict(b, path)
    t = b.get("type")
    if t == "text":
        return TextBlock(want_str(b.get("text"), f"{path}.text", nonblank=True))
    if t == "image":
        return _parse_image_source(b.get("source"), f"{path}.source")
    if t == "document":
        return _parse_document(b, path)
    if t == "tool_use":
        if "input" not in b:
            raise fail(f"{path}.input", "required; send the tool input object")
        return ToolUseBlock(want_str(b.get("id"), f"{path}.id", nonblank=True),
                            want_str(b.get("name"), f"{path}.name", nonblank=True), b["input"])
    if t == "tool_result":
        return _parse_tool_result(b, path)
    if t == "thinking":
        sig = b.get("signature")
        return ReasoningBlock(want_str(b.get("thinking"), f"{path}.thinking"),
                              want_str(sig, f"{path}.signature") if sig is not None else None)
    if t == "redacted_thinking":
        return RedactedReasoningBlock(decode_b64(b.get("data"), f"{path}.data"))
    raise fail(f"{path}.type", f"unknown content block type {t!r}; expected one of {', '.join(BLOCK_TYPES)}")


def _parse_messages(raw, path: str = "messages") -> list[Message]:
    if raw is None:
        raise fail(path, "required; send [{\"role\": \"user\", \"content\": \"Hello\"}]")
    out = []
    for i, m in enumerate(want_list(raw, path, min_len=1, what="messages")):
        p = f"{path}[{i}]"
        want_dict(m, p)
        role = want_enum(m.get("role"), f"{p}.role", ("user", "assistant"))
        c = m.get("content")
        if isinstance(c, str):
            want_str(c, f"{p}.content", nonblank=True)
            blocks = [TextBlock(c)]
        else:
            if c is None:
                raise fail(f"{p}.content", "required; send a string or a list of content blocks")
            blocks = [_parse_block(b, f"{p}.content[{j}]")
                      for j, b in enumerate(want_list(c, f"{p}.content", min_len=1, what="content blocks"))]
        out.append(Message(role, blocks))
    return out


def _parse_system(raw) -> list[str]:
    if isinstance(raw, str):
        return [raw] if raw else []
    out = []
    for i, b in enumerate(want_list(raw, "system", what="text blocks")):
        want_dict(b, f"system[{i}]")
        want_enum(b.get("type"), f"system[{i}].type", ("text",))
        out.append(want_str(b.get("text"), f"system[{i}].text", nonblank=True))
    return out


def _parse_tools(raw) -> list[Tool]:
    tools = []
    seen = set()
    for i, t in enumerate(want_list(raw, "tools", what="tools")):
        p = f"tools[{i}]"
        want_dict(t, p)
        if t.get("type") not in (None, "custom"):
            raise fail(f"{p}.type", f"Anthropic-defined tool {t.get('type')!r} is not supported by this "
                       "gateway; define a custom tool with name, description and input_schema")
        name = want_str(t.get("name"), f"{p}.name", max_len=64, pattern=TOOL_NAME)
        if name in seen:
            raise fail(f"{p}.name", f"duplicate tool name {name!r}; tool names must be unique")
        seen.add(name)
        desc = t.get("description") or ""
        want_str(desc, f"{p}.description")
        schema = want_dict(t.get("input_schema"), f"{p}.input_schema")
        tools.append(Tool(name, desc, schema))
    return tools


def _parse_tool_choice(raw, tools: list[Tool]) -> ToolChoice:
    want_dict(raw, "tool_choice")
    t = want_enum(raw.get("type"), "tool_choice.type", ("auto", "any", "tool", "none"))
    if t != "tool":
        return ToolChoice(t)
    name = want_str(raw.get("name"), "tool_choice.name", nonblank=True)
    if name not in {x.name for x in tools}:
        raise fail("tool_choice.name", f"names tool {name!r}, which is not in tools")
    return ToolChoice("tool", name)


class AnthropicMessages(Family):
    name = "anthropic-messages"

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        if body.get("anthropic_version") != ANTHROPIC_VERSION:
            raise fail("anthropic_version", f"required, must be \"{ANTHROPIC_VERSION}\"")
        if body.get("max_tokens") is None:
            raise fail("max_tokens", "required; send the maximum number of tokens to generate, e.g. 1024")
        used = {"anthropic_version", "messages", "system", "tools", "tool_choice", "stream"}
        fields: dict = {"messages": _parse_messages(body.get("messages"))}
        take_sampling(body, fields, max_tokens="max_tokens", used=used)
        if body.get("system") is not None:
            fields["system"] = _parse_system(body["system"])
        take_tools(body, fields, _parse_tools, _parse_tool_choice)
        return ChatRequest(**fields, extra=leftovers(body, used))

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        content = []
        for b in resp.content:
            match b:
                case TextBlock():
                    content.append({"type": "text", "text": b.text})
                case ToolUseBlock():
                    content.append({"type": "tool_use", "id": b.tool_use_id, "name": b.name, "input": b.input})
                case RedactedReasoningBlock():
                    content.append({"type": "redacted_thinking", "data": b64(b.data)})
                case ReasoningBlock():
                    content.append({"type": "thinking", "thinking": b.text, "signature": b.signature or ""})
        u = resp.usage
        usage = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
        if u.cache_write_tokens:
            usage["cache_creation_input_tokens"] = u.cache_write_tokens
        if u.cache_read_tokens:
            usage["cache_read_input_tokens"] = u.cache_read_tokens
        return {"id": response_id or make_id("msg_bdrk_", model_id, text_of(resp.content)),
                "type": "message", "role": "assistant", "model": model_name(model_id, resp.model),
                "content": content, "stop_reason": STOP_TO_ANTHROPIC.get(resp.stop_reason, "end_turn"),
                "stop_sequence": resp.stop_sequence, "usage": usage}


class _MessagesEncoder(StreamEncoder):
    __slots__ = ("open",)

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.open: set[int] = set()

    def _start_message(self) -> list[dict]:
        self.first = False
        return [{"type": "message_start", "message": {
            "id": "msg_bdrk_" + self.response_id[:24], "type": "message", "role": "assistant",
            "model": model_name(self.model_id), "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens or 0, "output_tokens": 1}}}]

    def _open(self, index: int, block: dict) -> list[dict]:
        out = self._start_message() if self.first else []
        self.open.add(index)
        out.append({"type": "content_block_start", "index": index, "content_block": block})
        return out

    def on_start(self) -> list[dict]:
        return self._start_message() if self.first else []

    def on_text(self, index: int, text: str) -> list[dict]:
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
        if index in self.open:
            return [delta]
        out = self._open(index, {"type": "text", "text": ""})
        out.append(delta)
        return out

    def on_other_delta(self, ev: BlockDelta) -> list[dict]:
        index = ev.index
        match ev:
            case RedactedReasoningDelta():
                return self._open(index, {"type": "redacted_thinking", "data": b64(ev.data)})
            case ReasoningSignatureDelta():
                d = {"type": "signature_delta", "signature": ev.signature}
                start = {"type": "thinking", "thinking": ""}
            case ReasoningDelta():
                d = {"type": "thinking_delta", "thinking": ev.text}
                start = {"type": "thinking", "thinking": ""}
            case ToolInputDelta():
                d = {"type": "input_json_delta", "partial_json": ev.input}
                start = {"type": "tool_use", "id": f"toolu_bdrk_{index}", "name": "", "input": {}}
            case _:
                return []
        out = [] if index in self.open else self._open(index, start)
        out.append({"type": "content_block_delta", "index": index, "delta": d})
        return out

    def on_block_start(self, ev: BlockStart) -> list[dict]:
        if type(ev) is not ToolUseStart:
            return []
        return self._open(ev.index, {"type": "tool_use", "id": ev.tool_use_id, "name": ev.name, "input": {}})

    def on_block_stop(self, index: int) -> list[dict]:
        out = [] if index in self.open else self._open(index, {"type": "text", "text": ""})
        self.open.discard(index)
        out.append({"type": "content_block_stop", "index": index})
        return out

    def on_final(self, usage: Usage) -> list[dict]:
        out = self._start_message() if self.first else []
        for index in sorted(self.open):
            out.append({"type": "content_block_stop", "index": index})
        self.open.clear()
        out.append({"type": "message_delta",
                    "delta": {"stop_reason": STOP_TO_ANTHROPIC.get(self.stop, "end_turn"), "stop_sequence": self.stop_sequence},
                    "usage": {"output_tokens": usage.output_tokens}})
        out.append({"type": "message_stop"})
        return out


AnthropicMessages.encoder = _MessagesEncoder


# --- legacy Text Completions --------------------------------------------------------------------

def _text_stop(stop: str, stop_sequence: str | None) -> tuple[str, str | None]:
    if stop == "max_tokens":
        return "max_tokens", None
    return "stop_sequence", stop_sequence or "\n\nHuman:"


class ClaudeText(PromptFamily):
    name = "anthropic-text"
    max_tokens_path = ("max_tokens_to_sample",)
    words = "human"
    required = (("max_tokens_to_sample", "required; send the maximum number of tokens to generate"),)
    sampling = {"max_tokens": "max_tokens_to_sample"}
    read = ("anthropic_version", "stream")

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        reason, stop = _text_stop(resp.stop_reason, resp.stop_sequence)
        return {"type": "completion", "completion": text_of(resp.content), "stop_reason": reason, "stop": stop}


class _TextEncoder(StreamEncoder):
    __slots__ = ()

    def on_text(self, index: int, text: str) -> list[dict]:
        return [{"type": "completion", "completion": text, "stop_reason": None, "stop": None}]

    def on_final(self, usage: Usage) -> list[dict]:
        reason, stop = _text_stop(self.stop, self.stop_sequence)
        return [{"type": "completion", "completion": "", "stop_reason": reason, "stop": stop}]


ClaudeText.encoder = _TextEncoder

MESSAGES = AnthropicMessages()
TEXT = ClaudeText()
