"""The typed records of one request's way through a worker. Pure.

    Request   what the client asked, as the worker received it (immutable)
    Attempt   one try of one route target with one provider key: all a provider reads (immutable)
    Progress  what the answer's relay has shown the client so far (the pipeline's own, per request)
    Outcome   how the request ended: what its log row and trace record (immutable)

Data flows one way: `Pipeline.handle()` builds the `Request`, asks the routing planner for each
`Attempt` and hands it to a provider, which returns what it produced; nothing downstream writes
back into what it was given. The only mutable record, `Progress`, is written by the pipeline's
stream relay alone, and read when the request ends (a stream cut mid-way is charged for what
reached the client).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from finops.shared.provider_config import KeyConfig
from finops.shared.governance import VirtualKey


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the worker received it, and whose it is once governance identified it."""
    rid: str
    op: str                         # converse | converse-stream | invoke | invoke-with-response-stream | count-tokens
                                    # | apply-guardrail (model_id: the guardrail identifier)
    model_id: str                   # as the client asked
    headers: Mapping[str, str]      # the client's request headers, lower-case names (read-only)
    environment: str                # the x-bf-env label ("" = none)
    started: float                  # time.monotonic() when the worker received it
    body: bytes
    target_path: str = ""           # the raw request target (SigV4 signs it)
    key: VirtualKey | None = None   # the virtual key presented, once identified
    key_label: str = ""             # what the log records as the key (its id, or an open-mode label)

    @classmethod
    def of(cls, msg, started: float) -> "Request":
        """From a `request` envelope (finops.shared.envelope.Request)."""
        hdr = msg.headers
        return cls(rid=msg.rid, op=msg.op, model_id=msg.model, headers=MappingProxyType(hdr),
                   environment=hdr.get("x-bf-env", ""), started=started, body=msg.body,
                   target_path=msg.path, key_label=hdr.get("x-bf-vk", "")[:64])


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one route target, with one of its provider's keys: everything a provider reads."""
    number: int                     # 1, 2, ... over the whole request (retries and fallbacks included)
    target: str                     # "provider/model", as x-bf-target shows it
    provider: str                   # the provider's name
    upstream_model: str             # what the provider is asked for (the target's model, else the modelId)
    fallback: bool                  # a target other than the first this request tried
    key_index: int | None           # which of the provider's keys to use (None: the provider has none)
    key: KeyConfig | None           # that key
    key_circuit: str                # that key's circuit name ("" when it has none)
    op: str
    model_id: str
    headers: Mapping[str, str]
    started: float
    target_path: str = ""           # the raw request target (ApplyGuardrail: its id and version)

    @classmethod
    def of(cls, request: Request, step, keys_of: dict) -> "Attempt":
        """The attempt the routing planner's `step` (routing/planner.py: Step) makes for `request`."""
        t = step.target
        return cls(number=step.number, target=step.name, provider=t.provider,
                   upstream_model=t.model or request.model_id, fallback=step.fallback, key_index=step.key,
                   key=keys_of[t.provider][step.key] if step.key is not None else None,
                   key_circuit=step.key_circuit, op=request.op, model_id=request.model_id,
                   headers=request.headers, started=request.started, target_path=request.target_path)


@dataclass(slots=True)
class Progress:
    """How far a request got: its attempts, and what the relay of its answer has shown the client.
    Written by the pipeline alone (the attempt loop and the stream relay), read when it ends."""
    attempts: int = 0                   # attempts made, over every target
    last: Attempt | None = None         # the attempt that answered, or the last one tried
    first_byte_ms: int | None = None    # streams: when the first event was ready for the client
    produced_tokens: int = 0            # streams: output relayed so far (about 4 characters a token)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended: what its request-log row and its trace span say."""
    status: int                     # the HTTP status the client got (200 for a stream that failed later)
    error: str = ""                 # the AWS error code ("" = ok; "cancelled", "client_gone")
    origin: str = ""                # "" | "client" | "governance" | "upstream" | "gateway"
    usage: Mapping = field(default_factory=lambda: MappingProxyType({}))   # the tokens charged {"in", "out", "cr", "cw"}
    cost_usd: float = 0.0
    progress: Progress | None = None        # its attempts and relay (see Progress)
    cache: str = ""                 # "" (no caching) | "miss" | "hit-exact" | "hit-semantic"
    similarity: float = 0.0
    saved_usd: float = 0.0
    prompt_saved_usd: float = 0.0   # what the provider's prompt cache saved (cache reads below the input price)
    tags: Mapping = field(default_factory=lambda: MappingProxyType({}))   # cost-allocation tags {name: value}

    @staticmethod
    def cancelled(why, status: int) -> tuple[int, str, str]:
        """(status, error, origin) of a request the frontend stopped waiting for: a timeout it
        answered itself (`why`, an envelope.Why, says so), or a client that went away."""
        return (why.status, why.error, why.origin) if why is not None else (status, "cancelled", "client")
