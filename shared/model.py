"""The canonical request, response and stream-event model. Pure.

Every inbound format (Converse, each model family's InvokeModel body) is parsed into a
`ChatRequest`; every provider answers with a `ChatResponse` or a sequence of stream events; every
outbound format is rendered from those.

Every type here is a frozen record (a msgspec Struct, as the envelopes in `envelope.py` are):
built once, read by attribute, never changed. Code that wants another value builds another
record (`msgspec.structs.replace(req, max_tokens=256)`). A constructor refuses what cannot be a
valid value where that is cheap to check (an unknown role, stop reason or image format, a
document with both bytes and text, a dict where a content block belongs) with a TypeError or
ValueError: that is a bug in the caller, never a client's mistake, which the formats report as
ValidationExceptions before they build anything. Sequences are tuples (a list given to a
constructor is copied into one); JSON values (tool inputs and schemas, `extra`) stay the dicts and
lists they were decoded into and are not to be changed.

Content blocks keep what Converse's content blocks say, the richest of the formats we speak, with
blobs as raw bytes instead of base64. A block's `kind` is the Converse member it stands for:

    TextBlock(text)                                        text
    ImageBlock(format, data)                               image: format png | jpeg | gif | webp
    DocumentBlock(name, format, data | text, context?)     document: exactly one of data (bytes) and text
    ToolUseBlock(tool_use_id, name, input)                 toolUse: input is a JSON value
    ToolResultBlock(tool_use_id, content, status)          toolResult: content is TextBlock | JsonBlock |
                                                           ImageBlock | DocumentBlock items;
                                                           status "success" | "error"
    ReasoningBlock(text, signature?)                       reasoningContent.reasoningText
    RedactedReasoningBlock(data)                           reasoningContent.redactedContent

`ChatRequest.cache_points` are the request's prompt-cache checkpoints (Converse `cachePoint`
blocks), `CachePoint(section, after, message, ttl)`: where each stood, since a checkpoint is no
content; providers with breakpoints (Anthropic's `cache_control`) place them, the others ignore them.

`ChatRequest.tool_choice` is a `ToolChoice`: kind "auto", "any", "tool" (with the tool's name) or
"none" (the Anthropic, Mistral and OpenAI-style bodies can say "none"; Converse cannot).

Stream events mirror ConverseStream, which every other stream format can be rendered from. Only
tool (and image) blocks are announced by a start event; every block ends with a BlockStop:

    MessageStart(usage?)                     the answer begins (role assistant; usage: an input estimate)
    ToolUseStart(index, tool_use_id, name)   a tool block begins           } BlockStart
    ImageStart(index, format)                an image block begins         }
    TextDelta(index, text)                                                 } BlockDelta
    ToolInputDelta(index, input)             a fragment of the tool input's JSON text
    ReasoningDelta(index, text)                                            }
    ReasoningSignatureDelta(index, signature)                              }
    RedactedReasoningDelta(index, data)                                    }
    ImageDelta(index, data)                                                }
    BlockStop(index)
    MessageStop(stop_reason, stop_sequence?)
    Metadata(usage, latency_ms, first_byte_latency_ms?)   last: what the answer cost and took

`Block`, `BlockStart`, `BlockDelta` and `StreamEvent` are the unions (`isinstance` takes them);
code dispatches on a record's type (`match`, or a table keyed by `type(ev)` on the hot paths).

Cost (Python 3.11, a shared 2-core machine, best of 7): a stream event costs about 0.1 us to build,
a third of the mutable `StreamEvent(kind, index, data: dict)` it replaced (a frozen dataclass would
cost twice as much as that one); a 20-delta ConverseStream answer's 24 events 4.6 us instead of
10; parsing a one-message Converse body 5.5 us instead of 4.7 (the constructors' checks).
scripts/pipeline_cost.py, the whole worker in process, before and after in one alternating run:
converse +0.002 ms, converse-stream -0.003 ms per request (best rounds; medians -0.005, -0.004).
"""
from __future__ import annotations

from typing import Any, ClassVar

import msgspec

STOP_REASONS = frozenset({"end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened",
                          "content_filtered", "malformed_model_output", "malformed_tool_use",
                          "model_context_window_exceeded"})
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
DOCUMENT_FORMATS = ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md")
ROLES = ("user", "assistant")
TOOL_CHOICES = ("auto", "any", "tool", "none")
TOOL_RESULT_STATUSES = ("success", "error")


class Record(msgspec.Struct, frozen=True, gc=False):
    """The base of every model type: frozen, slotted, compared by value. No reference cycles
    (gc=False): a record holds strings, numbers, bytes, JSON values and other records."""


def _tuple(rec: Record, name: str, value, allowed: frozenset | None = None) -> tuple:
    """`value` (field `name` of `rec`) stored as a tuple: a list is copied into one. With
    `allowed`, every item's type must be one of those."""
    if type(value) is not tuple:
        value = tuple(value)
        msgspec.structs.force_setattr(rec, name, value)
    if allowed is not None:
        for item in value:
            if type(item) not in allowed:
                raise TypeError(f"{type(rec).__name__}.{name}[{value.index(item)}]: {type(item).__name__} is not "
                                f"one of {', '.join(sorted(t.__name__ for t in allowed))}")
    return value


def _invalid(rec: Record, name: str, value, allowed) -> ValueError:
    return ValueError(f"{type(rec).__name__}.{name}: {value!r} is not one of {', '.join(sorted(allowed))}")


def _bytes(rec: Record, name: str, value) -> None:
    """Store `value` (field `name` of `rec`) as bytes: a bytearray or memoryview is copied."""
    if value is not None and type(value) is not bytes:
        msgspec.structs.force_setattr(rec, name, bytes(value))


# --- content blocks -------------------------------------------------------------------------------

class TextBlock(Record):
    kind: ClassVar[str] = "text"
    text: str


class ImageBlock(Record):
    kind: ClassVar[str] = "image"
    format: str
    data: bytes

    def __post_init__(self) -> None:
        if self.format not in IMAGE_FORMATS:
            raise _invalid(self, "format", self.format, IMAGE_FORMATS)
        _bytes(self, "data", self.data)


class DocumentBlock(Record):
    kind: ClassVar[str] = "document"
    name: str
    format: str = "txt"
    data: bytes | None = None
    text: str | None = None
    context: str | None = None

    def __post_init__(self) -> None:
        if self.format not in DOCUMENT_FORMATS:
            raise _invalid(self, "format", self.format, DOCUMENT_FORMATS)
        if (self.data is None) == (self.text is None):
            raise ValueError("DocumentBlock: give exactly one of data (bytes) and text")
        _bytes(self, "data", self.data)


class ToolUseBlock(Record):
    kind: ClassVar[str] = "toolUse"
    tool_use_id: str
    name: str
    input: Any = {}


class JsonBlock(Record):
    """A JSON item of a tool result (only there)."""
    kind: ClassVar[str] = "json"
    value: Any


class ToolResultBlock(Record):
    kind: ClassVar[str] = "toolResult"
    tool_use_id: str
    content: tuple[TextBlock | JsonBlock | ImageBlock | DocumentBlock, ...] = ()
    status: str = "success"

    def __post_init__(self) -> None:
        _tuple(self, "content", self.content, TOOL_RESULT_ITEMS)
        if self.status not in TOOL_RESULT_STATUSES:
            raise _invalid(self, "status", self.status, TOOL_RESULT_STATUSES)


class ReasoningBlock(Record):
    kind: ClassVar[str] = "reasoningContent"
    text: str
    signature: str | None = None


class RedactedReasoningBlock(Record):
    kind: ClassVar[str] = "reasoningContent"
    data: bytes

    def __post_init__(self) -> None:
        _bytes(self, "data", self.data)


Block = (TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ReasoningBlock
         | RedactedReasoningBlock)
ToolResultItem = TextBlock | JsonBlock | ImageBlock | DocumentBlock
BLOCKS = frozenset(Block.__args__)
TOOL_RESULT_ITEMS = frozenset(ToolResultItem.__args__)


# --- requests ---------------------------------------------------------------------------------------

class Tool(Record):
    name: str
    description: str = ""
    input_schema: dict = msgspec.field(default_factory=lambda: {"type": "object"})


class ToolChoice(Record):
    kind: str                    # "auto" | "any" | "tool" | "none"
    name: str | None = None      # the tool to call, for kind "tool" (only then)

    def __post_init__(self) -> None:
        if self.kind not in TOOL_CHOICES:
            raise _invalid(self, "kind", self.kind, TOOL_CHOICES)
        if (self.kind == "tool") != (self.name is not None):
            raise ValueError("ToolChoice: a name goes with kind 'tool', and only with it")

    def to_dict(self) -> dict:
        """The Converse-style tagged form: {"auto": {}}, {"tool": {"name": ...}} ..."""
        return {"tool": {"name": self.name}} if self.kind == "tool" else {self.kind: {}}


class Message(Record):
    role: str                    # "user" | "assistant"
    content: tuple[Block, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise _invalid(self, "role", self.role, ROLES)
        _tuple(self, "content", self.content, BLOCKS)


CACHE_SECTIONS = ("tools", "system", "messages")
CACHE_TTLS = ("5m", "1h")
MAX_CACHE_POINTS = 4            # Bedrock and Anthropic: at most four cache checkpoints per request


class CachePoint(Record):
    """A prompt-cache checkpoint (Converse `cachePoint`): everything before it is a prefix to cache.

    `after` counts the items of `section` before the checkpoint: tools, system texts, or (with
    `message`, the message's index) content blocks of that message. A checkpoint placed before
    any item of its list has `after` 0."""
    section: str                 # "tools" | "system" | "messages"
    after: int
    message: int = 0
    ttl: str | None = None       # "5m" | "1h"; None = the provider's default (5 minutes)

    def __post_init__(self) -> None:
        if self.section not in CACHE_SECTIONS:
            raise _invalid(self, "section", self.section, CACHE_SECTIONS)
        if self.ttl is not None and self.ttl not in CACHE_TTLS:
            raise _invalid(self, "ttl", self.ttl, CACHE_TTLS)


_MESSAGE = frozenset({Message})
_TOOL = frozenset({Tool})
_CACHE_POINT = frozenset({CachePoint})


class ChatRequest(Record):
    """What the caller asked for, independent of the format it arrived in."""
    messages: tuple[Message, ...]
    system: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    extra: dict = {}             # additionalModelRequestFields / family-only fields
    cache_points: tuple[CachePoint, ...] = ()   # Converse cachePoint blocks, in request order
    service_tier: str = ""       # Bedrock serviceTier.type asked for ("" = none): priority | default | flex | reserved

    def __post_init__(self) -> None:
        _tuple(self, "messages", self.messages, _MESSAGE)
        _tuple(self, "cache_points", self.cache_points, _CACHE_POINT)
        _tuple(self, "system", self.system)
        _tuple(self, "stop_sequences", self.stop_sequences)
        _tuple(self, "tools", self.tools, _TOOL)
        if self.tool_choice is not None and type(self.tool_choice) is not ToolChoice:
            raise TypeError(f"ChatRequest.tool_choice: {type(self.tool_choice).__name__} is not a ToolChoice")

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return text_of(m.content)
        return ""


class EmbedRequest(Record):
    texts: tuple[str, ...]
    dimensions: int | None = None
    extra: dict = {}

    def __post_init__(self) -> None:
        _tuple(self, "texts", self.texts)


# --- answers ----------------------------------------------------------------------------------------

class Usage(Record):
    """Token counts an answer reports. `cache_write_1h_tokens` is the part of `cache_write_tokens`
    written with a 1-hour TTL (Anthropic's `cache_creation.ephemeral_1h_input_tokens`, Bedrock's
    `cacheDetails` entry with ttl "1h"): priced at the 1-hour write price; the rest of the writes
    are 5-minute writes."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    service_tier: str = ""           # the tier the upstream reported serving it in ("" = it did not say)
    cache_write_1h_tokens: int = 0   # of cache_write_tokens, those with a 1-hour TTL

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def cache_details(self) -> list[dict]:
        """Converse's `cacheDetails`: the cache writes by TTL, 1h before 5m (as Bedrock sorts
        them), only the TTLs that wrote tokens; [] without cache writes."""
        one_hour = min(self.cache_write_1h_tokens, self.cache_write_tokens)
        d = []
        if one_hour:
            d.append({"ttl": "1h", "inputTokens": one_hour})
        if self.cache_write_tokens - one_hour:
            d.append({"ttl": "5m", "inputTokens": self.cache_write_tokens - one_hour})
        return d

    def to_converse(self) -> dict:
        d = {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
             "totalTokens": self.total_tokens}
        if self.cache_read_tokens:
            d["cacheReadInputTokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            d["cacheWriteInputTokens"] = self.cache_write_tokens
            d["cacheDetails"] = self.cache_details()
        return d

    def to_wire(self) -> dict:
        d = {"in": self.input_tokens, "out": self.output_tokens,
             "cr": self.cache_read_tokens, "cw": self.cache_write_tokens}
        if self.cache_write_1h_tokens:
            d["cw1h"] = min(self.cache_write_1h_tokens, self.cache_write_tokens)
        if self.service_tier:
            d["tier"] = self.service_tier
        return d


class ChatResponse(Record):
    content: tuple[Block, ...]
    stop_reason: str = "end_turn"
    usage: Usage = msgspec.field(default_factory=Usage)
    latency_ms: int = 0
    model: str = ""
    stop_sequence: str | None = None

    def __post_init__(self) -> None:
        _tuple(self, "content", self.content, BLOCKS)
        if self.stop_reason not in STOP_REASONS:
            raise _invalid(self, "stop_reason", self.stop_reason, STOP_REASONS)


class EmbedResponse(Record):
    embeddings: tuple[list[float], ...]      # one vector per input text
    input_tokens: int = 0

    def __post_init__(self) -> None:
        _tuple(self, "embeddings", self.embeddings)


# --- stream events ----------------------------------------------------------------------------------
# Built per delta on the hot path: no checks beyond the stop reason, once per stream.

class MessageStart(Record):
    usage: Usage | None = None   # the provider's input count, when it gives one up front


class ToolUseStart(Record):
    index: int
    tool_use_id: str
    name: str


class ImageStart(Record):
    index: int
    format: str


class TextDelta(Record):
    index: int
    text: str


class ToolInputDelta(Record):
    index: int
    input: str                   # a fragment of the input's JSON text


class ReasoningDelta(Record):
    index: int
    text: str


class ReasoningSignatureDelta(Record):
    index: int
    signature: str


class RedactedReasoningDelta(Record):
    index: int
    data: bytes


class ImageDelta(Record):
    index: int
    data: bytes


class BlockStop(Record):
    index: int


class MessageStop(Record):
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None     # the stop sequence that ended the answer

    def __post_init__(self) -> None:
        if self.stop_reason not in STOP_REASONS:
            raise _invalid(self, "stop_reason", self.stop_reason, STOP_REASONS)


class Metadata(Record):
    usage: Usage
    latency_ms: int = 0
    first_byte_latency_ms: int | None = None


BlockStart = ToolUseStart | ImageStart
BlockDelta = TextDelta | ToolInputDelta | ReasoningDelta | ReasoningSignatureDelta | RedactedReasoningDelta | ImageDelta
StreamEvent = MessageStart | BlockStart | BlockDelta | BlockStop | MessageStop | Metadata


# --- reading ----------------------------------------------------------------------------------------

def text_of(content) -> str:
    """The text of the text blocks in `content`, joined."""
    return "".join(b.text for b in content if type(b) is TextBlock)


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate (about 4 characters per token), never 0 for non-empty text."""
    return (len(text) + 3) // 4 if text else 0


def _tool_result_tokens(b: ToolResultBlock) -> int:
    return sum(estimate_tokens(c.text if type(c) is TextBlock else str(c.value) if type(c) is JsonBlock else "")
               for c in b.content) + 4


_BLOCK_TOKENS = {           # reasoning is not counted
    TextBlock: lambda b: estimate_tokens(b.text),
    ToolUseBlock: lambda b: estimate_tokens(str(b.input)) + 4,
    ToolResultBlock: _tool_result_tokens,
    ImageBlock: lambda b: 1600 if not b.data else max(85, len(b.data) // 750),
    DocumentBlock: lambda b: estimate_tokens(b.text or "") + len(b.data or b"") // 4,
    ReasoningBlock: lambda b: 0,
    RedactedReasoningBlock: lambda b: 0,
}


def request_tokens(req: ChatRequest) -> int:
    """Deterministic input-token estimate of a whole request (system, messages, tools)."""
    n = sum(estimate_tokens(s) for s in req.system)
    for m in req.messages:
        n += 3
        for b in m.content:
            n += _BLOCK_TOKENS[type(b)](b)
    for t in req.tools:
        n += estimate_tokens(t.name + t.description + str(t.input_schema))
    return max(n, 1)
