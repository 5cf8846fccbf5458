"""A fake AWS Bedrock Runtime on loopback, for tests: real wire shapes, real SigV4 checks.

Usage::

    with FakeBedrock("AKIDFAKE", "secret") as fake:      # binds 127.0.0.1:<free port>
        client = boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
                              aws_access_key_id="AKIDFAKE", aws_secret_access_key="secret")
        client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=[...])
        fake.requests[-1].sigv4_ok                       # True

It is a `tests.helpers.fake_server.FakeServer` (see there for the lifecycle, ``.port``/``.url``,
recording and scripting basics): HTTP/1.1 with keep-alive (stdlib `ThreadingHTTPServer`, one thread
per connection), as real Bedrock does for boto3. It is meant to be the upstream of the gateway's
``bedrock`` provider, and is equally happy to be called by boto3 directly.

Every request
-------------
* is recorded in ``fake.requests`` as a `RecordedRequest` (method, raw path, decoded model id,
  operation, lower-case headers, body bytes, ``sigv4_ok``, ``sigv4_error``, request id, client
  address);
* has its SigV4 signature checked with `finops.shared.sigv4` against the configured credentials and
  region (service ``bedrock``, clock skew ±5 min). A bad one gets 403 ``InvalidSignatureException``,
  an unknown access key id (or a wrong session token, when one was configured) 403
  ``UnrecognizedClientException``, a malformed or missing Authorization 400
  ``IncompleteSignatureException``;
* is routed on the RAW path, which must be exactly ``/model/{modelId}/{action}`` with no prefix
  (real Bedrock has none); the model id segment is percent-decoded once. Anything else is
  404 ``UnknownOperationException``; a non-POST method on a real route is 405.

Errors are AWS-shaped: ``X-Amzn-ErrorType: <Code>:http://internal.amazon.com/coral/...`` (the
suffix real AWS sends, which botocore trims), ``x-amzn-RequestId``, body ``{"message": "..."}``.

Default answers
---------------
The answer text is ``"fake-bedrock: <text of the last user turn>"`` (texts joined by a space).
Tokens are counted as whitespace-separated words (at least 1), see `FakeBedrock.tokens()`, so tests
can predict usage: input tokens count every text of the request (system included), output tokens
the answer. A ``maxTokens``/``max_tokens``/``max_gen_len``/... smaller than the answer truncates it
to that many words, with the family's "max tokens" stop reason.

* ``converse``: Converse response with ``output``, ``stopReason``, ``usage``, ``metrics``.
* ``serviceTier`` / ``performanceConfig`` of a Converse body come back in the response (and the
  ConverseStream ``metadata`` event) as the tier served; InvokeModel echoes the
  ``X-Amzn-Bedrock-Service-Tier`` / ``-PerformanceConfig-Latency`` headers. A script's
  ``{"service_tier": "default"}`` reports that tier instead (a downgrade).
* ``converse-stream``: chunked event stream, one chunk and flush per frame: ``messageStart``,
  one ``contentBlockDelta`` per word, ``contentBlockStop``, ``messageStop``, ``metadata``; every
  payload carries the random ``"p"`` padding real Bedrock adds.
* ``invoke``: the family-native response (family = model id after any ARN path and region prefix):
  ``anthropic.*`` Messages API (or legacy ``completion`` when the body has ``prompt``);
  ``mistral.*`` ``outputs`` (or chat ``choices`` when the body has ``messages``); ``meta.*``
  ``generation``; ``amazon.titan*`` ``results``; ``amazon.nova*`` Converse-like; anything else
  gets the Meta shape. Headers: ``Content-Type: application/json``,
  ``X-Amzn-Bedrock-Input-Token-Count``, ``-Output-Token-Count``, ``-Invocation-Latency``.
  The request body must be a JSON object (whatever its Content-Type); Anthropic bodies must have
  ``anthropic_version`` and ``max_tokens``, as on real Bedrock.
* ``invoke-with-response-stream``: ``chunk`` events ``{"bytes": base64(native JSON), "p": ...}``
  in the family's stream shape (Anthropic ``message_start`` ... ``message_stop``); the last chunk
  carries ``amazon-bedrock-invocationMetrics``; header ``X-Amzn-Bedrock-Content-Type``.
* ``/guardrail/{id}/version/{version}/apply`` (ApplyGuardrail, recorded with ``model_id`` = the
  decoded guardrail id): ``usage`` (ceil(characters/1000) text units per text block for the topic,
  content, word and sensitive-information policies), ``action`` (GUARDRAIL_INTERVENED when a text
  contains ``BLOCKME``), ``outputs``, ``assessments``, ``guardrailCoverage``. Scripts match the id.
* ``count-tokens``: ``{"inputTokens": N}`` for ``input.converse`` or ``input.invokeModel.body``
  (base64 native JSON), counted as above, so it equals the ``inputTokens`` Converse reports.

Scripting failures
------------------
``fake.script(model_id, behavior)`` sets how requests for that model id (decoded, exactly as the
client passed it; ``"*"`` matches every model) are answered, until ``fake.script(model_id, None)``
or ``fake.clear_scripts()``. A behavior is a dict; keys combine:

* ``{"times": 2, ...}``: apply to the next 2 matching requests only, then forget the script.
* ``{"delay": 2.0}``: sleep 2 s before answering (whatever the answer is).
* ``{"status": 429, "code": "ThrottlingException", "message": "..."}``: an error response.
  Without ``code`` no X-Amzn-ErrorType header is sent; ``"body": {...}`` replaces the JSON body.
* ``{"headers": {"x-amz-retry-after": "1500"}}``: extra response headers, on any response.
* ``{"garbage": True}``: a non-JSON body (status 200 unless ``status`` is given); on stream
  operations, chunked bytes that are not an event stream.
* ``{"body": {...}}``: this JSON as the 200 body (non-stream operations; for InvokeModel it is
  the model-native body).
* ``{"text": "..."}``: this answer text instead of the echo (all operations).
* ``{"events": [...]}``: stream operations, instead of the default events:
  ``[{"messageStart": {...}}, ...]`` for converse-stream, or native dicts (one ``chunk`` each,
  no invocation metrics added) for invoke-with-response-stream.
* ``{"event_delay": 0.2}``: sleep between stream events.
* ``{"stream_events": N, "then": "exception", "exception_type": "modelStreamErrorException",
  "message": "..."}``: send the first N events, then an exception frame (``:exception-type`` is
  taken as given, so a wrong member name can be tested too; modelStreamErrorException payloads
  also get ``originalStatusCode`` (``"original_status_code"``, default 500) and
  ``originalMessage``), then end the stream cleanly.
* ``{"stream_events": N, "then": "end"}``: send N events and end cleanly: silent truncation.
  This is the default ``then`` when ``stream_events`` is given. A converse-stream cut so before
  its end has no ``messageStop``/``metadata``; an invoke stream has no chunk with the invocation
  metrics (they are on the last chunk).
* ``{"cache_read": R, "cache_write": W}``: report R prompt-cache read and W cache write input
  tokens (either may be given alone) where Bedrock reports them: Converse ``usage`` and the
  converse-stream ``metadata.usage`` (``cacheReadInputTokens``, ``cacheWriteInputTokens``),
  InvokeModel headers (``X-Amzn-Bedrock-Cache-Read-Input-Token-Count``, ``-Cache-Write-...``),
  and the invoke stream's invocation metrics (``cacheReadInputTokenCount``,
  ``cacheWriteInputTokenCount``). Without them no cache field is sent. Claude Messages bodies
  (InvokeModel, and the invoke stream's ``message_start``) also get ``cache_read_input_tokens`` /
  ``cache_creation_input_tokens`` and ``cache_creation`` (below).
* ``{"cache_write": W, "cache_write_1h": H}``: H of the W cache writes have a 1-hour TTL:
  Converse ``usage.cacheDetails`` = ``[{"ttl": "1h", "inputTokens": H}, {"ttl": "5m",
  "inputTokens": W - H}]`` (entries with 0 tokens left out; ``cacheDetails`` is sent whenever W
  is), and a Claude body's ``usage.cache_creation`` = ``{"ephemeral_5m_input_tokens": W - H,
  "ephemeral_1h_input_tokens": H}``.

Guardrail traces
----------------
A Converse / ConverseStream request whose ``guardrailConfig.trace`` is ``enabled`` or
``enabled_full`` gets ``trace.guardrail`` (in the ConverseStream ``metadata`` event): an
``inputAssessment`` and an ``outputAssessments`` entry under the guardrail identifier, each with
``invocationMetrics.usage`` counted as ApplyGuardrail counts (ceil(characters/1000) units per text
block, at least 1, for the topic, content, word and sensitive-information policies; the input's
blocks are the system and message texts, the output's the answer). An InvokeModel request with the
X-Amzn-Bedrock-GuardrailIdentifier header and X-Amzn-Bedrock-Trace ``ENABLED`` (or
``ENABLED_FULL``) gets the same in its body as ``amazon-bedrock-trace.guardrail`` (``input``: a
map, ``outputs``: a list of maps) with ``amazon-bedrock-guardrailAction: "NONE"``. Without the
trace enabled no trace is sent (as Bedrock does).
* ``{"then": "cut"}``: streams: after ``stream_events`` (default 1) events, send half of the next
  frame and drop the connection (boto3: ``urllib3.exceptions.ProtocolError``). Non-stream: send
  half the body and drop it (InvokeModel: ``ResponseStreamingError`` on read; Converse: botocore
  does not enforce Content-Length and quietly parses an empty response).
"""
from __future__ import annotations

import base64
import json
import random
import re
import string
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote

from finops.shared import sigv4
from finops.shared.eventstream import event_frame, exception_frame
from tests.helpers.fake_server import FakeServer, _Handler, texts

OPERATIONS = {
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "count-tokens": "CountTokens",
}
STREAM_OPERATIONS = frozenset({"ConverseStream", "InvokeModelWithResponseStream"})
_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>[a-z-]+)$")
_GUARDRAIL_ROUTE = re.compile(r"^/guardrail/(?P<model>[^/]+)/version/(?P<version>[^/]+)/apply$")
BLOCK_WORD = "BLOCKME"           # ApplyGuardrail intervenes on a text containing it
_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PAD = string.ascii_lowercase + string.ascii_uppercase + string.digits
EVENTSTREAM = "application/vnd.amazon.eventstream"
GARBAGE = b"<html><body>502 fake-bedrock garbage: this is not JSON</body></html>"


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str                    # raw request target, percent-encoding intact (query included)
    model_id: str | None         # decoded once; None when the path is not a model route
    operation: str | None        # "Converse", "ConverseStream", ... ; None when unknown
    headers: dict[str, str]      # lower-case names
    body: bytes
    sigv4_ok: bool
    sigv4_error: str = ""        # "" when sigv4_ok, else "<Code>: <message>"
    request_id: str = ""         # the x-amzn-RequestId the fake answered with
    client_address: tuple = ()   # (ip, port) of the client's connection: same tuple = keep-alive reuse
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class _Reply(Exception):
    """Raised inside handling to answer with an AWS error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _pad() -> str:
    return _PAD[:random.randint(1, len(_PAD))]


def _words(text: str) -> list[str]:
    """Split into stream pieces that concatenate back to `text`."""
    return re.findall(r"\S+\s*", text) or [text]


def _base_name(model_id: str) -> str:
    """``arn:...:inference-profile/us.anthropic.claude-x-v1:0`` -> ``anthropic.claude-x-v1:0``."""
    name = model_id.rsplit("/", 1)[-1]
    for prefix in _REGION_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _family(model_id: str) -> str:
    """``arn:...:inference-profile/us.anthropic.claude...`` -> ``anthropic``."""
    name = _base_name(model_id)
    if name.startswith("amazon.titan"):
        return "titan"
    if name.startswith("amazon.nova"):
        return "nova"
    return name.split(".", 1)[0]


def _conversation_text(body: dict) -> tuple[str, str]:
    """(all input text, last user text) of a Converse-like or native request body."""
    everything: list[str] = []
    last_user: list[str] = []
    everything += texts(body.get("system"), any_type=True)
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        t = texts(msg.get("content"), any_type=True)
        everything += t
        if msg.get("role") == "user":
            last_user = t
    for key in ("prompt", "inputText", "message"):  # text-completion style families
        if isinstance(body.get(key), str):
            everything.append(body[key])
            last_user = [body[key]]
    return " ".join(everything), " ".join(last_user)


def _claude_cache_usage(behavior: dict) -> dict:
    """The cache fields of a Claude Messages usage object for a script's cache_read / cache_write /
    cache_write_1h ({} without them)."""
    out = {}
    if "cache_read" in behavior:
        out["cache_read_input_tokens"] = int(behavior["cache_read"])
    if "cache_write" in behavior:
        w, h = int(behavior["cache_write"]), int(behavior.get("cache_write_1h", 0))
        out["cache_creation_input_tokens"] = w
        out["cache_creation"] = {"ephemeral_5m_input_tokens": w - h, "ephemeral_1h_input_tokens": h}
    return out


def _guarded_texts(body: dict) -> list[str]:
    """The text blocks of a Converse body a guardrail assesses on input: system and message texts."""
    return [t for t in texts(body.get("system"), any_type=True)] + [
        t for m in body.get("messages") or [] if isinstance(m, dict) for t in texts(m.get("content"), any_type=True)]


def _assessment(blocks: list[str]) -> dict:
    """A GuardrailAssessment with the units of `blocks` (as ApplyGuardrail counts them)."""
    units = sum(max(1, -(-len(t) // 1000)) for t in blocks)
    return {"topicPolicy": {"topics": []}, "invocationMetrics": {
        "guardrailProcessingLatency": 3,
        "usage": {"topicPolicyUnits": units, "contentPolicyUnits": units, "wordPolicyUnits": units,
                  "sensitiveInformationPolicyUnits": units, "sensitiveInformationPolicyFreeUnits": 0,
                  "contextualGroundingPolicyUnits": 0},
        "guardrailCoverage": {"textCharacters": {"guarded": sum(map(len, blocks)), "total": sum(map(len, blocks))}}}}


def _native_max_tokens(body: dict) -> int | None:
    for key in ("max_tokens", "max_gen_len", "max_tokens_to_sample", "maxTokens", "max_new_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    for nested in ("inferenceConfig", "textGenerationConfig"):
        cfg = body.get(nested)
        if isinstance(cfg, dict):
            for key in ("maxTokens", "max_new_tokens", "maxTokenCount"):
                if isinstance(cfg.get(key), int):
                    return cfg[key]
    return None


class FakeBedrock(FakeServer):
    """A fake Bedrock Runtime. See the module docstring for routes, answers and scripting."""

    server_header = "FakeBedrock/1.0"
    _name = "fake-bedrock"
    _poll_interval = 0.05

    def __init__(self, access_key_id: str, secret_access_key: str, region: str = "us-east-1", *,
                 session_token: str | None = None, max_skew_seconds: int = 300,
                 clock: Callable[[], datetime] | None = None):
        """`session_token`, if given, must be the request's X-Amz-Security-Token (else any token
        is accepted). `clock` overrides the server's notion of now for the skew check."""
        super().__init__()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.session_token = session_token
        self.max_skew_seconds = max_skew_seconds
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.requests: list[RecordedRequest] = []

    # --- scripting and inspection ---------------------------------------------------------------
    def script(self, model_id: str, behavior: dict | None) -> None:
        """Answer requests for `model_id` ("*" = any) per `behavior`; None removes the script."""
        super().script(model_id, behavior)

    def requests_for(self, operation: str | None = None, model_id: str | None = None) -> list[RecordedRequest]:
        return [r for r in list(self.requests)
                if (operation is None or r.operation == operation)
                and (model_id is None or r.model_id == model_id)]

    # --- request handling ----------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        headers = self._headers_of(h)
        body = self._read_body(h, headers)
        raw_path = h.path
        path = raw_path.split("?", 1)[0]
        m = _ROUTE.match(path)
        model_id = unquote(m.group("model")) if m else None
        operation = OPERATIONS.get(m.group("action")) if m else None
        g = _GUARDRAIL_ROUTE.match(path) if m is None else None
        if g is not None:       # ApplyGuardrail: model_id is the guardrail identifier, decoded once
            model_id, operation = unquote(g.group("model")), "ApplyGuardrail"
        if operation is None:
            model_id = None

        ok, error = True, ""
        try:
            self._check_signature(h, raw_path, headers, body)
        except sigv4.SigV4Error as e:
            ok, error = False, f"{e.code}: {e.message}"
            sig_error = e
        rec = RecordedRequest(h.command, raw_path, model_id, operation, headers, body, ok, error,
                              request_id, tuple(h.client_address))
        self._record(rec)
        if not ok:
            return self._send_error(h, request_id, sig_error.status, sig_error.code, sig_error.message)
        if operation is None:
            return self._send_error(h, request_id, 404, "UnknownOperationException",
                                    f"No operation matches {h.command} {raw_path}; expected "
                                    f"POST /model/{{modelId}}/{{{'|'.join(OPERATIONS)}}}.")
        if h.command != "POST":
            return self._send_error(h, request_id, 405, "MethodNotAllowedException",
                                    f"{operation} takes POST, not {h.command}.")

        behavior = self._take_script(model_id)
        extra_headers = dict(behavior.get("headers") or {})
        if self._pause(h, behavior.get("delay")):
            return
        try:
            self._answer(h, request_id, operation, model_id, body, headers, behavior, extra_headers,
                         started)
        except _Reply as r:
            self._send_error(h, request_id, r.status, r.code, r.message, extra_headers)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _check_signature(self, h: _Handler, raw_path: str, headers: dict[str, str], body: bytes) -> None:
        host = headers.get("host") or f"127.0.0.1:{self.port}"
        sigv4.authenticate(h.command, "http", host, raw_path, headers, body,
                           {self.access_key_id: self.secret_access_key}, self.clock(),
                           self.max_skew_seconds, region=self.region)
        if self.session_token is not None and headers.get("x-amz-security-token") != self.session_token:
            raise sigv4.SigV4Error(sigv4.UNRECOGNIZED, "The security token included in the request "
                                   "is invalid.")

    # --- answers ---------------------------------------------------------------------------------
    def _answer(self, h, request_id, operation, model_id, body, headers, behavior, extra, started):
        status = int(behavior.get("status", 200))
        if behavior.get("garbage"):
            if operation in STREAM_OPERATIONS and status == 200:
                return self._send_stream(h, request_id, [GARBAGE[:20], GARBAGE[20:]], behavior,
                                         extra, operation, raw=True)
            return self._send(h, status, request_id, GARBAGE, "application/json", extra, behavior)
        if status != 200:
            payload = behavior.get("body")
            if payload is None:
                payload = {"message": behavior.get("message", f"fake-bedrock scripted {status}")}
            if behavior.get("code"):
                extra.setdefault("X-Amzn-ErrorType", behavior["code"] + _CORAL)
            return self._send(h, status, request_id, json.dumps(payload).encode(), "application/json",
                              extra, behavior)
        if "body" in behavior and operation not in STREAM_OPERATIONS:
            return self._send(h, 200, request_id, json.dumps(behavior["body"]).encode(),
                              "application/json", extra, behavior)

        req = self._parse_json(body)
        if operation == "ApplyGuardrail":
            return self._send_json(h, request_id, self._apply_guardrail(req), extra, behavior)
        if operation == "CountTokens":
            return self._send_json(h, request_id, {"inputTokens": self._count_tokens(req)}, extra, behavior)
        if operation in ("Converse", "ConverseStream"):
            if not isinstance(req.get("messages"), list) or not req["messages"]:
                raise _Reply(400, "ValidationException",
                             "A conversation must start with a user message. Try again with a "
                             "conversation that starts with a user message.")
            all_text, user_text = _conversation_text(req)
            answer, truncated = self._answer_text(user_text, behavior,
                                                  (req.get("inferenceConfig") or {}).get("maxTokens"))
            usage = {"inputTokens": self.tokens(all_text), "outputTokens": self.tokens(answer)}
            usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
            for key, name in (("cache_read", "cacheReadInputTokens"), ("cache_write", "cacheWriteInputTokens")):
                if key in behavior:
                    usage[name] = int(behavior[key])
            if "cache_write" in behavior:
                one_hour = int(behavior.get("cache_write_1h", 0))
                usage["cacheDetails"] = [{"ttl": ttl, "inputTokens": n} for ttl, n in
                                         (("1h", one_hour), ("5m", int(behavior["cache_write"]) - one_hour)) if n]
            stop = "max_tokens" if truncated else "end_turn"
            latency = self._latency(started)
            # the tier and latency mode it was served in: as asked (a script's "service_tier" overrides)
            served = {k: req[k] for k in ("performanceConfig", "serviceTier") if isinstance(req.get(k), dict)}
            if "service_tier" in behavior:
                served["serviceTier"] = {"type": behavior["service_tier"]}
            gc = req.get("guardrailConfig")
            if isinstance(gc, dict) and gc.get("trace") in ("enabled", "enabled_full"):
                gid = str(gc.get("guardrailIdentifier", ""))
                served["trace"] = {"guardrail": {
                    "modelOutput": [answer] if gc["trace"] == "enabled_full" else [],
                    "inputAssessment": {gid: _assessment(_guarded_texts(req))},
                    "outputAssessments": {gid: [_assessment([answer])]}}}
            if operation == "Converse":
                return self._send_json(h, request_id, {
                    "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                    "stopReason": stop, "usage": usage, "metrics": {"latencyMs": latency}, **served},
                    extra, behavior)
            events = behavior.get("events") or (
                [{"messageStart": {"role": "assistant"}}]
                + [{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": w}}}
                   for w in _words(answer)]
                + [{"contentBlockStop": {"contentBlockIndex": 0}},
                   {"messageStop": {"stopReason": stop}},
                   {"metadata": {"usage": usage, "metrics": {"latencyMs": latency}, **served}}])
            frames = [event_frame(name, json.dumps(dict(payload, p=_pad())).encode())
                      for ev in events for name, payload in ev.items()]
            return self._send_stream(h, request_id, frames, behavior, extra, operation)

        # InvokeModel / InvokeModelWithResponseStream
        family = _family(model_id)
        if family == "anthropic" and "prompt" not in req:
            missing = [k for k in ("anthropic_version", "max_tokens", "messages") if k not in req]
            if missing:
                raise _Reply(400, "ValidationException", f"Malformed input request: #: required key "
                             f"[{missing[0]}] not found, please reformat your input and try again.")
        all_text, user_text = _conversation_text(req)
        answer, truncated = self._answer_text(user_text, behavior, _native_max_tokens(req))
        n_in, n_out = self.tokens(all_text), self.tokens(answer)
        if operation == "InvokeModel":
            native = _native_response(family, model_id, req, answer, truncated, n_in, n_out)
            if family == "anthropic" and "usage" in native:
                native["usage"].update(_claude_cache_usage(behavior))
            gid = headers.get("x-amzn-bedrock-guardrailidentifier")
            if gid and headers.get("x-amzn-bedrock-trace", "").upper() in ("ENABLED", "ENABLED_FULL"):
                native["amazon-bedrock-guardrailAction"] = "NONE"
                native["amazon-bedrock-trace"] = {"guardrail": {
                    "input": {gid: _assessment(_guarded_texts(req) or [all_text])},
                    "outputs": [{gid: _assessment([answer])}]}}
            latency = self._latency(started)
            extra.setdefault("X-Amzn-Bedrock-Input-Token-Count", str(n_in))
            extra.setdefault("X-Amzn-Bedrock-Output-Token-Count", str(n_out))
            extra.setdefault("X-Amzn-Bedrock-Invocation-Latency", str(latency))
            for key, name in (("cache_read", "X-Amzn-Bedrock-Cache-Read-Input-Token-Count"),
                              ("cache_write", "X-Amzn-Bedrock-Cache-Write-Input-Token-Count")):
                if key in behavior:
                    extra.setdefault(name, str(int(behavior[key])))
            for name in ("x-amzn-bedrock-performanceconfig-latency", "x-amzn-bedrock-service-tier"):
                if name in headers:
                    extra.setdefault(name, headers[name])
            if "service_tier" in behavior:
                extra["x-amzn-bedrock-service-tier"] = behavior["service_tier"]
            return self._send(h, 200, request_id, json.dumps(native).encode(), "application/json",
                              extra, behavior)
        chunks = behavior.get("events") or _native_stream(family, model_id, req, answer, truncated,
                                                          n_in, n_out)
        chunks = [dict(c) for c in chunks]
        if not behavior.get("events") and chunks and chunks[0].get("type") == "message_start":
            start = dict(chunks[0]["message"])
            start["usage"] = {**start["usage"], **_claude_cache_usage(behavior)}
            chunks[0] = {**chunks[0], "message": start}
        if not behavior.get("events"):
            metrics = chunks[-1]["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": n_in, "outputTokenCount": n_out,
                "invocationLatency": self._latency(started), "firstByteLatency": 1}
            for key, name in (("cache_read", "cacheReadInputTokenCount"), ("cache_write", "cacheWriteInputTokenCount")):
                if key in behavior:
                    metrics[name] = int(behavior[key])
        frames = [event_frame("chunk", json.dumps({
            "bytes": base64.b64encode(json.dumps(c).encode()).decode(), "p": _pad()}).encode())
            for c in chunks]
        extra.setdefault("X-Amzn-Bedrock-Content-Type", "application/json")
        return self._send_stream(h, request_id, frames, behavior, extra, operation)

    @staticmethod
    def _parse_json(body: bytes) -> dict:
        try:
            req = json.loads(body or b"{}")
        except ValueError as e:
            raise _Reply(400, "ValidationException",
                         f"Malformed input request: the body is not valid JSON ({e}).") from None
        if not isinstance(req, dict):
            raise _Reply(400, "ValidationException",
                         "Malformed input request: the body must be a JSON object.")
        return req

    @staticmethod
    def _apply_guardrail(req: dict) -> dict:
        """ApplyGuardrail's documented answer (bedrock-protocol.md 1.10): every text block counts
        ceil(characters / 1000) text units (at least 1) for the topic, content, word and
        sensitive-information policies; a text containing BLOCK_WORD makes it intervene."""
        if req.get("source") not in ("INPUT", "OUTPUT"):
            raise _Reply(400, "ValidationException", "source: must be INPUT or OUTPUT.")
        content = req.get("content")
        if not isinstance(content, list) or not content:
            raise _Reply(400, "ValidationException", "content: a non-empty list is required.")
        texts = [(c.get("text") or {}).get("text", "") for c in content if isinstance(c, dict) and "text" in c]
        units = sum(max(1, -(-len(t) // 1000)) for t in texts)
        blocked = any(BLOCK_WORD in t for t in texts)
        usage = {"topicPolicyUnits": units, "contentPolicyUnits": units, "wordPolicyUnits": units,
                 "sensitiveInformationPolicyUnits": units, "sensitiveInformationPolicyFreeUnits": 0,
                 "contextualGroundingPolicyUnits": 0}
        out = {"usage": usage, "action": "GUARDRAIL_INTERVENED" if blocked else "NONE",
               "outputs": [{"text": "Sorry, the fake guardrail blocked this."}] if blocked else [],
               "assessments": [{"wordPolicy": {"customWords": [
                   {"match": BLOCK_WORD, "action": "BLOCKED", "detected": True}]}}] if blocked else [],
               "guardrailCoverage": {"textCharacters": {"guarded": sum(map(len, texts)),
                                                        "total": sum(map(len, texts))}}}
        if blocked:
            out["actionReason"] = "Guardrail blocked."
        return out

    def _count_tokens(self, req: dict) -> int:
        inp = req.get("input")
        if not isinstance(inp, dict) or len(inp) != 1:
            raise _Reply(400, "ValidationException",
                         "input must have exactly one of 'converse' or 'invokeModel'.")
        if "converse" in inp:
            return self.tokens(_conversation_text(inp["converse"] or {})[0])
        if "invokeModel" in inp:
            try:
                native = json.loads(base64.b64decode((inp["invokeModel"] or {})["body"]))
            except (KeyError, ValueError, TypeError) as e:
                raise _Reply(400, "ValidationException",
                             f"input.invokeModel.body must be base64 of a JSON object ({e}).") from None
            return self.tokens(_conversation_text(native if isinstance(native, dict) else {})[0])
        raise _Reply(400, "ValidationException",
                     f"input has unknown member {next(iter(inp))!r}; expected converse or invokeModel.")

    def _answer_text(self, user_text: str, behavior: dict, max_tokens: Any) -> tuple[str, bool]:
        answer = behavior["text"] if "text" in behavior else f"fake-bedrock: {user_text}"
        words = _words(answer)
        if isinstance(max_tokens, int) and 0 < max_tokens < len(answer.split()):
            return "".join(words[:max_tokens]).rstrip(), True
        return answer, False

    @staticmethod
    def _latency(started: float) -> int:
        return max(1, int((time.monotonic() - started) * 1000))

    # --- writing ---------------------------------------------------------------------------------
    def _send_error(self, h, request_id, status, code, message, extra=None):
        headers = dict(extra or {})
        headers["X-Amzn-ErrorType"] = code + _CORAL
        self._send(h, status, request_id, json.dumps({"message": message}).encode(),
                   "application/json", headers, {})

    def _send_json(self, h, request_id, obj, extra, behavior):
        self._send(h, 200, request_id, json.dumps(obj).encode(), "application/json", extra, behavior)

    def _send(self, h, status, request_id, body, content_type, extra, behavior):
        self._start_response(h, status, [("Content-Type", content_type), ("x-amzn-RequestId", request_id),
                                         *(extra or {}).items(), ("Content-Length", len(body))])
        self._write_body(h, body, behavior)

    def _send_stream(self, h, request_id, frames, behavior, extra, operation, raw=False):
        self._start_response(h, 200, [("Content-Type", EVENTSTREAM), ("x-amzn-RequestId", request_id),
                                      *(extra or {}).items(), ("Transfer-Encoding", "chunked")])
        then = behavior.get("then", "end" if "stream_events" in behavior else None)
        limit = behavior.get("stream_events", 1 if then == "cut" else len(frames))
        last = b""
        if then == "exception" and not raw:
            member = behavior.get("exception_type", "modelStreamErrorException")
            payload: dict = {"message": behavior.get("message", "fake-bedrock scripted stream failure")}
            if member == "modelStreamErrorException":
                payload["originalStatusCode"] = int(behavior.get("original_status_code", 500))
                payload["originalMessage"] = behavior.get("original_message", payload["message"])
            last = exception_frame(member, json.dumps(payload).encode())
        self._write_events(h, frames, limit, behavior, then, last=last,
                           spare=event_frame("chunk", b'{"bytes":""}'))


# --- model-family native shapes (bedrock-protocol.md section 6) ------------------------------------

def _short_model(model_id: str) -> str:
    """``us.anthropic.claude-3-haiku-20240307-v1:0`` -> ``claude-3-haiku-20240307`` (as Anthropic reports it)."""
    name = _base_name(model_id).split(".", 1)[-1]
    return re.sub(r"-v\d+(:\d+)?$", "", name)


def _native_response(family, model_id, req, answer, truncated, n_in, n_out) -> dict:
    if family == "anthropic":
        if "prompt" in req:  # legacy Text Completions
            return {"completion": " " + answer, "stop_reason": "max_tokens" if truncated else "stop_sequence",
                    "stop": None if truncated else "\n\nHuman:"}
        return {"id": f"msg_bdrk_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": _short_model(model_id), "content": [{"type": "text", "text": answer}],
                "stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out}}
    if family == "mistral":
        reason = "length" if truncated else "stop"
        if "messages" in req and "prompt" not in req:
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "stop_reason": reason}]}
        return {"outputs": [{"text": answer, "stop_reason": reason}]}
    if family == "titan":
        return {"inputTextTokenCount": n_in, "results": [{"tokenCount": n_out, "outputText": answer,
                "completionReason": "LENGTH" if truncated else "FINISH"}]}
    if family == "nova":
        return {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                "stopReason": "max_tokens" if truncated else "end_turn",
                "usage": {"inputTokens": n_in, "outputTokens": n_out, "totalTokens": n_in + n_out}}
    # meta, and the default for unknown families
    return {"generation": answer, "prompt_token_count": n_in, "generation_token_count": n_out,
            "stop_reason": "length" if truncated else "stop"}


def _native_stream(family, model_id, req, answer, truncated, n_in, n_out) -> list[dict]:
    words = _words(answer)
    if family == "anthropic" and "prompt" not in req:
        return ([{"type": "message_start", "message": {
                    "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                    "model": _short_model(model_id), "content": [], "stop_reason": None,
                    "stop_sequence": None, "usage": {"input_tokens": n_in, "output_tokens": 1}}},
                 {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
                + [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
                   for w in words]
                + [{"type": "content_block_stop", "index": 0},
                   {"type": "message_delta", "delta": {"stop_reason": "max_tokens" if truncated else "end_turn",
                                                       "stop_sequence": None},
                    "usage": {"output_tokens": n_out}},
                   {"type": "message_stop"}])
    if family == "anthropic":
        out = [{"completion": w, "stop_reason": None, "stop": None} for w in words]
        out[-1].update(stop_reason="max_tokens" if truncated else "stop_sequence")
        return out
    if family == "mistral":
        chat = "messages" in req and "prompt" not in req
        out = [{"choices": [{"index": 0, "message": {"role": "assistant", "content": w},
                             "stop_reason": None}]} if chat
               else {"outputs": [{"text": w, "stop_reason": None}]} for w in words]
        (out[-1]["choices"] if chat else out[-1]["outputs"])[0]["stop_reason"] = "length" if truncated else "stop"
        return out
    if family == "titan":
        out = [{"outputText": w, "index": 0, "totalOutputTextTokenCount": None, "completionReason": None,
                "inputTextTokenCount": n_in if i == 0 else None} for i, w in enumerate(words)]
        out[-1].update(totalOutputTextTokenCount=n_out, completionReason="LENGTH" if truncated else "FINISH")
        return out
    if family == "nova":
        return ([{"messageStart": {"role": "assistant"}}]
                + [{"contentBlockDelta": {"delta": {"text": w}, "contentBlockIndex": 0}} for w in words]
                + [{"contentBlockStop": {"contentBlockIndex": 0}},
                   {"messageStop": {"stopReason": "max_tokens" if truncated else "end_turn"}},
                   {"metadata": {"usage": {"inputTokens": n_in, "outputTokens": n_out}, "metrics": {},
                                 "trace": {}}}])
    out = [{"generation": w, "prompt_token_count": n_in if i == 0 else None,
            "generation_token_count": i + 1, "stop_reason": None} for i, w in enumerate(words)]
    out[-1]["stop_reason"] = "length" if truncated else "stop"
    return out
