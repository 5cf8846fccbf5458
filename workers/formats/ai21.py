"""AI21 on Bedrock: Jamba (OpenAI-like chat, in openai_like.py) and legacy Jurassic-2. Pure.

bedrock-protocol.md 6.7. Jurassic-2 has no stream: Bedrock answers the stream endpoint with
ValidationException "The model is unsupported for streaming", so `streams = False`.
"""
from __future__ import annotations

from finops.shared.model import ChatRequest, ChatResponse

from .bedrock.invoke import Family, leftovers, take_sampling
from .common import fail, make_id, text_blocks, want_dict, want_int
from .openai.invoke import JAMBA, JambaChat  # noqa: F401  (re-exported)
from .prompts import parse_prompt


class Jurassic(Family):
    name = "ai21-jurassic"
    max_tokens_path = ("maxTokens",)
    streams = False

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        system, messages = parse_prompt(body.get("prompt"), "prompt")
        req = ChatRequest(messages=messages, system=system)
        used = {"prompt", "numResults"}
        take_sampling(body, req, max_tokens="maxTokens", top_p="topP", top_k=None, stop="stopSequences",
                      used=used)
        if body.get("numResults") is not None and want_int(body["numResults"], "numResults", lo=1) != 1:
            raise fail("numResults", "only 1 result per request is supported by this gateway")
        req.extra = leftovers(body, used)
        return req

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        text = text_blocks(resp.content)
        rid = int(make_id("", response_id or model_id, text, n=8), 16)
        reason = "length" if resp.stop_reason == "max_tokens" else "endoftext"
        return {"id": rid, "prompt": {"text": "", "tokens": []},
                "completions": [{"data": {"text": text, "tokens": []}, "finishReason": {"reason": reason}}]}


JURASSIC = Jurassic()
