"""Mistral on Bedrock: the text-completion format (`prompt`) and the chat format (`messages`). Pure.

bedrock-protocol.md 6.2. The chat format lives in openai_like.py (MistralChat); this module holds
the text format, whose prompt is `<s>[INST] ... [/INST]` and whose answer and stream chunks are
``{"outputs": [{"text", "stop_reason"}]}``.
"""
from __future__ import annotations

from finops.shared.model import ChatRequest, ChatResponse, Usage

from ..bedrock.invoke import Family, StreamEncoder, leftovers, take_sampling
from ..common import text_blocks, want_dict
from ..openai.invoke import MISTRAL_CHAT, MistralChat  # noqa: F401  (re-exported)
from ..prompts import parse_prompt


def _reason(stop: str) -> str:
    return "length" if stop == "max_tokens" else "stop"


class MistralText(Family):
    name = "mistral-text"

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        system, messages = parse_prompt(body.get("prompt"), "prompt")
        req = ChatRequest(messages=messages, system=system)
        used = {"prompt", "stream"}
        take_sampling(body, req, max_tokens="max_tokens", stop="stop", used=used)
        req.extra = leftovers(body, used)
        return req

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        return {"outputs": [{"text": text_blocks(resp.content), "stop_reason": _reason(resp.stop_reason)}]}


class _Encoder(StreamEncoder):
    __slots__ = ()

    def on_text(self, index: int, text: str) -> list[dict]:
        return [{"outputs": [{"text": text, "stop_reason": None}]}]

    def on_final(self, usage: Usage) -> list[dict]:
        return [{"outputs": [{"text": "", "stop_reason": _reason(self.stop)}]}]


MistralText.encoder = _Encoder
MISTRAL_TEXT = MistralText()
