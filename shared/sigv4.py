"""AWS Signature Version 4 for the `bedrock` service: botocore's algorithm (`SigV4Auth`), written out.
Pure: botocore is the tests' oracle, never imported here.

No I/O and no clock reads: the caller passes the current time in. Reference:
bedrock-protocol.md section 4.

Verifying
---------
`parse_authorization()` splits an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...`` header. `verify()` checks one request against one secret key:

1. the credential scope names the service (``bedrock``, not ``bedrock-runtime``) and, if asked, the
   region; the scope date equals the date part of ``X-Amz-Date``;
2. ``X-Amz-Date`` is within ``max_skew_seconds`` (default 300) of ``now``, both ways;
3. ``host`` (or ``:authority``, which HTTP/2 clients sign instead) is among the signed headers, and
   every signed header is present in the request;
4. an ``X-Amz-Content-SHA256`` header, if sent (the JS SDK sends one), is the SHA-256 of the body;
5. the signature botocore's `SigV4Auth` computes over exactly those bytes equals the one sent
   (`hmac.compare_digest`).

What "exactly those bytes" means, and why a verifier must not rebuild the request itself:

* the path is the RAW request target, still percent-encoded (``/model/a%3Ab/converse``); botocore
  percent-encodes it once more for the canonical URI (``a%253Ab``), exactly as it did when signing;
* ``host`` is the Host header as sent, port included;
* the headers signed are exactly the ``SignedHeaders`` list, no more (the stock signer would add
  ``host``, which breaks HTTP/2 requests signed with ``:authority``), no fewer;
* the body is the raw body as received, before any parsing.

`authenticate()` wraps parse + secret lookup + verify for a server holding several keys; an
unknown access key id is ``UnrecognizedClientException``.

Signing
-------
`sign_headers()` signs a request the way botocore does (every header but botocore's blacklist, plus
``host``), at a given time; `sign()` is the same at an X-Amz-Date already formatted. The bedrock
provider uses it to re-sign requests to a real Bedrock (the derived key is kept per day, as
botocore does not); tests use it to build signed requests.

Errors
------
Every failure is a `SigV4Error` whose ``code`` is the AWS error code a client will see:

* ``IncompleteSignatureException`` (HTTP 400): the Authorization header or X-Amz-Date is missing or
  malformed, or ``host`` is not signed;
* ``InvalidSignatureException`` (403): wrong scope, expired or future-dated signature, a signed header
  missing from the request, a body that does not match X-Amz-Content-SHA256, or a signature mismatch;
* ``UnrecognizedClientException`` (403): empty or unknown access key id.

Messages follow AWS's wording where AWS has one, and always say which value was wrong.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

# botocore's algorithm (botocore.auth.SigV4Auth), written out: botocore itself is the oracle of the
# tests (tests/unit/test_sigv4.py signs and verifies with both), not a dependency of the gateway.
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"      # botocore.auth.SIGV4_TIMESTAMP

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "bedrock"
TERMINATOR = "aws4_request"
DEFAULT_MAX_SKEW_SECONDS = 300      # AWS refuses a signature more than 5 minutes off (RequestTimeTooSkewed)

INCOMPLETE = "IncompleteSignatureException"
INVALID = "InvalidSignatureException"
UNRECOGNIZED = "UnrecognizedClientException"

_STATUS = {INCOMPLETE: 400, INVALID: 403, UNRECOGNIZED: 403}
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SCOPE_DATE = re.compile(r"^\d{8}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your AWS Secret Access Key and signing method. Consult the service "
             "documentation for details.")


class SigV4Error(Exception):
    """A request failed SigV4 authentication. ``code`` is the AWS error code, ``status`` its HTTP status."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = _STATUS.get(code, 403)

    def __repr__(self) -> str:
        return f"SigV4Error({self.code!r}, {self.message!r})"


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``AWS4-HMAC-SHA256`` Authorization header."""

    access_key_id: str
    date: str                  # yyyymmdd from the credential scope
    region: str
    service: str
    signed_headers: list[str]  # lower-case, in the order sent
    signature: str             # lower-case hex

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


# --- parsing --------------------------------------------------------------------------------

def parse_authorization(value: str) -> Authorization:
    """Parse an Authorization header value; raises `SigV4Error` saying what is wrong."""
    if value is None or not value.strip():
        raise SigV4Error(INCOMPLETE, "The Authorization header is empty; expected "
                         f"'{ALGORITHM} Credential=..., SignedHeaders=..., Signature=...'.")
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        shown = algorithm if len(algorithm) <= 40 else algorithm[:40] + "..."
        raise SigV4Error(INCOMPLETE, f"Unsupported Authorization algorithm '{shown}'; only "
                         f"'{ALGORITHM}' (SigV4) is accepted.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq:
            raise SigV4Error(INCOMPLETE, f"Authorization header component '{part[:60]}' is not "
                             "of the form Name=Value.")
        if key in params:
            raise SigV4Error(INCOMPLETE, f"Authorization header has '{key}' more than once.")
        params[key] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not params.get(k)]
    if missing:
        raise SigV4Error(INCOMPLETE, " ".join(
            f"Authorization header requires '{k}' parameter." for k in missing))

    cred = params["Credential"].split("/")
    if len(cred) != 5:
        raise SigV4Error(INCOMPLETE, "Credential must have exactly 5 slash-delimited elements, "
                         f"e.g. keyid/date/region/service/term, got '{params['Credential']}'.")
    akid, date, region, service, term = cred
    if not akid:
        raise SigV4Error(UNRECOGNIZED, "The security token included in the request is invalid: "
                         "the Credential has an empty access key id.")
    if term != TERMINATOR:
        raise SigV4Error(INVALID, "Credential should be scoped with a valid terminator: "
                         f"'{TERMINATOR}', not '{term}'.")
    if not _SCOPE_DATE.match(date):
        raise SigV4Error(INVALID, f"Credential scope date '{date}' is not of the form yyyymmdd.")
    if not region:
        raise SigV4Error(INVALID, "Credential should be scoped to a valid region, not ''.")

    signed = [h.strip().lower() for h in params["SignedHeaders"].split(";")]
    if any(not h for h in signed):
        raise SigV4Error(INCOMPLETE, f"SignedHeaders '{params['SignedHeaders']}' has an empty "
                         "header name.")
    sig = params["Signature"]
    if not _HEX64.match(sig):
        raise SigV4Error(INCOMPLETE, "Signature must be 64 lower-case hex characters, got "
                         f"{len(sig)} characters.")
    return Authorization(akid, date, region, service, signed, sig)


def parse_amz_date(value: str) -> datetime:
    """``yyyymmddThhmmssZ`` -> an aware UTC datetime; raises `SigV4Error`."""
    if not value or not _AMZ_DATE.match(value):
        raise SigV4Error(INCOMPLETE, f"Date must be in ISO-8601 'basic format' "
                         f"(yyyymmddThhmmssZ). Got '{value}'.")
    try:
        return datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SigV4Error(INCOMPLETE, f"X-Amz-Date '{value}' is not a valid date.") from None


# --- the algorithm --------------------------------------------------------------------------

# botocore.auth.SIGNED_HEADERS_BLACKLIST: headers a signer leaves out of the signature
_NOT_SIGNED = frozenset(("baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent",
                         "x-amzn-trace-id"))


def _canonical_path(path: str) -> str:
    """botocore's canonical URI: dot segments and empty segments removed, then percent-encoded
    (once more: an encoded ``%3A`` becomes ``%253A``)."""
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg and seg != ".":
            if seg == "..":
                if out:
                    out.pop()
            else:
                out.append(seg)
    norm = ("/" if path[0] == "/" else "") + "/".join(out) + ("/" if path[-1] == "/" and out else "")
    return quote(norm, safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    return "&".join(f"{k}={v}" for k, v in sorted(p.partition("=")[::2] for p in query.split("&")))


def _host_of(parts) -> str:
    """The ``host`` value botocore signs when the request has none: lower-case, without a default port."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


@functools.lru_cache(maxsize=64)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The derived key (four HMACs): it changes only with the day, so it is kept."""
    k = hmac.new(f"AWS4{secret_key}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, TERMINATOR):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _signature(method: str, url: str, signed: list[tuple[str, str]], body: bytes, access_key_id: str,
               secret_key: str, region: str, service: str, amz_date: str) -> tuple[str, str, str]:
    """(credential scope with the key id, SignedHeaders, signature) of a request signing exactly
    `signed` ((lower-case name, value) pairs, in the order botocore met them)."""
    parts = urlsplit(url)
    values: dict[str, list[str]] = {}
    for name, value in signed:
        values.setdefault(name, []).append(value)
    names = sorted(values)
    payload = next((v for n, v in signed if n == "x-amz-content-sha256"), None) or hashlib.sha256(body).hexdigest()
    canonical = "\n".join((
        method.upper(), _canonical_path(parts.path), _canonical_query(parts.query),
        "".join(f"{n}:{','.join(' '.join(v.split()) for v in values[n])}\n" for n in names),
        ";".join(names), payload))
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/{TERMINATOR}"
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    sig = hmac.new(_signing_key(secret_key, day, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{access_key_id}/{scope}", ";".join(names), sig


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


# --- verifying ------------------------------------------------------------------------------

def expected_signature(method: str, scheme: str, host: str, raw_path_and_query: str,
                       headers: Mapping[str, str], body: bytes, auth: Authorization,
                       secret_key: str, amz_date: str) -> str:
    """The signature botocore computes for this request, signing exactly `auth.signed_headers`.

    `headers` must have lower-case names and contain every signed header (see `verify()` for the
    ``host``/``:authority`` fallbacks).
    """
    signed = [(name, headers[name]) for name in auth.signed_headers]
    return _signature(method, f"{scheme}://{host}{raw_path_and_query}", signed, body, auth.access_key_id,
                      secret_key, auth.region, auth.service, amz_date)[2]


def verify(method: str, scheme: str, host: str, raw_path_and_query: str, headers: Mapping[str, str],
           body: bytes, secret_key: str, now: datetime, max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS,
           *, region: str | None = None, service: str = SERVICE,
           auth: Authorization | None = None) -> None:
    """Raise `SigV4Error` unless the request carries a valid SigV4 signature made with `secret_key`.

    `host` is the authority the request was sent to, port included (``127.0.0.1:8080``); it is used
    for the signed ``host``/``:authority`` value only when the request has no such header.
    `raw_path_and_query` is the request target exactly as received. `headers` has lower-case names.
    `now` is the current time (naive means UTC). `region`, if given, must match the credential scope.
    `auth` skips re-parsing when the caller already called `parse_authorization()`.
    The session token (``x-amz-security-token``), if any, is covered by the signature but not
    judged here: that is the caller's policy.
    """
    if auth is None:
        value = headers.get("authorization")
        if not value:
            raise SigV4Error(INCOMPLETE, "Request is missing the Authorization header; sign it with "
                             f"SigV4 ({ALGORITHM}) for service '{service}'.")
        auth = parse_authorization(value)

    if auth.service != service:
        raise SigV4Error(INVALID, f"Credential should be scoped to correct service: '{service}', "
                         f"not '{auth.service}'.")
    if region is not None and auth.region != region:
        raise SigV4Error(INVALID, f"Credential should be scoped to a valid region, not "
                         f"'{auth.region}' (this endpoint is '{region}').")

    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise SigV4Error(INCOMPLETE, "Authorization header requires existence of a 'X-Amz-Date' "
                         "header.")
    when = parse_amz_date(amz_date)
    if auth.date != amz_date[:8]:
        raise SigV4Error(INVALID, "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                         f"version of date from HTTP: '{auth.date}' != '{amz_date[:8]}', from "
                         f"'{amz_date}'.")
    now = _utc(now)
    skew = timedelta(seconds=max_skew_seconds)
    minutes = f"{max_skew_seconds / 60:g} min."
    if when < now - skew:
        raise SigV4Error(INVALID, f"Signature expired: {amz_date} is now earlier than "
                         f"{(now - skew).strftime(SIGV4_TIMESTAMP)} "
                         f"({now.strftime(SIGV4_TIMESTAMP)} - {minutes})")
    if when > now + skew:
        raise SigV4Error(INVALID, f"Signature not yet current: {amz_date} is still later than "
                         f"{(now + skew).strftime(SIGV4_TIMESTAMP)} "
                         f"({now.strftime(SIGV4_TIMESTAMP)} + {minutes})")

    if "host" not in auth.signed_headers and ":authority" not in auth.signed_headers:
        raise SigV4Error(INCOMPLETE, "'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                         f"Authorization (SignedHeaders={';'.join(auth.signed_headers)}).")
    values: dict[str, str] = {}
    for name in auth.signed_headers:
        v = headers.get(name)
        if v is None and name in ("host", ":authority"):
            v = headers.get("host") or headers.get(":authority") or host
        if v is None:
            raise SigV4Error(INVALID, f"SignedHeaders lists '{name}' but the request has no "
                             f"'{name}' header; a proxy may have removed it.")
        values[name] = v

    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None:
        actual = hashlib.sha256(body).hexdigest()
        if claimed.strip().lower() != actual:
            raise SigV4Error(INVALID, f"X-Amz-Content-SHA256 '{claimed[:64]}' does not match the "
                             f"SHA-256 of the {len(body)}-byte body received ({actual}); the body "
                             "was altered or not signed.")

    expected = expected_signature(method, scheme, host, raw_path_and_query, values, body, auth,
                                  secret_key, amz_date)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise SigV4Error(INVALID, _MISMATCH)


def authenticate(method: str, scheme: str, host: str, raw_path_and_query: str,
                 headers: Mapping[str, str], body: bytes,
                 secrets: Mapping[str, str] | Callable[[str], str | None], now: datetime,
                 max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS, *, region: str | None = None,
                 service: str = SERVICE) -> Authorization:
    """Parse, look the access key id up in `secrets` (a mapping or a function), verify.

    Returns the parsed `Authorization` on success; raises `SigV4Error` (``UnrecognizedClientException``
    for an unknown access key id).
    """
    value = headers.get("authorization")
    if not value:
        raise SigV4Error(INCOMPLETE, "Request is missing the Authorization header; sign it with "
                         f"SigV4 ({ALGORITHM}) for service '{service}'.")
    auth = parse_authorization(value)
    secret = secrets(auth.access_key_id) if callable(secrets) else secrets.get(auth.access_key_id)
    if secret is None:
        raise SigV4Error(UNRECOGNIZED, "The security token included in the request is invalid: "
                         f"access key id '{auth.access_key_id}' is not known here.")
    verify(method, scheme, host, raw_path_and_query, headers, body, secret, now, max_skew_seconds,
           region=region, service=service, auth=auth)
    return auth


# --- signing --------------------------------------------------------------------------------

def sign_headers(method: str, url: str, headers: Mapping[str, str], body: bytes, *,
                 access_key_id: str, secret_key: str, region: str, now: datetime,
                 service: str = SERVICE, session_token: str | None = None) -> dict[str, str]:
    """Sign like botocore at time `now`; returns `headers` plus X-Amz-Date, Authorization and
    (with a `session_token`) X-Amz-Security-Token.

    `url` is the full URL with the path percent-encoded as it will go on the wire
    (``http://h:p/model/a%3Ab/converse``). Signed: every header but botocore's blacklist
    (user-agent, expect, transfer-encoding, ...), plus ``host`` taken from `url` when absent.
    Any Authorization, X-Amz-Date or X-Amz-Security-Token already in `headers` is replaced.
    """
    return sign(method, url, headers, body, access_key_id=access_key_id, secret_key=secret_key, region=region,
                amz_date=_utc(now).strftime(SIGV4_TIMESTAMP), service=service, session_token=session_token)


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, *, access_key_id: str,
         secret_key: str, region: str, amz_date: str, service: str = SERVICE,
         session_token: str | None = None) -> dict[str, str]:
    """`sign_headers()` at an X-Amz-Date already formatted (``20261206T101500Z``): the headers
    in botocore's order (the given ones, X-Amz-Date, X-Amz-Security-Token, Authorization)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low == "date":
            raise ValueError("sign: a Date header is not supported (botocore would re-sign it); send none")
        if low not in ("authorization", "x-amz-date") and not (session_token and low == "x-amz-security-token"):
            out[name] = value
    out["X-Amz-Date"] = amz_date
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    signed = [(n.lower(), v) for n, v in out.items() if n.lower() not in _NOT_SIGNED]
    if not any(n == "host" for n, _ in signed):
        signed.append(("host", _host_of(urlsplit(url))))
    credential, signed_names, sig = _signature(method, url, signed, body, access_key_id, secret_key, region,
                                               service, amz_date)
    out["Authorization"] = f"{ALGORITHM} Credential={credential}, SignedHeaders={signed_names}, Signature={sig}"
    return out
