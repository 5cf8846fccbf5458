"""Provider failures -> the AWS error a Bedrock client expects. Pure.

One table for every non-Bedrock provider (openai, anthropic, mistral). The README documents it.

    provider answer                         AWS error (status)                 SDK retries
    401, 403                                AccessDeniedException (403)        no    the gateway's key was refused
    404 (unknown model or deployment)       ResourceNotFoundException (404)    no
    400, 413, 422 (bad request)             ValidationException (400)          no
    408                                     ModelTimeoutException (408)        no
    429 rate limit                          ThrottlingException (429)          yes   x-amz-retry-after from Retry-After
    400/402/403/429 quota or credit gone    ServiceQuotaExceededException (400) no   (OpenAI insufficient_quota,
                                                                                   Anthropic "credit balance is too low")
    500                                     ModelErrorException (424)          no    originalStatusCode=500
    502, 503, 504, 529 (overloaded)         ServiceUnavailableException (503)  yes
    other 5xx                               ModelErrorException (424)          no    originalStatusCode
    2xx with a body that is not JSON        ModelErrorException (424)          no    originalStatusCode
    timeout, connection refused, reset      see `workers/upstream.py` (ModelTimeoutException, ServiceUnavailableException)

Messages name the provider and carry the provider's own message, with every configured secret and
anything that looks like an API key removed: a provider key never reaches a client.
"""
from __future__ import annotations

import json
import re

from finops.shared import errors

# sk-..., sk-proj-..., sk-ant-..., and masked forms like "sk-ab***cd" or "sk-proj-****abcd"
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{4,}", re.IGNORECASE)
_QUOTA_CODES = ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "quota_exceeded")
MAX_MESSAGE = 600


def redact(text: str, secrets=()) -> str:
    """`text` without any of `secrets` and without key-like tokens."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def _error_object(body: bytes) -> tuple[dict, bool]:
    """(the provider's error object, whether the body was JSON). Handles
    {"error": {...}} (OpenAI, Anthropic), {"message": ..., "type": ...} (Mistral) and
    {"detail": ...} (Mistral 422, FastAPI-based servers)."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return {}, False
    if not isinstance(doc, dict):
        return ({"message": str(doc)[:MAX_MESSAGE]} if doc is not None else {}), doc is not None
    err = doc.get("error")
    if isinstance(err, dict):
        return err, True
    if isinstance(err, str):
        return {"message": err, **{k: doc[k] for k in ("type", "code") if k in doc}}, True
    if "message" in doc or "type" in doc or "code" in doc:
        return doc, True
    if "detail" in doc:
        detail = doc["detail"]
        return {"message": detail if isinstance(detail, str) else json.dumps(detail)[:MAX_MESSAGE]}, True
    return {}, True


def _text(err: dict, body: bytes, is_json: bool) -> str:
    msg = err.get("message")
    if isinstance(msg, (dict, list)):      # Mistral 422: {"message": {"detail": [...]}}
        msg = json.dumps(msg, separators=(",", ":"))
    if not isinstance(msg, str) or not msg:
        msg = "" if is_json else body[:200].decode("utf-8", "replace").strip()
    return msg[:MAX_MESSAGE]


def _is_quota(kind: str, detail: str) -> bool:
    d = detail.lower()
    return (any(c in kind for c in _QUOTA_CODES) or "exceeded your current quota" in d
            or "credit balance is too low" in d)


def retry_after_ms(headers: dict) -> int | None:
    """Milliseconds from `retry-after-ms` or `retry-after` (seconds; an HTTP date is ignored)."""
    v = headers.get("retry-after-ms")
    if v:
        try:
            return max(0, int(float(v)))
        except ValueError:
            pass
    v = headers.get("retry-after")
    if v:
        try:
            return max(0, int(float(v) * 1000))
        except ValueError:
            return None
    return None


def from_http(provider: str, status: int, headers: dict, body: bytes, secrets=()) -> errors.GatewayError:
    """A provider's HTTP error answer (status >= 400) -> GatewayError. `headers` has lower-case names."""
    err, is_json = _error_object(body)
    detail = redact(_text(err, body, is_json), secrets)
    kind = " ".join(str(err.get(k) or "") for k in ("type", "code")).lower()
    said = f": {detail}" if detail else ""
    where = f"provider {provider!r} answered HTTP {status}"
    if status in (400, 402, 403, 429) and _is_quota(kind, detail):
        return errors.GatewayError("ServiceQuotaExceededException",
                                   f"{where}{said}. The provider account's quota or credit is exhausted; "
                                   "the gateway operator must top it up or route to another key.")
    if status in (401, 403):
        return errors.GatewayError(
            "AccessDeniedException",
            f"{where}{said}. The gateway's key for this provider was refused: the operator must fix "
            f"providers.{provider}.keys (this is not about your credentials).")
    if status == 404:
        return errors.not_found(f"{where}{said}. Check the upstream model name the route sends "
                                f"(routes.model, or the part after '{provider}/' in the modelId).")
    if status == 408:
        return errors.model_timeout(f"{where}: the model did not answer in time{said}.")
    if status == 429:
        return errors.throttled(f"{where}: rate limited{said}. Retry later.", retry_after_ms(headers))
    if status in (502, 503, 504, 529):
        e = errors.unavailable(f"{where}: the provider is unavailable or overloaded{said}. Retry later.")
        e.retry_after_ms = retry_after_ms(headers)
        return e
    if status >= 500:
        return errors.GatewayError("ModelErrorException", f"{where}: the model failed{said}.",
                                   extra={"originalStatusCode": status})
    if 400 <= status < 500:
        return errors.validation(f"{where}{said}")
    return errors.GatewayError("ModelErrorException", f"{where}{said}", extra={"originalStatusCode": status})


def bad_body(provider: str, status: int, body: bytes, problem: str) -> errors.GatewayError:
    """A 2xx answer we cannot read (not JSON, or not the documented shape)."""
    snippet = body[:120].decode("utf-8", "replace").strip()
    return errors.GatewayError(
        "ModelErrorException",
        f"provider {provider!r} answered HTTP {status} with {problem}" + (f": {snippet!r}" if snippet else "") + ".",
        extra={"originalStatusCode": status})


def in_stream(provider: str, err: dict, secrets=()) -> errors.GatewayError:
    """An error object the provider sent inside an SSE stream (OpenAI `{"error": {...}}`,
    Anthropic `event: error`, Mistral) -> GatewayError, which the pipeline sends as an exception
    frame of the client's stream."""
    if not isinstance(err, dict):
        err = {"message": str(err)}
    msg = redact(str(err.get("message") or "no message"), secrets)[:MAX_MESSAGE]
    kind = " ".join(str(err.get(k) or "") for k in ("type", "code")).lower()
    where = f"provider {provider!r} failed mid-stream: {msg}"
    if "rate_limit" in kind or "rate limit" in msg.lower():
        return errors.throttled(where)
    if "overloaded" in kind or "unavailable" in kind or "server_error" in kind or "api_error" in kind:
        return errors.unavailable(where)
    return errors.GatewayError("ModelStreamErrorException", where,
                               extra={"originalStatusCode": 500, "originalMessage": msg})


def cut_stream(provider: str, what: str) -> errors.GatewayError:
    """The stream ended (or broke) before the provider said it was complete."""
    return errors.GatewayError(
        "ModelStreamErrorException",
        f"provider {provider!r}: the stream ended before the answer was complete ({what}).",
        extra={"originalStatusCode": 502, "originalMessage": what})
