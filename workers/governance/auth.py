"""Which virtual key a request presents, and whether it may make the request. Pure.

A client presents a key in one of three ways (checked in this order):

1. ``x-bf-vk: <secret>``: the header the product page's before-sign hook adds;
2. SigV4 with the key id as the access key id and the key secret as the secret access key: the
   signature is verified (raw path, exactly the signed headers, the body, clock skew), so a plain
   boto3 client needs no hook at all;
3. ``Authorization: Bearer <secret>`` (Bedrock API keys, `AWS_BEARER_TOKEN_BEDROCK`).

Modes: ``open`` (the default) serves requests that present no known key anonymously: the dummy
credentials of the product page keep working, and an unknown ``x-bf-vk`` is only recorded. A key
that IS known must still be valid (enabled, not expired, right signature). ``enforced`` refuses
every request without a valid key.

Every refusal is a GatewayError with the code a Bedrock client expects (reference section 3):
AccessDeniedException (unknown, disabled or expired key, model or provider not allowed),
UnrecognizedClientException (enforced mode, unknown access key id), InvalidSignatureException or
IncompleteSignatureException (a known key id with a bad signature).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from finops.shared import errors, sigv4
from finops.shared.governance import Directory, VirtualKey


@dataclass(slots=True)
class KeyIndex:
    """Lookups over a Directory: by id (SigV4) and by secret (x-bf-vk, Bearer)."""
    directory: Directory
    by_secret: dict[str, VirtualKey]

    @classmethod
    def of(cls, directory: Directory) -> "KeyIndex":
        return cls(directory, {k.secret: k for k in directory.keys.values()})


@dataclass(slots=True)
class Identity:
    key: VirtualKey | None      # None: anonymous (open mode)
    form: str                   # "x-bf-vk" | "sigv4" | "bearer" | "" (none)
    label: str                  # what the request log records as `vk`: the key id, or the raw x-bf-vk


def _mask(secret: str) -> str:
    return secret[:4] + "…" if len(secret) > 8 else "…"


def identify(index: KeyIndex, mode: str, method: str, host: str, raw_path: str, headers: dict,
             body: bytes, now: float, max_skew_seconds: float = 300) -> Identity:
    """The key the request presents, verified; raises GatewayError when it must be refused."""
    enforced = mode == "enforced"
    vk = headers.get("x-bf-vk")
    if vk:
        key = index.by_secret.get(vk)
        if key is not None:
            return Identity(key, "x-bf-vk", key.id)
        if enforced:
            raise errors.GatewayError("AccessDeniedException",
                                      f"x-bf-vk: virtual key {_mask(vk)} is not known to this gateway; "
                                      "check the key (finops keys list).")
        return Identity(None, "x-bf-vk", vk[:64])
    authz = headers.get("authorization", "")
    if authz.startswith(sigv4.ALGORITHM):
        try:
            auth = sigv4.parse_authorization(authz)
        except sigv4.SigV4Error as e:
            if enforced:
                raise errors.GatewayError(e.code, e.message, e.status) from None
            return Identity(None, "", "")
        key = index.directory.keys.get(auth.access_key_id)
        if key is None:
            if enforced:
                raise errors.GatewayError(
                    "UnrecognizedClientException",
                    f"The security token included in the request is invalid: access key id "
                    f"{auth.access_key_id!r} is not a virtual key of this gateway. Use a key id as "
                    "aws_access_key_id and its secret as aws_secret_access_key.")
            return Identity(None, "", "")
        try:
            sigv4.verify(method, "http", host, raw_path, headers, body, key.secret,
                         datetime.fromtimestamp(now, timezone.utc), int(max_skew_seconds), auth=auth)
        except sigv4.SigV4Error as e:
            raise errors.GatewayError(e.code, e.message, e.status) from None
        return Identity(key, "sigv4", key.id)
    if authz[:7].lower() == "bearer ":
        token = authz[7:].strip()
        key = index.by_secret.get(token)
        if key is not None:
            return Identity(key, "bearer", key.id)
        if enforced:
            raise errors.GatewayError("AccessDeniedException",
                                      f"Authorization: bearer token {_mask(token)} is not a virtual key of this gateway.")
        return Identity(None, "", "")
    if enforced:
        raise errors.GatewayError(
            "AccessDeniedException",
            "This gateway requires a virtual key: sign with the key id and secret as AWS credentials, "
            "or send it in x-bf-vk, or as Authorization: Bearer <secret>.")
    return Identity(None, "", "")


def authorize(key: VirtualKey, model_id: str, provider: str, now: float, base_model: str = "",
              check_model: bool = True) -> None:
    """Raise AccessDeniedException unless `key` may call `model_id` (or `base_model`, the model of
    the inference profile it names) through `provider` now. `check_model=False` (ApplyGuardrail,
    which calls no model): the key's models list does not apply."""
    if not key.enabled:
        raise errors.GatewayError("AccessDeniedException",
                                  f"virtual key {key.id!r} is disabled (finops keys enable {key.id}).")
    if key.expires_at is not None and now >= key.expires_at:
        when = datetime.fromtimestamp(key.expires_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise errors.GatewayError("AccessDeniedException", f"virtual key {key.id!r} expired at {when}.")
    if check_model and not key.allows_model(model_id, base_model):
        raise errors.GatewayError(
            "AccessDeniedException",
            f"virtual key {key.id!r} may not use model {model_id!r} (allowed: {', '.join(key.models)}).")
    if provider and not key.allows_provider(provider):
        raise errors.GatewayError(
            "AccessDeniedException",
            f"virtual key {key.id!r} may not use provider {provider!r} for model {model_id!r} "
            f"(allowed providers: {', '.join(key.providers)}).")
