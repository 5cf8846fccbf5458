"""Canonical model <-> the Anthropic Messages API (``POST /v1/messages``, SSE streaming). Pure.

This is the inverse of `invoke.py` beside it, which reads Bedrock's Claude InvokeModel body (the
same Messages shape plus ``anthropic_version``) into the canonical model; the two share its tables
(media types, stop reasons).

Request (canonical -> Anthropic)
--------------------------------
    ChatRequest                         Messages request
    model argument                      model
    max_tokens                          max_tokens (dialect.default_max_tokens when None: Anthropic requires it)
    system ["a", "b"]                   system [{"type":"text","text":"a"}, ...]       omitted when empty
    temperature, top_p, top_k           temperature, top_p, top_k                      omitted when None
    stop_sequences                      stop_sequences                                 omitted when empty
    tools [Tool]                        tools [{"name","description"?,"input_schema"}] description omitted when ""
    ToolChoice auto / any / none        tool_choice {"type": "auto"|"any"|"none"}
    ToolChoice("tool", name)            tool_choice {"type":"tool","name"}
    stream=True                         "stream": true (no "stream" key otherwise)
    extra[anthropic_beta]               not in the body: `beta_header()` gives the anthropic-beta HTTP header
    extra[f], f in REQUEST_FIELDS       f (thinking, metadata, service_tier, container, mcp_servers,
                                        context_management, output_config, output_format, inference_geo)
    extra[f], f in SLOT_FIELDS          f, only when the canonical slot is empty (a Converse client's
                                        additionalModelRequestFields {"top_k": 250}, say)
    extra[f], f in dialect.passthrough_fields   f (the operator vouched for it), unless the
                                        translator owns f (OWNED_FIELDS: model, messages, stream ...)
    any other extra field               dropped: it belongs to another format (Nova's inferenceConfig,
                                        Bedrock's anthropic_version ...) and Anthropic answers 400 to
                                        unknown fields. `dropped_extra()` names them for logs.

    content block                       Anthropic block
    TextBlock                           {"type":"text","text"}
    ImageBlock(format, data)            {"type":"image","source":{"type":"base64","media_type":"image/<format>",
                                                                 "data": b64}}
    DocumentBlock pdf, data             {"type":"document","title": name, "context"?,
                                         "source":{"type":"base64","media_type":"application/pdf","data": b64}}
    DocumentBlock txt/md/csv/html,      {"type":"document","title": name, "context"?,
      text or UTF-8 data                 "source":{"type":"text","media_type":"text/plain","data": text}}
                                        (any document with text goes this way)
    DocumentBlock doc/docx/xls/xlsx     ValidationException naming the provider, the format and the block path
    ToolUseBlock                        {"type":"tool_use","id","name","input"}
    ToolResultBlock                     {"type":"tool_result","tool_use_id","content":[...],
                                         "is_error": true only when status is "error"}
        content TextBlock                 {"type":"text","text"}  (empty text is skipped: the API rejects empty
                                                                   text blocks)
        content JsonBlock                 {"type":"text","text": compact JSON}
        content ImageBlock / DocumentBlock  as above
    ReasoningBlock(text, signature)     {"type":"thinking","thinking","signature"}; without a signature (reasoning
                                         another provider produced) the block is dropped, since Anthropic
                                         refuses unsigned thinking, and a message left empty is dropped too
    RedactedReasoningBlock(data)        {"type":"redacted_thinking","data": b64}
    cache_points (Converse cachePoint)  "cache_control": {"type": "ephemeral"} (+ "ttl": "1h" for a 1h
                                        checkpoint) on the item just before each checkpoint: the last tool,
                                        system text or content block that precedes it in prefix order
                                        (tools, system, messages), as Anthropic's breakpoints mark the end
                                        of the prefix to cache. At most four (the Converse parser refuses
                                        more, as Bedrock does). Anthropic silently caches nothing when the
                                        prefix is below the model's minimum (1024 tokens for most Claude
                                        models, 2048 for Haiku 3/3.5, 4096 for Opus 4.5 and Haiku 4.5):
                                        the answer then reports no cache tokens and costs full input.
Messages keep their roles and block order, one Anthropic message per canonical message (several
tool calls of one turn stay in one message). Tool-use ids are sent as they are.

Response (Anthropic -> canonical)
---------------------------------
    content text / tool_use / thinking / redacted_thinking   TextBlock / ToolUseBlock / ReasoningBlock /
                                        RedactedReasoningBlock
    other block types (server_tool_use, web_search_tool_result, mcp_tool_use, container_upload ...)
                                        skipped: the server ran those tools itself, and the canonical model
                                        (like Converse) has no block for them. Text citations are dropped too.
    stop_reason                         STOP_FROM_ANTHROPIC: pause_turn -> end_turn, refusal -> content_filtered,
                                        unknown or null -> end_turn
    stop_sequence                       ChatResponse.stop_sequence
    usage input/output/cache_read_input/cache_creation_input_tokens -> Usage input/output/cache_read/cache_write
    usage cache_creation.ephemeral_1h_input_tokens -> Usage cache_write_1h (the 1-hour part of cache_write)
    model                               ChatResponse.model
    redacted_thinking data              base64-decoded to bytes (data that is not base64 is kept as its UTF-8 bytes)
A document without a "content" list is not a Messages response: ModelErrorException (bad_body, HTTP 200).

Stream (Anthropic SSE events -> canonical stream events, see `finops.shared.model`)
----------------------------------------------------------------------------------
    message_start                       MessageStart(usage?: Usage(provider input, cache))
    content_block_start text            nothing (canonical streams announce tool blocks only);
                                        non-empty start text -> TextDelta
    content_block_start thinking        nothing; non-empty start thinking/signature -> ReasoningDelta,
                                        ReasoningSignatureDelta
    content_block_start redacted_thinking  RedactedReasoningDelta(data: bytes)
    content_block_start tool_use        ToolUseStart(index, id, name) (+ a non-empty start input as one
                                        ToolInputDelta)
    content_block_start (other types)   nothing, and the block gets no canonical index
    content_block_delta text_delta      TextDelta                                  (empty skipped)
                        input_json_delta  ToolInputDelta(fragment)               (empty skipped)
                        thinking_delta  ReasoningDelta                             (empty skipped)
                        signature_delta ReasoningSignatureDelta
                        citations_delta and unknown types: skipped
    content_block_stop                  BlockStop; a tool block that had no input fragment first gets
                                        the fragment "{}" so that its input always parses as JSON
    message_delta                       remembered: stop_reason, stop_sequence, usage (cumulative)
    message_stop                        BlockStop for blocks still open, then MessageStop(mapped stop
                                        reason, stop_sequence)
    ping, unknown events                ignored
    error                               raises provider_errors.in_stream(provider, data["error"])
    finish() without message_stop       raises provider_errors.cut_stream
    finish()                            Metadata(usage): the provider's numbers; input_tokens from the
                                        constructor and an output estimate when the provider sent none
Canonical block indexes are 0, 1, 2 ... in order of appearance; skipped blocks leave no gap.

Native pass-through
-------------------
A Bedrock Claude Messages body is already a Messages request: `native_request` drops
``anthropic_version``/``anthropic_beta`` (the latter becomes the anthropic-beta header), sets
``model`` and ``stream``. `native_usage` and `NativeStreamTracker` read usage, stop reason and
errors from the answer, which goes back to the client unchanged.
"""
from __future__ import annotations

import base64
import binascii
import bisect
from dataclasses import dataclass

import msgspec

from finops.shared.model import (BlockStop, ChatRequest, ChatResponse, DocumentBlock, ImageBlock, JsonBlock,
                                 MessageStart, MessageStop, Metadata, ReasoningBlock, ReasoningDelta,
                                 ReasoningSignatureDelta, RedactedReasoningBlock, RedactedReasoningDelta,
                                 StreamEvent, TextBlock, TextDelta, Tool, ToolChoice, ToolInputDelta,
                                 ToolResultBlock, ToolUseBlock, ToolUseStart, Usage, estimate_tokens)

from .. import provider_errors
from ..common import ProviderAPI, b64, compact_json, fail
from .invoke import MEDIA_TYPES, STOP_TO_ANTHROPIC

# --- tables -------------------------------------------------------------------------------------

IMAGE_MEDIA_TYPES = {fmt: media for media, fmt in MEDIA_TYPES.items()}   # "png" -> "image/png"
PDF_MEDIA_TYPE = "application/pdf"
TEXT_DOCUMENT_FORMATS = ("txt", "md", "csv", "html")
OFFICE_FORMATS = ("doc", "docx", "xls", "xlsx")

# Anthropic stop_reason -> canonical: the inverse of the family's table where it is one-to-one,
# plus the reasons only the API sends. guardrail_intervened has no Anthropic spelling.
STOP_FROM_ANTHROPIC = {anth: canon for canon, anth in STOP_TO_ANTHROPIC.items() if canon != "guardrail_intervened"}
STOP_FROM_ANTHROPIC["pause_turn"] = "end_turn"      # a server tool paused the turn: the answer so far is final here

# Documented Messages API request fields the canonical model has no slot for (API reference).
REQUEST_FIELDS = frozenset({"thinking", "metadata", "service_tier", "container", "mcp_servers",
                            "context_management", "output_config", "output_format", "inference_geo"})
# Fields with a canonical slot: taken from extra only when the slot is empty.
SLOT_FIELDS = ("temperature", "top_p", "top_k", "stop_sequences")
# Fields to_anthropic_request writes itself: extra never overrides them, not even through passthrough_fields.
OWNED_FIELDS = frozenset({"model", "messages", "max_tokens", "system", "tools", "tool_choice", "stream",
                          "anthropic_version", "anthropic_beta"})

# Anthropic usage field -> Usage attribute
USAGE_FIELDS = (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                ("cache_read_input_tokens", "cache_read_tokens"),
                ("cache_creation_input_tokens", "cache_write_tokens"))


@dataclass(frozen=True, slots=True)
class AnthropicDialect:
    provider: str                       # provider name from config, used in messages
    default_max_tokens: int = 4096      # Anthropic requires max_tokens; used when the request has none
    passthrough_fields: frozenset = frozenset()


# --- request ------------------------------------------------------------------------------------

def _image(img: ImageBlock) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": IMAGE_MEDIA_TYPES[img.format],
                                        "data": b64(img.data)}}


def _document_text(doc: DocumentBlock, path: str, provider: str) -> str:
    if doc.text is not None:
        return doc.text
    try:
        return doc.data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"{path}.document.source.bytes",
                   f"provider {provider!r} reads {doc.format} documents as plain text, and these bytes "
                   "are not UTF-8; send the document as UTF-8 text or as a PDF") from None


def _document(doc: DocumentBlock, path: str, provider: str) -> dict:
    fmt = doc.format
    if doc.text is not None or fmt in TEXT_DOCUMENT_FORMATS:
        source = {"type": "text", "media_type": "text/plain", "data": _document_text(doc, path, provider)}
    elif fmt == "pdf":
        source = {"type": "base64", "media_type": PDF_MEDIA_TYPE, "data": b64(doc.data)}
    else:
        raise fail(path, f"provider {provider!r} cannot read {fmt} documents (the Anthropic API takes PDF and "
                   "plain text); convert the document to PDF, or send its text as a txt, md, csv or html document")
    out = {"type": "document", "source": source, "title": doc.name or "document"}
    if doc.context:
        out["context"] = doc.context
    return out


def _tool_result(t: ToolResultBlock, path: str, provider: str) -> dict:
    content = []
    for i, c in enumerate(t.content):
        match c:
            case TextBlock():
                if c.text:
                    content.append({"type": "text", "text": c.text})
            case JsonBlock():
                content.append({"type": "text", "text": compact_json(c.value)})
            case ImageBlock():
                content.append(_image(c))
            case DocumentBlock():
                content.append(_document(c, f"{path}.toolResult.content[{i}]", provider))
    out = {"type": "tool_result", "tool_use_id": t.tool_use_id, "content": content}
    if t.status == "error":
        out["is_error"] = True
    return out


def _block(b, path: str, provider: str) -> dict:
    match b:
        case TextBlock():
            return {"type": "text", "text": b.text}
        case ImageBlock():
            return _image(b)
        case DocumentBlock():
            return _document(b, path, provider)
        case ToolUseBlock():
            return {"type": "tool_use", "id": b.tool_use_id, "name": b.name, "input": b.input}
        case ToolResultBlock():
            return _tool_result(b, path, provider)
        case ReasoningBlock():
            out = {"type": "thinking", "thinking": b.text}
            if b.signature is not None:
                out["signature"] = b.signature
            return out
        case RedactedReasoningBlock():
            return {"type": "redacted_thinking", "data": b64(b.data)}
    raise TypeError(f"not a content block: {type(b).__name__}")


def _unsigned_reasoning(b) -> bool:
    return type(b) is ReasoningBlock and not b.signature


def _tool(t: Tool) -> dict:
    out = {"name": t.name}
    if t.description:
        out["description"] = t.description
    out["input_schema"] = t.input_schema
    return out


def _tool_choice(choice: ToolChoice) -> dict:
    return {"type": "tool", "name": choice.name} if choice.kind == "tool" else {"type": choice.kind}


def _wanted_extra(req: ChatRequest, dialect: AnthropicDialect) -> dict:
    out = {}
    for k, v in req.extra.items():
        if k in OWNED_FIELDS:
            continue
        if k in SLOT_FIELDS:
            if getattr(req, k) in (None, ()):
                out[k] = v
        elif k in REQUEST_FIELDS or k in dialect.passthrough_fields:
            out[k] = v
    return out


def dropped_extra(req: ChatRequest, dialect: AnthropicDialect) -> list[str]:
    """The ChatRequest.extra fields to_anthropic_request does not send (for a log line)."""
    sent = _wanted_extra(req, dialect)
    return sorted(k for k in req.extra if k not in sent and k != "anthropic_beta")


def cache_control(ttl: str | None) -> dict:
    """The Anthropic breakpoint of a Converse cachePoint: ephemeral, with "ttl" only for "1h"."""
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


_SECTION_ORDER = {"tools": 0, "system": 1, "messages": 2}


def _place_cache_points(req: ChatRequest, slots: list[tuple[tuple, dict]]) -> None:
    """Put cache_control on the block before each of req.cache_points.

    `slots` are the rendered items in prompt-prefix order (tools, system, messages), each with its
    canonical position: (0, tool index), (1, system index), (2, message index, block index). A
    checkpoint at `after` in a section marks the last rendered item before that position, which
    may be in an earlier message or section when nothing of its own list precedes it (a
    checkpoint with nothing at all before it marks nothing). Two checkpoints on one item are one
    breakpoint; the longer TTL wins."""
    positions = [pos for pos, _ in slots]
    for cp in req.cache_points:
        sec = _SECTION_ORDER[cp.section]
        at = (sec, cp.message, cp.after) if cp.section == "messages" else (sec, cp.after)
        i = bisect.bisect_left(positions, at) - 1
        if i < 0:
            continue
        item = slots[i][1]
        if item.get("cache_control", {}).get("ttl") != "1h":
            item["cache_control"] = cache_control(cp.ttl)


def to_anthropic_request(req: ChatRequest, model: str, *, stream: bool, dialect: AnthropicDialect) -> dict:
    """ChatRequest -> the /v1/messages JSON body. Raises ValidationException for content the API
    cannot take (Office documents, non-UTF-8 text documents), naming the block."""
    p = dialect.provider
    body: dict = {"model": model,
                  "max_tokens": req.max_tokens if req.max_tokens is not None else dialect.default_max_tokens}
    slots: list[tuple[tuple, dict]] = []
    tools = []
    for k, t in enumerate(req.tools):
        tools.append(_tool(t))
        slots.append(((0, k), tools[-1]))
    system = []
    for k, s in enumerate(req.system):
        if s:
            system.append({"type": "text", "text": s})
            slots.append(((1, k), system[-1]))
    if system:
        body["system"] = system
    messages = []
    for i, m in enumerate(req.messages):
        content = []
        for j, b in enumerate(m.content):
            if not _unsigned_reasoning(b):
                content.append(_block(b, f"messages[{i}].content[{j}]", p))
                slots.append(((2, i, j), content[-1]))
        if content:
            messages.append({"role": m.role, "content": content})
    body["messages"] = messages
    if req.cache_points:
        _place_cache_points(req, slots)
    for k in ("temperature", "top_p", "top_k"):
        if getattr(req, k) is not None:
            body[k] = getattr(req, k)
    if req.stop_sequences:
        body["stop_sequences"] = list(req.stop_sequences)
    if tools:
        body["tools"] = tools
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    body.update(_wanted_extra(req, dialect))
    if stream:
        body["stream"] = True
    return body


def _beta_value(v) -> str | None:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)):
        return None
    names = [s.strip() for s in v if isinstance(s, str) and s.strip()]
    return ",".join(names) or None


def beta_header(req: ChatRequest) -> str | None:
    """ChatRequest.extra["anthropic_beta"] (a list or a string) -> the anthropic-beta header value."""
    return _beta_value(req.extra.get("anthropic_beta"))


# --- response -----------------------------------------------------------------------------------

def _bad(provider: str, doc, problem: str):
    return provider_errors.bad_body(provider, 200, compact_json(doc).encode()[:200], problem)


def _redacted_bytes(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return data.encode("utf-8")


def _want_str(block: dict, key: str, where: str, provider: str, doc) -> str:
    v = block.get(key)
    if not isinstance(v, str):
        raise _bad(provider, doc, f"a Messages response whose {where} has no string {key!r}")
    return v


def _response_block(b, i: int, provider: str, doc):
    if not isinstance(b, dict):
        raise _bad(provider, doc, f"a Messages response whose content[{i}] is not an object")
    t = b.get("type")
    where = f"content[{i}] ({t})"
    if t == "text":
        return TextBlock(_want_str(b, "text", where, provider, doc))
    if t == "tool_use":
        return ToolUseBlock(_want_str(b, "id", where, provider, doc), _want_str(b, "name", where, provider, doc),
                            b.get("input", {}))
    if t == "thinking":
        sig = b.get("signature")
        return ReasoningBlock(_want_str(b, "thinking", where, provider, doc), sig if isinstance(sig, str) else None)
    if t == "redacted_thinking":
        return RedactedReasoningBlock(_redacted_bytes(_want_str(b, "data", where, provider, doc)))
    return None   # server tool blocks and future types: see the module docstring


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _usage_fields(raw) -> dict:
    """An Anthropic usage object -> {Usage attribute: int} for the fields it carries; the 1-hour
    part of the cache writes from `cache_creation.ephemeral_1h_input_tokens`."""
    if not isinstance(raw, dict):
        return {}
    out = {attr: _int(raw.get(name)) for name, attr in USAGE_FIELDS if _int(raw.get(name)) is not None}
    cc = raw.get("cache_creation")
    if isinstance(cc, dict) and _int(cc.get("ephemeral_1h_input_tokens")) is not None:
        out["cache_write_1h_tokens"] = max(0, cc["ephemeral_1h_input_tokens"])
    return out


def stop_reason(value) -> str:
    return STOP_FROM_ANTHROPIC.get(value, "end_turn")


def from_anthropic_response(doc: dict, *, provider: str) -> ChatResponse:
    """A /v1/messages answer -> ChatResponse. Raises ModelErrorException for a body that is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        raise _bad(provider, doc, "a body that is not an Anthropic Messages response (no \"content\" list)")
    content = [c for i, b in enumerate(doc["content"]) if (c := _response_block(b, i, provider, doc)) is not None]
    seq = doc.get("stop_sequence")
    model = doc.get("model")
    return ChatResponse(content=content, stop_reason=stop_reason(doc.get("stop_reason")),
                        usage=Usage(**_usage_fields(doc.get("usage"))),
                        model=model if isinstance(model, str) else "",
                        stop_sequence=seq if isinstance(seq, str) else None)


# --- stream -------------------------------------------------------------------------------------

class _Block:
    """A content block of the stream: its canonical index, its type, whether a tool block got input."""
    __slots__ = ("index", "type", "has_input")

    def __init__(self, index: int, type_: str):
        self.index = index
        self.type = type_
        self.has_input = False


def _event_name(event: str | None, data: dict) -> str | None:
    """The event's name: the `event:` field, else the data's "type" (Bedrock chunks have no event line)."""
    if event and event != "message":
        return event
    t = data.get("type")
    return t if isinstance(t, str) else event


class AnthropicStreamDecoder:
    """Anthropic SSE events -> canonical StreamEvents (table in the module docstring).

    Keeps: the Anthropic index -> canonical block map (None for a skipped block), the blocks still
    open, the stop reason and the provider's usage fields, and the generated text for an output
    estimate when the provider reports none.
    """

    __slots__ = ("provider", "input_tokens", "started", "done", "finished", "blocks", "open", "next_index",
                 "stop", "stop_sequence", "usage", "pieces")

    def __init__(self, provider: str, input_tokens: int):
        self.provider = provider
        self.input_tokens = input_tokens
        self.started = False
        self.done = False             # message_stop seen
        self.finished = False
        self.blocks: dict[int, _Block | None] = {}
        self.open: dict[int, _Block] = {}     # Anthropic index -> block, in order of opening
        self.next_index = 0
        self.stop: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict = {}
        self.pieces: list[str] = []

    # --- entry points ---------------------------------------------------------------------
    def feed(self, event: str | None, data: dict) -> list[StreamEvent]:
        if not isinstance(data, dict):
            raise self._bad(f"an SSE event whose data is not a JSON object ({event or 'no event name'})")
        name = _event_name(event, data)
        if name == "error":
            raise provider_errors.in_stream(self.provider, data.get("error", data))
        if self.done:
            return []
        handler = _HANDLERS.get(name)
        return handler(self, data) if handler else []

    def finish(self) -> list[StreamEvent]:
        if not self.done:
            raise provider_errors.cut_stream(self.provider, self._cut_reason())
        if self.finished:
            return []
        self.finished = True
        u = self.usage
        usage = Usage(input_tokens=u.get("input_tokens", self.input_tokens),
                      output_tokens=u.get("output_tokens", estimate_tokens("".join(self.pieces))),
                      cache_read_tokens=u.get("cache_read_tokens", 0),
                      cache_write_tokens=u.get("cache_write_tokens", 0),
                      cache_write_1h_tokens=u.get("cache_write_1h_tokens", 0))
        return [Metadata(usage)]

    # --- helpers --------------------------------------------------------------------------
    def _cut_reason(self) -> str:
        if not self.started:
            return "no message_start event"
        if self.open:
            return f"no message_stop event; content block {next(iter(self.open))} was still open"
        return "no message_stop event"

    def _bad(self, problem: str):
        return provider_errors.bad_body(self.provider, 200, b"", problem)

    def _start(self) -> list[StreamEvent]:
        if self.started:
            return []
        self.started = True
        return [MessageStart()]

    def _index(self, data: dict, what: str) -> int:
        i = data.get("index")
        if _int(i) is None:
            raise self._bad(f"a {what} event without an integer \"index\"")
        return i

    def _indexed(self, data: dict, what: str, key: str) -> tuple[int, dict]:
        """(the event's Anthropic block index, its `key` object), both required."""
        aindex = self._index(data, what)
        obj = data.get(key)
        if not isinstance(obj, dict):
            raise self._bad(f"a {what} event without a \"{key}\" object")
        return aindex, obj

    def _new_block(self, aindex: int, type_: str) -> _Block:
        blk = _Block(self.next_index, type_)
        self.next_index += 1
        self.blocks[aindex] = blk
        self.open[aindex] = blk
        return blk

    # --- handlers -------------------------------------------------------------------------
    def on_message_start(self, data: dict) -> list[StreamEvent]:
        msg = data.get("message")
        fields = _usage_fields(msg.get("usage")) if isinstance(msg, dict) else {}
        self.usage.update(fields)
        out = self._start()
        if out and "input_tokens" in fields:
            out[0] = MessageStart(Usage(fields["input_tokens"], 0, fields.get("cache_read_tokens", 0),
                                        fields.get("cache_write_tokens", 0),
                                        cache_write_1h_tokens=fields.get("cache_write_1h_tokens", 0)))
        return out

    def on_block_start(self, data: dict) -> list[StreamEvent]:
        aindex, cb = self._indexed(data, "content_block_start", "content_block")
        t = cb.get("type")
        out = self._start()
        if t not in ("text", "thinking", "redacted_thinking", "tool_use"):
            self.blocks[aindex] = None
            return out
        blk = self._new_block(aindex, t)
        if t == "text":
            if isinstance(cb.get("text"), str) and cb["text"]:
                out.append(self._text(blk, cb["text"]))
        elif t == "thinking":
            if isinstance(cb.get("thinking"), str) and cb["thinking"]:
                out.append(self._reasoning(blk, cb["thinking"]))
            if isinstance(cb.get("signature"), str) and cb["signature"]:
                out.append(ReasoningSignatureDelta(blk.index, cb["signature"]))
        elif t == "redacted_thinking":
            data_ = cb.get("data")
            out.append(RedactedReasoningDelta(blk.index, _redacted_bytes(data_) if isinstance(data_, str) else b""))
        else:
            tid, name = cb.get("id"), cb.get("name")
            if not isinstance(tid, str) or not isinstance(name, str):
                raise self._bad("a tool_use content_block_start without string \"id\" and \"name\"")
            out.append(ToolUseStart(blk.index, tid, name))
            if cb.get("input"):
                out.append(self._input(blk, compact_json(cb["input"])))
        return out

    def _text(self, blk: _Block, text: str) -> StreamEvent:
        self.pieces.append(text)
        return TextDelta(blk.index, text)

    def _reasoning(self, blk: _Block, text: str) -> StreamEvent:
        self.pieces.append(text)
        return ReasoningDelta(blk.index, text)

    def _input(self, blk: _Block, fragment: str) -> StreamEvent:
        blk.has_input = True
        self.pieces.append(fragment)
        return ToolInputDelta(blk.index, fragment)

    def on_block_delta(self, data: dict) -> list[StreamEvent]:
        aindex, d = self._indexed(data, "content_block_delta", "delta")
        t = d.get("type")
        out = self._start()
        if aindex not in self.blocks:    # a delta with no content_block_start: open the block it implies
            kind = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking"}.get(t)
            if kind is None:
                return out
            self._new_block(aindex, kind)
        blk = self.blocks[aindex]
        if blk is None:
            return out
        val = d.get({"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking",
                     "signature_delta": "signature"}.get(t, ""))
        if not isinstance(val, str) or not val:
            return out
        if t == "text_delta":
            out.append(self._text(blk, val))
        elif t == "input_json_delta":
            out.append(self._input(blk, val))
        elif t == "thinking_delta":
            out.append(self._reasoning(blk, val))
        else:
            out.append(ReasoningSignatureDelta(blk.index, val))
        return out

    def _close(self, aindex: int) -> list[StreamEvent]:
        blk = self.open.pop(aindex)
        out = []
        if blk.type == "tool_use" and not blk.has_input:
            out.append(self._input(blk, "{}"))
        out.append(BlockStop(blk.index))
        return out

    def on_block_stop(self, data: dict) -> list[StreamEvent]:
        aindex = self._index(data, "content_block_stop")
        out = self._start()
        if aindex in self.open:
            out += self._close(aindex)
        return out

    def on_message_delta(self, data: dict) -> list[StreamEvent]:
        d = data.get("delta")
        if isinstance(d, dict):
            if d.get("stop_reason") is not None:
                self.stop = d["stop_reason"]
            if isinstance(d.get("stop_sequence"), str):
                self.stop_sequence = d["stop_sequence"]
        self.usage.update(_usage_fields(data.get("usage")))
        return []

    def on_message_stop(self, data: dict) -> list[StreamEvent]:
        out = self._start()
        for aindex in list(self.open):
            out += self._close(aindex)
        out.append(MessageStop(stop_reason(self.stop), self.stop_sequence))
        self.done = True
        return out


_HANDLERS = {
    "message_start": AnthropicStreamDecoder.on_message_start,
    "content_block_start": AnthropicStreamDecoder.on_block_start,
    "content_block_delta": AnthropicStreamDecoder.on_block_delta,
    "content_block_stop": AnthropicStreamDecoder.on_block_stop,
    "message_delta": AnthropicStreamDecoder.on_message_delta,
    "message_stop": AnthropicStreamDecoder.on_message_stop,
}   # ping and unknown events: no handler, ignored


# --- native pass-through ------------------------------------------------------------------------

def native_request(body: dict, model: str, *, stream: bool) -> tuple[dict, list[tuple[str, str]]]:
    """A Bedrock Claude Messages body -> (the /v1/messages body, extra HTTP headers).

    Everything the client sent goes upstream except anthropic_version (Bedrock's, not the API's)
    and anthropic_beta (an HTTP header on the API); "model" is set, "stream" is true only when
    streaming.
    """
    out = {"model": model}
    out.update((k, v) for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta", "model", "stream"))
    if stream:
        out["stream"] = True
    beta = _beta_value(body.get("anthropic_beta"))
    return out, ([("anthropic-beta", beta)] if beta else [])


def native_usage(doc: dict) -> Usage:
    """The usage of a native Messages response (zeros for what it does not say)."""
    return Usage(**_usage_fields(doc.get("usage") if isinstance(doc, dict) else None))


class NativeStreamTracker:
    """Watches native Messages SSE events that are passed through unchanged.

    `usage` accumulates the provider's numbers (message_start, then cumulative message_delta),
    `stop_reason` is Anthropic's own value (end_turn, pause_turn, refusal ...), `done` turns true at
    message_stop. An error event raises the mapped GatewayError.
    """

    __slots__ = ("provider", "usage", "done", "stop_reason")

    def __init__(self, provider: str = "anthropic"):
        self.provider = provider
        self.usage = Usage()
        self.done = False
        self.stop_reason: str | None = None

    def feed(self, event: str | None, data: dict) -> None:
        if not isinstance(data, dict):
            return
        name = _event_name(event, data)
        if name == "error":
            raise provider_errors.in_stream(self.provider, data.get("error", data))
        if name == "message_start":
            msg = data.get("message")
            self._take_usage(msg.get("usage") if isinstance(msg, dict) else None)
        elif name == "message_delta":
            d = data.get("delta")
            if isinstance(d, dict) and isinstance(d.get("stop_reason"), str):
                self.stop_reason = d["stop_reason"]
            self._take_usage(data.get("usage"))
        elif name == "message_stop":
            self.done = True

    def _take_usage(self, raw) -> None:
        fields = _usage_fields(raw)
        if fields:
            self.usage = msgspec.structs.replace(self.usage, **fields)


API = ProviderAPI(to_anthropic_request, from_anthropic_response, AnthropicStreamDecoder)
