"""ApplyGuardrail (bedrock-protocol.md 1.10): its target, its body, and the text units it uses. Pure.

    POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply
    {"source": "INPUT"|"OUTPUT", "content": [{"text": {"text", "qualifiers"?}} | {"image": {...}}],
     "outputScope"?: "INTERVENTIONS"|"FULL"}
    -> {"usage": {topicPolicyUnits, contentPolicyUnits, wordPolicyUnits, sensitiveInformationPolicyUnits,
                  sensitiveInformationPolicyFreeUnits, contextualGroundingPolicyUnits, contentPolicyImageUnits?,
                  automatedReasoningPolicyUnits?, ...},
        "action": "NONE"|"GUARDRAIL_INTERVENED", "actionReason"?, "outputs": [{text}], "assessments": [...],
        "guardrailCoverage"?}

AWS meters guardrails in text units: one text unit is up to 1,000 characters, counted per text
block, and each policy the guardrail has is metered (and priced) on its own. `text_units` is what a
body can use at most per policy (the reservation's bound); `reported_units` what Bedrock's answer
says each policy used (the charge).

A guardrail applied inside a Converse, ConverseStream or InvokeModel call (`guardrailConfig`, the
X-Amzn-Bedrock-GuardrailIdentifier header) is metered the same way, on the call's input and on its
answer. `call_units` is what the call's input can use at most, per policy: every text block of
the request (system texts, texts, tool-result and document texts) ceil(characters / 1000) units,
at least one each; images one image unit each. A body only Bedrock can read (no canonical
request) is bounded by its size: ceil(bytes / 1000) units plus one per 11 bytes (`{"text":""}`,
the smallest text block). The answer's units are the governor's to add (guardrail_prices.py).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from finops.shared import errors
from finops.shared.model import ChatRequest, DocumentBlock, ImageBlock, TextBlock, ToolResultBlock

from ..common import fail, one_member, want_dict, want_enum, want_list, want_str

UNIT_CHARS = 1000
MIN_BLOCK_BYTES = 11            # {"text":""}: the smallest text block of a JSON body
# the usage fields that count text units (or images), in the order the docs list them
UNIT_FIELDS = ("topicPolicyUnits", "contentPolicyUnits", "wordPolicyUnits", "sensitiveInformationPolicyUnits",
               "sensitiveInformationPolicyFreeUnits", "contextualGroundingPolicyUnits", "contentPolicyImageUnits",
               "automatedReasoningPolicyUnits")


def target(raw_path: str) -> tuple[str, str]:
    """(guardrailIdentifier, guardrailVersion) of a raw ApplyGuardrail request target, each
    percent-decoded once; raises ValidationException for any other target."""
    parts = raw_path.split("?", 1)[0].split("/")
    try:
        i = len(parts) - 5          # [..., 'guardrail', id, 'version', version, 'apply']
        if i < 0 or parts[i] != "guardrail" or parts[i + 2] != "version" or parts[i + 4] != "apply":
            raise ValueError
        gid, version = (unquote_to_bytes(p).decode("utf-8") for p in (parts[i + 1], parts[i + 3]))
    except (ValueError, UnicodeDecodeError):
        raise errors.validation(f"{raw_path[:200]!r} is not /guardrail/{{guardrailIdentifier}}/version/"
                                "{guardrailVersion}/apply") from None
    if not gid or not version:
        raise errors.validation("guardrailIdentifier and guardrailVersion: both are required")
    return gid, version


def check_request(body: Any) -> dict:
    """Validate an ApplyGuardrail body as Bedrock would; returns it."""
    want_dict(body, "body")
    want_enum(body.get("source"), "source", ("INPUT", "OUTPUT"))
    content = want_list(body.get("content"), "content", min_len=1, what="content blocks")
    for i, block in enumerate(content):
        member, value = one_member(block, f"content[{i}]", ("text", "image"), "content block")
        if member == "text":
            want_dict(value, f"content[{i}].text")
            want_str(value.get("text"), f"content[{i}].text.text")
            if value.get("qualifiers") is not None:
                for j, q in enumerate(want_list(value["qualifiers"], f"content[{i}].text.qualifiers", what="qualifiers")):
                    want_enum(q, f"content[{i}].text.qualifiers[{j}]", ("grounding_source", "query", "guard_content"))
        else:
            want_dict(value, f"content[{i}].image")
            want_enum(value.get("format"), f"content[{i}].image.format", ("png", "jpeg"))
    if body.get("outputScope") is not None:
        want_enum(body["outputScope"], "outputScope", ("INTERVENTIONS", "FULL"))
    return body


def text_units(body: dict) -> tuple[int, int]:
    """(text units, images) a checked body can use at most, per policy: each text block is
    ceil(characters / 1000) units, at least one."""
    units = images = 0
    for block in body["content"]:
        if block.get("text") is not None:
            units += max(1, -(-len(block["text"]["text"]) // UNIT_CHARS))
        else:
            images += 1
    return units, images


def reported_units(doc: Any) -> dict[str, int]:
    """The per-policy units of an ApplyGuardrail answer's `usage` (non-negative integers only;
    others are left out). Raises ModelErrorException when the answer has no usage object."""
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        raise errors.GatewayError("ModelErrorException", "upstream Bedrock answered ApplyGuardrail without a "
                                  "usage object; it cannot be priced, so the answer was not passed on.",
                                  extra={"originalStatusCode": 502})
    return usage_units(usage)


def usage_units(usage: dict) -> dict[str, int]:
    """The per-policy text units of a GuardrailUsage object (ApplyGuardrail's `usage`, a guardrail
    trace's `invocationMetrics.usage`): its known unit fields with a whole, non-negative count."""
    return {k: v for k, v in usage.items()
            if k in UNIT_FIELDS and isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def _units(chars: int) -> int:
    return max(1, -(-chars // UNIT_CHARS))


def call_units(req, body_len: int) -> tuple[int, int]:
    """(text units, images) per policy the input of a model call with a guardrail can use at
    most (module docstring). `req` is the canonical request, or None for a body only Bedrock
    reads (bounded by `body_len` bytes)."""
    if not isinstance(req, ChatRequest):
        return -(-body_len // UNIT_CHARS) + body_len // MIN_BLOCK_BYTES, 0
    units = sum(_units(len(t)) for t in req.system if t)
    images = 0
    for m in req.messages:
        for b in m.content:
            items = b.content if type(b) is ToolResultBlock else (b,)
            for item in items:
                if type(item) is TextBlock:
                    units += _units(len(item.text))
                elif type(item) is DocumentBlock:
                    units += _units(len(item.text) if item.text is not None else len(item.data or b""))
                elif type(item) is ImageBlock:
                    images += 1
    return units, images
