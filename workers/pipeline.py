"""One request, start to finish, in one readable function: `Pipeline.handle()`.

    route (modelId -> provider) -> parse the body once -> call the provider -> render -> reply

Governance (reserve/settle) and the cache slot in around the provider call in later steps.
The pipeline owns the format conversions: Converse and each model family's native InvokeModel
body are parsed into the canonical model, and the provider's canonical answer is rendered back
into the format the client asked for. A `native_bedrock` provider gets the client's bytes as
they are instead.

Errors: any `GatewayError` becomes an `error` reply: an AWS error response before the head, an
exception frame after it. Anything else is a bug: it is logged with the request id, and the client
gets InternalServerException.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from contextlib import aclosing

import trio

from finops.shared import errors
from finops.shared.config import Config
from finops.shared.model import EmbedRequest, StreamEvent, request_tokens

from .bedrock import converse, families
from .providers import build_provider
from .providers.base import Call
from .reply import Reply
from .translate import provider_errors
from .requestlog import RequestLog

log = logging.getLogger("finops.pipeline")

JSON = "application/json"
EVENTSTREAM = "application/vnd.amazon.eventstream"
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


class Pipeline:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.providers = {name: build_provider(p) for name, p in cfg.providers.items()}
        self.requestlog = RequestLog(cfg)

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
        self.requestlog.close()

    async def handle(self, env: dict, reply: Reply) -> None:
        hdr = env.get("hdr", {})
        call = Call(rid=env["id"], op=env["op"], model_id=env["model"], upstream_model=env["model"],
                    headers=hdr, virtual_key=hdr.get("x-bf-vk", ""), env=hdr.get("x-bf-env", ""),
                    started=time.monotonic())
        outcome = "ok"
        usage: dict = {}
        provider_name = ""
        try:
            route = self.cfg.route_for(call.model_id)
            if route is None:
                raise errors.not_found(
                    f"modelId {call.model_id!r}: no route serves it. Add a [[routes]] entry whose "
                    "models glob matches it, or a [default_route], to the gateway config.")
            provider = self.providers[route.provider]
            provider_name = call.provider = provider.name
            if route.model:
                call.upstream_model = route.model
            usage = await self.dispatch(call, provider, env["body"], reply) or {}
        except errors.GatewayError as e:
            outcome = e.code
            await reply.error(e)
        except trio.TooSlowError:
            outcome = "client_gone"     # no stream credit for the idle timeout
        finally:
            if outcome == "ok" and not reply.done:
                outcome = "cancelled"   # the client went away; the frontend cancelled us
            self.requestlog.record(call, provider_name, outcome, usage, reply)

    async def dispatch(self, call: Call, provider, body: bytes, reply: Reply):
        op = call.op
        if provider.native_bedrock:
            self.validate_native(op, body)
            return await provider.relay(call, body, reply)
        if op == "converse":
            doc = parse_json(body)
            req = converse.parse_request(doc)
            resp = await provider.chat(call, req)
            resp.latency_ms = resp.latency_ms or self.elapsed_ms(call)
            await reply.head(200, [["content-type", JSON]], stream=False)
            await reply.body(dumps(converse.render_response(
                resp, response_field_paths=doc.get("additionalModelResponseFieldPaths"))))
            return resp.usage.to_wire()
        if op == "converse-stream":
            req = converse.parse_request(parse_json(body))
            return await self.stream(call, provider.chat_stream(call, req), reply,
                                     [["content-type", EVENTSTREAM]], converse_frames)
        if op == "invoke":
            doc = parse_json(body)
            self.check_accept(call.headers.get("accept"), "accept")
            family = families.family_for(call.model_id, doc)
            req = family.parse_request(doc)
            if family.name == provider.native_family:
                return await self.invoke_native(call, provider, doc, reply)
            if isinstance(req, EmbedRequest):
                resp = await provider.embed(call, req)
                out = family.render_embed_response(resp, req=req, model_id=call.model_id)
                in_tok, out_tok = resp.input_tokens, 0
            else:
                resp = await provider.chat(call, req)
                out = family.render_response(resp, call.model_id)
                in_tok, out_tok = resp.usage.input_tokens, resp.usage.output_tokens
            await reply.head(200, [["content-type", JSON],
                                   ["x-amzn-bedrock-input-token-count", str(in_tok)],
                                   ["x-amzn-bedrock-output-token-count", str(out_tok)],
                                   ["x-amzn-bedrock-invocation-latency", str(self.elapsed_ms(call))]],
                             stream=False)
            await reply.body(dumps(out))
            return {"in": in_tok, "out": out_tok}
        if op == "invoke-with-response-stream":
            doc = parse_json(body)
            self.check_accept(call.headers.get("x-amzn-bedrock-accept"), "X-Amzn-Bedrock-Accept")
            family = families.family_for(call.model_id, doc)
            if not getattr(family, "streams", True):
                raise errors.validation(f"modelId {call.model_id!r}: the model is unsupported for streaming.")
            req = family.parse_request(doc)
            if family.name == provider.native_family:
                tracker = provider.native_tracker()
                return await self.stream(call, provider.invoke_native_stream(call, doc, tracker), reply,
                                         [["content-type", EVENTSTREAM], ["x-amzn-bedrock-content-type", JSON]],
                                         lambda d: native_frames(call, d, tracker, self.elapsed_ms),
                                         usage_of=lambda: tracker.usage.to_wire(),
                                         complete=lambda: tracker.done)
            encoder = family.stream_encoder(call.model_id, input_tokens=request_tokens(req), response_id=call.rid)
            return await self.stream(call, provider.chat_stream(call, req), reply,
                                     [["content-type", EVENTSTREAM], ["x-amzn-bedrock-content-type", JSON]],
                                     lambda ev: invoke_frames(encoder, ev))
        if op == "count-tokens":
            kind, value = converse.parse_count_tokens(parse_json(body))
            if kind == "invokeModel":
                doc = parse_json(value, "input.invokeModel.body")
                value = families.family_for(call.model_id, doc).parse_request(doc)
                if isinstance(value, EmbedRequest):
                    raise errors.validation("input.invokeModel.body: CountTokens takes a text-generation body, "
                                            "not an embeddings body.")
            n = await provider.count_tokens(call, value)
            await reply.head(200, [["content-type", JSON]], stream=False)
            await reply.body(dumps({"inputTokens": n}))
            return {"in": n}
        raise errors.validation(f"unknown operation {op!r}")

    async def stream(self, call: Call, events, reply: Reply, headers: list, frames_of, *,
                     usage_of=None, complete=None):
        """Relay a provider's event stream. The head waits for the first event, so a provider
        that fails before answering gives a plain (retryable) HTTP error, not a broken stream.
        `events` yields lists (what one upstream read produced, sent as one message) of canonical
        StreamEvents, or of native dicts when `usage_of` (the usage at the end) and `complete`
        (whether the provider finished the answer) say what they carried."""
        usage: dict = {}
        async with aclosing(events) as agen:
            async for batch in agen:
                if not batch:
                    continue
                if call.first_byte_ms is None:
                    call.first_byte_ms = self.elapsed_ms(call)
                    await reply.head(200, headers, stream=True)
                frames = []
                for ev in batch:
                    if usage_of is None and ev.kind == "metadata":
                        u = ev.data.get("usage")
                        usage = u.to_wire() if u is not None else {}
                        ev.data.setdefault("firstByteLatencyMs", call.first_byte_ms)
                        if not ev.data.get("latencyMs"):
                            ev.data["latencyMs"] = self.elapsed_ms(call)
                    frames += frames_of(ev)
                await reply.chunks(frames)
        if call.first_byte_ms is None:
            raise errors.GatewayError("ModelErrorException", "the provider returned an empty stream.",
                                      extra={"originalStatusCode": 502})
        if complete is not None and not complete():
            raise provider_errors.cut_stream(call.provider, "the provider's stream ended without its end event")
        if usage_of is not None:
            usage = usage_of()
        await reply.end(usage)
        return usage

    async def invoke_native(self, call: Call, provider, doc: dict, reply: Reply) -> dict:
        """A family body to the provider whose API it is: the answer goes back as it came."""
        out = await provider.invoke_native(call, doc)
        u = provider.native_usage(out)
        await reply.head(200, [["content-type", JSON],
                               ["x-amzn-bedrock-input-token-count", str(u.input_tokens)],
                               ["x-amzn-bedrock-output-token-count", str(u.output_tokens)],
                               ["x-amzn-bedrock-invocation-latency", str(self.elapsed_ms(call))]]
                         + ([["x-amzn-bedrock-cache-read-input-token-count", str(u.cache_read_tokens)]]
                            if u.cache_read_tokens else [])
                         + ([["x-amzn-bedrock-cache-write-input-token-count", str(u.cache_write_tokens)]]
                            if u.cache_write_tokens else []),
                         stream=False)
        await reply.body(dumps(out))
        return u.to_wire()

    @staticmethod
    def check_accept(accept: str | None, name: str) -> None:
        if accept and not any(a.strip().split(";")[0] in ("application/json", "*/*", "application/*")
                              for a in accept.split(",")):
            raise errors.validation(f"{name}: {accept!r} is not supported; this gateway answers application/json.")

    @staticmethod
    def validate_native(op: str, body: bytes) -> None:
        """Bodies relayed to Bedrock are still checked, so bad input gets our clear message."""
        doc = parse_json(body)
        if op in ("converse", "converse-stream"):
            converse.parse_request(doc)
        elif op == "count-tokens":
            converse.parse_count_tokens(doc)
        elif not isinstance(doc, dict):
            raise errors.validation("body: expected a JSON object.")

    @staticmethod
    def elapsed_ms(call: Call) -> int:
        return int((time.monotonic() - call.started) * 1000)


def converse_frames(ev: StreamEvent):
    et, payload = converse.stream_payload(ev)
    return [(et, dumps(payload))]


def native_frames(call: Call, d: dict, tracker, elapsed_ms):
    """A native stream event passed through as an InvokeModelWithResponseStream chunk; the last
    one (message_stop) gets the invocation metrics Bedrock adds. Keep-alive pings are dropped
    (Bedrock does not send them)."""
    if d.get("type") == "ping":
        return []
    if d.get("type") == "message_stop":
        d = dict(d)
        d[families.METRICS_KEY] = families.invocation_metrics(
            {"usage": tracker.usage, "latencyMs": elapsed_ms(call), "firstByteLatencyMs": call.first_byte_ms})
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()}))]


def invoke_frames(encoder, ev: StreamEvent):
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()})) for d in encoder.feed(ev)]
