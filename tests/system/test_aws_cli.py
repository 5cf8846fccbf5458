"""The AWS CLI v1, unchanged, against the gateway (it only has the non-streaming operations)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def aws(gateway, *args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="finops-dummy-key", AWS_SECRET_ACCESS_KEY="finops-dummy-secret",
               AWS_DEFAULT_REGION="us-west-2", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    return subprocess.run([AWS, "bedrock-runtime", *args, "--endpoint-url", gateway.endpoint],
                          capture_output=True, text=True, timeout=60, env=env)


def test_cli_converse(gateway, tmp_path):
    r = aws(gateway, "converse", "--model-id", "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "--messages", json.dumps([{"role": "user", "content": [{"text": "hello from the cli"}]}]),
            tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "hello from the cli" in out["output"]["message"]["content"][0]["text"]
    assert out["stopReason"] == "end_turn"


def test_cli_invoke_model_writes_outfile(gateway, tmp_path):
    outfile = tmp_path / "out.json"
    body = json.dumps({"inputText": "User: hi titan\nBot:", "textGenerationConfig": {"maxTokenCount": 64}})
    r = aws(gateway, "invoke-model", "--model-id", "amazon.titan-text-express-v1", "--body", body,
            str(outfile), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["contentType"] == "application/json"
    doc = json.loads(outfile.read_text())
    assert "hi titan" in doc["results"][0]["outputText"]
    assert doc["inputTextTokenCount"] > 0


def test_cli_error_is_the_modeled_exception(gateway, tmp_path):
    r = aws(gateway, "invoke-model", "--model-id", "anthropic.claude-3-haiku-20240307-v1:0",
            "--body", "{not json", str(tmp_path / "o"), tmp_path=tmp_path)
    assert r.returncode != 0
    assert "ValidationException" in r.stderr and "malformed JSON" in r.stderr
