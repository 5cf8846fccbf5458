"""ApplyGuardrail's pure parts: the target, the body, the text units (formats/bedrock/guardrail.py),
and their prices (governance/guardrail_prices.py)."""
from __future__ import annotations

import pytest

from finops.shared.errors import GatewayError
from finops.workers.formats.bedrock import guardrail
from finops.workers.governance.guardrail_prices import SHIPPED, GuardrailPrices


def test_target_decodes_id_and_version_once():
    raw = "/bedrock/guardrail/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aguardrail%2Fabc/version/DRAFT/apply"
    assert guardrail.target(raw) == ("arn:aws:bedrock:us-east-1:1:guardrail/abc", "DRAFT")
    assert guardrail.target("/guardrail/g%2Bx/version/3/apply") == ("g+x", "3")
    with pytest.raises(GatewayError):
        guardrail.target("/bedrock/model/m/converse")


def test_body_checked_as_bedrock_does():
    ok = {"source": "INPUT", "content": [{"text": {"text": "hi", "qualifiers": ["query"]}}], "outputScope": "FULL"}
    assert guardrail.check_request(ok) is ok
    for bad, path in [({"source": "IN", "content": [{"text": {"text": "x"}}]}, "source"),
                      ({"source": "INPUT", "content": []}, "content"),
                      ({"source": "INPUT", "content": [{"text": {"text": "x"}, "image": {"format": "png"}}]},
                       "content[0]"),
                      ({"source": "INPUT", "content": [{"text": {"text": 3}}]}, "content[0].text.text"),
                      ({"source": "OUTPUT", "content": [{"image": {"format": "gif"}}]}, "content[0].image.format")]:
        with pytest.raises(GatewayError) as e:
            guardrail.check_request(bad)
        assert e.value.code == "ValidationException" and e.value.message.startswith(path), e.value.message


def test_text_units_per_block_up_to_1000_characters():
    body = {"source": "INPUT", "content": [{"text": {"text": ""}}, {"text": {"text": "a" * 1000}},
                                           {"text": {"text": "a" * 1001}}, {"image": {"format": "png"}}]}
    assert guardrail.text_units(body) == (1 + 1 + 2, 1)


def test_reported_units_and_a_missing_usage():
    doc = {"usage": {"topicPolicyUnits": 2, "contentPolicyUnits": 3, "wordPolicyUnits": 1, "bogus": 9,
                     "contextualGroundingPolicyUnits": -1, "automatedReasoningPolicies": 1}}
    assert guardrail.reported_units(doc) == {"topicPolicyUnits": 2, "contentPolicyUnits": 3, "wordPolicyUnits": 1}
    with pytest.raises(GatewayError) as e:
        guardrail.reported_units({"action": "NONE"})
    assert e.value.code == "ModelErrorException"


def test_prices_per_1000_text_units_in_micro_dollars():
    p = GuardrailPrices()
    # 0.15 USD per 1,000 units = 150 micro-dollars per unit
    assert p.cost_micros({"contentPolicyUnits": 1}) == 150
    assert p.cost_micros({"topicPolicyUnits": 2, "contentPolicyUnits": 2, "wordPolicyUnits": 2,
                          "sensitiveInformationPolicyUnits": 2, "sensitiveInformationPolicyFreeUnits": 2}) == 800
    # the bound covers every text policy of every unit
    assert p.max_cost_micros(2, 0) >= p.cost_micros({k: 2 for k in SHIPPED if k != "contentPolicyImageUnits"})
    assert p.max_cost_micros(0, 1) == 750


def test_price_overrides_and_unknown_policy():
    assert GuardrailPrices({"wordPolicyUnits": 1.0}).cost_micros({"wordPolicyUnits": 3}) == 3000
    with pytest.raises(ValueError):
        GuardrailPrices({"nope": 1.0})


def test_call_units_count_every_text_block_and_image():
    from finops.shared.model import ChatRequest, DocumentBlock, ImageBlock, Message, TextBlock, ToolResultBlock
    req = ChatRequest(system=("s" * 1001,), messages=[
        Message("user", [TextBlock("a"), TextBlock("b" * 2000), ImageBlock("png", b"x"),
                         DocumentBlock("d", text="c" * 10)]),
        Message("assistant", [TextBlock("ok")]),
        Message("user", [ToolResultBlock("t", [TextBlock("r" * 1500), ImageBlock("png", b"y")])])])
    # system 2, "a" 1, 2000 chars 2, document 1, "ok" 1, tool result text 2; two images
    assert guardrail.call_units(req, 0) == (9, 2)
    # a body only Bedrock reads: bounded by its size (1 unit per 1,000 bytes, 1 per 11-byte block)
    assert guardrail.call_units(None, 2200) == (3 + 200, 0)
