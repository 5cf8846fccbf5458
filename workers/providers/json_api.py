"""What the JSON-over-HTTP providers (openai, anthropic, mistral) share: keys, one POST, one SSE
stream, and the error boundary. The wire formats live in `workers/formats/` (each provider's
`api.py`); this module is the I/O around them.

A subclass names its format and says how to address and authenticate a request:

    api                 the format's entry points (formats/common.py ProviderAPI), e.g. formats/openai/api.py API:
                        to_request, from_response, stream_decoder
    dialect()           the format's dialect object for this provider's config
    endpoint(model)     the chat URL for an upstream model name
    auth(key, req)      the headers that carry the chosen key (and per-request headers)

Every failure leaves here as a GatewayError with the AWS code a Bedrock client expects
(`formats/provider_errors.py` for provider answers, `upstream.py` for transport failures), with
the provider's keys redacted from any message.
"""
from __future__ import annotations

import json
import time
from contextlib import aclosing

import msgspec

from finops.shared.provider_config import ApiKeyConfig, JSONAPIConfig
from finops.shared.model import ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, request_tokens

from .. import upstream
from ..formats import provider_errors
from ..formats.common import ProviderAPI, response_to_events
from ..formats.openai import embeddings as openai_embeddings
from ..formats.sse import SSEDecoder, SSEError
from ..request import Attempt
from .base import Provider

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
USER_AGENT = b"finops-gateway/0.1"
MAX_ERROR_BODY = 64 * 1024     # bytes of a provider's error answer read (its message is near the start)


class JSONAPIProvider(Provider):
    api: ProviderAPI = None      # set by subclasses
    done_marker = "[DONE]"       # an SSE data value that ends the stream (OpenAI style); None: end of body

    def __init__(self, cfg: JSONAPIConfig):
        super().__init__(cfg)
        self.client = upstream.UpstreamClient(cfg)
        self.secrets = tuple(k.api_key for k in cfg.keys if k.api_key)
        self._dialect = self.dialect()

    # --- what subclasses say ---------------------------------------------------------------
    def dialect(self):
        raise NotImplementedError

    def endpoint(self, model: str) -> str:
        raise NotImplementedError

    def auth(self, key: ApiKeyConfig | None, req: ChatRequest | None) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    # --- the canonical calls ---------------------------------------------------------------
    async def chat(self, attempt: Attempt, req: ChatRequest) -> ChatResponse:
        body = self.api.to_request(req, attempt.upstream_model, stream=False, dialect=self._dialect)
        doc = await self.post_json(self.endpoint(attempt.upstream_model), self.headers(req, attempt), body)
        resp = self.api.from_response(doc, provider=self.name)
        usage = resp.usage
        if not usage.input_tokens:      # a server that reports no usage: our estimate
            usage = msgspec.structs.replace(usage, input_tokens=request_tokens(req))
        return msgspec.structs.replace(resp, usage=usage, latency_ms=int((time.monotonic() - attempt.started) * 1000))

    async def chat_stream(self, attempt: Attempt, req: ChatRequest):
        body = self.api.to_request(req, attempt.upstream_model, stream=True, dialect=self._dialect)
        decoder = self.api.stream_decoder(self.name, request_tokens(req))
        async with self.open_stream(self.endpoint(attempt.upstream_model), self.headers(req, attempt), body) as events:
            if isinstance(events, dict):
                # the server ignored "stream": true and answered JSON: replay it as a stream
                yield response_to_events(self.api.from_response(events, provider=self.name))
                return
            finished = False
            async with aclosing(events):
                async for read in events:
                    batch = []
                    for item in read:
                        if item is DONE:
                            batch += decoder.finish()
                            finished = True
                        else:
                            batch += decoder.feed(*item)
                    if batch:
                        yield batch
        if not finished:
            yield decoder.finish()

    async def count_tokens(self, attempt: Attempt, req: ChatRequest) -> int:
        return request_tokens(req)

    embeddings_path = ""            # set by providers with an OpenAI-style embeddings endpoint ("/embeddings")
    dimensions_field = "dimensions"

    async def embed(self, attempt: Attempt, req: EmbedRequest) -> EmbedResponse:
        """Titan and Cohere embed bodies, through the provider's embeddings endpoint
        (formats/openai/embeddings.py)."""
        if not self.embeddings_path:
            raise self.unsupported("embeddings")
        body = openai_embeddings.to_request(req, attempt.upstream_model, self.dimensions_field)
        doc = await self.post_json(self.cfg.base_url + self.embeddings_path, self.headers(None, attempt), body)
        return openai_embeddings.from_response(doc, self.name, len(req.texts))

    # --- I/O -------------------------------------------------------------------------------
    def headers(self, req: ChatRequest | None, attempt: Attempt) -> list[tuple[bytes, bytes]]:
        h = [(b"content-type", b"application/json"), (b"user-agent", USER_AGENT)]
        h += self.auth(attempt.key, req)
        h += [(k.encode(), v.encode()) for k, v in self.cfg.headers.items()]
        return h

    def encode(self, body: dict) -> bytes:
        return _dumps(body).encode()

    async def post_json(self, url: str, headers: list, body: dict) -> dict:
        resp = await self.client.post(url, headers + [(b"accept", b"application/json")], self.encode(body))
        if resp.status_code >= 400:
            raise provider_errors.from_http(self.name, resp.status_code, resp.headers, resp.content, self.secrets)
        return self.json_of(resp.status_code, resp.content)

    def json_of(self, status: int, content: bytes) -> dict:
        try:
            doc = json.loads(content)
        except ValueError:
            raise provider_errors.bad_body(self.name, status, content, "a body that is not JSON") from None
        if not isinstance(doc, dict):
            raise provider_errors.bad_body(self.name, status, content, "JSON that is not an object")
        return doc

    def open_stream(self, url: str, headers: list, body: dict):
        return _SSEStream(self, url, headers + [(b"accept", b"text/event-stream")], self.encode(body))


DONE = ("done", None)   # in a read's list: the provider's end marker arrived ([DONE])


class _SSEStream:
    """`async with` -> an async iterator of lists of (event name, parsed data dict), one list per
    read from the socket, or the parsed JSON dict when the server answered without streaming.
    The provider's end marker appears as `DONE`; the body is still read to its end after it, so
    the connection goes back to the pool. HTTP errors raise before anything is
    yielded, so the pipeline can still answer a plain (retryable) HTTP error."""

    def __init__(self, provider: JSONAPIProvider, url: str, headers: list, body: bytes):
        self.p = provider
        self.cm = provider.client.stream(url, headers, body)

    async def __aenter__(self):
        resp = await self.cm.__aenter__()
        try:
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if resp.status_code >= 400:
                body = await _read_limited(resp)
                raise provider_errors.from_http(self.p.name, resp.status_code, resp.headers, body, self.p.secrets)
            if ctype == "application/json":
                return self.p.json_of(resp.status_code, await _read_limited(resp, 64 * 1024 * 1024))
            if ctype != "text/event-stream":
                body = await _read_limited(resp)
                raise provider_errors.bad_body(self.p.name, resp.status_code, body,
                                               f"content-type {ctype or 'none'!r} instead of an event stream")
        except BaseException as e:
            await self.cm.__aexit__(type(e), e, e.__traceback__)
            raise
        return self._events(resp)

    async def __aexit__(self, *exc):
        return await self.cm.__aexit__(*exc)

    async def _events(self, resp):
        sse = SSEDecoder()
        name = self.p.name
        seen, head, done = 0, b"", False
        async for chunk in resp.aiter_raw():
            if done:            # read to the end of the body, so the connection can be reused
                continue
            if not seen and len(head) < 200:
                head += chunk[:200]
            try:
                parsed = sse.feed(chunk)
            except SSEError as e:
                raise provider_errors.cut_stream(name, f"the body is not an event stream: {e}") from None
            read = []
            for event, data in parsed:
                if data == self.p.done_marker:
                    done = True
                    read.append(DONE)
                    break
                try:
                    doc = json.loads(data)
                except ValueError:
                    raise provider_errors.cut_stream(name, f"an event that is not JSON: {data[:80]!r}") from None
                if not isinstance(doc, dict):
                    raise provider_errors.cut_stream(name, f"an event that is not a JSON object: {data[:80]!r}")
                read.append((event, doc))
            seen += len(parsed)
            if read:
                yield read
        if not seen:
            raise provider_errors.bad_body(name, resp.status_code, head, "a body that is not an event stream")


async def _read_limited(resp, limit: int = MAX_ERROR_BODY) -> bytes:
    out = bytearray()
    async for chunk in resp.aiter_raw():
        out += chunk
        if len(out) > limit:
            break
    return bytes(out[:limit])
