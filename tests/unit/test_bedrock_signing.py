"""The bedrock provider's signer caches the derived key, and signs exactly as botocore does."""
from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from finops.workers.providers.bedrock import CachedKeySigV4Auth

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"


def signed(signer, stamp: str) -> str:
    req = AWSRequest(method="POST", url=URL, data=b'{"messages":[]}', headers={"content-type": "application/json"})
    req.context["timestamp"] = stamp
    signer._modify_request_before_signing(req)
    return signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)


def test_same_signature_as_botocore_across_days():
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    cached = CachedKeySigV4Auth(creds, "bedrock", "us-east-1")
    plain = SigV4Auth(creds, "bedrock", "us-east-1")
    for stamp in ("20261127T080000Z", "20261127T235959Z", "20261128T000001Z", "20261127T120000Z"):
        assert signed(cached, stamp) == signed(plain, stamp)
    assert cached._day == "20261127"
