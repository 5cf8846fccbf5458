"""The `mistral` provider: Mistral's chat completions API.

    POST {base_url}/chat/completions      Authorization: Bearer KEY      (default https://api.mistral.ai/v1)

Mistral is an OpenAI dialect with its own rules (tool call ids of 9 letters and digits,
`random_seed`, `tool_choice: "any"`); `translate/mistral_chat.py` owns them.
"""
from __future__ import annotations

from finops.shared.config import KeyConfig
from finops.shared.model import ChatRequest

from ..formats.mistral import api as mistral_chat
from .json_api import JSONAPIProvider


class MistralProvider(JSONAPIProvider):
    kind = "mistral"
    translator = mistral_chat

    def dialect(self):
        return mistral_chat.MistralDialect(provider=self.name,
                                           passthrough_fields=frozenset(self.cfg.passthrough_fields))

    def endpoint(self, model: str) -> str:
        return f"{self.cfg.base_url}/chat/completions"

    def auth(self, key: KeyConfig | None, req: ChatRequest | None) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Bearer " + key.api_key.encode())] if key else []
