"""InvokeModel bodies: what every model family shares. Pure.

`Family` is one native body format (parse the client's body, render the answer and the stream
chunks); `PromptFamily` is the kind whose conversation is one templated prompt string. Here too:
the sampling and tool fields every family reads by its own names, the invocation metrics of a
stream's last chunk, and the model id helpers (region prefixes, ARNs).

A stream encoder is a small sans-I/O object: `feed(ev)` takes one canonical stream event and
returns the list of native chunk dicts to send (often none, sometimes several). When fed the final
`Metadata` event it returns at least one chunk, and the last one carries
``"amazon-bedrock-invocationMetrics"`` (bedrock-protocol.md 2.2).

A parser builds its `ChatRequest` once, at the end: the helpers here (`take_sampling`,
`take_tools`) and a family's `parse_more` fill `fields`, the dict of the request's keyword
arguments so far.
"""
from __future__ import annotations

from finops.shared import errors
from finops.shared.model import (BlockDelta, BlockStart, BlockStop, ChatRequest, ChatResponse, EmbedRequest,
                                 EmbedResponse, ImageStart, MessageStart, MessageStop, Metadata, StreamEvent, TextDelta,
                                 ToolUseStart, Usage)

from ..common import check_tool_blocks_need_config, fail, make_id, want_dict, want_int, want_num, want_str_list
from ..prompts import parse_prompt

METRICS_KEY = "amazon-bedrock-invocationMetrics"


def invocation_metrics(meta: Metadata) -> dict:
    """The `amazon-bedrock-invocationMetrics` object for a stream's final `Metadata` event."""
    u = meta.usage
    latency = int(meta.latency_ms)
    fb = meta.first_byte_latency_ms
    m = {"inputTokenCount": u.input_tokens, "outputTokenCount": u.output_tokens,
         "invocationLatency": latency, "firstByteLatency": int(fb) if fb is not None else latency}
    if u.cache_read_tokens:
        m["cacheReadInputTokenCount"] = u.cache_read_tokens
    if u.cache_write_tokens:
        m["cacheWriteInputTokenCount"] = u.cache_write_tokens
    return m


def take_sampling(body: dict, fields: dict, *, temperature: str | None = "temperature",
                  top_p: str | None = "top_p", top_k: str | None = "top_k",
                  stop: str | None = "stop_sequences", max_tokens: str | None = None,
                  temp_hi: float = 1.0, used: set | None = None) -> None:
    """Copy the usual sampling fields (by their native names) into `fields`, validating them."""
    if max_tokens and body.get(max_tokens) is not None:
        fields["max_tokens"] = want_int(body[max_tokens], max_tokens, lo=1)
    if temperature and body.get(temperature) is not None:
        fields["temperature"] = want_num(body[temperature], temperature, lo=0, hi=temp_hi)
    if top_p and body.get(top_p) is not None:
        fields["top_p"] = want_num(body[top_p], top_p, lo=0, hi=1)
    if top_k and body.get(top_k) is not None:
        fields["top_k"] = want_int(body[top_k], top_k, lo=0)
    if stop and body.get(stop) is not None:
        v = body[stop]
        fields["stop_sequences"] = [v] if isinstance(v, str) and v else want_str_list(v, stop)
    if used is not None:
        used.update(k for k in (max_tokens, temperature, top_p, top_k, stop) if k)


def take_tools(body: dict, fields: dict, parse_tools, parse_choice=None) -> None:
    """The native `tools` (and `tool_choice`) fields into `fields`, read by the family's own
    parsers; then, as on Converse, toolUse or toolResult blocks need tools."""
    if body.get("tools") is not None:
        fields["tools"] = parse_tools(body["tools"])
    if parse_choice is not None and body.get("tool_choice") is not None:
        fields["tool_choice"] = parse_choice(body["tool_choice"], fields.get("tools", ()))
    check_tool_blocks_need_config(fields["messages"], bool(fields.get("tools")), "tools")


def leftovers(body: dict, used: set) -> dict:
    """Body fields the family did not map: they travel in ChatRequest.extra."""
    return {k: v for k, v in body.items() if k not in used}


class StreamEncoder:
    """Base encoder: subclasses override `on_text`, `on_final` and optionally the other hooks.

    State kept: whether the first chunk was sent and the stop reason, nothing per chunk.
    """

    __slots__ = ("model_id", "input_tokens", "first", "stop", "stop_sequence", "response_id")

    def __init__(self, model_id: str, *, input_tokens: int | None = None, response_id: str | None = None):
        self.model_id = model_id
        self.input_tokens = input_tokens
        self.first = True
        self.stop = "end_turn"
        self.stop_sequence = None
        self.response_id = response_id or make_id("", "stream", model_id, n=32)

    def feed(self, ev: StreamEvent) -> list[dict]:
        match ev:
            case TextDelta():
                return self.on_text(ev.index, ev.text)
            case BlockStop():
                return self.on_block_stop(ev.index)
            case ToolUseStart() | ImageStart():
                return self.on_block_start(ev)
            case MessageStart():
                if ev.usage is not None:
                    self.input_tokens = ev.usage.input_tokens
                return self.on_start()
            case MessageStop():
                self.stop = ev.stop_reason
                self.stop_sequence = ev.stop_sequence
                return []
            case Metadata():
                chunks = self.on_final(ev.usage)
                chunks[-1][METRICS_KEY] = invocation_metrics(ev)
                return chunks
        if isinstance(ev, BlockDelta):
            return self.on_other_delta(ev)
        raise TypeError(f"not a canonical stream event: {type(ev).__name__}")

    def first_input_tokens(self) -> int | None:
        """The input token count for the stream's first chunk, None for every later one (formats
        that repeat the field but fill it once)."""
        if self.first:
            self.first = False
            return self.input_tokens or 0
        return None

    # hooks ---------------------------------------------------------------------------------
    def on_start(self) -> list[dict]:
        return []

    def on_text(self, index: int, text: str) -> list[dict]:
        raise NotImplementedError

    def on_other_delta(self, ev: BlockDelta) -> list[dict]:
        """A delta other than text (tool input, reasoning, image)."""
        return []  # text-only formats cannot carry tool or reasoning deltas

    def on_block_start(self, ev: BlockStart) -> list[dict]:
        return []

    def on_block_stop(self, index: int) -> list[dict]:
        return []

    def on_final(self, usage: Usage) -> list[dict]:
        """Chunks for the end of the stream; must return at least one (metrics go on the last)."""
        raise NotImplementedError


class Family:
    """A model family's native InvokeModel format.

    Attributes:
        name: a stable identifier, e.g. "anthropic-messages".
        kind: "chat" (parse to ChatRequest) or "embed" (parse to EmbedRequest).
        streams: False when Bedrock answers the stream endpoint with
            ValidationException "The model is unsupported for streaming".
        max_tokens_path: where the body says how many tokens to generate at most (keys from the
            top), for `with_output_cap`; () for embedding formats.
    """

    name = ""
    kind = "chat"
    streams = True
    encoder: type[StreamEncoder] | None = None
    max_tokens_path: tuple[str, ...] = ("max_tokens",)

    def with_output_cap(self, body: dict, cap: int) -> dict:
        """A copy of `body` that asks for at most `cap` output tokens (a governed request without
        its own cap: workers/governance/governor.py). The body is not changed."""
        return with_path(body, self.max_tokens_path, cap) if self.max_tokens_path else body

    def parse_request(self, body: dict) -> ChatRequest | EmbedRequest:
        raise NotImplementedError

    def render_response(self, resp: ChatResponse, model_id: str, *,
                        response_id: str | None = None) -> dict:
        raise NotImplementedError

    def render_embed_response(self, resp: EmbedResponse, *, req: EmbedRequest | None = None,
                              model_id: str = "") -> dict:
        raise fail("body", f"{self.name} is not an embedding format")

    def stream_encoder(self, model_id: str, *, input_tokens: int | None = None,
                       response_id: str | None = None) -> StreamEncoder:
        """A fresh encoder for one stream. Raises ValidationException if the family cannot stream."""
        if not self.streams or self.encoder is None:
            raise errors.validation("The model is unsupported for streaming")
        return self.encoder(model_id, input_tokens=input_tokens, response_id=response_id)

    def __repr__(self) -> str:
        return f"<Family {self.name}>"


class PromptFamily(Family):
    """A text-completion body: the whole conversation is one templated prompt string (prompts.py).

    A subclass declares its native field names instead of writing `parse_request`:
        prompt_field    the prompt's field
        words           also recognise the word template "human" (Claude) or "userbot" (Titan)
        required        ((field, problem), ...): fields that must be present, checked after the prompt
        sampling        `take_sampling`'s keyword arguments: the native names of max_tokens, top_p ...
        read            the other fields it reads itself (`parse_more`), kept out of ChatRequest.extra
    """

    prompt_field = "prompt"
    words: str | None = None
    required: tuple[tuple[str, str], ...] = ()
    sampling: dict = {}
    read: tuple[str, ...] = ("stream",)

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        system, messages = parse_prompt(body.get(self.prompt_field), self.prompt_field, words=self.words)
        for field, problem in self.required:
            if body.get(field) is None:
                raise fail(field, problem)
        fields = {"messages": messages, "system": system}
        used = {self.prompt_field, *self.read}
        take_sampling(body, fields, used=used, **self.sampling)
        self.parse_more(body, fields)
        return ChatRequest(**fields, extra=leftovers(body, used))

    def parse_more(self, body: dict, fields: dict) -> None:
        """The family's own fields beyond the prompt and sampling (listed in `read`), into
        `fields` (the ChatRequest's keyword arguments so far)."""


def with_path(doc: dict, path: tuple[str, ...], value) -> dict:
    """A copy of `doc` with `value` at `path` (dicts along the way copied, or made), the rest shared."""
    out = dict(doc)
    inner = out
    for k in path[:-1]:
        nxt = inner.get(k)
        inner[k] = nxt = dict(nxt) if isinstance(nxt, dict) else {}
        inner = nxt
    inner[path[-1]] = value
    return out


_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")


def strip_region(model_id: str) -> str:
    for p in _REGION_PREFIXES:
        if model_id.startswith(p):
            return model_id[len(p):]
    return model_id


def model_id_candidates(model_id: str) -> list[str]:
    """The base model ids a modelId may name, best first, region prefix stripped.

    A plain id gives itself. An ARN gives the part after its last "/", then earlier parts
    (a custom-model ARN names its base model before the custom model's own id).
    """
    if model_id.startswith("arn:"):
        resource = model_id.split(":", 5)[-1] if model_id.count(":") >= 5 else model_id
        parts = resource.split("/")[1:] or [resource]
        return [strip_region(p) for p in reversed(parts) if p]
    return [strip_region(model_id)]


def base_model_id(model_id: str) -> str:
    return model_id_candidates(model_id)[0] if model_id else ""
