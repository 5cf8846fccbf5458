"""The `mistral` provider: Mistral's chat completions API.

    POST {base_url}/chat/completions      Authorization: Bearer KEY      (default https://api.mistral.ai/v1)
    POST {base_url}/embeddings            Titan and Cohere embed bodies (formats/openai/embeddings.py)

Mistral is an OpenAI dialect with its own rules (tool call ids of 9 letters and digits,
`random_seed`, `tool_choice: "any"`); `formats/mistral/api.py` owns them.
"""
from __future__ import annotations

from finops.shared.provider_config import ApiKeyConfig
from finops.shared.model import ChatRequest

from ..formats.mistral import api as mistral_api
from .json_api import JSONAPIProvider
from .registry import register


@register
class MistralProvider(JSONAPIProvider):
    kind = "mistral"
    api = mistral_api.API
    embeddings_path = "/embeddings"         # POST {base_url}/embeddings (mistral-embed, codestral-embed)
    dimensions_field = "output_dimension"

    def dialect(self):
        return mistral_api.MistralDialect(provider=self.name,
                                          passthrough_fields=frozenset(self.cfg.passthrough_fields))

    def endpoint(self, model: str) -> str:
        return f"{self.cfg.base_url}/chat/completions"

    def auth(self, key: ApiKeyConfig | None, req: ChatRequest | None) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Bearer " + key.api_key.encode())] if key else []
