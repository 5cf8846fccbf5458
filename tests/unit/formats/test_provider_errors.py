"""Provider failures -> AWS errors (the table in workers/formats/provider_errors.py and the README)."""
import json

import pytest

from finops.workers.formats import provider_errors as pe

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def openai_err(message, type_="invalid_request_error", code=None):
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


@pytest.mark.parametrize("status,code,http", [
    (400, "ValidationException", 400), (401, "AccessDeniedException", 403), (403, "AccessDeniedException", 403),
    (404, "ResourceNotFoundException", 404), (408, "ModelTimeoutException", 408), (413, "ValidationException", 400),
    (422, "ValidationException", 400), (429, "ThrottlingException", 429), (500, "ModelErrorException", 424),
    (502, "ServiceUnavailableException", 503), (503, "ServiceUnavailableException", 503),
    (504, "ServiceUnavailableException", 503), (529, "ServiceUnavailableException", 503),
    (501, "ModelErrorException", 424), (418, "ValidationException", 400)])
def test_status_table(status, code, http):
    e = pe.from_http("p1", status, {}, openai_err("boom"), ())
    assert (e.code, e.status) == (code, http)
    assert "p1" in e.message and "boom" in e.message


def test_model_errors_carry_the_original_status():
    assert pe.from_http("p", 500, {}, b"", ()).extra == {"originalStatusCode": 500}


def test_throttling_retry_after_seconds_and_ms():
    assert pe.from_http("p", 429, {"retry-after": "2"}, b"{}", ()).retry_after_ms == 2000
    assert pe.from_http("p", 429, {"retry-after-ms": "150", "retry-after": "2"}, b"{}", ()).retry_after_ms == 150
    assert pe.from_http("p", 429, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, b"{}", ()).retry_after_ms is None
    assert pe.from_http("p", 503, {"retry-after": "1"}, b"{}", ()).retry_after_ms == 1000


def test_openai_quota_is_not_throttling():
    body = openai_err("You exceeded your current quota, please check your plan.", "insufficient_quota",
                      "insufficient_quota")
    e = pe.from_http("p", 429, {}, body, ())
    assert e.code == "ServiceQuotaExceededException" and e.status == 400 and not e.retryable


def test_anthropic_credit_balance_is_quota():
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message":
                       "Your credit balance is too low to access the Anthropic API."}}).encode()
    assert pe.from_http("a", 400, {}, body, ()).code == "ServiceQuotaExceededException"


def test_auth_failure_never_leaks_the_key_configured_or_masked():
    body = openai_err(f"Incorrect API key provided: {KEY}. You can find your API key at https://x.", code="invalid_api_key")
    e = pe.from_http("openai", 401, {}, body, (KEY,))
    assert KEY not in e.message and "sk-" not in e.message
    masked = openai_err("Incorrect API key provided: sk-te****enai. You can find your API key at ...")
    e = pe.from_http("openai", 401, {}, masked, ())
    assert "sk-te" not in e.message and "****" not in e.message
    assert "providers.openai.keys" in e.message


def test_anthropic_and_mistral_error_shapes():
    anth = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    e = pe.from_http("a", 529, {}, anth, ())
    assert e.code == "ServiceUnavailableException" and "Overloaded" in e.message
    mis = json.dumps({"object": "error", "message": "Invalid model: x", "type": "invalid_model", "code": "1500"}).encode()
    assert "Invalid model: x" in pe.from_http("m", 400, {}, mis, ()).message
    detail = json.dumps({"detail": [{"loc": ["body", "foo"], "msg": "Extra inputs are not permitted"}]}).encode()
    assert "Extra inputs are not permitted" in pe.from_http("m", 422, {}, detail, ()).message


def test_non_json_error_body_is_quoted_briefly():
    e = pe.from_http("p", 502, {}, b"<html>502 Bad Gateway</html>" + b"x" * 1000, ())
    assert e.code == "ServiceUnavailableException" and "502 Bad Gateway" in e.message and len(e.message) < 500


def test_bad_body():
    e = pe.bad_body("p", 200, b"<html>hi</html>", "a body that is not JSON")
    assert e.code == "ModelErrorException" and e.status == 424 and e.extra["originalStatusCode"] == 200
    assert "not JSON" in e.message and "<html>hi" in e.message


@pytest.mark.parametrize("err,code", [
    ({"type": "overloaded_error", "message": "Overloaded"}, "ServiceUnavailableException"),
    ({"type": "api_error", "message": "x"}, "ServiceUnavailableException"),
    ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "ThrottlingException"),
    ({"message": "bad thing", "type": "invalid_request_error"}, "ModelStreamErrorException"),
    ("plain string", "ModelStreamErrorException")])
def test_in_stream(err, code):
    e = pe.in_stream("p", err, ())
    assert e.code == code and "p" in e.message
    if code == "ModelStreamErrorException":
        assert e.extra["originalStatusCode"] == 500


def test_in_stream_redacts():
    e = pe.in_stream("p", {"message": f"key {KEY} bad"}, (KEY,))
    assert KEY not in e.message


def test_cut_stream():
    e = pe.cut_stream("p", "no finish_reason")
    assert e.code == "ModelStreamErrorException" and "no finish_reason" in e.message
