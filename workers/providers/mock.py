"""The built-in `mock` provider: deterministic answers for users, demos and the load harness.

- The answer contains the last user message's text verbatim.
- A stream carries the answer in `chunks` text deltas (provider option, default 5).
- Usage is a deterministic estimate (about 4 characters per token), never zero.
- When the user text contains the name of the first tool of `toolConfig`, the answer is a short
  text block plus a toolUse of that tool (stopReason `tool_use`), with an input built from the
  tool's JSON schema.
- `maxTokens` truncates the answer (stopReason `max_tokens`); a stop sequence found in the answer
  cuts it there (stopReason `stop_sequence`).
- `latency_ms` waits before the first byte; `chunk_delay_ms` waits between stream deltas.

It is not a stand-in for testing real providers: those are tested against fake upstreams that
answer with the real providers' documented shapes.
"""
from __future__ import annotations

import hashlib
import json

import trio

from finops.shared.model import (BlockStop, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, MessageStart,
                                 MessageStop, Metadata, TextBlock, TextDelta, ToolInputDelta, ToolUseBlock,
                                 ToolUseStart, Usage, estimate_tokens, request_tokens)

from ..request import Attempt
from .base import Provider
from .registry import register


def _value_for(schema: dict, text: str):
    t = schema.get("type")
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if t == "string":
        return text[:64] or "mock"
    if t == "integer":
        return 1
    if t == "number":
        return 1.0
    if t == "boolean":
        return True
    if t == "array":
        return [_value_for(schema.get("items", {"type": "string"}), text)]
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        req = schema.get("required", list(props))
        return {k: _value_for(props[k], text) for k in req if k in props}
    return "mock"


@register
class MockProvider(Provider):
    kind = "mock"

    def answer(self, attempt: Attempt, req: ChatRequest) -> ChatResponse:
        text = req.last_user_text()
        input_tokens = request_tokens(req)
        tool = self.tool_to_call(req, text)
        if tool is not None:
            tool_id = "tooluse_" + hashlib.sha1(f"{attempt.model_id}|{text}".encode()).hexdigest()[:20]
            intro = f"Calling {tool.name}."
            call = ToolUseBlock(tool_id, tool.name, _value_for(tool.input_schema, text))
            usage = Usage(input_tokens, estimate_tokens(intro) + estimate_tokens(json.dumps(call.input)))
            return ChatResponse([TextBlock(intro), call], "tool_use", usage, int(self.cfg.latency_ms),
                                model=attempt.upstream_model)
        answer = f"FinOps mock ({attempt.upstream_model}) received: {text}"
        stop, stop_seq = "end_turn", None
        for s in req.stop_sequences:
            i = answer.find(s, 1)
            if i > 0:
                answer, stop, stop_seq = answer[:i], "stop_sequence", s
                break
        if req.max_tokens is not None and estimate_tokens(answer) > req.max_tokens:
            answer, stop = answer[:req.max_tokens * 4], "max_tokens"
        usage = Usage(input_tokens, max(1, estimate_tokens(answer)))
        return ChatResponse([TextBlock(answer)], stop, usage, int(self.cfg.latency_ms), model=attempt.upstream_model,
                            stop_sequence=stop_seq)

    @staticmethod
    def tool_to_call(req: ChatRequest, text: str):
        """The first tool when the text names it; the forced tool under toolChoice any/tool."""
        if not req.tools:
            return None
        kind = req.tool_choice.kind if req.tool_choice is not None else "auto"
        if kind == "tool":
            return next((t for t in req.tools if t.name == req.tool_choice.name), req.tools[0])
        if kind == "any" or req.tools[0].name in text:
            return req.tools[0]
        return None

    async def chat(self, attempt: Attempt, req: ChatRequest) -> ChatResponse:
        if self.cfg.latency_ms:
            await trio.sleep(self.cfg.latency_ms / 1000)
        return self.answer(attempt, req)

    async def chat_stream(self, attempt: Attempt, req: ChatRequest):
        if self.cfg.latency_ms:
            await trio.sleep(self.cfg.latency_ms / 1000)
        resp = self.answer(attempt, req)
        delay = self.cfg.chunk_delay_ms / 1000
        batch = [MessageStart()]
        for index, block in enumerate(resp.content):
            if type(block) is TextBlock:
                for piece in split_even(block.text, max(1, self.cfg.chunks)):
                    batch.append(TextDelta(index, piece))
                    if delay:   # paced: each delta is its own message, as from a slow model
                        yield batch
                        batch = []
                        await trio.sleep(delay)
            elif type(block) is ToolUseBlock:
                batch.append(ToolUseStart(index, block.tool_use_id, block.name))
                for piece in split_even(json.dumps(block.input), 2):
                    batch.append(ToolInputDelta(index, piece))
            batch.append(BlockStop(index))
        batch.append(MessageStop(resp.stop_reason))
        batch.append(Metadata(resp.usage, resp.latency_ms))
        yield batch

    async def count_tokens(self, attempt: Attempt, req: ChatRequest) -> int:
        return request_tokens(req)

    async def embed(self, attempt: Attempt, req: EmbedRequest) -> EmbedResponse:
        dims = req.dimensions or 1024
        out = []
        for t in req.texts:
            seed = hashlib.sha256(t.encode()).digest()
            raw = [(seed[i % 32] - 128) / 128 for i in range(dims)]
            norm = sum(x * x for x in raw) ** 0.5 or 1.0
            out.append([x / norm for x in raw])
        return EmbedResponse(out, sum(estimate_tokens(t) for t in req.texts))


def split_even(text: str, n: int) -> list[str]:
    """Split into at most n non-empty pieces of near-equal length (joined, they give `text`)."""
    if not text:
        return [""]
    n = min(n, len(text))
    size, extra = divmod(len(text), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (1 if k < extra else 0)
        out.append(text[i:j])
        i = j
    return out
