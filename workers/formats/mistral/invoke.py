"""Mistral on Bedrock: the text-completion format (`prompt`) and the chat format (`messages`). Pure.

bedrock-protocol.md 6.2. The text format's prompt is `<s>[INST] ... [/INST]`; its answer and stream
chunks are ``{"outputs": [{"text", "stop_reason"}]}``. The chat format is the OpenAI-like body
(openai/invoke.py) answered Mistral's way: "stop_reason" instead of "finish_reason", no id or
usage, and stream chunks that each carry a whole `message` (tool calls go out whole).
"""
from __future__ import annotations

from finops.shared.model import BlockDelta, BlockStart, ChatResponse, ToolInputDelta, ToolUseStart, Usage, text_of

from ..bedrock.invoke import PromptFamily, StreamEncoder
from ..openai.invoke import OpenAIChat, finish_reason


def _reason(stop: str) -> str:
    return "length" if stop == "max_tokens" else "stop"


class MistralText(PromptFamily):
    name = "mistral-text"
    sampling = {"max_tokens": "max_tokens", "stop": "stop"}

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        return {"outputs": [{"text": text_of(resp.content), "stop_reason": _reason(resp.stop_reason)}]}


class _Encoder(StreamEncoder):
    __slots__ = ()

    def on_text(self, index: int, text: str) -> list[dict]:
        return [{"outputs": [{"text": text, "stop_reason": None}]}]

    def on_final(self, usage: Usage) -> list[dict]:
        return [{"outputs": [{"text": "", "stop_reason": _reason(self.stop)}]}]


MistralText.encoder = _Encoder
MISTRAL_TEXT = MistralText()


# --- chat -----------------------------------------------------------------------------------------

class _MessageEncoder(StreamEncoder):
    """Mistral chat style: every chunk carries a whole `message`; tool calls go out whole on stop."""

    __slots__ = ("tools",)

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.tools: dict[int, list] = {}  # block index -> [id, name, [argument fragments]]

    @staticmethod
    def _chunk(message: dict, stop=None) -> dict:
        return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "stop_reason": stop}]}

    def on_text(self, index: int, text: str) -> list[dict]:
        return [self._chunk({"content": text})]

    def on_block_start(self, ev: BlockStart) -> list[dict]:
        if type(ev) is ToolUseStart:
            self.tools[ev.index] = [ev.tool_use_id, ev.name, []]
        return []

    def on_other_delta(self, ev: BlockDelta) -> list[dict]:
        if type(ev) is ToolInputDelta:
            self.tools.setdefault(ev.index, [f"call_{ev.index}", "", []])[2].append(ev.input)
        return []

    def on_block_stop(self, index: int) -> list[dict]:
        t = self.tools.pop(index, None)
        if t is None:
            return []
        call = {"id": t[0], "function": {"name": t[1], "arguments": "".join(t[2]) or "{}"}}
        return [self._chunk({"content": "", "tool_calls": [call]})]

    def on_final(self, usage: Usage) -> list[dict]:
        return [self._chunk({"content": ""}, finish_reason(self.stop))]


class MistralChat(OpenAIChat):
    name = "mistral-chat"
    stop_key = "stop_reason"
    with_ids = False
    temp_hi = 1.0
    encoder = _MessageEncoder


MISTRAL_CHAT = MistralChat()
