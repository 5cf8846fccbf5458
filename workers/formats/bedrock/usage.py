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

A count that is absent or not a whole number reads as 0. `from_invoke_chunk` returns None for a
chunk without the metrics: only the last chunk of a complete stream has them, so None also says
that a stream ending on that chunk was not complete.
"""
from __future__ import annotations

import base64
import binascii
import json

from .invoke import METRICS_KEY
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


def from_converse(usage) -> dict:
    """A Converse `usage` (TokenUsage) object."""
    return _read(usage, CONVERSE)


def from_metadata(payload: bytes) -> dict:
    """A ConverseStream `metadata` event's payload (JSON); {} when it is not a JSON object."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return {}
    return with_tier(from_converse(doc.get("usage")), doc.get("serviceTier")) if isinstance(doc, dict) else {}


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
    return from_metrics(inner[METRICS_KEY])


def with_tier(usage: dict, reported) -> dict:
    """`usage` with "tier": the tier Bedrock reported (`{"type": "priority"}` or the header's
    string); unchanged when it reported none."""
    tier = reported.get("type") if isinstance(reported, dict) else reported
    if isinstance(tier, str) and tier:
        return {**usage, "tier": tier[:32]}
    return usage
