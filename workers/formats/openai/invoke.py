"""OpenAI-like chat bodies on Bedrock InvokeModel: the generic `messages` body (gpt-oss, DeepSeek,
Qwen ...). Pure.

The request side is the OpenAI Chat Completions shape: messages with string (or text/image part)
content, assistant `tool_calls` with JSON-string arguments, `tool` messages with `tool_call_id`. Tool
results become toolResult blocks in a user message (consecutive ones share one message), system
messages become system texts. Mistral chat (mistral/invoke.py) and AI21 Jamba (ai21.py,
bedrock-protocol.md 6.2 and 6.7) are this body with their own answers, set by class attributes:

- `stop_key`: Mistral says "stop_reason", OpenAI and Jamba "finish_reason".
- `encoder`: `_DeltaEncoder` here (OpenAI/Jamba: `delta` objects, tool calls as indexed argument
  fragments); Mistral's sends a whole `message` per chunk.
- `with_ids`: whether the response carries id and usage (Jamba, OpenAI); `openai_object` adds
  "object" and "model" as OpenAI does.
"""
from __future__ import annotations

import base64
import binascii
import json

from finops.shared.model import (IMAGE_FORMATS, BlockDelta, BlockStart, ChatRequest, ChatResponse, ImageBlock,
                                 Message, TextBlock, Tool, ToolChoice, ToolInputDelta, ToolResultBlock,
                                 ToolUseBlock, ToolUseStart, Usage, text_of)

from ..bedrock.invoke import Family, StreamEncoder, leftovers, take_sampling, take_tools
from ..common import (TOOL_NAME, check_image_bytes, fail, make_id, tool_uses, want_dict, want_enum, want_int,
                      want_list, want_str)

_ROLES = ("system", "user", "assistant", "tool", "developer")


def _parse_data_url(url, path: str) -> ImageBlock:
    want_str(url, path)
    if not url.startswith("data:image/") or ";base64," not in url:
        raise fail(path, "only data:image/<format>;base64,... URLs are supported by this gateway; "
                   "inline the image instead of linking to it")
    head, data = url.split(";base64,", 1)
    fmt = head[len("data:image/"):]
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in IMAGE_FORMATS:
        raise fail(path, f"image type {fmt!r} is not supported; use one of {', '.join(IMAGE_FORMATS)}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise fail(path, "the data URL is not valid base64") from None
    return ImageBlock(fmt, check_image_bytes(raw, fmt, path))


def _parse_content(c, path: str, *, allow_empty: bool = False) -> list[TextBlock | ImageBlock]:
    if isinstance(c, str):
        if not c.strip():
            if allow_empty:
                return []
            raise fail(path, "is blank; send the message text")
        return [TextBlock(c)]
    if c is None and allow_empty:
        return []
    blocks = []
    for i, part in enumerate(want_list(c, path, min_len=0 if allow_empty else 1, what="content parts")):
        p = f"{path}[{i}]"
        want_dict(part, p)
        t = part.get("type", "text" if "text" in part else None)
        if t == "text":
            blocks.append(TextBlock(want_str(part.get("text"), f"{p}.text")))
        elif t == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            blocks.append(_parse_data_url(url, f"{p}.image_url.url"))
        else:
            raise fail(f"{p}.type", f"unknown content part type {t!r}; expected text or image_url")
    return blocks


def _parse_tool_calls(calls, path: str) -> list[ToolUseBlock]:
    out = []
    for i, c in enumerate(want_list(calls, path, what="tool calls")):
        p = f"{path}[{i}]"
        want_dict(c, p)
        fn = want_dict(c.get("function"), f"{p}.function")
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise fail(f"{p}.function.arguments", "is not valid JSON; send the arguments as a JSON "
                           "object encoded in a string") from None
        out.append(ToolUseBlock(want_str(c.get("id"), f"{p}.id", nonblank=True),
                                want_str(fn.get("name"), f"{p}.function.name", nonblank=True), args))
    return out


def parse_openai_messages(raw, path: str = "messages") -> tuple[list[str], list[Message]]:
    if raw is None:
        raise fail(path, "required; send [{\"role\": \"user\", \"content\": \"Hello\"}]")
    system: list[str] = []
    turns: list[tuple[str, list]] = []      # (role, blocks): consecutive tool results share a user turn
    for i, m in enumerate(want_list(raw, path, min_len=1, what="messages")):
        p = f"{path}[{i}]"
        want_dict(m, p)
        role = want_enum(m.get("role"), f"{p}.role", _ROLES)
        if role in ("system", "developer"):
            system.extend(b.text for b in _parse_content(m.get("content"), f"{p}.content") if type(b) is TextBlock)
        elif role == "tool":
            tid = want_str(m.get("tool_call_id"), f"{p}.tool_call_id", nonblank=True)
            content = _parse_content(m.get("content", ""), f"{p}.content", allow_empty=True)
            block = ToolResultBlock(tid, content, "success")
            if turns and turns[-1][0] == "user" and all(type(b) is ToolResultBlock for b in turns[-1][1]):
                turns[-1][1].append(block)
            else:
                turns.append(("user", [block]))
        else:
            calls = m.get("tool_calls") if role == "assistant" else None
            blocks = _parse_content(m.get("content"), f"{p}.content", allow_empty=bool(calls))
            if calls:
                blocks += _parse_tool_calls(calls, f"{p}.tool_calls")
            turns.append((role, blocks))
    if not turns:
        raise fail(path, "has only system messages; add a user message")
    return system, [Message(role, blocks) for role, blocks in turns]


def _parse_tools(raw) -> list[Tool]:
    tools = []
    for i, t in enumerate(want_list(raw, "tools", what="tools")):
        p = f"tools[{i}]"
        want_dict(t, p)
        if t.get("type", "function") != "function":
            raise fail(f"{p}.type", f"{t.get('type')!r} tools are not supported; use \"function\"")
        fn = want_dict(t.get("function"), f"{p}.function")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        tools.append(Tool(want_str(fn.get("name"), f"{p}.function.name", max_len=64, pattern=TOOL_NAME),
                          want_str(fn.get("description", ""), f"{p}.function.description"),
                          want_dict(params, f"{p}.function.parameters")))
    return tools


def _parse_tool_choice(raw, tools: list[Tool]) -> ToolChoice:
    if isinstance(raw, str):
        c = want_enum(raw, "tool_choice", ("auto", "any", "required", "none"))
        return ToolChoice("any" if c == "required" else c)
    want_dict(raw, "tool_choice")
    name = want_str(want_dict(raw.get("function"), "tool_choice.function").get("name"),
                    "tool_choice.function.name", nonblank=True)
    if name not in {t.name for t in tools}:
        raise fail("tool_choice.function.name", f"names tool {name!r}, which is not in tools")
    return ToolChoice("tool", name)


def finish_reason(stop: str) -> str:
    """A canonical stop reason -> the OpenAI-style finish reason."""
    return {"max_tokens": "length", "tool_use": "tool_calls", "content_filtered": "content_filter",
            "guardrail_intervened": "content_filter"}.get(stop, "stop")


def _render_calls(content) -> list[dict]:
    return [{"id": t.tool_use_id, "type": "function", "function": {"name": t.name, "arguments": json.dumps(t.input)}}
            for t in tool_uses(content)]


def _usage(u: Usage) -> dict:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.total_tokens}


class OpenAIChat(Family):
    """A generic OpenAI-like chat body (gpt-oss, DeepSeek, Qwen ... on Bedrock)."""

    name = "openai-chat"
    stop_key = "finish_reason"
    with_ids = True
    openai_object = True
    temp_hi = 2.0

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        system, messages = parse_openai_messages(body.get("messages"))
        fields: dict = {"messages": messages, "system": system}
        used = {"messages", "tools", "tool_choice", "stream", "model", "n", "max_completion_tokens"}
        take_sampling(body, fields, max_tokens="max_tokens", top_k=None, stop="stop", temp_hi=self.temp_hi,
                      used=used)
        if fields.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
            fields["max_tokens"] = want_int(body["max_completion_tokens"], "max_completion_tokens", lo=1)
        if body.get("n") is not None and want_int(body["n"], "n", lo=1) != 1:
            raise fail("n", "only 1 completion per request is supported by this gateway; send n=1")
        take_tools(body, fields, _parse_tools, _parse_tool_choice)
        return ChatRequest(**fields, extra=leftovers(body, used))

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        msg: dict = {"role": "assistant", "content": text_of(resp.content)}
        calls = _render_calls(resp.content)
        if calls:
            msg["tool_calls"] = calls
        out: dict = {}
        if self.with_ids:
            out["id"] = response_id or make_id("chatcmpl-", model_id, msg["content"])
            if self.openai_object:
                out["object"] = "chat.completion"
                out["model"] = model_id
        out["choices"] = [{"index": 0, "message": msg, self.stop_key: finish_reason(resp.stop_reason)}]
        if self.with_ids:
            out["usage"] = _usage(resp.usage)
        return out


class _DeltaEncoder(StreamEncoder):
    """OpenAI chat.completion.chunk style."""

    __slots__ = ("calls",)

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.calls: dict[int, int] = {}  # content block index -> tool call ordinal

    def _chunk(self, delta: dict, finish=None) -> dict:
        if self.first:
            delta = {"role": "assistant", **delta}
            self.first = False
        return {"id": "chatcmpl-" + self.response_id[:24], "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def on_text(self, index: int, text: str) -> list[dict]:
        return [self._chunk({"content": text})]

    def on_block_start(self, ev: BlockStart) -> list[dict]:
        if type(ev) is not ToolUseStart:
            return []
        k = self.calls[ev.index] = len(self.calls)
        return [self._chunk({"tool_calls": [{"index": k, "id": ev.tool_use_id, "type": "function",
                                             "function": {"name": ev.name, "arguments": ""}}]})]

    def on_other_delta(self, ev: BlockDelta) -> list[dict]:
        if type(ev) is not ToolInputDelta:
            return []
        k = self.calls.setdefault(ev.index, len(self.calls))
        return [self._chunk({"tool_calls": [{"index": k, "function": {"arguments": ev.input}}]})]

    def on_final(self, usage: Usage) -> list[dict]:
        c = self._chunk({}, finish_reason(self.stop))
        c["usage"] = _usage(usage)
        return [c]


OpenAIChat.encoder = _DeltaEncoder
GENERIC = OpenAIChat()
