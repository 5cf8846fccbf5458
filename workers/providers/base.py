"""The provider interface. Each provider is one module translating the canonical model.

A provider implements the canonical calls:

    chat(call, req) -> ChatResponse
    chat_stream(call, req) -> async iterator of lists of StreamEvent (ConverseStream order); each
                              list is what one upstream read produced, so it travels to the
                              client as one message
    count_tokens(call, req) -> int
    embed(call, req) -> EmbedResponse

and the pipeline renders the answer in whatever format the client asked for (Converse, or the
model family's native InvokeModel body). A provider that speaks Bedrock itself sets
`native_bedrock = True` and implements `relay(call, body, reply)` instead: the client's bytes go
upstream unchanged (re-signed), and the answer comes back unchanged.

A provider whose own API is one model family's native InvokeModel format (anthropic: the Claude
Messages body) names it in `native_family` and implements `invoke_native(call, doc) -> dict` and
`invoke_native_stream(call, doc, tracker)` (native event dicts): such bodies are passed through
instead of translated, so nothing is lost.

Failures are raised as `GatewayError` with the AWS code a Bedrock user would expect; a provider
maps its own library's exceptions at its edge (see `upstream.py`).
"""
from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass, field

from finops.shared import errors
from finops.shared.provider_config import ProviderConfig


@dataclass(slots=True)
class Call:
    """Per-request context a provider may read. Nothing in it is a secret of the client's."""
    rid: str
    op: str                     # converse | converse-stream | invoke | invoke-with-response-stream | count-tokens
    model_id: str               # as the client asked
    upstream_model: str         # what the provider is asked for (route `model`, else model_id)
    headers: dict = field(default_factory=dict)  # the client's request headers, lower-case names
    virtual_key: str = ""
    env: str = ""
    started: float = 0.0        # monotonic time the worker received the request
    provider: str = ""          # name of the provider serving it
    first_byte_ms: int | None = None  # streams: when the first event was ready for the client
    key: object = None          # the VirtualKey presented (governance), or None
    admission: object = None    # governance.governor.Admission: price and reservation
    produced_tokens: int = 0    # streams: output tokens relayed so far (estimated), for settling a cut stream
    cost_usd: float = 0.0
    key_name: str = ""          # the provider key that served the current attempt (circuit breaking)
    keys_tried: tuple = ()      # key names this request tried on its current target (Provider.choose_key)
    keys_refused: tuple = ()    # ...and those of them that were refused or out of quota (never drawn again)
    target: str = ""            # "provider/model" of the current attempt (x-bf-target)
    attempts: int = 0           # attempts so far, over every target
    cache: str = ""             # "" (no caching) | "miss" | "hit-exact" | "hit-semantic"
    cache_similarity: float = 0.0
    saved_usd: float = 0.0      # a cache hit: what the answer cost when it was made
    fallback: bool = False      # served (or last tried) by a target other than the route's first
    span: object = None         # the request's trace span (observe/tracing.py; a no-op when tracing is off)
    parsed: tuple | None = None  # (document, family, canonical request): Pipeline.parse_body, once per request


class Provider:
    kind = "abstract"
    native_bedrock = False
    native_family: str | None = None

    def __init__(self, cfg: ProviderConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.breakers = None        # set by the pipeline: circuit state of this provider's keys
        self._key_names = [f"{cfg.name}#key{i}" for i in range(len(cfg.keys))]
        self._keys_for: dict[str, list[int]] = {}

    def choose_key(self, model: str, call: Call | None) -> int | None:
        """Index of the key to use for `model`: weighted among the keys whose `models` globs
        allow it, whose circuit is not open and that did not refuse this request on its current
        target (`call.keys_refused`); keys this request has not tried on its target yet
        (`call.keys_tried`) first. Records the choice in `call.key_name`. None when the provider
        has no keys. Raises a retryable ServiceUnavailableException when no key can serve now
        (so the route falls back)."""
        keys = self.cfg.keys
        if not keys:
            return None
        allowed, candidates = self._candidates(model, call)
        b = self.breakers if len(keys) > 1 else None     # one key: nowhere else to go
        tried = call.keys_tried if call is not None else ()
        if tried:       # keys this request has not tried on its target first, then the others
            fresh = [i for i in candidates if self._key_names[i] not in tried]
            pools = (fresh, [i for i in candidates if i not in fresh])
        else:
            pools = (candidates,)
        for pool in pools:
            while pool:
                i = pool[0] if len(pool) == 1 else random.choices(pool, [keys[j].weight for j in pool])[0]
                if b is None or b.allow(self._key_names[i]):
                    if call is not None:
                        call.key_name = self._key_names[i]
                    return i
                pool = [j for j in pool if j != i]
        why = ("no key of this provider may serve it (keys[].models)" if not allowed
               else "every key that may serve it was refused upstream or has an open circuit"
               if call is not None and call.keys_refused
               else "the circuit of every key that may serve it is open")
        raise errors.unavailable(f"provider {self.name!r} cannot serve model {model!r} now: {why}.")

    def has_untried_key(self, model: str, call: Call) -> bool:
        """Whether a key this request has not tried on its current target may serve `model`
        (its `models` globs allow it, its circuit is not open): where a refused key goes next."""
        _, candidates = self._candidates(model, call)
        return any(self._key_names[i] not in call.keys_tried for i in candidates)

    def _candidates(self, model: str, call: Call | None) -> tuple[list[int], list[int]]:
        """(indexes of the keys whose `models` globs allow `model`, those of them whose circuit
        is not open and that did not refuse this request on its current target)."""
        keys = self.cfg.keys
        allowed = self._keys_for.get(model)
        if allowed is None:
            allowed = [i for i, k in enumerate(keys) if any(fnmatch.fnmatchcase(model, g) for g in k.models)]
            if len(self._keys_for) < 4096:
                self._keys_for[model] = allowed
        b = self.breakers if len(keys) > 1 else None
        refused = call.keys_refused if call is not None else ()
        if b is None and not refused:
            return allowed, allowed
        names = self._key_names
        return allowed, [i for i in allowed if names[i] not in refused
                         and (b is None or b.state(names[i]) != "open")]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def unsupported(self, what: str) -> errors.GatewayError:
        return errors.validation(f"provider {self.name!r} ({self.kind}) does not support {what}.")

    async def chat(self, call: Call, req):
        raise self.unsupported("chat")

    def chat_stream(self, call: Call, req):
        raise self.unsupported("streaming")

    async def count_tokens(self, call: Call, req) -> int:
        raise self.unsupported("CountTokens")

    async def embed(self, call: Call, req):
        raise self.unsupported("embeddings")

    async def relay(self, call: Call, body: bytes, reply, headers_for=lambda usage: []) -> None:
        raise self.unsupported("native Bedrock relay")

    async def aclose(self) -> None:
        pass
