"""shared/sigv4.py against requests really signed by botocore and boto3 (no network).

Two sources of signed requests:

* `botocore_signed()`: a botocore `AWSRequest` signed by `SigV4Auth(..., "bedrock", ...)`, the
  signer every boto3 client uses, with its clock pinned;
* `boto3_capture()`: what a real boto3 ``bedrock-runtime`` client puts on the wire, caught by a
  ``before-send`` handler that answers with a canned `AWSResponse` instead of opening a socket.

Plus an independent, textbook SigV4 implementation (`_reference_signature`) for the HTTP/2
``:authority`` case that botocore cannot produce, and the AWS SigV4 test-suite vector ``get-vanilla``.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote, urlsplit

import boto3
import botocore.auth
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from finops.shared import sigv4
from finops.shared.sigv4 import SigV4Error

AKID = "AKIDFAKEBEDROCK0001"
SECRET = "fake/secret+key/0123456789abcdefghijklmnopqrs"
REGION = "us-east-1"
ENDPOINT = "http://127.0.0.1:8443/bedrock"
T0 = datetime(2026, 11, 24, 17, 30, 18, tzinfo=timezone.utc)

MODEL_IDS = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "weird name/with space+plus",
]
# what botocore puts on the wire for each (bedrock-protocol.md 1.2)
WIRE_SEGMENTS = {
    MODEL_IDS[0]: "anthropic.claude-3-5-sonnet-20240620-v1%3A0",
    MODEL_IDS[1]: "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
                  "%2Fus.anthropic.claude-3-7-sonnet-20250219-v1%3A0",
    MODEL_IDS[2]: "weird%20name%2Fwith%20space%2Bplus",
}


# --- helpers ---------------------------------------------------------------------------------

class Req:
    """A request as a server would see it: raw target, lower-case headers incl. host, raw body."""

    def __init__(self, method: str, url: str, headers: dict, body: bytes):
        parts = urlsplit(url)
        self.method = method
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        # botocore's prepared requests hold some values as bytes; a server sees text
        self.headers = {k.lower(): v.decode() if isinstance(v, bytes) else v
                        for k, v in headers.items()}
        self.headers.setdefault("host", parts.netloc)  # urllib3 adds Host on the wire
        self.body = body if isinstance(body, bytes) else (body or "").encode()

    @property
    def date(self) -> datetime:
        return sigv4.parse_amz_date(self.headers["x-amz-date"])

    def verify(self, secret: str = SECRET, now: datetime | None = None, **kw) -> None:
        sigv4.verify(self.method, self.scheme, self.host, self.target, self.headers, self.body,
                     secret, self.date if now is None else now, **kw)


def botocore_signed(model_id: str, action: str = "converse", body: bytes = b'{"messages":[]}',
                    when: datetime = T0, service: str = "bedrock", token: str | None = None,
                    headers: dict | None = None, monkeypatch=None) -> Req:
    """Sign with botocore's SigV4Auth, its clock pinned to `when`."""
    url = f"{ENDPOINT}/model/{quote(model_id, safe='-._~')}/{action}"
    hdrs = {"Content-Type": "application/json", "User-Agent": "Boto3/1.44.8 test"}
    hdrs.update(headers or {})
    request = AWSRequest(method="POST", url=url, headers=hdrs, data=body)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    SigV4Auth(ReadOnlyCredentials(AKID, SECRET, token), service, REGION).add_auth(request)
    return Req("POST", url, dict(request.headers.items()), body)


def _canned_response(request, **_):
    raw = urllib3.HTTPResponse(body=io.BytesIO(b"{}"), status=200, preload_content=False,
                               headers={"content-type": "application/json"})
    return AWSResponse(request.url, 200, {"content-type": "application/json"}, raw)


def boto3_capture(call, token: str | None = None) -> Req:
    """Run `call(client)` on a real boto3 bedrock-runtime client; return the request it sent."""
    client = boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=ENDPOINT,
                          aws_access_key_id=AKID, aws_secret_access_key=SECRET,
                          aws_session_token=token,
                          config=Config(retries={"total_max_attempts": 1}))
    sent = []

    def before_send(request, **kw):
        sent.append(request)
        return _canned_response(request)

    client.meta.events.register("before-send.bedrock-runtime", before_send)
    call(client)
    assert len(sent) == 1
    r = sent[0]
    return Req(r.method, r.url, dict(r.headers.items()), r.body)


@pytest.fixture(autouse=True)
def _no_bearer(monkeypatch):
    # A bearer token in the environment would make boto3 skip SigV4 (protocol 4.3).
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


def _reference_signature(method, canonical_uri, query, headers: list[tuple[str, str]], body,
                         secret, amz_date, region, service):
    """Textbook SigV4 (AWS docs), independent of botocore."""
    names = sorted(h for h, _ in headers)
    hmap = dict(headers)
    canonical = "\n".join([
        method, canonical_uri, query,
        "".join(f"{n}:{' '.join(hmap[n].split())}\n" for n in names),
        ";".join(names), hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def _expect(code: str, fragment: str, fn, *a, **kw) -> SigV4Error:
    with pytest.raises(SigV4Error) as ei:
        fn(*a, **kw)
    assert ei.value.code == code, ei.value
    assert fragment in ei.value.message, ei.value.message
    return ei.value


# --- parse_authorization ------------------------------------------------------------------------

GOOD = ("AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=" + "ab" * 32)


def test_parse_authorization_fields():
    a = sigv4.parse_authorization(GOOD)
    assert (a.access_key_id, a.date, a.region, a.service) == ("AKID", "20261124", "us-east-1", "bedrock")
    assert a.signed_headers == ["content-type", "host", "x-amz-date"]
    assert a.signature == "ab" * 32
    assert a.scope == "20261124/us-east-1/bedrock/aws4_request"


def test_parse_authorization_tolerates_spacing():
    spaced = GOOD.replace(", ", ",").replace("Credential=", "Credential= ")
    assert sigv4.parse_authorization(spaced) == sigv4.parse_authorization(GOOD)


@pytest.mark.parametrize("value, code, fragment", [
    ("", "IncompleteSignatureException", "empty"),
    ("Bearer abc.def", "IncompleteSignatureException", "Unsupported Authorization algorithm 'Bearer'"),
    ("AWS4-HMAC-SHA1 Credential=a/b/c/d/e", "IncompleteSignatureException", "AWS4-HMAC-SHA1"),
    (GOOD.replace("Credential=AKID/20261124/us-east-1/bedrock/aws4_request, ", ""),
     "IncompleteSignatureException", "requires 'Credential' parameter"),
    (GOOD.replace("SignedHeaders=content-type;host;x-amz-date, ", ""),
     "IncompleteSignatureException", "requires 'SignedHeaders' parameter"),
    (GOOD.split(", Signature=")[0], "IncompleteSignatureException", "requires 'Signature' parameter"),
    (GOOD.replace("/aws4_request", ""), "IncompleteSignatureException", "exactly 5 slash-delimited"),
    (GOOD.replace("aws4_request", "aws5_request"), "InvalidSignatureException", "valid terminator"),
    (GOOD.replace("20261124", "2026-11-24"), "InvalidSignatureException", "yyyymmdd"),
    (GOOD.replace("Credential=AKID/", "Credential=/"), "UnrecognizedClientException", "empty access key id"),
    (GOOD.replace("ab" * 32, "ab" * 31), "IncompleteSignatureException", "64 lower-case hex"),
    (GOOD.replace("ab" * 32, "zz" * 32), "IncompleteSignatureException", "64 lower-case hex"),
    (GOOD + ", Signature=" + "cd" * 32, "IncompleteSignatureException", "more than once"),
    (GOOD.replace("content-type;host", "content-type;;host"), "IncompleteSignatureException", "empty header name"),
    (GOOD + ", garbage", "IncompleteSignatureException", "Name=Value"),
])
def test_parse_authorization_rejects(value, code, fragment):
    _expect(code, fragment, sigv4.parse_authorization, value)


# --- verify: good requests from botocore and boto3 ----------------------------------------------

def test_aws_test_suite_get_vanilla():
    """The `get-vanilla` case of the AWS SigV4 test suite (service 'service', key AKIDEXAMPLE)."""
    headers = {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z",
               "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
               "aws4_request, SignedHeaders=host;x-amz-date, Signature="
               "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"}
    now = datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)
    sigv4.verify("GET", "https", "example.amazonaws.com", "/", headers, b"",
                 "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", now, service="service")
    _expect("InvalidSignatureException", "does not match", sigv4.verify, "GET", "https",
            "example.amazonaws.com", "/", headers, b"", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEy",
            now, service="service")


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_botocore_signed_request_verifies(model_id, monkeypatch):
    r = botocore_signed(model_id, monkeypatch=monkeypatch)
    assert WIRE_SEGMENTS[model_id] in r.target
    assert r.headers["x-amz-date"] == "20261124T173018Z"
    r.verify(now=T0)
    r.verify(now=T0, region=REGION)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_decoded_path_does_not_verify(model_id, monkeypatch):
    """The raw path is what was signed: a decoding server would reject every such request."""
    r = botocore_signed(model_id, monkeypatch=monkeypatch)
    _expect("InvalidSignatureException", "does not match", sigv4.verify, r.method, r.scheme,
            r.host, unquote(r.target), r.headers, r.body, SECRET, T0)


@pytest.mark.parametrize("model_id", MODEL_IDS)
@pytest.mark.parametrize("op", ["converse", "converse_stream", "invoke_model",
                                "invoke_model_with_response_stream", "count_tokens"])
def test_boto3_client_requests_verify(model_id, op):
    calls = {
        "converse": lambda c: c.converse(modelId=model_id, messages=[
            {"role": "user", "content": [{"text": "héllo wörld"}]}]),
        "converse_stream": lambda c: c.converse_stream(modelId=model_id, messages=[
            {"role": "user", "content": [{"text": "hi"}]}], inferenceConfig={"maxTokens": 5}),
        "invoke_model": lambda c: c.invoke_model(modelId=model_id, body=json.dumps(
            {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []})),
        "invoke_model_with_response_stream": lambda c: c.invoke_model_with_response_stream(
            modelId=model_id, body=b'{"prompt":"x"}', contentType="application/json",
            accept="application/json", trace="ENABLED"),
        "count_tokens": lambda c: c.count_tokens(modelId=model_id, input={
            "converse": {"messages": [{"role": "user", "content": [{"text": "x"}]}]}}),
    }
    r = boto3_capture(calls[op])
    assert WIRE_SEGMENTS[model_id] in r.target
    assert r.target.startswith("/bedrock/model/")
    auth = sigv4.parse_authorization(r.headers["authorization"])
    assert auth.service == "bedrock" and auth.access_key_id == AKID and "host" in auth.signed_headers
    r.verify(region=REGION)


def test_boto3_with_session_token_verifies_and_token_is_signed():
    r = boto3_capture(lambda c: c.converse(modelId=MODEL_IDS[0], messages=[]), token="SESSION-TOKEN")
    assert "x-amz-security-token" in sigv4.parse_authorization(r.headers["authorization"]).signed_headers
    r.verify()
    r.headers["x-amz-security-token"] = "OTHER-TOKEN"
    _expect("InvalidSignatureException", "does not match", r.verify)


def test_unsigned_headers_may_change(monkeypatch):
    """Only SignedHeaders count: user-agent, content-length and amz-sdk-* are not signed by boto3."""
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    assert "user-agent" not in sigv4.parse_authorization(r.headers["authorization"]).signed_headers
    r.headers["user-agent"] = "something/else"
    r.headers["amz-sdk-request"] = "attempt=2; max=3"
    r.headers["x-forwarded-for"] = "10.0.0.1"
    r.verify(now=T0)


def test_query_string_is_signed(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.target += "?b=2&a=1"
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)


def test_http2_authority_signed_instead_of_host():
    """The JS SDK over HTTP/2 signs `:authority` (and x-amz-content-sha256), not `host`."""
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    amz_date = T0.strftime("%Y%m%dT%H%M%SZ")
    target = "/bedrock/model/anthropic.claude-v2%3A1/converse"
    signed = [(":authority", "127.0.0.1:8443"), ("content-length", str(len(body))),
              ("content-type", "application/json"),
              ("x-amz-content-sha256", hashlib.sha256(body).hexdigest()), ("x-amz-date", amz_date)]
    canonical_uri = quote(target, safe="/~")  # double-encoded: %3A -> %253A
    sig = _reference_signature("POST", canonical_uri, "", signed, body, SECRET, amz_date, REGION, "bedrock")
    names = ";".join(sorted(n for n, _ in signed))
    headers = {n: v for n, v in signed if n != ":authority"}
    headers["host"] = "127.0.0.1:8443"  # how most servers surface :authority
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AKID}/{amz_date[:8]}/{REGION}/bedrock/"
                                f"aws4_request, SignedHeaders={names}, Signature={sig}")
    sigv4.verify("POST", "http", "127.0.0.1:8443", target, headers, body, SECRET, T0)
    # the header the client sent wins over the server's own idea of its authority
    sigv4.verify("POST", "http", "gateway.internal:80", target, headers, body, SECRET, T0)
    # the pseudo-header itself, if the server passes it through
    h2 = dict(headers, **{":authority": "127.0.0.1:8443"})
    del h2["host"]
    sigv4.verify("POST", "http", "127.0.0.1:8443", target, h2, body, SECRET, T0)
    # neither header: the `host` argument is used
    h3 = {k: v for k, v in headers.items() if k != "host"}
    sigv4.verify("POST", "http", "127.0.0.1:8443", target, h3, body, SECRET, T0)
    _expect("InvalidSignatureException", "does not match", sigv4.verify, "POST", "http",
            "127.0.0.1:9999", target, h3, body, SECRET, T0)


def test_sign_headers_matches_botocore(monkeypatch):
    r = botocore_signed(MODEL_IDS[1], monkeypatch=monkeypatch)
    url = f"{r.scheme}://{r.host}{r.target}"
    ours = sigv4.sign_headers("POST", url, {"Content-Type": "application/json",
                                            "User-Agent": "Boto3/1.44.8 test"}, r.body,
                              access_key_id=AKID, secret_key=SECRET, region=REGION, now=T0)
    assert ours["Authorization"] == r.headers["authorization"]
    assert ours["X-Amz-Date"] == "20261124T173018Z"


def test_sign_headers_round_trip_with_token():
    url = "http://127.0.0.1:1234/model/a%3Ab/invoke"
    h = sigv4.sign_headers("POST", url, {"X-Amzn-Bedrock-Trace": "ENABLED"}, b"{}",
                           access_key_id=AKID, secret_key=SECRET, region="eu-west-1", now=T0,
                           session_token="tok")
    assert h["X-Amz-Security-Token"] == "tok"
    r = Req("POST", url, h, b"{}")
    assert sigv4.parse_authorization(r.headers["authorization"]).signed_headers == [
        "host", "x-amz-date", "x-amz-security-token", "x-amzn-bedrock-trace"]
    r.verify(now=T0, region="eu-west-1")
    _expect("InvalidSignatureException", "valid region", r.verify, now=T0, region="us-east-1")


# --- verify: rejections ----------------------------------------------------------------------

def test_wrong_secret(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    e = _expect("InvalidSignatureException", "The request signature we calculated does not match",
                r.verify, secret=SECRET + "x", now=T0)
    assert e.status == 403


def test_tampered_body(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], body=b'{"messages":[1]}', monkeypatch=monkeypatch)
    r.body = b'{"messages":[2]}'
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)


@pytest.mark.parametrize("change", [
    lambda t: t.replace("/converse", "/converse-stream"),
    lambda t: t.replace("v1%3A0", "v2%3A0"),
    lambda t: t.replace("/bedrock/", "/"),
    lambda t: t.replace("%3A", "%3a"),
])
def test_tampered_path(change, monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    tampered = change(r.target)
    assert tampered != r.target
    r.target = tampered
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)


def test_tampered_signed_header_and_method(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], headers={"X-Amzn-Bedrock-Trace": "ENABLED"},
                        monkeypatch=monkeypatch)
    assert "x-amzn-bedrock-trace" in sigv4.parse_authorization(r.headers["authorization"]).signed_headers
    r.headers["x-amzn-bedrock-trace"] = "DISABLED"
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.method = "PUT"
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.headers["host"] = "127.0.0.1:8444"
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)


@pytest.mark.parametrize("offset, ok, fragment", [
    (timedelta(seconds=300), True, ""),
    (timedelta(seconds=-300), True, ""),
    (timedelta(seconds=301), False, "Signature expired: 20261124T173018Z is now earlier than "
                                    "20261124T173019Z (20261124T173519Z - 5 min.)"),
    (timedelta(seconds=-301), False, "Signature not yet current: 20261124T173018Z is still later "
                                     "than 20261124T173017Z (20261124T172517Z + 5 min.)"),
    (timedelta(hours=-3), False, "Signature not yet current"),
    (timedelta(days=2), False, "Signature expired"),
])
def test_clock_skew_boundaries(offset, ok, fragment, monkeypatch):
    """`now` is the server's clock; the request was signed at T0."""
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    if ok:
        r.verify(now=T0 + offset)
    else:
        _expect("InvalidSignatureException", fragment, r.verify, now=T0 + offset)


def test_custom_skew_and_naive_now(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.verify(now=(T0 + timedelta(seconds=60)).replace(tzinfo=None))
    _expect("InvalidSignatureException", "1 min.", r.verify, now=T0 + timedelta(seconds=61),
            max_skew_seconds=60)


def test_scope_date_must_match_amz_date(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.headers["x-amz-date"] = "20261125T000000Z"
    _expect("InvalidSignatureException", "'20261124' != '20261125'", r.verify,
            now=datetime(2026, 11, 25, tzinfo=timezone.utc))


def test_changed_amz_date_same_day_fails_signature(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.headers["x-amz-date"] = "20261124T173019Z"
    _expect("InvalidSignatureException", "does not match", r.verify, now=T0)


def test_wrong_service(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], service="bedrock-runtime", monkeypatch=monkeypatch)
    _expect("InvalidSignatureException", "correct service: 'bedrock', not 'bedrock-runtime'",
            r.verify, now=T0)
    r.verify(now=T0, service="bedrock-runtime")  # it is a good signature, for another service


def test_missing_authorization_and_date(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    del r.headers["authorization"]
    e = _expect("IncompleteSignatureException", "missing the Authorization header", r.verify, now=T0)
    assert e.status == 400
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    del r.headers["x-amz-date"]
    _expect("IncompleteSignatureException", "X-Amz-Date", r.verify, now=T0)
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    r.headers["x-amz-date"] = "2026-11-24T17:30:18Z"
    _expect("IncompleteSignatureException", "ISO-8601 'basic format'", r.verify, now=T0)


def test_signed_header_missing_from_request(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    del r.headers["content-type"]
    _expect("InvalidSignatureException", "lists 'content-type' but the request has no", r.verify, now=T0)


def test_host_must_be_signed(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    a = r.headers["authorization"]
    r.headers["authorization"] = a.replace("SignedHeaders=content-type;host;x-amz-date",
                                           "SignedHeaders=content-type;x-amz-date")
    assert r.headers["authorization"] != a
    _expect("IncompleteSignatureException", "'Host' or ':authority' must be a 'SignedHeader'",
            r.verify, now=T0)


def test_content_sha256_header_must_match_body(monkeypatch):
    """Signing x-amz-content-sha256 makes botocore trust it as the payload hash: check it."""
    body = b'{"messages":[]}'
    r = botocore_signed(MODEL_IDS[0], body=body, monkeypatch=monkeypatch,
                        headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    r.verify(now=T0)
    r.body = b'{"messages":[{"evil":1}]}'
    _expect("InvalidSignatureException", "does not match the SHA-256", r.verify, now=T0)
    r = botocore_signed(MODEL_IDS[0], body=body, monkeypatch=monkeypatch,
                        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    _expect("InvalidSignatureException", "UNSIGNED-PAYLOAD", r.verify, now=T0)


def test_authenticate_looks_up_the_key(monkeypatch):
    r = botocore_signed(MODEL_IDS[0], monkeypatch=monkeypatch)
    args = (r.method, r.scheme, r.host, r.target, r.headers, r.body)
    auth = sigv4.authenticate(*args, {AKID: SECRET}, T0, region=REGION)
    assert auth.access_key_id == AKID
    assert sigv4.authenticate(*args, lambda k: SECRET if k == AKID else None, T0).region == REGION
    e = _expect("UnrecognizedClientException", f"'{AKID}' is not known", sigv4.authenticate,
                *args, {"OTHER": SECRET}, T0)
    assert e.status == 403
    _expect("InvalidSignatureException", "does not match", sigv4.authenticate, *args,
            {AKID: "nope"}, T0)


# --- the signer against botocore's, over many requests -------------------------------------------

def _botocore_sign(method, url, headers, body, amz_date, region, service, token):
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(ReadOnlyCredentials(AKID, SECRET, token), service, region)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signer._inject_signature_to_request(request, signer.signature(signer.string_to_sign(request, canonical), request))
    return list(request.headers.items())


SIGN_URLS = ["http://127.0.0.1:8080/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
             "https://bedrock-runtime.us-east-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x/converse-stream",
             "https://bedrock-runtime.eu-west-3.amazonaws.com:443/model/a b~c*'()/invoke",
             "http://EXAMPLE.internal:80//model/./x/../y/invoke-with-response-stream/",
             "http://[::1]:9000/guardrail/gr%2F1/version/DRAFT/apply?b=2&a=1&a=0&c",
             "https://h.example/"]
SIGN_HEADERS = [{},
                {"Content-Type": "application/json"},
                {"content-type": "application/json", "Accept": "application/vnd.amazon.eventstream",
                 "User-Agent": "Boto3/1.44", "X-Amzn-Bedrock-Trace": "  ENABLED   now ",
                 "X-Amzn-Trace-Id": "Root=1", "Transfer-Encoding": "chunked"},
                {"Authorization": "stale", "X-Amz-Date": "19990101T000000Z", "Host": "other.example:8443",
                 "X-Amz-Security-Token": "old", "x-amzn-bedrock-guardrailidentifier": "gr-1"},
                {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "content-type": "application/json"}]


@pytest.mark.parametrize("url", SIGN_URLS)
@pytest.mark.parametrize("headers", range(len(SIGN_HEADERS)))
@pytest.mark.parametrize("token", [None, "session-token/+="])
def test_sign_is_botocores_signature(url, headers, token):
    """The gateway's own signer (no botocore at run time) gives botocore's headers, byte for byte."""
    h = SIGN_HEADERS[headers]
    for body, region, service, amz_date in ((b'{"messages":[]}', "us-east-1", "bedrock", "20261206T101500Z"),
                                            (b"", "eu-west-3", "bedrock-runtime", "20260101T000000Z")):
        ours = sigv4.sign("POST", url, h, body, access_key_id=AKID, secret_key=SECRET, region=region,
                          amz_date=amz_date, service=service, session_token=token)
        assert list(ours.items()) == _botocore_sign("POST", url, h, body, amz_date, region, service, token)


def test_sign_refuses_a_date_header():
    with pytest.raises(ValueError, match="Date"):
        sigv4.sign("POST", SIGN_URLS[0], {"Date": "x"}, b"", access_key_id=AKID, secret_key=SECRET,
                   region=REGION, amz_date="20261206T101500Z")
