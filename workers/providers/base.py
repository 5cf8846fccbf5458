"""The provider interface. Each provider is one module translating the canonical model.

A provider implements the canonical calls, each for one `Attempt` (workers/request.py: the
upstream model, the provider key to use, the client's headers; immutable, and all a provider reads):

    chat(attempt, req) -> ChatResponse
    chat_stream(attempt, req) -> async iterator of lists of StreamEvent (ConverseStream order); each
                                 list is what one upstream read produced, so it travels to the
                                 client as one message
    count_tokens(attempt, req) -> int
    embed(attempt, req) -> EmbedResponse

and the pipeline renders the answer in whatever format the client asked for (Converse, or the
model family's native InvokeModel body). A provider that speaks Bedrock itself sets
`native_bedrock = True` and implements `relay(attempt, body, reply, headers_for)` instead: the client's bytes go
upstream unchanged (re-signed), and the answer comes back unchanged.

A provider whose own API is one model family's native InvokeModel format (anthropic: the Claude
Messages body) names it in `native_family` and implements `invoke_native(attempt, doc) -> dict` and
`invoke_native_stream(attempt, doc, tracker)` (native event dicts): such bodies are passed through
instead of translated, so nothing is lost.

Failures are raised as `GatewayError` with the AWS code a Bedrock user would expect; a provider
maps its own library's exceptions at its edge (see `upstream.py`).
"""
from __future__ import annotations

from finops.shared import errors
from finops.shared.provider_config import ProviderConfig

from ..request import Attempt


class Provider:
    kind = "abstract"
    native_bedrock = False
    native_family: str | None = None

    def __init__(self, cfg: ProviderConfig):
        self.cfg = cfg
        self.name = cfg.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def unsupported(self, what: str) -> errors.GatewayError:
        return errors.validation(f"provider {self.name!r} ({self.kind}) does not support {what}.")

    async def chat(self, attempt: Attempt, req):
        raise self.unsupported("chat")

    def chat_stream(self, attempt: Attempt, req):
        raise self.unsupported("streaming")

    async def count_tokens(self, attempt: Attempt, req) -> int:
        raise self.unsupported("CountTokens")

    async def embed(self, attempt: Attempt, req):
        raise self.unsupported("embeddings")

    async def relay(self, attempt: Attempt, body: bytes, reply, headers_for=lambda usage: []) -> dict:
        raise self.unsupported("native Bedrock relay")

    async def aclose(self) -> None:
        pass
