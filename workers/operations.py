"""What each Bedrock operation does for one attempt on one provider: parse the client's body
once, call the provider, and render its answer in the format the client asked for.

    parsed = parse(request)                                            # once per request
    usage = await run(provider, attempt, parsed, reply, progress, headers_for, cap)

`parse` reads the body into the canonical model: Converse, each model family's native InvokeModel
body (formats/bedrock/families.py), CountTokens' two input forms. A body only Bedrock knows (an
unknown family, a field the canonical model cannot hold) is not an error here: a `bedrock`
provider relays the client's bytes as they are and lets Bedrock judge them; any other provider
raises the problem `parse` found (`Parsed.problem`), before anything is sent.

`run` carries out one attempt and returns the usage the provider reported ({"in", "out", "cr",
"cw"}). It writes the answer to `reply`: the head (with `headers_for(usage)`, the gateway's own
headers, for a complete answer; `headers_for(None)` at the head of a stream), then the body, or the
stream's chunks and its end. A stream's head waits for the first event, so a provider that fails
before answering gives a plain (retryable) HTTP error, not a broken stream. `progress` records
what the client has seen of a stream (first byte, output relayed): a stream cut mid-way is charged
for it. `cap`: the output cap governance set for a request without maxTokens (None: the client's own).

Failures are GatewayErrors with the AWS code a Bedrock client expects.
"""
from __future__ import annotations

import base64
import json
import time
from contextlib import aclosing
from dataclasses import dataclass

import msgspec

from finops.shared import errors
from finops.shared.model import ChatRequest, EmbedRequest, Metadata, StreamEvent, TextDelta, ToolInputDelta, request_tokens

from .formats.bedrock import converse, families, guardrail
from .reply import Reply
from .request import Attempt, Progress, Request
from .formats import provider_errors

JSON = "application/json"
EVENTSTREAM = "application/vnd.amazon.eventstream"
CONVERSE_OPS = ("converse", "converse-stream")
APPLY_GUARDRAIL = "apply-guardrail"
SERVICE_TIERS = ("priority", "default", "flex", "reserved")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj) -> bytes:
    return _dumps(obj).encode()


def parse_json(body: bytes, what: str = "body"):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise errors.validation(f"{what}: not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8.") from None
    if not text.strip():
        raise errors.validation(f"{what}: empty; expected a JSON object.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.validation(f"{what}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}.") from None


# --- parsing, once per request ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Parsed:
    """The client's body, read once: the JSON document, its model family (None for Converse and
    CountTokens), the canonical request (None when only Bedrock can read the body), and the
    problem a translating provider would refuse it for (None: none)."""
    doc: object = None
    family: object = None
    req: object = None
    problem: errors.GatewayError | None = None


def parse(request: Request) -> Parsed:
    """Raises the ValidationException of a body no provider can take (not JSON, an invalid
    Converse body, a refused Accept header)."""
    op, body = request.op, request.body
    if op == "count-tokens":
        return _parse_count_tokens(request)
    doc = parse_json(body)
    if op == APPLY_GUARDRAIL:
        guardrail.target(request.target_path)
        return Parsed(guardrail.check_request(doc))
    if op in CONVERSE_OPS:
        return Parsed(doc, None, converse.parse_request(doc))
    if op == "invoke":
        check_accept(request.headers.get("accept"), "accept")
    else:
        check_accept(request.headers.get("x-amzn-bedrock-accept"), "X-Amzn-Bedrock-Accept")
    if not isinstance(doc, dict):
        raise errors.validation("body: expected a JSON object.")
    try:
        family = families.family_for(request.model_id, doc)
        req = family.parse_request(doc)
    except errors.GatewayError as e:            # a body only Bedrock knows: Bedrock judges it
        return Parsed(doc, None, None, client_fault(e))
    tier = request.headers.get("x-amzn-bedrock-service-tier", "")
    if tier and isinstance(req, ChatRequest):      # the InvokeModel serviceTier parameter
        if tier not in SERVICE_TIERS:
            raise errors.validation(f"X-Amzn-Bedrock-Service-Tier: {tier[:40]!r} is not one of {', '.join(SERVICE_TIERS)}.")
        req = msgspec.structs.replace(req, service_tier=tier)
    problem = None
    if op == "invoke-with-response-stream" and not family.streams:
        problem = client_fault(errors.validation(f"modelId {request.model_id!r}: the model is unsupported for streaming."))
    return Parsed(doc, family, req, problem)


def guardrail_of(request: Request, parsed: Parsed) -> str:
    """The guardrail identifier the request asks Bedrock to apply ("" = none): Converse's
    `guardrailConfig`, InvokeModel's X-Amzn-Bedrock-GuardrailIdentifier header."""
    if request.op in CONVERSE_OPS:
        g = parsed.doc.get("guardrailConfig") if isinstance(parsed.doc, dict) else None
        return str(g.get("guardrailIdentifier") or "") if isinstance(g, dict) else ""
    if request.op in ("invoke", "invoke-with-response-stream"):
        return request.headers.get("x-amzn-bedrock-guardrailidentifier", "")
    return ""


def _parse_count_tokens(request: Request) -> Parsed:
    kind, value = converse.parse_count_tokens(parse_json(request.body))
    if kind != "invokeModel":
        return Parsed(None, None, value)
    try:
        doc = parse_json(value, "input.invokeModel.body")
        req = families.family_for(request.model_id, doc).parse_request(doc)
        if isinstance(req, EmbedRequest):
            raise errors.validation("input.invokeModel.body: CountTokens takes a text-generation body, "
                                    "not an embeddings body.")
    except errors.GatewayError as e:
        return Parsed(None, None, None, client_fault(e))
    return Parsed(None, None, req)


def client_fault(e: errors.GatewayError) -> errors.GatewayError:
    """`e`, marked as the request's own fault (the log's error origin), when a provider raises it."""
    e.origin = "client"
    return e


def check_accept(accept: str | None, name: str) -> None:
    if accept and not any(a.strip().split(";")[0] in ("application/json", "*/*", "application/*")
                          for a in accept.split(",")):
        raise errors.validation(f"{name}: {accept!r} is not supported; this gateway answers application/json.")


# --- one attempt ------------------------------------------------------------------------------

async def run(provider, attempt: Attempt, body: bytes, parsed: Parsed, reply: Reply, progress: Progress,
              headers_for, cap: int | None = None) -> dict:
    op = attempt.op
    if provider.native_bedrock:         # the client's bytes, as they are (with governance's cap, if any)
        if cap and parsed.doc is not None and op not in ("count-tokens", APPLY_GUARDRAIL):
            family = parsed.family
            body = dumps(converse.with_output_cap(parsed.doc, cap) if family is None
                         else family.with_output_cap(parsed.doc, cap))
        return await provider.relay(attempt, body, reply, headers_for)
    if op == APPLY_GUARDRAIL:
        raise errors.validation(f"provider {provider.name!r} ({provider.kind}) cannot apply guardrails; "
                                "ApplyGuardrail needs a bedrock provider ([guardrails] provider).")
    if parsed.problem is not None:
        raise parsed.problem
    req = parsed.req
    if cap and op != "count-tokens":
        req = msgspec.structs.replace(req, max_tokens=cap)
    if op == "converse":
        return await converse_answer(provider, attempt, parsed, req, reply, headers_for)
    if op == "converse-stream":
        return await stream(attempt, provider.chat_stream(attempt, req), reply, progress,
                            [["content-type", EVENTSTREAM]] + headers_for(None), converse_frames)
    if op == "invoke":
        return await invoke_answer(provider, attempt, parsed, req, reply, headers_for, cap)
    if op == "invoke-with-response-stream":
        return await invoke_stream(provider, attempt, parsed, req, reply, progress, headers_for, cap)
    if op == "count-tokens":
        n = await provider.count_tokens(attempt, req)
        await reply.head(200, [["content-type", JSON]], stream=False)
        await reply.body(dumps({"inputTokens": n}))
        return {"in": n}
    raise errors.validation(f"unknown operation {op!r}")


async def converse_answer(provider, attempt: Attempt, parsed: Parsed, req, reply: Reply, headers_for) -> dict:
    resp = await provider.chat(attempt, req)
    if not resp.latency_ms:
        resp = msgspec.structs.replace(resp, latency_ms=elapsed_ms(attempt))
    usage = resp.usage.to_wire()
    await reply.head(200, [["content-type", JSON]] + headers_for(usage), stream=False)
    await reply.body(dumps(converse.render_response(
        resp, response_field_paths=parsed.doc.get("additionalModelResponseFieldPaths"))))
    return usage


async def invoke_answer(provider, attempt: Attempt, parsed: Parsed, req, reply: Reply, headers_for,
                        cap: int | None) -> dict:
    family = parsed.family
    if family.name == provider.native_family:
        doc = family.with_output_cap(parsed.doc, cap) if cap else parsed.doc
        return await invoke_native(provider, attempt, doc, reply, headers_for)
    if isinstance(req, EmbedRequest):
        resp = await provider.embed(attempt, req)
        out = family.render_embed_response(resp, req=req, model_id=attempt.model_id)
        usage = {"in": resp.input_tokens, "out": 0}
    else:
        resp = await provider.chat(attempt, req)
        out = family.render_response(resp, attempt.model_id)
        usage = resp.usage.to_wire()
    await reply.head(200, [["content-type", JSON],
                           ["x-amzn-bedrock-input-token-count", str(usage["in"])],
                           ["x-amzn-bedrock-output-token-count", str(usage["out"])],
                           ["x-amzn-bedrock-invocation-latency", str(elapsed_ms(attempt))]]
                     + headers_for(usage), stream=False)
    await reply.body(dumps(out))
    return usage


async def invoke_native(provider, attempt: Attempt, doc: dict, reply: Reply, headers_for) -> dict:
    """A family body to the provider whose API it is: the answer goes back as it came."""
    out = await provider.invoke_native(attempt, doc)
    u = provider.native_usage(out)
    await reply.head(200, [["content-type", JSON],
                           ["x-amzn-bedrock-input-token-count", str(u.input_tokens)],
                           ["x-amzn-bedrock-output-token-count", str(u.output_tokens)],
                           ["x-amzn-bedrock-invocation-latency", str(elapsed_ms(attempt))]]
                     + ([["x-amzn-bedrock-cache-read-input-token-count", str(u.cache_read_tokens)]]
                        if u.cache_read_tokens else [])
                     + ([["x-amzn-bedrock-cache-write-input-token-count", str(u.cache_write_tokens)]]
                        if u.cache_write_tokens else [])
                     + headers_for(u.to_wire()),
                     stream=False)
    await reply.body(dumps(out))
    return u.to_wire()


async def invoke_stream(provider, attempt: Attempt, parsed: Parsed, req, reply: Reply, progress: Progress,
                        headers_for, cap: int | None) -> dict:
    family = parsed.family
    headers = [["content-type", EVENTSTREAM], ["x-amzn-bedrock-content-type", JSON]] + headers_for(None)
    if family.name == provider.native_family:
        tracker = provider.native_tracker()
        doc = family.with_output_cap(parsed.doc, cap) if cap else parsed.doc
        return await stream(attempt, provider.invoke_native_stream(attempt, doc, tracker), reply, progress, headers,
                            lambda d: native_frames(attempt, progress, d, tracker),
                            usage_of=lambda: tracker.usage.to_wire(), complete=lambda: tracker.done)
    encoder = family.stream_encoder(attempt.model_id, input_tokens=request_tokens(req), response_id=reply.rid)
    return await stream(attempt, provider.chat_stream(attempt, req), reply, progress, headers,
                        lambda ev: invoke_frames(encoder, ev))


# --- streams ----------------------------------------------------------------------------------

async def stream(attempt: Attempt, events, reply: Reply, progress: Progress, headers: list, frames_of, *,
                 usage_of=None, complete=None) -> dict:
    """Relay a provider's event stream. `events` yields lists (what one upstream read produced,
    sent as one message) of canonical StreamEvents, or of native dicts when `usage_of` (the usage
    at the end) and `complete` (whether the provider finished the answer) say what they carried."""
    usage: dict = {}
    chars = 0
    try:
        async with aclosing(events) as agen:
            async for batch in agen:
                if usage_of is None:         # count what is relayed: a cut stream is charged for it
                    chars += sum(len(ev.text) if type(ev) is TextDelta else len(ev.input)
                                 for ev in batch if type(ev) in (TextDelta, ToolInputDelta))
                await _relay_batch(attempt, batch, reply, progress, headers, frames_of, usage_of)
                if usage_of is None and batch and type(batch[-1]) is Metadata:
                    usage = batch[-1].usage.to_wire()
    finally:
        progress.produced_tokens = (chars + 3) // 4
    if progress.first_byte_ms is None:
        raise errors.GatewayError("ModelErrorException", "the provider returned an empty stream.",
                                  extra={"originalStatusCode": 502})
    if complete is not None and not complete():
        raise provider_errors.cut_stream(attempt.provider, "the provider's stream ended without its end event")
    if usage_of is not None:
        usage = usage_of()
    await reply.end(usage)
    return usage


async def _relay_batch(attempt: Attempt, batch: list, reply: Reply, progress: Progress, headers: list, frames_of,
                       usage_of) -> None:
    """One upstream read's events, as one message to the client (the head before the first)."""
    if not batch:
        return
    if progress.first_byte_ms is None:
        progress.first_byte_ms = elapsed_ms(attempt)
        await reply.head(200, headers, stream=True)
    frames = []
    for ev in batch:
        if usage_of is None and type(ev) is Metadata:
            ev = _timed(ev, attempt, progress)
        frames += frames_of(ev)
    await reply.chunks(frames)


def _timed(meta: Metadata, attempt: Attempt, progress: Progress) -> Metadata:
    """The stream's last event with the latencies the gateway measured, where the provider gave none."""
    return msgspec.structs.replace(
        meta, latency_ms=meta.latency_ms or elapsed_ms(attempt),
        first_byte_latency_ms=(meta.first_byte_latency_ms if meta.first_byte_latency_ms is not None
                               else progress.first_byte_ms))


def converse_frames(ev: StreamEvent):
    et, payload = converse.stream_payload(ev)
    return [(et, dumps(payload))]


def native_frames(attempt: Attempt, progress: Progress, d: dict, tracker):
    """A native stream event passed through as an InvokeModelWithResponseStream chunk; the last
    one (message_stop) gets the invocation metrics Bedrock adds. Keep-alive pings are dropped
    (Bedrock does not send them)."""
    if d.get("type") == "ping":
        return []
    if d.get("type") == "message_stop":
        d = dict(d)
        d[families.METRICS_KEY] = families.invocation_metrics(
            Metadata(tracker.usage, elapsed_ms(attempt), progress.first_byte_ms))
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()}))]


def invoke_frames(encoder, ev: StreamEvent):
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()})) for d in encoder.feed(ev)]


def elapsed_ms(attempt: Attempt) -> int:
    """Milliseconds since the worker received the request."""
    return int((time.monotonic() - attempt.started) * 1000)
