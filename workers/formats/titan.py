"""Amazon Titan Text (Lite, Express, Premier). Pure.

bedrock-protocol.md 6.4. Request ``{"inputText", "textGenerationConfig": {"temperature", "topP",
"maxTokenCount", "stopSequences"}}``, prompt often "User: ...\\nBot:". Answer ``{"inputTextTokenCount",
"results": [{"tokenCount", "outputText", "completionReason"}]}``; stream chunks ``{"outputText",
"index", "totalOutputTextTokenCount", "completionReason", "inputTextTokenCount"}``.
"""
from __future__ import annotations

from finops.shared.model import ChatResponse, Usage, text_of

from .bedrock.invoke import PromptFamily, StreamEncoder
from .common import want_dict, want_int, want_num, want_str_list

_REASONS = {"max_tokens": "LENGTH", "stop_sequence": "STOP_CRITERIA_MET",
            "content_filtered": "CONTENT_FILTERED", "guardrail_intervened": "CONTENT_FILTERED"}


def _reason(stop: str) -> str:
    return _REASONS.get(stop, "FINISH")


class TitanText(PromptFamily):
    name = "titan-text"
    max_tokens_path = ("textGenerationConfig", "maxTokenCount")
    prompt_field = "inputText"
    words = "userbot"
    sampling = {"temperature": None, "top_p": None, "top_k": None, "stop": None}   # in textGenerationConfig
    read = ("textGenerationConfig",)

    def parse_more(self, body: dict, fields: dict) -> None:
        cfg = body.get("textGenerationConfig")
        if cfg is None:
            return
        p = "textGenerationConfig"
        want_dict(cfg, p)
        if cfg.get("maxTokenCount") is not None:
            fields["max_tokens"] = want_int(cfg["maxTokenCount"], f"{p}.maxTokenCount", lo=1)
        if cfg.get("temperature") is not None:
            fields["temperature"] = want_num(cfg["temperature"], f"{p}.temperature", lo=0, hi=1)
        if cfg.get("topP") is not None:
            fields["top_p"] = want_num(cfg["topP"], f"{p}.topP", lo=0, hi=1)
        if cfg.get("stopSequences") is not None:
            fields["stop_sequences"] = want_str_list(cfg["stopSequences"], f"{p}.stopSequences")

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        return {"inputTextTokenCount": resp.usage.input_tokens,
                "results": [{"tokenCount": resp.usage.output_tokens, "outputText": text_of(resp.content),
                             "completionReason": _reason(resp.stop_reason)}]}


class _Encoder(StreamEncoder):
    __slots__ = ()

    def on_text(self, index: int, text: str) -> list[dict]:
        return [{"outputText": text, "index": 0, "totalOutputTextTokenCount": None,
                 "completionReason": None, "inputTextTokenCount": self.first_input_tokens()}]

    def on_final(self, usage: Usage) -> list[dict]:
        return [{"outputText": "", "index": 0, "totalOutputTextTokenCount": usage.output_tokens,
                 "completionReason": _reason(self.stop), "inputTextTokenCount": self.first_input_tokens()}]


TitanText.encoder = _Encoder
TITAN_TEXT = TitanText()
