"""Amazon Nova (Micro, Lite, Pro, Premier, Nova 2) native InvokeModel format. Pure.

bedrock-protocol.md 6.5. The body is Converse-shaped (blobs as base64 strings), so the block,
system and tool parsers of bedrock/converse.py are reused; differences: optional
``schemaVersion: "messages-v1"``, `inferenceConfig` also takes `max_new_tokens` and `topK`, and the
usage names say ...TokenCount for the cache fields. Stream chunks are Converse stream events
*wrapped* in their event name, e.g. ``{"contentBlockDelta": {"delta": {"text": "Hi"},
"contentBlockIndex": 0}}``.
"""
from __future__ import annotations

from finops.shared.model import ChatRequest, ChatResponse, Metadata, StreamEvent, Usage

from .bedrock.converse import (parse_inference_config, parse_messages, parse_system, parse_tool_config,
                               render_blocks, stream_payload)
from .bedrock.invoke import METRICS_KEY, Family, StreamEncoder, invocation_metrics, leftovers
from .common import check_tool_blocks_need_config, want_dict, want_enum

_INFERENCE_KEYS = {"maxTokens", "max_new_tokens", "temperature", "topP", "topK", "stopSequences"}


def nova_usage(u: Usage) -> dict:
    return {"inputTokens": u.input_tokens, "outputTokens": u.output_tokens, "totalTokens": u.total_tokens,
            "cacheReadInputTokenCount": u.cache_read_tokens, "cacheWriteInputTokenCount": u.cache_write_tokens}


class Nova(Family):
    name = "nova"
    max_tokens_path = ("inferenceConfig", "max_new_tokens")

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        if body.get("schemaVersion") is not None:
            want_enum(body["schemaVersion"], "schemaVersion", ("messages-v1",))
        fields: dict = {"messages": parse_messages(body.get("messages"))}
        if body.get("system") is not None:
            fields["system"] = parse_system(body["system"])
        extra = leftovers(body, {"schemaVersion", "messages", "system", "inferenceConfig", "toolConfig"})
        cfg = body.get("inferenceConfig")
        if cfg is not None:
            fields.update(parse_inference_config(cfg, nova=True))
            rest = {k: v for k, v in cfg.items() if k not in _INFERENCE_KEYS}
            if rest:
                extra["inferenceConfig"] = rest
        if body.get("toolConfig") is not None:
            fields["tools"], fields["tool_choice"] = parse_tool_config(body["toolConfig"])
        check_tool_blocks_need_config(fields["messages"], bool(fields.get("tools")), "toolConfig")
        return ChatRequest(**fields, extra=extra)

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        return {"output": {"message": {"role": "assistant", "content": render_blocks(resp.content)}},
                "stopReason": resp.stop_reason, "usage": nova_usage(resp.usage)}


class _Encoder(StreamEncoder):
    __slots__ = ()

    def feed(self, ev: StreamEvent) -> list[dict]:
        if type(ev) is Metadata:
            return [{"metadata": {"usage": nova_usage(ev.usage), "metrics": {}, "trace": {}},
                     METRICS_KEY: invocation_metrics(ev)}]
        name, payload = stream_payload(ev)
        return [{name: payload}]


Nova.encoder = _Encoder
NOVA = Nova()
