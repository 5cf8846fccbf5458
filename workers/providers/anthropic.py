"""The `anthropic` provider: Anthropic's Messages API.

    POST {base_url}/v1/messages                 x-api-key: KEY, anthropic-version: V
    POST {base_url}/v1/messages/count_tokens    (CountTokens)

Converse requests and every model family's InvokeModel body are translated through the
canonical model (`formats/anthropic/api.py`). A Claude Messages body sent to InvokeModel
is the Messages API already: it goes upstream as it is (model set, `anthropic_version` dropped,
`anthropic_beta` moved to the `anthropic-beta` header), and the answer comes back as it is, so
nothing the client sent or the model said is lost in translation.
"""
from __future__ import annotations

from contextlib import aclosing

from finops.shared.provider_config import ApiKeyConfig
from finops.shared.model import ChatRequest

from ..formats import provider_errors
from ..formats.anthropic import api as anthropic_api
from ..request import Attempt
from .json_api import JSONAPIProvider
from .registry import register

# Fields /v1/messages/count_tokens accepts (Anthropic API reference).
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


@register
class AnthropicProvider(JSONAPIProvider):
    kind = "anthropic"
    api = anthropic_api.API
    done_marker = None
    native_family = "anthropic-messages"

    def dialect(self):
        return anthropic_api.AnthropicDialect(provider=self.name,
                                              default_max_tokens=self.cfg.default_max_tokens,
                                              passthrough_fields=frozenset(self.cfg.passthrough_fields))

    def endpoint(self, model: str) -> str:
        return f"{self.cfg.base_url}/v1/messages"

    def auth(self, key: ApiKeyConfig | None, req: ChatRequest | None) -> list[tuple[bytes, bytes]]:
        h = [(b"anthropic-version", self.cfg.anthropic_version.encode())]
        if key is not None:
            h.append((b"x-api-key", key.api_key.encode()))
        beta = anthropic_api.beta_header(req) if req is not None else None
        if beta:
            h.append((b"anthropic-beta", beta.encode()))
        return h

    async def count_tokens(self, attempt: Attempt, req: ChatRequest) -> int:
        body = anthropic_api.to_anthropic_request(req, attempt.upstream_model, stream=False, dialect=self._dialect)
        body = {k: v for k, v in body.items() if k in COUNT_FIELDS}
        doc = await self.post_json(f"{self.cfg.base_url}/v1/messages/count_tokens", self.headers(req, attempt), body)
        n = doc.get("input_tokens")
        if not isinstance(n, int):
            raise provider_errors.bad_body(self.name, 200, self.encode(doc),
                                           "a count_tokens answer without input_tokens")
        return n

    # --- Claude bodies, passed through -----------------------------------------------------
    def native_headers(self, extra: list[tuple[str, str]], attempt: Attempt) -> list[tuple[bytes, bytes]]:
        h = self.headers(None, attempt)
        h += [(k.encode(), v.encode()) for k, v in extra]
        return h

    def native_usage(self, doc: dict):
        return anthropic_api.native_usage(doc)

    def native_tracker(self):
        return anthropic_api.NativeStreamTracker(self.name)

    async def invoke_native(self, attempt: Attempt, doc: dict) -> dict:
        body, extra = anthropic_api.native_request(doc, attempt.upstream_model, stream=False)
        return await self.post_json(self.endpoint(attempt.upstream_model), self.native_headers(extra, attempt), body)

    async def invoke_native_stream(self, attempt: Attempt, doc: dict, tracker):
        """Native Messages stream events (data dicts, "type" = event name), a list per upstream
        read, each fed to `tracker`."""
        body, extra = anthropic_api.native_request(doc, attempt.upstream_model, stream=True)
        async with self.open_stream(self.endpoint(attempt.upstream_model), self.native_headers(extra, attempt), body) as events:
            if isinstance(events, dict):
                raise provider_errors.bad_body(
                    self.name, 200, self.encode(events), "a JSON answer to a streaming request")
            async with aclosing(events):
                async for read in events:
                    for name, data in read:
                        tracker.feed(name, data)
                    yield [data for _, data in read]
