"""workers/formats/bedrock/usage.py: the usage a Bedrock answer reports, as the gateway charges it."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from finops.shared.model import Metadata, Usage
from finops.workers.formats.bedrock import families
from finops.workers.formats.bedrock import usage as reported


def chunk(doc) -> bytes:
    """An InvokeModelWithResponseStream chunk event's payload, as Bedrock sends it (with padding)."""
    return json.dumps({"bytes": base64.b64encode(json.dumps(doc).encode()).decode(), "p": "abcdef"}).encode()


FULL = {"in": 10, "out": 20, "cr": 300, "cw": 40}


def test_converse_usage_with_and_without_cache_tokens():
    assert reported.from_converse({"inputTokens": 10, "outputTokens": 20, "totalTokens": 30,
                                   "cacheReadInputTokens": 300, "cacheWriteInputTokens": 40}) == FULL
    assert reported.from_converse({"inputTokens": 3, "outputTokens": 4}) == {"in": 3, "out": 4, "cr": 0, "cw": 0}
    assert reported.from_converse(Usage(10, 20, 300, 40).to_converse()) == Usage(10, 20, 300, 40).to_wire()


@pytest.mark.parametrize("bad", [None, [], "x", {"inputTokens": "twelve", "outputTokens": -3,
                                                  "cacheReadInputTokens": 1.5, "cacheWriteInputTokens": True}])
def test_unreadable_counts_are_zero(bad):
    assert reported.from_converse(bad) == {"in": 0, "out": 0, "cr": 0, "cw": 0}


def test_metadata_event_payload():
    payload = json.dumps({"usage": {"inputTokens": 10, "outputTokens": 20, "cacheReadInputTokens": 300,
                                    "cacheWriteInputTokens": 40}, "metrics": {"latencyMs": 5}, "p": "xyz"})
    assert reported.from_metadata(payload.encode()) == FULL
    assert reported.from_metadata(b'{"metrics": {}}') == {"in": 0, "out": 0, "cr": 0, "cw": 0}
    assert reported.from_metadata(b"not json") == {}
    assert reported.from_metadata(b"[1]") == {}


def test_invoke_model_headers_case_insensitive():
    h = httpx.Headers({"X-Amzn-Bedrock-Input-Token-Count": "10", "X-Amzn-Bedrock-Output-Token-Count": "20",
                       "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "300",
                       "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": "40"})
    assert reported.from_headers(h) == FULL
    assert reported.from_headers({"x-amzn-bedrock-input-token-count": "7",
                                  "x-amzn-bedrock-output-token-count": "abc"}) == {"in": 7, "out": 0, "cr": 0, "cw": 0}


def test_invoke_chunk_with_metrics_is_the_usage():
    metrics = {"inputTokenCount": 10, "outputTokenCount": 20, "invocationLatency": 511, "firstByteLatency": 358,
               "cacheReadInputTokenCount": 300, "cacheWriteInputTokenCount": 40}
    assert reported.from_invoke_chunk(chunk({"type": "message_stop", families.METRICS_KEY: metrics})) == FULL
    older = {"inputTokenCount": 8, "outputTokenCount": 4, "invocationLatency": 1, "firstByteLatency": 1}
    assert reported.from_invoke_chunk(chunk({"type": "message_stop", families.METRICS_KEY: older})) == \
        {"in": 8, "out": 4, "cr": 0, "cw": 0}


def test_the_gateways_own_invocation_metrics_read_back():
    """What the gateway writes for non-Bedrock providers (families.invocation_metrics) reads back."""
    m = families.invocation_metrics(Metadata(Usage(10, 20, 300, 40), 9))
    assert reported.from_metrics(m) == FULL


@pytest.mark.parametrize("payload", [
    chunk({"type": "content_block_delta", "delta": {"text": "amazon-bedrock-invocationMetrics"}}),
    chunk({"type": "message_stop", families.METRICS_KEY: "not an object"}),
    chunk(["a list"]),
    b'{"bytes": "!!! not base64 !!!"}',
    json.dumps({"bytes": base64.b64encode(b"\xff\xfe not utf-8").decode()}).encode(),
    b'{"nobytes": ""}',
    b'{"bytes": 5}',
    b"[]",
    b"not json",
    b"",
])
def test_chunk_without_metrics_is_none(payload):
    assert reported.from_invoke_chunk(payload) is None
