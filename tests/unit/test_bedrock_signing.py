"""The bedrock provider signs each request as botocore would, with its own key, at the current
time (a new day included), and sends exactly the headers botocore's request would carry."""
from __future__ import annotations

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from finops.shared import config as configmod
from finops.workers.providers import bedrock
from finops.workers.providers.registry import build_provider
from finops.workers.request import Attempt

KEYS = [{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
        {"access_key_id": "AKIDSECOND", "secret_access_key": "second/secret", "session_token": "tok=="}]


def provider():
    cfg = configmod.build({"providers": {"b": {"kind": "bedrock", "region": "eu-west-3", "keys": KEYS}},
                           "default_route": {"provider": "b"}}, "test")
    return build_provider(cfg.providers["b"])


def attempt(p, key_index: int, op: str = "converse", headers=None) -> Attempt:
    return Attempt(number=1, target="b/*", provider="b", upstream_model="anthropic.claude-3-haiku-20240307-v1:0",
                   fallback=False, key_index=key_index, key=p.cfg.keys[key_index], key_circuit="", op=op,
                   model_id="m", headers=headers or {}, started=0.0)


def botocore_headers(url, headers, body, stamp, key) -> list:
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    req.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"], key.get("session_token")),
                       "bedrock", "eu-west-3")
    signer._modify_request_before_signing(req)
    signer._inject_signature_to_request(req, signer.signature(
        signer.string_to_sign(req, signer.canonical_request(req)), req))
    return [(k.encode(), v.encode()) for k, v in req.headers.items()]


@pytest.mark.parametrize("key_index", [0, 1])
def test_same_headers_as_botocore_across_days(key_index, monkeypatch):
    p = provider()
    body = b'{"messages":[]}'
    forwarded = {"x-amzn-bedrock-trace": "ENABLED", "accept": "application/json", "x-not-forwarded": "no"}
    for stamp in ("20261127T080000Z", "20261127T235959Z", "20261128T000001Z", "20261127T120000Z"):
        monkeypatch.setattr(bedrock, "_amz_date", lambda: stamp)
        url, headers = p.signed_request(attempt(p, key_index, headers=forwarded), body)
        assert url == ("https://bedrock-runtime.eu-west-3.amazonaws.com/model/"
                       "anthropic.claude-3-haiku-20240307-v1%3A0/converse")
        want = {"accept": "application/json", "x-amzn-bedrock-trace": "ENABLED", "content-type": "application/json"}
        assert headers == botocore_headers(url, want, body, stamp, KEYS[key_index])
        assert (b"X-Amz-Date", stamp.encode()) in headers
