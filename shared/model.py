"""The canonical request, response and stream-event model. Pure.

Every inbound format (Converse, each model family's InvokeModel body) is parsed into a
`ChatRequest`; every provider answers with a `ChatResponse` or a sequence of `StreamEvent`s; every
outbound format is rendered from those. Content blocks keep the Converse shape, the richest of the
formats we speak, with blobs as raw bytes instead of base64:

    {"text": str}
    {"image": {"format": "png"|"jpeg"|"gif"|"webp", "bytes": b"..."}}
    {"document": {"format": str, "name": str, "bytes": b"...", "context"?: str}}  (or "text": str for text sources)
    {"toolUse": {"toolUseId": str, "name": str, "input": <json>}}
    {"toolResult": {"toolUseId": str, "content": [{"text": str} | {"json": <json>} | {"image": ...}],
                    "status": "success"|"error"}}
    {"reasoningContent": {"text": str, "signature": str|None}} | {"reasoningContent": {"redactedContent": bytes}}

`ChatRequest.tool_choice` is {"auto": {}}, {"any": {}}, {"tool": {"name": str}} or {"none": {}}
(the Anthropic, Mistral and OpenAI-style bodies can say "none"; Converse cannot).

Stream events (`StreamEvent.kind`) mirror ConverseStream, which every other stream format can be
rendered from:

    message_start   data={"role": "assistant", "usage"?: Usage (input estimate)}
    block_start     index, data={"toolUse": {"toolUseId", "name"}}      (tool blocks only)
    block_delta     index, data={"text": str} | {"toolUse": {"input": str fragment}}
                           | {"reasoningContent": {"text"|"signature": str}}
    block_stop      index
    message_stop    data={"stopReason": str}
    metadata        data={"usage": Usage, "latencyMs": int, "firstByteLatencyMs"?: int}
"""
from __future__ import annotations

from dataclasses import dataclass, field

STOP_REASONS = frozenset({"end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened",
                          "content_filtered", "malformed_model_output", "malformed_tool_use",
                          "model_context_window_exceeded"})


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    input_schema: dict = field(default_factory=lambda: {"type": "object"})


@dataclass(slots=True)
class Message:
    role: str                 # "user" | "assistant"
    content: list[dict]       # content blocks, see module docstring


@dataclass(slots=True)
class ChatRequest:
    """What the caller asked for, independent of the format it arrived in."""
    messages: list[Message]
    system: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: dict | None = None          # {"auto": {}} | {"any": {}} | {"tool": {"name": str}}
    extra: dict = field(default_factory=dict)  # additionalModelRequestFields / family-only fields

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return "".join(b["text"] for b in m.content if "text" in b)
        return ""


@dataclass(slots=True)
class EmbedRequest:
    texts: list[str]
    dimensions: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_converse(self) -> dict:
        d = {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
             "totalTokens": self.total_tokens}
        if self.cache_read_tokens:
            d["cacheReadInputTokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            d["cacheWriteInputTokens"] = self.cache_write_tokens
        return d

    def to_wire(self) -> dict:
        return {"in": self.input_tokens, "out": self.output_tokens,
                "cr": self.cache_read_tokens, "cw": self.cache_write_tokens}


@dataclass(slots=True)
class ChatResponse:
    content: list[dict]
    stop_reason: str = "end_turn"
    usage: Usage = field(default_factory=Usage)
    latency_ms: int = 0
    model: str = ""
    stop_sequence: str | None = None


@dataclass(slots=True)
class EmbedResponse:
    embeddings: list[list[float]]
    input_tokens: int = 0


@dataclass(slots=True)
class StreamEvent:
    kind: str                 # message_start | block_start | block_delta | block_stop | message_stop | metadata
    index: int = 0
    data: dict = field(default_factory=dict)


def text_of(content: list[dict]) -> str:
    return "".join(b["text"] for b in content if "text" in b)


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate (about 4 characters per token), never 0 for non-empty text."""
    return (len(text) + 3) // 4 if text else 0


def request_tokens(req: ChatRequest) -> int:
    """Deterministic input-token estimate of a whole request (system, messages, tools)."""
    n = sum(estimate_tokens(s) for s in req.system)
    for m in req.messages:
        n += 3
        for b in m.content:
            if "text" in b:
                n += estimate_tokens(b["text"])
            elif "toolUse" in b:
                n += estimate_tokens(str(b["toolUse"].get("input"))) + 4
            elif "toolResult" in b:
                n += sum(estimate_tokens(str(c.get("text", c.get("json", "")))) for c in b["toolResult"]["content"]) + 4
            elif "image" in b:
                n += 1600 if not b["image"].get("bytes") else max(85, len(b["image"]["bytes"]) // 750)
            elif "document" in b:
                d = b["document"]
                n += estimate_tokens(d.get("text", "")) + len(d.get("bytes", b"")) // 4
    for t in req.tools:
        n += estimate_tokens(t.name + t.description + str(t.input_schema))
    return max(n, 1)
