"""Errors as data: HTTP shape, wire round trip, and the in-stream exception member chosen."""
from __future__ import annotations

import json

import pytest

from finops.shared import errors
from finops.shared.errors import CONVERSE_STREAM_EXCEPTIONS, INVOKE_STREAM_EXCEPTIONS, GatewayError


def test_http_shape():
    e = errors.throttled("slow down", retry_after_ms=1500)
    h = dict(e.http_headers("rid-1"))
    assert e.status == 429 and h[b"x-amzn-errortype"] == b"ThrottlingException"
    assert h[b"x-amzn-requestid"] == b"rid-1" and h[b"x-amz-retry-after"] == b"1500"
    assert json.loads(e.http_body()) == {"message": "slow down"}


def test_wire_round_trip_keeps_everything():
    e = GatewayError("ModelErrorException", "boom", extra={"originalStatusCode": 500}, retry_after_ms=3)
    back = GatewayError.from_wire(e.to_wire())
    assert (back.code, back.status, back.message, back.extra, back.retry_after_ms) == \
        ("ModelErrorException", 424, "boom", {"originalStatusCode": 500}, 3)


@pytest.mark.parametrize("code,invoke,member", [
    ("ThrottlingException", False, "throttlingException"),
    ("ValidationException", True, "validationException"),
    ("ServiceUnavailableException", False, "serviceUnavailableException"),
    ("InternalServerException", False, "internalServerException"),
    ("ModelStreamErrorException", False, "modelStreamErrorException"),
    ("ModelTimeoutException", True, "modelTimeoutException"),
    ("ModelTimeoutException", False, "modelStreamErrorException"),   # ConverseStream has no timeout member
    ("ModelNotReadyException", False, "throttlingException"),
    ("AccessDeniedException", False, "modelStreamErrorException"),
    ("SomethingNewException", True, "internalServerException"),
])
def test_stream_member_is_always_in_the_union(code, invoke, member):
    e = GatewayError(code, "m")
    got = e.stream_member(invoke)
    assert got == member
    assert got in (INVOKE_STREAM_EXCEPTIONS if invoke else CONVERSE_STREAM_EXCEPTIONS)


def test_model_stream_error_payload_has_original_fields():
    e = GatewayError("ModelStreamErrorException", "cut", extra={"originalStatusCode": 502})
    body = json.loads(e.stream_payload("modelStreamErrorException"))
    assert body == {"message": "cut", "originalStatusCode": 502, "originalMessage": "cut"}
    assert json.loads(errors.throttled("x").stream_payload("throttlingException")) == {"message": "x"}
