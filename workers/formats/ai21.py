"""AI21 on Bedrock: Jamba and legacy Jurassic-2. Pure.

bedrock-protocol.md 6.7. Jamba is the OpenAI-like chat body (openai/invoke.py) whose answer has an
id and usage but no "object" and "model". Jurassic-2 has no stream: Bedrock answers the stream
endpoint with ValidationException "The model is unsupported for streaming", so `streams = False`.
"""
from __future__ import annotations

from finops.shared.model import ChatResponse, text_of

from .bedrock.invoke import PromptFamily
from .common import fail, make_id, want_int
from .openai.invoke import OpenAIChat


class JambaChat(OpenAIChat):
    name = "ai21-jamba"
    openai_object = False


class Jurassic(PromptFamily):
    name = "ai21-jurassic"
    max_tokens_path = ("maxTokens",)
    streams = False
    sampling = {"max_tokens": "maxTokens", "top_p": "topP", "top_k": None, "stop": "stopSequences"}
    read = ("numResults",)

    def parse_more(self, body: dict, fields: dict) -> None:
        if body.get("numResults") is not None and want_int(body["numResults"], "numResults", lo=1) != 1:
            raise fail("numResults", "only 1 result per request is supported by this gateway")

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        text = text_of(resp.content)
        rid = int(make_id("", response_id or model_id, text, n=8), 16)
        reason = "length" if resp.stop_reason == "max_tokens" else "endoftext"
        return {"id": rid, "prompt": {"text": "", "tokens": []},
                "completions": [{"data": {"text": text, "tokens": []}, "finishReason": {"reason": reason}}]}


JAMBA = JambaChat()
JURASSIC = Jurassic()
