"""The `openai` provider: OpenAI Chat Completions, every OpenAI-compatible server, Azure OpenAI.

    POST {base_url}/chat/completions                      Authorization: Bearer KEY
    POST {base_url}/embeddings                            Titan and Cohere embed bodies (not on Azure)
    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=V   api-key: KEY  (Azure)

`base_url` picks the server: https://api.openai.com/v1 (the default), or vLLM, Ollama, LM Studio,
Groq, Together ... (their OpenAI-compatible base URL). Keys are optional here, since local servers
often need none. Azure mode is on when `azure_api_version` is set; the deployment is
`azure_deployment`, else the upstream model name.

The token limit goes out as `max_completion_tokens` to OpenAI and Azure (older names are refused
by reasoning models) and as `max_tokens` to other servers (older compatible servers know only
that); `max_tokens_field` overrides the choice.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

from finops.shared.provider_config import ApiKeyConfig, OpenAIConfig
from finops.shared.model import ChatRequest

from ..formats.openai import api as openai_api
from .json_api import JSONAPIProvider
from .registry import register

OFFICIAL_HOSTS = ("api.openai.com",)


def max_tokens_field(cfg: OpenAIConfig) -> str:
    if cfg.max_tokens_field:
        return cfg.max_tokens_field
    host = urlsplit(cfg.base_url).hostname or ""
    official = host in OFFICIAL_HOSTS or bool(cfg.azure_api_version)
    return "max_completion_tokens" if official else "max_tokens"


@register
class OpenAIProvider(JSONAPIProvider):
    kind = "openai"
    api = openai_api.API
    embeddings_path = "/embeddings"         # Titan and Cohere embed bodies (formats/openai/embeddings.py)

    async def embed(self, attempt, req):
        if self.cfg.azure_api_version:
            raise self.unsupported("embeddings on Azure OpenAI (only the OpenAI /embeddings endpoint is served)")
        return await super().embed(attempt, req)

    def dialect(self):
        return openai_api.OpenAIDialect(provider=self.name, max_tokens_field=max_tokens_field(self.cfg),
                                        stream_usage=self.cfg.stream_usage,
                                        passthrough_fields=frozenset(self.cfg.passthrough_fields))

    def endpoint(self, model: str) -> str:
        cfg = self.cfg
        if cfg.azure_api_version:
            deployment = quote(cfg.azure_deployment or model, safe="")
            return (f"{cfg.base_url}/openai/deployments/{deployment}/chat/completions"
                    f"?api-version={quote(cfg.azure_api_version, safe='')}")
        return f"{cfg.base_url}/chat/completions"

    def auth(self, key: ApiKeyConfig | None, req: ChatRequest | None) -> list[tuple[bytes, bytes]]:
        if key is None:
            return []
        if self.cfg.azure_api_version:
            return [(b"api-key", key.api_key.encode())]
        return [(b"authorization", b"Bearer " + key.api_key.encode())]
