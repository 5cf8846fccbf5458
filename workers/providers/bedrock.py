"""The `bedrock` provider: real AWS Bedrock Runtime, or any Bedrock-compatible endpoint.

The client's request body goes upstream byte for byte; the gateway signs it again with SigV4
(`finops.shared.sigv4.sign`, botocore's algorithm) using the provider's own configured
credentials, never the client's. All five operations and both stream kinds are relayed faithfully:

- a non-streaming answer: status, body and the Bedrock response headers, as received;
- a stream: upstream frames are decoded and each event is passed on (the frontend re-frames
  it), so an upstream exception frame reaches the client as the same exception member. A stream
  is complete only when Bedrock ended it: ConverseStream with `messageStop` then `metadata`,
  InvokeModelWithResponseStream with a last chunk that carries the invocation metrics. One that
  stops before (the HTTP response ended cleanly, or half-way through a frame) ends with a
  ModelStreamErrorException frame, so the client sees the failure and the cache does not keep it;
- an upstream error response: the same AWS error code, status and message.

The usage charged is what Bedrock reported (workers/formats/bedrock/usage.py): the Converse body's
`usage`, the InvokeModel token-count headers, the ConverseStream `metadata` event, the invoke
stream's last chunk; prompt-cache read and write tokens included, with the 1-hour part of the
writes (Converse `cacheDetails`; a Claude InvokeModel body's, or its stream's first chunk's,
`usage.cache_creation`, read only when there were cache writes), and the guardrail text units of
a guardrail trace (Converse `trace.guardrail`, the `metadata` event's, InvokeModel's
`amazon-bedrock-trace`).

Keys: `keys = [{access_key_id, secret_access_key, session_token?, weight}]`, chosen by weight.
"""
from __future__ import annotations

import json
import time
from urllib.parse import quote

from finops.shared import errors, eventstream, sigv4
from finops.shared.provider_config import BedrockConfig

from .. import upstream
from ..formats import provider_errors
from ..formats.bedrock import guardrail, usage as reported
from ..request import Attempt
from .base import Provider
from .registry import register

# Response headers of Bedrock worth passing on (lower-case).
PASS_HEADERS = ("content-type", "x-amzn-bedrock-content-type", "x-amzn-bedrock-performanceconfig-latency",
                "x-amzn-bedrock-service-tier", "x-amzn-bedrock-input-token-count",
                "x-amzn-bedrock-output-token-count", "x-amzn-bedrock-invocation-latency",
                "x-amzn-bedrock-cache-read-input-token-count", "x-amzn-bedrock-cache-write-input-token-count")
# Request headers of the client that carry operation parameters (section 1.3).
FORWARD_HEADERS = ("content-type", "accept", "x-amzn-bedrock-accept", "x-amzn-bedrock-trace",
                   "x-amzn-bedrock-guardrailidentifier", "x-amzn-bedrock-guardrailversion",
                   "x-amzn-bedrock-performanceconfig-latency", "x-amzn-bedrock-service-tier",
                   "x-amzn-bedrock-request-metadata", "x-amzn-bedrock-projectidentifier")
STREAM_OPS = ("converse-stream", "invoke-with-response-stream")


def parse_upstream_error(status: int, headers, body: bytes) -> errors.GatewayError:
    """An upstream error response -> the same AWS error (code from header, `code` or `__type`)."""
    try:
        doc = json.loads(body) if body else {}
        if not isinstance(doc, dict):
            doc = {}
    except ValueError:
        doc = {}
    code = headers.get("x-amzn-errortype") or doc.get("code") or doc.get("Code") or doc.get("__type") or ""
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    message = doc.get("message") or doc.get("Message") or ""
    if not code:
        code = ("ThrottlingException" if status == 429 else "ServiceUnavailableException" if status in (502, 503, 504)
                else "InternalServerException" if status >= 500 else "ValidationException")
    if not message:
        message = f"upstream Bedrock answered HTTP {status} without a message"
    extra = {k: doc[k] for k in ("originalStatusCode", "resourceName", "originalMessage") if k in doc}
    retry_after = headers.get("x-amz-retry-after")
    return errors.GatewayError(code, message, status, extra=extra,
                               retry_after_ms=int(retry_after) if retry_after and retry_after.isdigit() else None)


def exception_from_frame(frame: eventstream.Frame) -> errors.GatewayError:
    """An upstream in-stream exception frame -> GatewayError of the same member."""
    try:
        doc = json.loads(frame.payload) if frame.payload else {}
    except ValueError:
        doc = {}
    if frame.message_type == "error":
        code = str(frame.headers.get(":error-code", "InternalServerException"))
        return errors.GatewayError(code, str(frame.headers.get(":error-message", "")), 500)
    member = frame.exception_type or "internalServerException"
    code = member[:1].upper() + member[1:]
    extra = {k: doc[k] for k in ("originalStatusCode", "originalMessage") if k in doc}
    return errors.GatewayError(code, doc.get("message") or doc.get("Message") or member, extra=extra)


def _amz_date() -> str:
    """Now, as SigV4's X-Amz-Date (UTC)."""
    return time.strftime(sigv4.SIGV4_TIMESTAMP, time.gmtime())


@register
class BedrockProvider(Provider):
    kind = "bedrock"
    native_bedrock = True

    def __init__(self, cfg: BedrockConfig):
        super().__init__(cfg)
        self.base_url = (cfg.base_url or f"https://bedrock-runtime.{cfg.region}.amazonaws.com").rstrip("/")
        self.region = cfg.region
        self.client = upstream.UpstreamClient(cfg)

    def key(self, attempt: Attempt):
        if not self.cfg.keys:
            raise errors.GatewayError(
                "AccessDeniedException",
                f"provider {self.name!r} (bedrock) has no keys; add keys = [{{access_key_id = \"${{AWS_ACCESS_KEY_ID}}\", "
                "secret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"}] to its config.", 403)
        return self.cfg.keys[attempt.key_index]

    def signed_request(self, attempt: Attempt, body: bytes) -> tuple[str, list]:
        if attempt.op == "apply-guardrail":
            gid, version = guardrail.target(attempt.target_path)
            url = f"{self.base_url}/guardrail/{quote(gid, safe='')}/version/{quote(version, safe='')}/apply"
        else:
            url = f"{self.base_url}/model/{quote(attempt.upstream_model, safe='')}/{attempt.op}"
        headers = {k: attempt.headers[k] for k in FORWARD_HEADERS if k in attempt.headers}
        if attempt.op not in ("invoke", "invoke-with-response-stream"):
            headers["content-type"] = "application/json"
        k = self.key(attempt)
        signed = sigv4.sign("POST", url, headers, body, access_key_id=k.access_key_id, secret_key=k.secret_access_key,
                            region=self.region, amz_date=_amz_date(), session_token=k.session_token or None)
        return url, [(n.encode("latin-1"), v.encode("latin-1")) for n, v in signed.items()]

    async def relay(self, attempt: Attempt, body: bytes, reply, headers_for=lambda usage: []):
        """`headers_for(usage)` adds the gateway's own response headers (cost, budget): with the
        usage of a plain answer, with None at the head of a stream."""
        url, headers = self.signed_request(attempt, body)
        if attempt.op not in STREAM_OPS:
            resp = await self.client.post(url, headers, body)
            if resp.status_code != 200:
                raise parse_upstream_error(resp.status_code, resp.headers, resp.content)
            usage = usage_of(attempt.op, resp)
            await reply.head(200, pass_headers(resp.headers) + headers_for(usage), stream=False)
            await reply.body(resp.content)
            return usage
        async with self.client.stream(url, headers, body) as resp:
            if resp.status_code != 200:
                raise parse_upstream_error(resp.status_code, resp.headers, await resp.aread())
            return await self._relay_stream(attempt.op, resp, reply, pass_headers(resp.headers) + headers_for(None))

    async def _relay_stream(self, op: str, resp, reply, head_headers: list) -> dict:
        """Pass the upstream's events on, one message per read; returns the usage Bedrock reported.

        Completeness costs no decoding per frame: ConverseStream compares each frame's event type
        (already read to pass it on) and decodes only `metadata`; an invoke stream keeps a
        reference to the last event and decodes that one chunk when the stream has ended."""
        decoder = eventstream.FrameDecoder()
        usage = None                # ConverseStream: from the metadata event after messageStop
        stopped = False
        last = None                 # the last event relayed
        first = None                # invoke streams: the first chunk (a Claude message_start's usage)
        async for data in resp.aiter_raw():
            try:
                decoder.receive_data(data)
                frames = list(decoder.frames())
            except eventstream.EventStreamError as e:
                raise errors.GatewayError(
                    "ModelStreamErrorException", f"upstream Bedrock sent a corrupt event stream: {e}",
                    extra={"originalStatusCode": 502}) from None
            events = []
            failure = None
            for frame in frames:
                if frame.message_type != "event":
                    failure = exception_from_frame(frame)
                    break
                et = frame.event_type or ""
                if et == "messageStop":
                    stopped = True
                elif et == "metadata" and stopped:
                    usage = reported.from_metadata(frame.payload)
                events.append((et, frame.payload))
            if events:
                last = events[-1]
                if first is None:
                    first = events[0]
                if not reply.head_sent:
                    await reply.head(200, head_headers, stream=True)
                await reply.chunks(events)     # the frames of one read travel together
            if failure is not None:
                raise failure
        if decoder.pending:
            raise errors.GatewayError(
                "ModelStreamErrorException", "upstream Bedrock closed the stream in the middle of an event.",
                extra={"originalStatusCode": 502})
        if op == "converse-stream":
            if usage is None:
                raise provider_errors.cut_stream(
                    self.name, "upstream Bedrock ended the ConverseStream without messageStop and metadata")
        else:
            usage = reported.from_invoke_chunk(last[1]) if last is not None and last[0] == "chunk" else None
            if usage is not None:
                usage = reported.with_tier(usage, resp.headers.get("x-amzn-bedrock-service-tier"))
                if usage.get("cw") and first[0] == "chunk":     # decoded only when there were cache writes
                    usage = reported.with_anthropic_1h(usage, reported.chunk_doc(first[1]))
            if usage is None:
                raise provider_errors.cut_stream(
                    self.name, "upstream Bedrock ended the InvokeModelWithResponseStream without the "
                    f"chunk that carries {reported.METRICS_KEY}")
        await reply.end(usage)
        return usage

    async def aclose(self) -> None:
        await self.client.aclose()


def usage_of(op: str, resp) -> dict:
    """Token usage of a non-streaming answer; a JSON operation's body must be JSON."""
    if op in ("converse", "count-tokens", "apply-guardrail"):
        try:
            doc = json.loads(resp.content)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            raise errors.GatewayError(
                "InternalServerException", "upstream Bedrock answered 200 with a body that is not a JSON object; "
                "the answer was not passed on.") from None
        if op == "count-tokens":
            return {"in": doc.get("inputTokens", 0)}
        if op == "apply-guardrail":
            return {"in": 0, "out": 0, "gu": guardrail.reported_units(doc)}
        return reported.from_converse_answer(doc)
    usage = reported.with_tier(reported.from_headers(resp.headers), resp.headers.get("x-amzn-bedrock-service-tier"))
    if usage.get("cw") or reported.TRACE_KEY.encode() in resp.content:     # the body is read only then
        usage = reported.from_invoke_body(usage, resp.content)
    return usage


def pass_headers(headers) -> list:
    return [[k, headers[k]] for k in PASS_HEADERS if k in headers]
