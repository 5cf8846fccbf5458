"""HTTPS: `finops certs` makes a development CA and certificate; with them configured the gateway
serves TLS, and boto3's Bedrock API key mode (AWS_BEARER_TOKEN_BEDROCK, HTTPS only since botocore
1.44) works end to end with a virtual key as the token."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config as BotoConfig

from tests.helpers.gateway import Gateway, request_log

FINOPS = os.path.join(os.path.dirname(sys.executable), "finops")
SECRET = "tls-bearer-secret-0123456789"
MSG = [{"role": "user", "content": [{"text": "over tls"}]}]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    out = subprocess.run([FINOPS, "certs", "--dir", str(d / "certs")], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")})
    assert out.returncode == 0, out.stderr
    assert "tls_cert_file" in out.stdout
    certs = d / "certs"
    assert oct(os.stat(certs / "server-key.pem").st_mode & 0o777) == "0o600"
    cfg = f"""
[server]
tls_cert_file = "{certs / 'server.pem'}"
tls_key_file = "{certs / 'server-key.pem'}"

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[[governance.keys]]
id = "vk-tls"
secret = "{SECRET}"
"""
    with Gateway(d, cfg) as g:
        yield g, str(certs / "ca.pem")


def client(g, ca, **kw):
    return boto3.client("bedrock-runtime", endpoint_url=g.url + "/bedrock", region_name="us-east-1", verify=ca,
                        config=BotoConfig(retries={"total_max_attempts": 1}), **kw)


def test_https_with_the_development_ca(tls):
    g, ca = tls
    assert g.url.startswith("https://")
    c = client(g, ca, aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret")
    r = c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MSG)
    assert r["output"]["message"]["content"][0]["text"].endswith("over tls")
    events = [next(iter(e)) for e in c.converse_stream(modelId="m", messages=MSG)["stream"]]
    assert events[0] == "messageStart" and events[-1] == "metadata"


def test_bedrock_api_key_mode_with_a_virtual_key(tls, monkeypatch):
    g, ca = tls
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", SECRET)
    c = client(g, ca, aws_access_key_id="ignored", aws_secret_access_key="ignored")
    r = c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MSG)
    rid = r["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 5
    rows = []
    while not rows and time.monotonic() < deadline:
        rows = [x for x in request_log(g.data_dir) if x["id"] == rid]
        time.sleep(0.1)
    assert rows and rows[0]["vk"] == "vk-tls"


def test_a_client_that_does_not_trust_the_ca_is_refused(tls):
    g, _ = tls
    from botocore.exceptions import SSLError
    c = client(g, True, aws_access_key_id="x", aws_secret_access_key="y")
    with pytest.raises(SSLError):
        c.converse(modelId="m", messages=MSG)
