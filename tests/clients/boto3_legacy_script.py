"""Run by tests/system/test_python_clients.py in a subprocess with PYTHONPATH pointing at a
separately installed boto3/botocore 1.43.x: every operation once, in legacy retry mode.

Usage: python boto3_legacy_script.py <endpoint_url>. Prints one JSON document on stdout.
"""
from __future__ import annotations

import json
import sys

import boto3
import botocore
from botocore.config import Config

assert botocore.__version__.startswith("1.43"), f"wrong botocore {botocore.__version__} from {botocore.__file__}"
assert boto3.__version__.startswith("1.43"), f"wrong boto3 {boto3.__version__} from {boto3.__file__}"

endpoint = sys.argv[1]
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSG = [{"role": "user", "content": [{"text": "hello from legacy boto"}]}]

c = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret",
                 config=Config(retries={"mode": "legacy"}, read_timeout=30, connect_timeout=5))
out: dict = {"botocore": botocore.__version__, "boto3": boto3.__version__,
             "retry_mode": c.meta.config.retries.get("mode")}

r = c.converse(modelId=CLAUDE, messages=MSG)
out["converse"] = {"text": r["output"]["message"]["content"][0]["text"], "stopReason": r["stopReason"],
                   "usage": r["usage"]}

events = list(c.converse_stream(modelId=CLAUDE, messages=MSG)["stream"])
out["converse_stream"] = {
    "names": [next(iter(e)) for e in events],
    "text": "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e),
    "stopReason": next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e),
    "usage": next(e["metadata"]["usage"] for e in events if "metadata" in e),
}

claude_body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                          "messages": [{"role": "user", "content": "hello claude body"}]})
r = c.invoke_model(modelId=CLAUDE, body=claude_body)
out["invoke_model"] = {"contentType": r["contentType"], "doc": json.loads(r["body"].read())}

r = c.invoke_model_with_response_stream(modelId=CLAUDE, body=claude_body)
chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
out["invoke_model_with_response_stream"] = {
    "types": [ch.get("type") for ch in chunks],
    "text": "".join(ch["delta"].get("text", "") for ch in chunks if ch.get("type") == "content_block_delta"),
    "last": chunks[-1],
}

r = c.count_tokens(modelId=CLAUDE, input={"converse": {"messages": MSG}})
out["count_tokens"] = r["inputTokens"]

try:
    c.invoke_model(modelId=CLAUDE, body="{not json")
    out["validation"] = None
except c.exceptions.ValidationException as e:
    out["validation"] = {"class": type(e).__name__, "code": e.response["Error"]["Code"],
                         "message": e.response["Error"]["Message"],
                         "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                         "attempts": e.response["ResponseMetadata"].get("RetryAttempts")}

print(json.dumps(out))
