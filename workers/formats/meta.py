"""Meta Llama on Bedrock (Llama 2, 3, 3.x, 4 Instruct). Pure.

bedrock-protocol.md 6.3. Request ``{"prompt", "max_gen_len", "temperature", "top_p", "images"?}``;
the prompt is usually in the Llama 3 header template or the Llama 2 [INST] template (prompts.py).
Answer and stream chunks are ``{"generation", "prompt_token_count", "generation_token_count",
"stop_reason"}``; in a stream `prompt_token_count` is set only on the first chunk and
`stop_reason` only on the last.
"""
from __future__ import annotations

from finops.shared.model import ChatResponse, ImageBlock, Message, Usage, estimate_tokens, text_of

from .bedrock.invoke import PromptFamily, StreamEncoder
from .common import decode_b64, fail, sniff_image, want_list


def _reason(stop: str) -> str:
    return "length" if stop == "max_tokens" else "stop"


def _with_images(raw, messages: list[Message]) -> list[Message]:
    """`messages` with the body's images put first in the last user message."""
    blocks = []
    for i, s in enumerate(want_list(raw, "images", what="base64 images")):
        data = decode_b64(s, f"images[{i}]")
        fmt = sniff_image(data)
        if fmt is None:
            raise fail(f"images[{i}]", "is not a png, jpeg, gif or webp image; send the image file base64-encoded")
        blocks.append(ImageBlock(fmt, data))
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    return [*messages[:last], Message("user", (*blocks, *messages[last].content)), *messages[last + 1:]]


class Llama(PromptFamily):
    name = "meta-llama"
    max_tokens_path = ("max_gen_len",)
    sampling = {"max_tokens": "max_gen_len", "top_k": None, "stop": None}
    read = ("images", "stream")

    def parse_more(self, body: dict, fields: dict) -> None:
        if body.get("images") is not None:
            fields["messages"] = _with_images(body["images"], fields["messages"])

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        return {"generation": text_of(resp.content), "prompt_token_count": resp.usage.input_tokens,
                "generation_token_count": resp.usage.output_tokens, "stop_reason": _reason(resp.stop_reason)}


class _Encoder(StreamEncoder):
    __slots__ = ("count",)

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.count = 0

    def on_text(self, index: int, text: str) -> list[dict]:
        self.count += estimate_tokens(text)
        return [{"generation": text, "prompt_token_count": self.first_input_tokens(),
                 "generation_token_count": self.count, "stop_reason": None}]

    def on_final(self, usage: Usage) -> list[dict]:
        return [{"generation": "", "prompt_token_count": self.first_input_tokens(),
                 "generation_token_count": usage.output_tokens, "stop_reason": _reason(self.stop)}]


Llama.encoder = _Encoder
LLAMA = Llama()
