"""Real Python clients, unchanged, against the real gateway: langchain-aws, LlamaIndex, boto3 1.43
(legacy retry mode, installed on the side), boto3 1.44 streaming, and the AWS CLI v1 extras.

The mock provider streams its answer in 10 deltas 30 ms apart, so a client that really receives
the stream incrementally sees its first and last pieces at least ~270 ms apart; one that buffers
the whole response sees them together.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from botocore.config import Config as BotoConfig

from tests.helpers.gateway import Gateway

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWS = os.path.join(os.path.dirname(sys.executable), "aws")
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
KEYS = dict(aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret")
MIN_SPREAD = 0.150   # seconds between first and last streamed piece (9 gaps x 30 ms = 270 ms)

CONFIG = """
[providers.mock]
kind = "mock"
chunks = 10
chunk_delay_ms = 30

[default_route]
provider = "mock"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("gw-clients"), CONFIG) as gw:
        yield gw


def expected(text: str, model: str = CLAUDE) -> str:
    return f"FinOps mock ({model}) received: {text}"


def text_of(content) -> str:
    """langchain message content: a str, or a list of str / {"type": "text", "text": ...} blocks."""
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else b.get("text", "") for b in content
                   if isinstance(b, str) or b.get("type") == "text")


def assert_incremental(stamps: list[float], what: str):
    assert len(stamps) >= 5, f"{what}: only {len(stamps)} pieces"
    spread = stamps[-1] - stamps[0]
    assert spread >= MIN_SPREAD, f"{what}: first and last pieces {spread * 1000:.0f} ms apart (buffered?)"


# --- langchain-aws ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lc_chat(gateway):
    from langchain_aws import ChatBedrockConverse
    return ChatBedrockConverse(model=CLAUDE, region_name="us-east-1", endpoint_url=gateway.endpoint,
                               config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}),
                               **KEYS)


def test_langchain_invoke(lc_chat):
    msg = lc_chat.invoke("hello")
    assert text_of(msg.content) == expected("hello")
    assert msg.response_metadata["stopReason"] == "end_turn"
    assert msg.usage_metadata["input_tokens"] > 0 and msg.usage_metadata["output_tokens"] > 0


def test_langchain_stream_is_incremental(lc_chat):
    pieces, stamps = [], []
    for chunk in lc_chat.stream("hello streaming langchain"):
        t = text_of(chunk.content)
        if t:
            pieces.append(t)
            stamps.append(time.monotonic())
    assert len(pieces) >= 5
    assert "".join(pieces) == expected("hello streaming langchain")
    assert_incremental(stamps, "langchain stream")


def test_langchain_bind_tools(lc_chat):
    from pydantic import BaseModel, Field

    class get_weather(BaseModel):
        """Current weather for a city."""
        city: str = Field(description="the city")

    msg = lc_chat.bind_tools([get_weather]).invoke("what is the weather? use get_weather")
    assert len(msg.tool_calls) == 1, msg
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
    assert msg.response_metadata["stopReason"] == "tool_use"


def test_langchain_bind_tools_dict_forced(lc_chat):
    tool = {"name": "get_weather", "description": "Current weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    # tool_choice forces the call although the text does not name the tool
    msg = lc_chat.bind_tools([tool], tool_choice="get_weather").invoke("is it raining?")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]


# --- LlamaIndex --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(gateway):
    from llama_index.llms.bedrock_converse import BedrockConverse
    return BedrockConverse(model=CLAUDE, region_name="us-east-1", endpoint_url=gateway.endpoint,
                           max_retries=1, timeout=30, **KEYS)


def test_llamaindex_complete(llama):
    r = llama.complete("hello")
    assert r.text == expected("hello")


def test_llamaindex_stream_complete_is_incremental(llama):
    deltas, stamps, last = [], [], None
    for r in llama.stream_complete("hello streaming llama"):
        if r.delta:
            deltas.append(r.delta)
            stamps.append(time.monotonic())
        last = r
    assert len(deltas) >= 5
    assert "".join(deltas) == last.text == expected("hello streaming llama")
    assert_incremental(stamps, "llamaindex stream_complete")


def test_llamaindex_chat(llama):
    from llama_index.core.llms import ChatMessage
    r = llama.chat([ChatMessage(role="system", content="be brief"),
                    ChatMessage(role="user", content="first question"),
                    ChatMessage(role="assistant", content="first answer"),
                    ChatMessage(role="user", content="hello chat")])
    assert r.message.role == "assistant"
    assert r.message.content == expected("hello chat")


# --- boto3 1.43, legacy retry mode (installed on the side) ----------------------------------

BOTO143_DIR = os.path.join(ROOT, ".pytest_cache", "finops-boto3-143")


def boto3_143() -> str:
    """Install boto3 1.43.x (with its botocore) once into BOTO143_DIR; the directory appears
    only complete (installed into a scratch dir, then renamed), under a file lock."""
    os.makedirs(os.path.dirname(BOTO143_DIR), exist_ok=True)
    with open(BOTO143_DIR + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(BOTO143_DIR, "botocore", "__init__.py")):
            return BOTO143_DIR
        scratch = BOTO143_DIR + ".partial"
        shutil.rmtree(scratch, ignore_errors=True)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-input", "--target", scratch, "boto3==1.43.*"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            pytest.fail(f"pip install boto3==1.43.* failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        os.rename(scratch, BOTO143_DIR)
        return BOTO143_DIR


def test_boto3_143_legacy_retry_mode_all_operations(gateway):
    target = boto3_143()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=target, PYTHONNOUSERSITE="1", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    # -I would drop PYTHONPATH; -s keeps user site-packages out; target dir comes before the venv's
    r = subprocess.run([sys.executable, "-s", os.path.join(ROOT, "tests", "clients", "boto3_legacy_script.py"),
                        gateway.endpoint], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["botocore"].startswith("1.43") and out["boto3"].startswith("1.43")
    assert out["retry_mode"] == "legacy"

    text = expected("hello from legacy boto")
    assert out["converse"]["text"] == text and out["converse"]["stopReason"] == "end_turn"
    assert out["converse"]["usage"]["inputTokens"] > 0

    cs = out["converse_stream"]
    assert cs["names"][0] == "messageStart"
    assert cs["names"][-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert cs["names"].count("contentBlockDelta") == 10
    assert cs["text"] == text and cs["stopReason"] == "end_turn" and cs["usage"]["outputTokens"] > 0

    im = out["invoke_model"]
    assert im["contentType"] == "application/json"
    doc = im["doc"]
    assert doc["type"] == "message" and doc["role"] == "assistant" and doc["stop_reason"] == "end_turn"
    assert doc["content"][0]["text"] == expected("hello claude body")
    assert doc["usage"]["input_tokens"] > 0

    st = out["invoke_model_with_response_stream"]
    assert st["types"][0] == "message_start" and st["types"][-1] == "message_stop"
    assert "content_block_delta" in st["types"]
    assert st["text"] == expected("hello claude body")
    assert "amazon-bedrock-invocationMetrics" in st["last"]

    assert isinstance(out["count_tokens"], int) and out["count_tokens"] > 0

    v = out["validation"]
    assert v is not None, "malformed body did not raise"
    assert v["class"] == "ValidationException" and v["code"] == "ValidationException"
    assert v["status"] == 400 and "malformed JSON" in v["message"]
    assert v["attempts"] == 0   # a 400 is not retried, in legacy mode either


# --- boto3 1.44 (the venv's) ----------------------------------------------------------------

def test_boto3_144_converse_stream_is_incremental(gateway):
    import botocore
    assert botocore.__version__.startswith("1.44")
    c = gateway.client()
    stamps, names, text = [], [], ""
    for e in c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "hi 144"}]}])["stream"]:
        names.append(next(iter(e)))
        if "contentBlockDelta" in e:
            stamps.append(time.monotonic())
            text += e["contentBlockDelta"]["delta"]["text"]
    assert text == expected("hi 144") and len(stamps) == 10
    assert_incremental(stamps, "boto3 1.44 converse_stream")
    assert names[-1] == "metadata"


# --- AWS CLI v1 (converse and invoke-model with an outfile are in test_aws_cli.py) -----------

def aws(gateway, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=KEYS["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=KEYS["aws_secret_access_key"],
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    return subprocess.run([AWS, "bedrock-runtime", *args, "--endpoint-url", gateway.endpoint],
                          capture_output=True, text=True, timeout=60, env=env)


def test_cli_invoke_model_exact_titan_outfile(gateway, tmp_path):
    # CLI v1 passes --body through raw; `--cli-binary-format raw-in-base64-out` is a v2-only option
    # (v1 answers "Unknown options: --cli-binary-format"), so it is not given here.
    outfile = tmp_path / "out.json"
    r = aws(gateway, tmp_path, "invoke-model", "--model-id", "amazon.titan-text-express-v1",
            "--body", '{"inputText":"hi"}', str(outfile))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["contentType"] == "application/json"
    doc = json.loads(outfile.read_text())
    assert doc["inputTextTokenCount"] > 0
    [res] = doc["results"]
    assert res["outputText"] == expected("hi", "amazon.titan-text-express-v1")
    assert res["completionReason"] == "FINISH" and res["tokenCount"] > 0


def test_cli_converse_with_system_and_inference_config(gateway, tmp_path):
    r = aws(gateway, tmp_path, "converse", "--model-id", CLAUDE,
            "--messages", json.dumps([{"role": "user", "content": [{"text": "cli says hi"}]}]),
            "--system", json.dumps([{"text": "be terse"}]),
            "--inference-config", json.dumps({"maxTokens": 200, "temperature": 0.2}))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["output"]["message"]["content"][0]["text"] == expected("cli says hi")
    assert out["usage"]["inputTokens"] > 0 and "latencyMs" in out["metrics"]
