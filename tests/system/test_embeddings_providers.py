"""Titan and Cohere embed InvokeModel bodies served by the openai and mistral providers' embeddings
endpoints, through boto3 against the real processes (issue 18): translated both ways, priced at the
target model's embeddings price by input tokens, logged."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config as BotoConfig

from finops.workers.governance.pricing import PricingTable, cost_micros
from tests.helpers.fake_providers import FakeMistral, FakeOpenAI
from tests.helpers.gateway import Gateway, request_log

VK, VK_SECRET = "vk-embed", "embed-secret-0123456789abcdef"


def config(openai_url: str, mistral_url: str) -> str:
    return f"""
[providers.oa]
kind = "openai"
base_url = "{openai_url}"
keys = [{{api_key = "sk-test-openai"}}]

[providers.mi]
kind = "mistral"
base_url = "{mistral_url}"
keys = [{{api_key = "mistral-test-key"}}]

[[routes]]
models = ["amazon.titan-embed-*"]
provider = "oa"
model = "text-embedding-3-large"

[[routes]]
models = ["cohere.embed-*"]
provider = "mi"
model = "mistral-embed"

[default_route]
provider = "oa"

[governance]
mode = "enforced"

[[governance.keys]]
id = "{VK}"
secret = "{VK_SECRET}"
budgets = [{{amount_usd = 10.0, period = "month"}}]
"""


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI() as oa, FakeMistral() as mi:
        yield oa, mi


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    oa, mi = fakes
    with Gateway(tmp_path_factory.mktemp("embed"), config(oa.url, mi.url)) as g:
        yield g


@pytest.fixture(scope="module")
def client(gw):
    return boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                        aws_access_key_id=VK, aws_secret_access_key=VK_SECRET,
                        config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}))


def row_of(gw, rid: str) -> dict:
    for _ in range(100):
        for r in request_log(gw.data_dir):
            if r["id"] == rid:
                return r
        time.sleep(0.1)
    raise AssertionError(f"no log row for {rid}")


def micros(model: str, tokens: int) -> int:
    return cost_micros(PricingTable().price_for(model), tokens, 0)


def test_titan_embed_via_openai_embeddings(gw, fakes, client):
    oa, _ = fakes
    resp = client.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                               body=json.dumps({"inputText": "embed these four words", "dimensions": 256,
                                                "normalize": True}))
    out = json.loads(resp["body"].read())
    sent = oa.requests[-1]
    assert sent.path == "/v1/embeddings" and sent.headers["authorization"] == "Bearer sk-test-openai"
    assert sent.json == {"model": "text-embedding-3-large", "input": ["embed these four words"],
                         "encoding_format": "float", "dimensions": 256}
    assert len(out["embedding"]) == 256 and out["inputTextTokenCount"] == 4
    assert out["embeddingsByType"]["float"] == out["embedding"]
    h = resp["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-amzn-bedrock-input-token-count"] == "4" and h["x-bf-target"] == "oa/text-embedding-3-large"
    # priced at the target model's embeddings price (text-embedding-3-large, not Titan's)
    expected = micros("text-embedding-3-large", 4)
    assert expected != micros("amazon.titan-embed-text-v2:0", 4)
    assert h["x-bf-cost-usd"] == f"{expected / 1e6:.6f}"
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert (row["op"], row["provider"], row["upstream_model"], row["input_tokens"], row["output_tokens"]) == (
        "invoke", "oa", "text-embedding-3-large", 4, 0)
    assert round(row["cost_usd"] * 1e6) == expected


def test_cohere_embed_via_mistral_embeddings(gw, fakes, client):
    _, mi = fakes
    resp = client.invoke_model(modelId="cohere.embed-english-v3",
                               body=json.dumps({"texts": ["first text", "the second text"],
                                                "input_type": "search_document", "truncate": "END"}))
    out = json.loads(resp["body"].read())
    sent = mi.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": "mistral-embed", "input": ["first text", "the second text"],
                         "encoding_format": "float"}
    assert out["response_type"] == "embeddings_floats" and out["texts"] == ["first text", "the second text"]
    assert len(out["embeddings"]) == 2 and len(out["embeddings"][0]) == 1024 and out["id"]
    assert out["embeddings"][0] != out["embeddings"][1]
    h = resp["ResponseMetadata"]["HTTPHeaders"]
    expected = micros("mistral-embed", 5)
    assert h["x-amzn-bedrock-input-token-count"] == "5" and h["x-bf-cost-usd"] == f"{expected / 1e6:.6f}"
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert row["provider"] == "mi" and row["input_tokens"] == 5 and round(row["cost_usd"] * 1e6) == expected
    # embedding_types ["float"] answers by type
    resp = client.invoke_model(modelId="cohere.embed-english-v3",
                               body=json.dumps({"texts": ["x"], "input_type": "clustering",
                                                "embedding_types": ["float"]}))
    out = json.loads(resp["body"].read())
    assert out["response_type"] == "embeddings_by_type" and len(out["embeddings"]["float"][0]) == 1024


def test_an_upstream_embeddings_error_is_aws_shaped(gw, fakes, client):
    oa, _ = fakes
    oa.script("text-embedding-3-large", {"status": 400, "message": "input too long", "times": 1})
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId="amazon.titan-embed-text-v1", body=json.dumps({"inputText": "x"}))
