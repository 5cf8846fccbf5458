"""Canonical model <-> OpenAI Chat Completions. Pure: functions over dicts, no I/O.

Also serves every OpenAI-compatible server (vLLM, Ollama, Groq, Together, Azure OpenAI: the body is
the same); `OpenAIDialect` holds the few knobs where those servers differ. `mistral/api.py` reuses
this module through `ChatStyle`, `to_chat_request`, `from_chat_response` and `OpenAIStreamDecoder`.

Request (canonical -> provider)
-------------------------------
    ChatRequest.system[k]               {"role": "system", "content": s}, one each, first
    TextBlocks only                     "content": the texts joined (a string)
    text + image/document blocks        "content": parts, in block order:
      TextBlock                           {"type": "text", "text"}
      ImageBlock (png, jpeg, gif, webp)   {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}
      DocumentBlock txt/md/csv/html       {"type": "text", "text": '<document name="NAME">\\n...\\n</document>'}
                                          (text source, or utf-8 bytes; `context` becomes a context="..." attribute)
      DocumentBlock pdf (bytes)           {"type": "file", "file": {"filename": "NAME.pdf",
                                                                    "file_data": "data:application/pdf;base64,..."}}
      DocumentBlock doc/docx/xls/xlsx     ValidationException naming the provider, kind and block path
    assistant ToolUseBlocks             "tool_calls": [{"id", "type": "function",
                                                        "function": {"name", "arguments": compact JSON}}]
                                        with the message's text in "content" (null when none)
    user ToolResultBlocks               one {"role": "tool", "tool_call_id", "content": text} per result,
                                        before the rest of that user turn. Items are joined with "\\n";
                                        JsonBlock items become compact JSON; text documents the tagged text.
                                        status "error": the API has no flag, so content starts "Error: ".
                                        Images (and binary documents) in a result: ValidationException,
                                        a tool message takes text only.
    Reasoning/RedactedReasoningBlock    dropped: the API has no input slot for earlier reasoning. An
                                        assistant message left with nothing is dropped too.
    tool ids longer than 40 chars       "call_" + a hash (OpenAI rejects longer ids); the same id always
                                        maps the same way, so a toolUse and its toolResult still match
    max_tokens                          dialect.max_tokens_field ("max_completion_tokens" or "max_tokens")
    temperature, top_p                  temperature, top_p
    stop_sequences                      "stop" (omitted when empty)
    top_k                               "top_k", only when "top_k" is in dialect.passthrough_fields
    tools                               [{"type": "function", "function": {"name", "description", "parameters"}}]
    ToolChoice auto / any / none        "auto" / "required" / "none"
    ToolChoice("tool", N)               {"type": "function", "function": {"name": N}}
                                        (with no tools: auto and none are omitted, which means the same;
                                        any and tool are a ValidationException)
    ChatRequest.extra                   only `OPENAI_FIELDS` (documented request fields) and
                                        dialect.passthrough_fields; never the fields set above, never
                                        anthropic_* keys; null values are left out. Everything else is
                                        dropped: additionalModelRequestFields meant for other models.
    stream=True                         "stream": true, and "stream_options": {"include_usage": true}
                                        when dialect.stream_usage

Response (provider -> canonical)
--------------------------------
    message.reasoning_content           a ReasoningBlock (no signature), first (vLLM, DeepSeek); else
      or message.reasoning                `reasoning` (vLLM >= 0.10, Groq, OpenRouter). Never both.
    message.content                     a string -> one TextBlock; a list of parts -> TextBlocks
                                        (adjacent text parts merged) and ReasoningBlocks for
                                        Mistral's {"type": "thinking", "thinking": [{"type": "text"}]}
    message.refusal                     a TextBlock, stopReason content_filtered
    message.tool_calls                  ToolUseBlocks; input = json.loads(arguments) ("" -> {}, an
                                        object is taken as is); invalid JSON -> {} and stopReason
                                        malformed_tool_use (unless the answer hit max_tokens)
    finish_reason                       stop -> end_turn, length -> max_tokens, tool_calls and
                                        function_call -> tool_use, content_filter -> content_filtered;
                                        anything else -> end_turn. "stop" with tool calls -> tool_use
                                        (Ollama and others say "stop"). vLLM's choice.stop_reason
                                        string (the stop string that matched) -> stop_sequence.
    usage                               input = prompt_tokens - cached, cache_read = cached
                                        (prompt_tokens_details.cached_tokens, or DeepSeek's
                                        prompt_cache_hit_tokens), output = completion_tokens: Bedrock's
                                        inputTokens excludes cache reads. No usage: output is estimated
                                        from the answer, input is left 0 for the caller to fill.
    model                               ChatResponse.model
    no choices[0].message               ModelErrorException (provider_errors.bad_body)

Stream (chat.completion.chunk objects -> canonical stream events)
----------------------------------------------------------------
    first chunk                         MessageStart()
    delta.reasoning_content / reasoning ReasoningDeltas (no start event)
    delta.content (str or parts)        TextDeltas (no start event); thinking parts -> ReasoningDeltas
    delta.refusal                       TextDeltas; the stop reason becomes content_filtered
    delta.tool_calls[]                  ToolUseStart(index, id, name) once id and name are known, then
                                        ToolInputDelta(index, fragment)s. A call is found by its id,
                                        else by its index. A tool block that got no arguments at all
                                        gets one "{}" delta.
    finish_reason                       every open/buffered block is closed (BlockStop), then
                                        MessageStop(stop reason, the vLLM stop string if any)
    usage (any chunk; x_groq.usage)     remembered; finish() returns Metadata(usage)
    {"error": {...}} / event: error     provider_errors.in_stream
    finish() before a finish_reason     provider_errors.cut_stream

Blocks are numbered 0, 1, 2 ... in order of appearance and only one is open at a time. A kind change
(reasoning -> text -> tool) or a new tool call closes the open block, except that a tool call whose
arguments are not yet a complete JSON value stays open: anything that arrives meanwhile (the
fragments of a parallel call, text) is buffered and sent, in order, once it is complete or at the
finish_reason. So interleaved parallel calls still come out as well-formed sequential blocks.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import string
from dataclasses import dataclass
from typing import Any, Callable

import msgspec

from finops.shared import errors
from finops.shared.model import (BlockStop, ChatRequest, ChatResponse, DocumentBlock, ImageBlock, JsonBlock, Message,
                                 MessageStart, MessageStop, Metadata, ReasoningBlock, ReasoningDelta,
                                 RedactedReasoningBlock, StreamEvent, TextBlock, TextDelta, ToolChoice,
                                 ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart, Usage, estimate_tokens)

from .. import provider_errors
from ..common import ProviderAPI, b64, compact_json, fail, make_id

# Documented Chat Completions request fields a ChatRequest.extra key may set
# (platform.openai.com/docs/api-reference/chat/create). The deprecated functions/function_call are
# left out: they would contradict `tools`.
OPENAI_FIELDS = frozenset({
    "audio", "frequency_penalty", "logit_bias", "logprobs", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "store",
    "top_logprobs", "user", "verbosity", "web_search_options"})

# Fields to_chat_request sets itself: ChatRequest.extra never overrides them.
RESERVED_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "tools", "tool_choice"})

OPENAI_FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "function_call": "tool_use", "content_filter": "content_filtered"}

TEXT_DOCUMENTS = ("txt", "md", "csv", "html")
OPENAI_MAX_TOOL_ID = 40
_ALNUM = string.digits + string.ascii_letters


@dataclass(frozen=True, slots=True)
class OpenAIDialect:
    provider: str                                     # provider name from config, used in messages
    max_tokens_field: str = "max_completion_tokens"   # or "max_tokens" (older compatible servers)
    stream_usage: bool = True                         # send stream_options={"include_usage": True} when streaming
    passthrough_fields: frozenset = frozenset()       # ChatRequest.extra keys to pass besides the documented


# --- small helpers -------------------------------------------------------------------------------

def hash_id(value: str, n: int) -> str:
    """`n` letters and digits derived from `value` (deterministic, no randomness)."""
    num = int.from_bytes(hashlib.sha256(value.encode()).digest(), "big")
    out = []
    for _ in range(n):
        num, r = divmod(num, 62)
        out.append(_ALNUM[r])
    return "".join(out)


def openai_tool_id(tid: str) -> str:
    """OpenAI rejects tool call ids longer than 40 characters; Bedrock allows 64."""
    return tid if len(tid) <= OPENAI_MAX_TOOL_ID else "call_" + hash_id(tid, 24)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{b64(data)}"


def _openai_image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _openai_pdf(name: str, data: bytes) -> dict:
    filename = name if name.lower().endswith(".pdf") else f"{name}.pdf"
    return {"type": "file", "file": {"filename": filename, "file_data": data_url("application/pdf", data)}}


@dataclass(frozen=True, slots=True)
class ChatStyle:
    """Where the OpenAI-style dialects differ in the request body."""
    api: str                                       # for messages, e.g. "OpenAI Chat Completions"
    image: Callable[[str], dict]                   # image data URL -> content part
    pdf: Callable[[str, bytes], dict] | None       # (name, bytes) -> content part; None: not accepted
    tool_id: Callable[[str], str]                  # canonical toolUseId -> the id the API accepts
    any_choice: str                                # the tool_choice string for {"any": {}}
    documented: frozenset                          # ChatRequest.extra keys the API documents
    renames: tuple = ()                            # (extra key, API field) pairs, e.g. seed -> random_seed
    tool_result_name: bool = False                 # tool messages carry the tool's "name"
    bridge_after_tool: str | None = None           # assistant text inserted between a tool and a user message


OPENAI_STYLE = ChatStyle(api="OpenAI Chat Completions", image=_openai_image, pdf=_openai_pdf,
                         tool_id=openai_tool_id, any_choice="required", documented=OPENAI_FIELDS)


# --- request -------------------------------------------------------------------------------------

def _document_text(d: DocumentBlock, path: str) -> str | None:
    """The `<document>`-tagged text of a text document, or None for a binary one."""
    if d.text is not None:
        text = d.text
    elif d.format in TEXT_DOCUMENTS:
        try:
            text = d.data.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{path}.document", f"the {d.format} document is not UTF-8 text; "
                       "send it UTF-8 encoded") from None
    else:
        return None
    attrs = f' name="{html.escape(d.name or "document")}"'
    if d.context:
        attrs += f' context="{html.escape(d.context)}"'
    return f"<document{attrs}>\n{text}\n</document>"


def _binary_document(d: DocumentBlock, path: str, provider: str, style: ChatStyle, *, in_tool: bool = False) -> dict:
    fmt = d.format
    if fmt == "pdf" and style.pdf is not None and not in_tool:
        return style.pdf(d.name or "document", d.data)
    if in_tool:
        raise fail(path, f"provider {provider!r} cannot take a {fmt} document in a tool result: "
                   f"{style.api} tool messages carry text only. Send the document's text "
                   "(a txt or md document, or a text block) instead")
    accepted = "txt, md, csv, html" + (" or pdf" if style.pdf is not None else "")
    raise fail(path, f"provider {provider!r} cannot read {fmt} documents ({style.api} takes {accepted}); "
               f"convert it and send it as one of those formats, or send its text in a text block")


def _user_part(b, path: str, provider: str, style: ChatStyle) -> dict:
    match b:
        case TextBlock():
            return {"type": "text", "text": b.text}
        case ImageBlock():
            return style.image(data_url(f"image/{b.format}", b.data))
        case DocumentBlock():
            text = _document_text(b, path)
            if text is not None:
                return {"type": "text", "text": text}
            return _binary_document(b, path, provider, style)
        case ToolUseBlock():
            raise fail(path, "a toolUse block belongs in an assistant message; move it there")
    raise fail(path, f"{b.kind} blocks cannot be sent to provider {provider!r} ({style.api}); "
               "send text, image or document blocks")


def _tool_message(t: ToolResultBlock, path: str, provider: str, style: ChatStyle, names: dict) -> dict:
    texts = []
    for k, c in enumerate(t.content):
        cp = f"{path}.toolResult.content[{k}]"
        match c:
            case TextBlock():
                texts.append(c.text)
            case JsonBlock():
                texts.append(compact_json(c.value))
            case DocumentBlock():
                text = _document_text(c, cp)
                if text is None:
                    _binary_document(c, cp, provider, style, in_tool=True)
                texts.append(text)
            case ImageBlock():
                raise fail(cp, f"provider {provider!r} cannot take an image in a tool result: {style.api} "
                           "tool messages carry text only. Describe the image in text, or send it as an "
                           "image block of a user message")
    content = "\n".join(texts)
    if t.status == "error":
        content = "Error: " + content
    msg = {"role": "tool", "tool_call_id": style.tool_id(t.tool_use_id), "content": content}
    if style.tool_result_name and names.get(t.tool_use_id):
        msg["name"] = names[t.tool_use_id]
    return msg


def _user_messages(m: Message, path: str, provider: str, style: ChatStyle, names: dict) -> list[dict]:
    """One user turn -> its tool messages, then the user message with the rest (if any)."""
    tools, parts = [], []
    text_only = True
    for j, b in enumerate(m.content):
        bp = f"{path}.content[{j}]"
        if type(b) is ToolResultBlock:
            tools.append(_tool_message(b, bp, provider, style, names))
        elif type(b) in (ReasoningBlock, RedactedReasoningBlock):
            continue
        else:
            text_only = text_only and type(b) is TextBlock
            parts.append(_user_part(b, bp, provider, style))
    if parts:
        content = "".join(p["text"] for p in parts) if text_only else parts
        tools.append({"role": "user", "content": content})
    return tools


def _tool_call(t: ToolUseBlock, style: ChatStyle) -> dict:
    return {"id": style.tool_id(t.tool_use_id), "type": "function",
            "function": {"name": t.name, "arguments": compact_json(t.input)}}


def _assistant_message(m: Message, path: str, provider: str, style: ChatStyle) -> dict | None:
    texts, calls = [], []
    for j, b in enumerate(m.content):
        bp = f"{path}.content[{j}]"
        match b:
            case TextBlock():
                texts.append(b.text)
            case ToolUseBlock():
                calls.append(_tool_call(b, style))
            case ReasoningBlock() | RedactedReasoningBlock():
                continue
            case ToolResultBlock():
                raise fail(bp, "a toolResult block belongs in a user message; move it there")
            case _:
                raise fail(bp, f"provider {provider!r} ({style.api}) takes only text and tool calls in "
                           f"assistant messages; remove the {b.kind} block or move it to a user message")
    if not texts and not calls:
        return None
    msg: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def build_messages(req: ChatRequest, provider: str, style: ChatStyle) -> list[dict]:
    out: list[dict] = [{"role": "system", "content": s} for s in req.system]
    names = {b.tool_use_id: b.name for m in req.messages for b in m.content
             if type(b) is ToolUseBlock} if style.tool_result_name else {}
    for i, m in enumerate(req.messages):
        path = f"messages[{i}]"
        if m.role == "assistant":
            msg = _assistant_message(m, path, provider, style)
            new = [msg] if msg else []
        else:
            new = _user_messages(m, path, provider, style, names)
        for msg in new:
            if style.bridge_after_tool and msg["role"] == "user" and out and out[-1]["role"] == "tool":
                out.append({"role": "assistant", "content": style.bridge_after_tool})
            out.append(msg)
    return out


def build_tools(req: ChatRequest) -> list[dict]:
    out = []
    for t in req.tools:
        fn: dict = {"name": t.name}
        if t.description:
            fn["description"] = t.description
        fn["parameters"] = t.input_schema or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": fn})
    return out


def build_tool_choice(choice: ToolChoice, has_tools: bool, style: ChatStyle) -> str | dict | None:
    """The tool_choice value, or None to leave it out (only when that means the same)."""
    kind = choice.kind
    if not has_tools:
        if kind in ("auto", "none"):
            return None
        raise fail("toolConfig.toolChoice", f"{kind} needs tools; add toolConfig.tools or remove toolChoice")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return style.any_choice if kind == "any" else kind


def pass_extra(extra: dict, style: ChatStyle, passthrough: frozenset) -> dict:
    """The ChatRequest.extra keys the API documents (renamed where it names them differently) or
    that the operator allowed; anthropic_* keys never."""
    out: dict = {}
    renames = dict(style.renames)
    for key, value in extra.items():
        if value is None or key in RESERVED_FIELDS or key.startswith("anthropic"):
            continue
        if key in renames:
            continue
        if key in style.documented or key in passthrough:
            out[key] = value
    for key, field in style.renames:  # an explicit field wins over its alias
        if extra.get(key) is not None and field not in out:
            out[field] = extra[key]
    return out


def to_chat_request(req: ChatRequest, model: str, *, stream: bool, provider: str, style: ChatStyle,
               max_tokens_field: str, stream_usage: bool, passthrough: frozenset) -> dict:
    body: dict = {"model": model, "messages": build_messages(req, provider, style)}
    if req.max_tokens is not None:
        body[max_tokens_field] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None and "top_k" in passthrough:
        body["top_k"] = req.top_k
    if req.stop_sequences:
        body["stop"] = list(req.stop_sequences)
    if req.tools:
        body["tools"] = build_tools(req)
    if req.tool_choice is not None:
        choice = build_tool_choice(req.tool_choice, bool(req.tools), style)
        if choice is not None:
            body["tool_choice"] = choice
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    for key, value in pass_extra(req.extra, style, passthrough).items():
        body.setdefault(key, value)
    return body


def to_openai_request(req: ChatRequest, model: str, *, stream: bool, dialect: OpenAIDialect) -> dict:
    """ChatRequest -> the Chat Completions request body.

    Raises:
        GatewayError(ValidationException): content the API cannot take, naming the provider and
            the block (e.g. ``messages[2].content[1]``).
    """
    body = to_chat_request(req, model, stream=stream, provider=dialect.provider, style=OPENAI_STYLE,
                           max_tokens_field=dialect.max_tokens_field, stream_usage=dialect.stream_usage,
                           passthrough=frozenset(dialect.passthrough_fields))
    tier = OPENAI_SERVICE_TIERS.get(req.service_tier)
    if tier:            # only when the client asked for one: OpenAI-compatible servers may not know the field
        body.setdefault("service_tier", tier)
    return body


# Bedrock serviceTier.type -> OpenAI service_tier (Chat Completions): the same names. Bedrock's
# "reserved" (provisioned capacity) has no pay-as-you-go OpenAI counterpart ("scale" needs a
# Scale Tier contract): it is not sent, and OpenAI serves the request in the project's default tier.
OPENAI_SERVICE_TIERS = {"priority": "priority", "default": "default", "flex": "flex"}


# --- response ------------------------------------------------------------------------------------

def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else 0


def parse_usage(u: Any) -> Usage | None:
    """An OpenAI usage object -> Usage in Bedrock terms (inputTokens excludes cache reads)."""
    if not isinstance(u, dict):
        return None
    prompt = _int(u.get("prompt_tokens"))
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached or _int(u.get("prompt_cache_hit_tokens")), prompt)
    return Usage(prompt - cached, _int(u.get("completion_tokens")), cached, 0)


def reasoning_of(obj: dict) -> str:
    """`reasoning_content` (vLLM, DeepSeek), else `reasoning` (vLLM >= 0.10, Groq, OpenRouter)."""
    for key in ("reasoning_content", "reasoning"):
        v = obj.get(key)
        if isinstance(v, str) and v:
            return v
    return ""


def content_pieces(c: Any) -> list[tuple[str, str]]:
    """A content value (string or list of parts) -> [("text" | "reasoning", text)], empty ones left out."""
    if isinstance(c, str):
        return [("text", c)] if c else []
    out: list[tuple[str, str]] = []
    for part in c if isinstance(c, list) else ():
        if isinstance(part, str):
            kind, text = "text", part
        elif not isinstance(part, dict):
            continue
        elif part.get("type", "text") == "text":
            kind, text = "text", part.get("text")
        elif part.get("type") == "thinking":  # Mistral (Magistral): {"thinking": [{"type": "text", "text"}]}
            inner = part.get("thinking")
            kind = "reasoning"
            text = inner if isinstance(inner, str) else "".join(content for _, content in content_pieces(inner))
        else:
            continue  # references, images and other parts carry nothing for a Bedrock client
        if isinstance(text, str) and text:
            out.append((kind, text))
    return out


def parse_arguments(args: Any) -> tuple[Any, bool]:
    """Tool call arguments -> (input, well-formed). "" -> {}; an object is taken as is (Mistral)."""
    if isinstance(args, dict):
        return args, True
    if args is None or (isinstance(args, str) and not args.strip()):
        return {}, True
    if isinstance(args, str):
        try:
            return json.loads(args), True
        except ValueError:
            return {}, False
    return {}, False


def stop_reason(finish: Any, table: dict, *, tools: bool, refused: bool = False,
                malformed: bool = False, matched: Any = None) -> str:
    """finish_reason -> canonical stopReason (see the module docstring for the precedence)."""
    reason = table.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if reason == "end_turn" and tools:
        reason = "tool_use"
    if malformed and reason in ("end_turn", "tool_use"):
        reason = "malformed_tool_use"
    if refused and reason in ("end_turn", "tool_use"):
        reason = "content_filtered"
    if reason == "end_turn" and isinstance(matched, str) and matched:
        reason = "stop_sequence"
    return reason


def _finish_error(provider: str, finish: str, *, stream: bool) -> errors.GatewayError:
    what = f"the model stopped with finish_reason {finish!r}"
    if stream:
        return provider_errors.in_stream(provider, {"message": what})
    return errors.model_error(f"provider {provider!r}: {what}; the answer is incomplete. Retry.")


def _first_message(doc: Any, provider: str) -> tuple[dict, dict]:
    def bad(problem: str) -> errors.GatewayError:
        try:
            raw = json.dumps(doc).encode()
        except (TypeError, ValueError):
            raw = repr(doc).encode()
        return provider_errors.bad_body(provider, 200, raw, problem)

    if not isinstance(doc, dict):
        raise bad("a JSON value that is not an object")
    if doc.get("error") is not None:
        raise bad("an error object instead of a completion")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("no choices")
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        raise bad("no choices[0].message")
    return choices[0], msg


def parse_tool_calls(calls: Any, response_id: str) -> tuple[list[ToolUseBlock], bool]:
    """message.tool_calls -> (toolUse blocks, all well-formed)."""
    out, ok = [], True
    for k, c in enumerate(calls if isinstance(calls, list) else ()):
        if not isinstance(c, dict):
            ok = False
            continue
        fn = c.get("function") if isinstance(c.get("function"), dict) else {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            name, ok = "", False
        value, good = parse_arguments(fn.get("arguments"))
        tid = c.get("id") if isinstance(c.get("id"), str) and c.get("id") else make_id("call_", response_id, str(k))
        out.append(ToolUseBlock(tid, name, value))
        ok = ok and good
    return out, ok


def from_chat_response(doc: dict, *, provider: str, finish_table: dict = OPENAI_FINISH,
               error_finish: frozenset = frozenset()) -> ChatResponse:
    choice, msg = _first_message(doc, provider)
    finish = choice.get("finish_reason")
    if finish in error_finish:
        raise _finish_error(provider, finish, stream=False)
    content: list = []
    reasoning = reasoning_of(msg)
    if reasoning:
        content.append(ReasoningBlock(reasoning))
    for kind, text in content_pieces(msg.get("content")):
        if kind == "reasoning":
            content.append(ReasoningBlock(text))
        elif content and type(content[-1]) is TextBlock:
            content[-1] = TextBlock(content[-1].text + text)
        else:
            content.append(TextBlock(text))
    refusal = msg.get("refusal")
    refused = isinstance(refusal, str) and bool(refusal)
    if refused:
        content.append(TextBlock(refusal))
    calls, well_formed = parse_tool_calls(msg.get("tool_calls"), str(doc.get("id") or ""))
    content += calls
    matched = choice.get("stop_reason")
    usage = parse_usage(doc.get("usage"))
    if usage is None:
        usage = Usage(0, estimate_tokens("".join(_generated_text(content))))
    if isinstance(doc.get("service_tier"), str) and doc["service_tier"]:
        usage = msgspec.structs.replace(usage, service_tier=doc["service_tier"][:32])
    return ChatResponse(
        content=content,
        stop_reason=stop_reason(finish, finish_table, tools=bool(calls), refused=refused,
                                malformed=not well_formed, matched=matched),
        usage=usage, model=str(doc.get("model") or ""),
        stop_sequence=matched if isinstance(matched, str) and matched else None)


def _generated_text(content: list):
    for b in content:
        if type(b) in (TextBlock, ReasoningBlock):
            yield b.text
        elif type(b) is ToolUseBlock:
            yield compact_json(b.input)


def from_openai_response(doc: dict, *, provider: str) -> ChatResponse:
    """A Chat Completions answer -> ChatResponse.

    Raises:
        GatewayError(ModelErrorException): the document has no choices[0].message.
    """
    return from_chat_response(doc, provider=provider)


# --- stream --------------------------------------------------------------------------------------

_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


class _JsonEnd:
    """Tells, fragment by fragment, when a JSON object or array is complete (brackets balanced
    outside strings). Scalars never count as complete: they are only closed at the finish."""

    __slots__ = ("depth", "in_str", "esc", "done")

    def __init__(self):
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.done = False

    def feed(self, s: str) -> None:
        i, n = 0, len(s)
        if self.esc and n:
            i, self.esc = 1, False
        while (m := _JSON_SPECIAL.search(s, i)) is not None:
            c, i = m.group(), m.end()
            if self.in_str:
                if c == "\\":
                    if i < n:
                        i += 1
                    else:
                        self.esc = True
                elif c == '"':
                    self.in_str = False
            elif c == '"':
                self.in_str = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]" and self.depth > 0:
                self.depth -= 1
                self.done = self.depth == 0

    @property
    def complete(self) -> bool:
        return self.done and self.depth == 0 and not self.in_str


class _Call:
    __slots__ = ("id", "name", "args", "scan", "seg")

    def __init__(self, tid: str | None, name: str | None):
        self.id = tid
        self.name = name
        self.args: list[str] = []
        self.scan = _JsonEnd()
        self.seg: _Segment | None = None


class _Segment:
    """One canonical block: "text", "reasoning" or "tool". `parts` holds what is not sent yet."""

    __slots__ = ("kind", "index", "parts", "started", "closed", "call")

    def __init__(self, kind: str, index: int, call: _Call | None = None):
        self.kind = kind
        self.index = index
        self.parts: list[str] = []
        self.started = False
        self.closed = False
        self.call = call


class OpenAIStreamDecoder:
    """Chat Completions SSE chunks -> canonical StreamEvents (ConverseStream order).

    feed(event, data) takes one SSE `data:` object (not the "[DONE]" sentinel); finish() is called
    at [DONE] or the end of the body. See the module docstring for the rules.
    """

    finish_table: dict = OPENAI_FINISH
    error_finish: frozenset = frozenset()

    def __init__(self, provider: str, input_tokens: int):
        self.provider = provider
        self.input_tokens = input_tokens
        self._started = False
        self._segments: list[_Segment] = []
        self._head = 0                       # the first segment not yet closed
        self._calls: list[_Call] = []
        self._by_id: dict[tuple, _Call] = {}
        self._by_index: dict[Any, _Call] = {}
        self._stop: str | None = None
        self._usage: Usage | None = None
        self._generated: list[str] = []
        self._refused = False
        self._late = False                   # arguments arrived for an already closed tool block
        self._chunk_id = ""
        self._tier = ""                      # the service_tier the chunks report

    # feeding ------------------------------------------------------------------------------------
    def feed(self, event: str | None, data: dict) -> list[StreamEvent]:
        if not isinstance(data, dict):
            raise provider_errors.in_stream(self.provider, {"message": "a stream chunk that is not a JSON object"})
        if event == "error" or data.get("error") is not None:
            raise provider_errors.in_stream(self.provider, data.get("error", data))
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(MessageStart())
        if not self._chunk_id and isinstance(data.get("id"), str):
            self._chunk_id = data["id"]
        if isinstance(data.get("service_tier"), str) and data["service_tier"]:
            self._tier = data["service_tier"][:32]
        x_groq = data.get("x_groq")
        usage = parse_usage(data.get("usage") or (x_groq.get("usage") if isinstance(x_groq, dict) else None))
        if usage is not None:
            self._usage = usage
        if self._stop is None:
            for choice in data.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, out)
        return out

    def _choice(self, choice: dict, out: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_of(delta)
            if reasoning:
                self._text("reasoning", reasoning, out)
            for kind, text in content_pieces(delta.get("content")):
                self._text(kind, text, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                self._text("text", refusal, out)
            calls = delta.get("tool_calls")
            for pos, tc in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(tc, dict):
                    self._tool(pos, tc, out)
        finish = choice.get("finish_reason")
        if finish:
            self._finish(finish, choice.get("stop_reason"), out)

    def _new_segment(self, kind: str, call: _Call | None = None) -> _Segment:
        seg = _Segment(kind, len(self._segments), call)
        self._segments.append(seg)
        return seg

    def _push(self, seg: _Segment, text: str, out: list[StreamEvent]) -> None:
        if seg.started and self._head == seg.index:
            out.append(self._delta(seg, text))
        else:
            seg.parts.append(text)

    def _text(self, kind: str, text: str, out: list[StreamEvent]) -> None:
        self._generated.append(text)
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.kind != kind:
            seg = self._new_segment(kind)
        self._push(seg, text, out)
        self._advance(out)

    def _find_call(self, pos: int, tc: dict) -> _Call:
        """A call is the one with its id and index; without an id, the latest call at its index.
        A new id at an index whose call has no id yet is that call's id arriving late."""
        index = tc.get("index")
        index = index if isinstance(index, int) else pos
        tid = tc.get("id") if isinstance(tc.get("id"), str) and tc.get("id") else None
        if tid:
            call = self._by_id.get((tid, index))
            if call is None:
                prev = self._by_index.get(index)
                if prev is not None and prev.id is None and not prev.seg.started:
                    call = prev
                    call.id = tid
        else:
            call = self._by_index.get(index)
        if call is None:
            call = _Call(tid, None)
            call.seg = self._new_segment("tool", call)
            self._calls.append(call)
        if tid:
            self._by_id[(tid, index)] = call
        self._by_index[index] = call
        return call

    def _tool(self, pos: int, tc: dict, out: list[StreamEvent]) -> None:
        call = self._find_call(pos, tc)
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
        name = fn.get("name")
        if isinstance(name, str) and name and not call.name:
            call.name = name
        args = fn.get("arguments")
        if isinstance(args, dict):  # Mistral may send the arguments as an object
            args = compact_json(args)
        if isinstance(args, str) and args:
            if call.seg.closed:
                self._late = self._late or bool(args.strip())
            else:
                call.args.append(args)
                call.scan.feed(args)
                self._generated.append(args)
                self._push(call.seg, args, out)
        self._advance(out)

    # emitting -----------------------------------------------------------------------------------
    @staticmethod
    def _delta(seg: _Segment, text: str) -> StreamEvent:
        if seg.kind == "text":
            return TextDelta(seg.index, text)
        if seg.kind == "reasoning":
            return ReasoningDelta(seg.index, text)
        return ToolInputDelta(seg.index, text)

    def _start(self, seg: _Segment, out: list[StreamEvent], *, force: bool = False) -> bool:
        """Open `seg` (a tool block needs its name) and send what it buffered."""
        if seg.kind == "tool":
            call = seg.call
            if not call.name and not force:
                return False
            if not call.id:
                call.id = make_id("call_", self._chunk_id, str(self._calls.index(call)))
            out.append(ToolUseStart(seg.index, call.id, call.name or ""))
        seg.started = True
        if seg.parts:
            out.append(self._delta(seg, "".join(seg.parts)))
            seg.parts.clear()
        return True

    def _close(self, seg: _Segment, out: list[StreamEvent]) -> None:
        if seg.kind == "tool" and not seg.call.args:
            out.append(self._delta(seg, "{}"))  # what the non-streaming answer would say: input {}
        out.append(BlockStop(seg.index))
        seg.closed = True

    def _advance(self, out: list[StreamEvent]) -> None:
        """Open the head block; close it when nothing more can arrive for it and a later block waits."""
        while self._head < len(self._segments):
            seg = self._segments[self._head]
            if not seg.started and not self._start(seg, out):
                return
            if self._head == len(self._segments) - 1:
                return
            if seg.kind == "tool" and not seg.call.scan.complete:
                return
            self._close(seg, out)
            self._head += 1

    def _finish(self, finish: str, matched: Any, out: list[StreamEvent]) -> None:
        if finish in self.error_finish:
            raise _finish_error(self.provider, finish, stream=True)
        for seg in self._segments[self._head:]:
            if not seg.started:
                self._start(seg, out, force=True)
            self._close(seg, out)
        self._head = len(self._segments)
        malformed = self._late or any(not c.name or not parse_arguments("".join(c.args))[1] for c in self._calls)
        self._stop = stop_reason(finish, self.finish_table, tools=bool(self._calls), refused=self._refused,
                                 malformed=malformed, matched=matched)
        out.append(MessageStop(self._stop, matched if self._stop == "stop_sequence" else None))

    def finish(self) -> list[StreamEvent]:
        """At [DONE] or the end of the body: the final metadata event.

        Raises:
            GatewayError(ModelStreamErrorException): no finish_reason arrived (a cut stream).
        """
        if self._stop is None:
            raise provider_errors.cut_stream(self.provider, "no finish_reason")
        usage = self._usage or Usage(self.input_tokens, estimate_tokens("".join(self._generated)))
        if self._tier:
            usage = msgspec.structs.replace(usage, service_tier=self._tier)
        return [Metadata(usage)]


API = ProviderAPI(to_openai_request, from_openai_response, OpenAIStreamDecoder)
