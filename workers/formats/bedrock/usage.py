"""The token usage a Bedrock answer reports, as the usage dict the gateway charges. Pure.

The usage dict is `Usage.to_wire()`'s shape: {"in", "out", "cr", "cw"} (input, output, prompt-cache
read and cache write input tokens). Where Bedrock reports it (bedrock-protocol.md 1.6-1.8, 2.1, 2.2):

    Converse                        body `usage`: inputTokens, outputTokens, cacheReadInputTokens,
                                    cacheWriteInputTokens                        -> `from_converse`
    ConverseStream                  the same, in the `metadata` event's `usage`  -> `from_metadata`
    InvokeModel                     headers X-Amzn-Bedrock-Input-Token-Count, -Output-Token-Count,
                                    -Cache-Read-Input-Token-Count, -Cache-Write-Input-Token-Count
                                                                                 -> `from_headers`
    InvokeModelWithResponseStream   the last chunk's "amazon-bedrock-invocationMetrics": inputTokenCount,
                                    outputTokenCount, cacheReadInputTokenCount, cacheWriteInputTokenCount
                                                                                 -> `from_invoke_chunk`

The service tier Bedrock reports serving the request in (the Converse body's and the `metadata`
event's `serviceTier.type`, InvokeModel's X-Amzn-Bedrock-Service-Tier header) is added as "tier"
(`with_tier`), so the charge uses that tier's price (governance/tiers.py).

The 1-hour part of the cache writes is added as "cw1h" (at most "cw"; absent when 0), so it is
charged at the 1-hour write price (governance/pricing.py):

    Converse, ConverseStream        `usage.cacheDetails`: [{"ttl": "1h"|"5m", "inputTokens"}], the
                                    "1h" entries                                 -> `from_converse`
    InvokeModel, Claude Messages    the body's (or the stream's message_start) `usage.cache_creation
                                    .ephemeral_1h_input_tokens`                  -> `with_anthropic_1h`
                                    (the headers and invocation metrics only give the total)

The guardrail text units Bedrock reports in a guardrail trace are added as "gu" ({usage field:
units}, summed over every assessment; absent when none): Converse's `trace.guardrail`, the
ConverseStream `metadata` event's `trace.guardrail`, InvokeModel's `amazon-bedrock-trace.guardrail`
(`with_guardrail_units`). Bedrock puts them there only when the request enabled the guardrail's
trace (`guardrailConfig.trace` "enabled" / "enabled_full", X-Amzn-Bedrock-Trace: ENABLED). The
Converse shape is Bedrock's API reference (GuardrailTraceAssessment: `inputAssessment` a map,
`outputAssessments` a map of lists); the InvokeModel one (`input` a map, `outputs` a list of maps,
in the body, or in an invoke stream's last chunk) is not in the API reference nor verified against
Bedrock, so both spellings are read wherever a trace is.

A count that is absent or not a whole number reads as 0. `from_invoke_chunk` returns None for a
chunk without the metrics: only the last chunk of a complete stream has them, so None also says
that a stream ending on that chunk was not complete.
"""
from __future__ import annotations

import base64
import binascii
import json

from .guardrail import usage_units
from .invoke import METRICS_KEY

TRACE_KEY = "amazon-bedrock-trace"      # InvokeModel bodies: the trace (guardrail assessments)
HEADERS = (("in", "x-amzn-bedrock-input-token-count"), ("out", "x-amzn-bedrock-output-token-count"),
           ("cr", "x-amzn-bedrock-cache-read-input-token-count"),
           ("cw", "x-amzn-bedrock-cache-write-input-token-count"))
CONVERSE = (("in", "inputTokens"), ("out", "outputTokens"), ("cr", "cacheReadInputTokens"),
            ("cw", "cacheWriteInputTokens"))
METRICS = (("in", "inputTokenCount"), ("out", "outputTokenCount"), ("cr", "cacheReadInputTokenCount"),
           ("cw", "cacheWriteInputTokenCount"))


def _count(value) -> int:
    """A token count from JSON (an int) or a header (a string of digits); anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _read(doc, names) -> dict:
    if not isinstance(doc, dict):
        doc = {}
    return {k: _count(doc.get(name)) for k, name in names}


def _with_1h(usage: dict, one_hour: int) -> dict:
    one_hour = min(one_hour, usage.get("cw", 0))
    return {**usage, "cw1h": one_hour} if one_hour > 0 else usage


def from_converse(usage) -> dict:
    """A Converse `usage` (TokenUsage) object; its `cacheDetails` give "cw1h"."""
    out = _read(usage, CONVERSE)
    details = usage.get("cacheDetails") if isinstance(usage, dict) else None
    if isinstance(details, list):
        out = _with_1h(out, sum(_count(d.get("inputTokens")) for d in details
                                if isinstance(d, dict) and d.get("ttl") == "1h"))
    return out


def from_converse_answer(doc: dict) -> dict:
    """A whole Converse answer (or a ConverseStream `metadata` payload): its usage, the tier it
    was served in and the guardrail units of its trace."""
    out = with_tier(from_converse(doc.get("usage")), doc.get("serviceTier"))
    trace = doc.get("trace")
    return with_guardrail_units(out, trace.get("guardrail") if isinstance(trace, dict) else None)


def from_metadata(payload: bytes) -> dict:
    """A ConverseStream `metadata` event's payload (JSON); {} when it is not a JSON object."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return {}
    return from_converse_answer(doc) if isinstance(doc, dict) else {}


def with_anthropic_1h(usage: dict, doc) -> dict:
    """`usage` with "cw1h" from a Claude Messages body (or a stream's message_start chunk):
    `usage.cache_creation.ephemeral_1h_input_tokens`, at most the cache writes already in `usage`."""
    if not isinstance(doc, dict):
        return usage
    if doc.get("type") == "message_start" and isinstance(doc.get("message"), dict):
        doc = doc["message"]
    u = doc.get("usage")
    cc = u.get("cache_creation") if isinstance(u, dict) else None
    return _with_1h(usage, _count(cc.get("ephemeral_1h_input_tokens"))) if isinstance(cc, dict) else usage


def _assessments(trace):
    """The GuardrailAssessment objects of a guardrail trace: Converse's inputAssessment (a map)
    and outputAssessments (a map of lists); InvokeModel's input (a map) and outputs (a list of
    maps)."""
    if not isinstance(trace, dict):
        return
    for key in ("inputAssessment", "input"):
        if isinstance(trace.get(key), dict):
            yield from trace[key].values()
    out = trace.get("outputAssessments")
    if isinstance(out, dict):
        for lst in out.values():
            if isinstance(lst, list):
                yield from lst
    out = trace.get("outputs")
    if isinstance(out, list):
        for m in out:
            if isinstance(m, dict):
                yield from m.values()


def guardrail_units(trace) -> dict[str, int]:
    """The text units each policy used, summed over every assessment of a guardrail trace
    (`invocationMetrics.usage`, GuardrailUsage); {} when it reports none."""
    units: dict[str, int] = {}
    for a in _assessments(trace):
        metrics = a.get("invocationMetrics") if isinstance(a, dict) else None
        usage = metrics.get("usage") if isinstance(metrics, dict) else None
        if not isinstance(usage, dict):
            continue
        for k, v in usage_units(usage).items():
            if v:
                units[k] = units.get(k, 0) + v
    return units


def with_guardrail_units(usage: dict, trace) -> dict:
    """`usage` with "gu": the guardrail units of `trace` (a `trace.guardrail` object); unchanged
    when it reports none."""
    units = guardrail_units(trace)
    return {**usage, "gu": units} if units else usage


def from_invoke_body(usage: dict, body: bytes) -> dict:
    """`usage` (from the headers) completed from an InvokeModel answer's JSON body: the 1-hour
    cache writes of a Claude Messages body, the guardrail units of its trace. Unchanged when the
    body is not a JSON object."""
    try:
        doc = json.loads(body)
    except ValueError:
        return usage
    if not isinstance(doc, dict):
        return usage
    usage = with_anthropic_1h(usage, doc) if usage.get("cw") else usage
    trace = doc.get(TRACE_KEY)
    return with_guardrail_units(usage, trace.get("guardrail")) if isinstance(trace, dict) else usage


def from_headers(headers) -> dict:
    """An InvokeModel answer's headers (a mapping with lower-case names, or one that ignores case)."""
    return {k: _count(headers.get(name)) for k, name in HEADERS}


def from_metrics(metrics) -> dict:
    """An "amazon-bedrock-invocationMetrics" object."""
    return _read(metrics, METRICS)


def from_invoke_chunk(payload: bytes) -> dict | None:
    """An InvokeModelWithResponseStream `chunk` event's payload, {"bytes": "<base64 of JSON>"}: the
    usage in its invocation metrics, or None when it has none (or cannot be read)."""
    try:
        doc = json.loads(payload)
        inner = json.loads(base64.b64decode(doc["bytes"], validate=True))
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None
    if not isinstance(inner, dict) or not isinstance(inner.get(METRICS_KEY), dict):
        return None
    usage = from_metrics(inner[METRICS_KEY])
    trace = inner.get(TRACE_KEY)
    return with_guardrail_units(usage, trace.get("guardrail")) if isinstance(trace, dict) else usage


def chunk_doc(payload: bytes):
    """The native JSON document of an InvokeModelWithResponseStream `chunk` payload, or None."""
    try:
        return json.loads(base64.b64decode(json.loads(payload)["bytes"], validate=True))
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None


def with_tier(usage: dict, reported) -> dict:
    """`usage` with "tier": the tier Bedrock reported (`{"type": "priority"}` or the header's
    string); unchanged when it reported none."""
    tier = reported.get("type") if isinstance(reported, dict) else reported
    if isinstance(tier, str) and tier:
        return {**usage, "tier": tier[:32]}
    return usage
