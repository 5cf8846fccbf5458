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


# --- 1-hour cache writes ---------------------------------------------------------------------------

def test_converse_cache_details_give_the_one_hour_writes():
    usage = {"inputTokens": 10, "outputTokens": 20, "cacheWriteInputTokens": 100,
             "cacheDetails": [{"ttl": "1h", "inputTokens": 70}, {"ttl": "5m", "inputTokens": 30}]}
    assert reported.from_converse(usage) == {"in": 10, "out": 20, "cr": 0, "cw": 100, "cw1h": 70}
    only_5m = dict(usage, cacheDetails=[{"ttl": "5m", "inputTokens": 100}])
    assert reported.from_converse(only_5m) == {"in": 10, "out": 20, "cr": 0, "cw": 100}
    # never more 1-hour writes than writes; junk entries are ignored
    odd = dict(usage, cacheDetails=[{"ttl": "1h", "inputTokens": 500}, "x", {"ttl": "1h", "inputTokens": "9"}])
    assert reported.from_converse(odd)["cw1h"] == 100
    u = Usage(10, 20, 0, 100, cache_write_1h_tokens=70)
    assert reported.from_converse(u.to_converse()) == u.to_wire()
    payload = json.dumps({"usage": usage, "metrics": {"latencyMs": 5}}).encode()
    assert reported.from_metadata(payload)["cw1h"] == 70


ANTHROPIC_BODY = {"type": "message", "content": [{"type": "text", "text": "x"}],
                  "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 100,
                            "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70}}}


def test_invoke_claude_body_gives_the_one_hour_writes():
    headers = {"x-amzn-bedrock-input-token-count": "10", "x-amzn-bedrock-output-token-count": "20",
               "x-amzn-bedrock-cache-write-input-token-count": "100"}
    usage = reported.from_headers(headers)
    assert reported.from_invoke_body(usage, json.dumps(ANTHROPIC_BODY).encode())["cw1h"] == 70
    assert reported.from_invoke_body(usage, b"not json") == usage
    start = {"type": "message_start", "message": {"usage": ANTHROPIC_BODY["usage"]}}
    assert reported.with_anthropic_1h(usage, reported.chunk_doc(chunk(start)))["cw1h"] == 70
    assert reported.with_anthropic_1h({"cw": 0}, ANTHROPIC_BODY) == {"cw": 0}


# --- guardrail units of a guardrail trace ---------------------------------------------------------

def assessment(**units):
    return {"topicPolicy": {"topics": []}, "invocationMetrics": {
        "guardrailProcessingLatency": 12, "usage": units,
        "guardrailCoverage": {"textCharacters": {"guarded": 10, "total": 10}}}}


TRACE = {"modelOutput": ["..."],
         "inputAssessment": {"gr-1": assessment(topicPolicyUnits=2, contentPolicyUnits=2, wordPolicyUnits=2,
                                                sensitiveInformationPolicyUnits=0,
                                                sensitiveInformationPolicyFreeUnits=0,
                                                contextualGroundingPolicyUnits=0, automatedReasoningPolicies=3)},
         "outputAssessments": {"gr-1": [assessment(topicPolicyUnits=1, contentPolicyUnits=1),
                                        assessment(contentPolicyUnits=1, contentPolicyImageUnits=1)]}}


def test_guardrail_units_are_summed_over_every_assessment():
    assert reported.guardrail_units(TRACE) == {"topicPolicyUnits": 3, "contentPolicyUnits": 4, "wordPolicyUnits": 2,
                                               "contentPolicyImageUnits": 1}    # a policy count is not units
    assert reported.guardrail_units({"inputAssessment": {"g": {"topicPolicy": {}}}}) == {}
    assert reported.guardrail_units(None) == {} and reported.guardrail_units({"outputAssessments": []}) == {}
    # InvokeModel's trace: input (a map), outputs (a list of maps)
    invoke = {"input": {"g": assessment(topicPolicyUnits=1)}, "outputs": [{"g": assessment(topicPolicyUnits=2)}]}
    assert reported.guardrail_units(invoke) == {"topicPolicyUnits": 3}


def test_converse_answer_and_metadata_carry_guardrail_units():
    doc = {"usage": {"inputTokens": 3, "outputTokens": 4}, "trace": {"guardrail": TRACE},
           "serviceTier": {"type": "flex"}}
    got = reported.from_converse_answer(doc)
    assert got["gu"]["contentPolicyUnits"] == 4 and got["tier"] == "flex" and got["in"] == 3
    assert reported.from_metadata(json.dumps(doc).encode())["gu"] == got["gu"]
    assert "gu" not in reported.from_converse_answer({"usage": {"inputTokens": 1}, "trace": {"promptRouter": {}}})
    body = json.dumps({"generation": "x", "amazon-bedrock-trace": {"guardrail": TRACE}}).encode()
    assert reported.from_invoke_body({"in": 1, "out": 1, "cr": 0, "cw": 0}, body)["gu"]["topicPolicyUnits"] == 3
