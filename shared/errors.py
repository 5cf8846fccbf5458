"""Every failure a client can see, as data with an AWS identity. Pure.

Each error carries its AWS error code (the `X-Amzn-ErrorType` a Bedrock client maps to a modeled
exception class), the HTTP status, whether an SDK will retry it, and a message that names the bad
field or value and says what to do. Errors cross ZeroMQ as `error` envelopes via `to_wire()` /
`from_wire()`, never pickled.

The table is reference section 3.1 (bedrock-protocol.md). In-stream, an error becomes an exception
frame whose `:exception-type` is the lowerCamel union member name; `stream_member()` picks one that
the operation's stream union actually has, because boto3 reports an unknown member as an error
with an empty code and message.
"""
from __future__ import annotations

import json
from typing import Any

import msgspec

# code -> (status, retryable by SDKs)
AWS_ERRORS: dict[str, tuple[int, bool]] = {
    "ValidationException": (400, False),
    "ServiceQuotaExceededException": (400, False),
    "ConflictException": (400, False),
    "AccessDeniedException": (403, False),
    "UnrecognizedClientException": (403, False),
    "InvalidSignatureException": (403, False),
    "ResourceNotFoundException": (404, False),
    "UnknownOperationException": (404, False),
    "MethodNotAllowedException": (405, False),
    "ModelTimeoutException": (408, False),
    "RequestEntityTooLargeException": (413, False),
    "ModelErrorException": (424, False),
    "ModelStreamErrorException": (424, False),
    "ThrottlingException": (429, True),
    "ModelNotReadyException": (429, True),
    "InternalServerException": (500, True),
    "ServiceUnavailableException": (503, True),
}

# The members of each stream union that can carry an exception (botocore service model).
CONVERSE_STREAM_EXCEPTIONS = frozenset({
    "internalServerException", "modelStreamErrorException", "validationException",
    "throttlingException", "serviceUnavailableException"})
INVOKE_STREAM_EXCEPTIONS = CONVERSE_STREAM_EXCEPTIONS | {"modelTimeoutException"}


class WireError(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A GatewayError as it crosses ZeroMQ, in an `error` envelope (finops.shared.envelope)."""
    code: str
    message: str
    status: int
    retry_after_ms: int | None = None
    extra: dict[str, Any] = {}


class GatewayError(Exception):
    """An error a client sees. `code` is the AWS error code, e.g. ``ValidationException``."""

    def __init__(self, code: str, message: str, status: int | None = None, *,
                 retry_after_ms: int | None = None, extra: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else AWS_ERRORS.get(code, (500, True))[0]
        self.retry_after_ms = retry_after_ms
        self.extra = extra or {}
        # who refused: "client" (bad input), "governance", "upstream" or "gateway"; set where the
        # request pipeline knows, for the request log and metrics only (never sent to the client)
        self.origin = ""

    def __repr__(self) -> str:
        return f"GatewayError({self.code}, {self.status}, {self.message!r})"

    @property
    def retryable(self) -> bool:
        return AWS_ERRORS.get(self.code, (self.status, self.status >= 500))[1]

    # --- wire forms ---------------------------------------------------------------------
    def to_wire(self) -> WireError:
        return WireError(self.code, self.message, self.status, self.retry_after_ms, self.extra)

    @classmethod
    def from_wire(cls, w: WireError) -> "GatewayError":
        return cls(w.code, w.message, w.status, retry_after_ms=w.retry_after_ms, extra=w.extra)

    def http_body(self) -> bytes:
        body = {"message": self.message}
        body.update(self.extra)
        return json.dumps(body).encode()

    def http_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        h = [(b"content-type", b"application/json"),
             (b"x-amzn-requestid", request_id.encode()),
             (b"x-amzn-errortype", self.code.encode())]
        if self.retry_after_ms is not None:
            h.append((b"x-amz-retry-after", str(self.retry_after_ms).encode()))
        return h

    def stream_member(self, invoke: bool) -> str:
        """The lowerCamel exception member for an in-stream failure of this error."""
        allowed = INVOKE_STREAM_EXCEPTIONS if invoke else CONVERSE_STREAM_EXCEPTIONS
        member = self.code[:1].lower() + self.code[1:]
        if member in allowed:
            return member
        if self.code == "ModelTimeoutException":  # ConverseStream has no timeout member
            return "modelStreamErrorException"
        if self.code == "ModelNotReadyException":
            return "throttlingException"
        if self.status >= 500:
            return "serviceUnavailableException" if self.status == 503 else "internalServerException"
        return "modelStreamErrorException"

    def stream_payload(self, member: str) -> bytes:
        body: dict = {"message": self.message}
        if member == "modelStreamErrorException":
            body["originalStatusCode"] = int(self.extra.get("originalStatusCode", self.status))
            body["originalMessage"] = str(self.extra.get("originalMessage", self.message))
        return json.dumps(body).encode()


# --- constructors: one per kind of failure, so messages stay consistent ---------------------

def validation(message: str) -> GatewayError:
    return GatewayError("ValidationException", message)


def not_found(message: str) -> GatewayError:
    return GatewayError("ResourceNotFoundException", message)


def internal(message: str = "The gateway hit an internal error; the request was not completed. "
             "Retry; if it persists, check the gateway logs for this request id.") -> GatewayError:
    return GatewayError("InternalServerException", message)


def unavailable(message: str) -> GatewayError:
    return GatewayError("ServiceUnavailableException", message)


def throttled(message: str, retry_after_ms: int | None = None) -> GatewayError:
    return GatewayError("ThrottlingException", message, retry_after_ms=retry_after_ms)


def model_timeout(message: str) -> GatewayError:
    return GatewayError("ModelTimeoutException", message)


def model_error(message: str, original_status: int | None = None) -> GatewayError:
    extra = {"originalStatusCode": original_status} if original_status else None
    return GatewayError("ModelErrorException", message, extra=extra)


# The AWS error code of each status the admin API answers with (its handlers return a status and
# {"message"}; the pipeline turns every failure into this GatewayError, so it is AWS-shaped too).
CODE_FOR_STATUS = {400: "ValidationException", 401: "AccessDeniedException", 403: "AccessDeniedException",
                   404: "ResourceNotFoundException", 405: "MethodNotAllowedException", 409: "ConflictException",
                   503: "ServiceUnavailableException"}


def for_status(status: int, message: str) -> GatewayError:
    return GatewayError(CODE_FOR_STATUS.get(status, "InternalServerException"), message, status)
