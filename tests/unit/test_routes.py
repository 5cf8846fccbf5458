"""Raw-path routing: every form of modelId the SDKs send, decoded exactly once."""
from __future__ import annotations

import pytest
from botocore.utils import percent_encode

from finops.frontend import routes
from finops.shared.errors import GatewayError

IDS = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1",
    "weird name/with space+plus",
    "100%25 literal percent",
    "ünïcode/模型",
]


@pytest.mark.parametrize("model_id", IDS)
@pytest.mark.parametrize("action", sorted(routes.OPERATIONS))
def test_botocore_encoded_ids_round_trip(model_id, action):
    raw = f"/bedrock/model/{percent_encode(model_id, safe='-._~')}/{action}".encode()
    r = routes.match("POST", raw)
    assert (r.op, r.model_id) == (action, model_id)


def test_reference_table_raw_targets():
    r = routes.match("POST", b"/bedrock/model/weird%20name%2Fwith%20space%2Bplus/converse")
    assert r.model_id == "weird name/with space+plus"
    r = routes.match("POST", b"/bedrock/model/a+b/converse")   # a bare + is a plus, not a space
    assert r.model_id == "a+b"


def test_trailing_slash_endpoint_and_no_prefix():
    assert routes.match("POST", b"/bedrock//model/m/invoke").model_id == "m"
    assert routes.match("POST", b"/model/m/invoke").op == "invoke"


@pytest.mark.parametrize("raw", [b"/bedrock/model/m/talk", b"/bedrock/model/m", b"/bedrock/models/m/converse",
                                 b"/", b"/bedrock", b"/bedrock/model/a/b/converse"])
def test_unknown_paths_are_404(raw):
    with pytest.raises(GatewayError) as e:
        routes.match("POST", raw)
    assert (e.value.status, e.value.code) == (404, "UnknownOperationException")


def test_wrong_method_is_405_naming_post():
    with pytest.raises(GatewayError) as e:
        routes.match("GET", b"/bedrock/model/m/converse")
    assert e.value.status == 405 and "POST" in e.value.message and "Converse" in e.value.message


def test_bad_model_ids_are_400():
    for raw in (b"/bedrock/model//converse", b"/bedrock/model/%FF%FE/converse", b"/bedrock/model/" + b"a" * 3000 + b"/converse"):
        with pytest.raises(GatewayError) as e:
            routes.match("POST", raw)
        assert e.value.code == "ValidationException" and "modelId" in e.value.message


GUARDRAIL_IDS = ["abc123", "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123", "weird id+plus/slash"]


@pytest.mark.parametrize("gid", GUARDRAIL_IDS)
def test_apply_guardrail_route_decodes_the_identifier_once(gid):
    raw = f"/bedrock/guardrail/{percent_encode(gid, safe='-._~')}/version/DRAFT/apply".encode()
    r = routes.match("POST", raw)
    assert (r.op, r.model_id) == (routes.APPLY_GUARDRAIL, gid)
    assert routes.APPLY_GUARDRAIL not in routes.STREAMING


def test_apply_guardrail_reference_target_and_wrong_method():
    raw = b"/bedrock/guardrail/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aguardrail%2Fabc123/version/DRAFT/apply"
    assert routes.match("POST", raw).model_id == "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123"
    with pytest.raises(GatewayError) as e:
        routes.match("GET", b"/bedrock/guardrail/g/version/1/apply")
    assert e.value.status == 405
    for bad in (b"/bedrock/guardrail/g/version/1/run", b"/bedrock/guardrail/g/1/apply", b"/bedrock/model/g/apply"):
        with pytest.raises(GatewayError) as e:
            routes.match("POST", bad)
        assert e.value.status == 404
