"""Guardrails through boto3 against the real processes (issue 18): guardrailConfig and the guardrail
headers reach Bedrock byte for byte (fallback targets and target models included); a guardrail
request never goes to a target that cannot apply it; ApplyGuardrail is routed, governed, logged and
priced per text unit; the guardrail units a Converse / ConverseStream / InvokeModel call's trace
reports are charged on top of its tokens."""
from __future__ import annotations

import json
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from finops.workers.governance.guardrail_prices import GuardrailPrices
from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.fake_providers import FakeOpenAI
from tests.helpers.gateway import Gateway, request_log

AKID, SECRET = "AKIDPROVIDERKEY00001", "provider-secret-key"
VK, VK_SECRET = "vk-guard", "guard-secret-0123456789abcdef"
ADMIN = "guard-admin-token-0123456789"
UNIT_KEYS = {op: (f"vk-units-{op}", f"units-{op}-secret-0123456789") for op in ("converse", "stream", "invoke")}
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
GUARD = {"guardrailIdentifier": "gr-abc123", "guardrailVersion": "3", "trace": "enabled"}
MSG = [{"role": "user", "content": [{"text": "hello guarded world"}]}]
INVOKE_BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "hello guarded world"}]})


def config(bedrock_url: str, openai_url: str) -> str:
    return f"""
[providers.aws]
kind = "bedrock"
base_url = "{bedrock_url}"
region = "us-east-1"
keys = [{{access_key_id = "{AKID}", secret_access_key = "{SECRET}"}}]

[providers.oa]
kind = "openai"
base_url = "{openai_url}"
keys = [{{api_key = "sk-test-openai"}}]

[[routes]]
models = ["oa-first.*"]
targets = [{{provider = "oa", model = "gpt-4o-mini"}}, {{provider = "aws", model = "{CLAUDE}", weight = 0}}]

[[routes]]
models = ["oa-only.*"]
provider = "oa"
model = "gpt-4o-mini"

[[routes]]
models = ["oa-unguarded.*"]
provider = "oa"
model = "gpt-4o-mini"
allow_unguarded = true

[[routes]]
models = ["fb.*"]
targets = [{{provider = "aws", model = "primary.model"}}, {{provider = "aws", model = "{CLAUDE}", weight = 0}}]

[[routes]]
models = ["cached.*"]
provider = "aws"
model = "{CLAUDE}"
[routes.cache]

[default_route]
provider = "aws"

[cache]
embedding_model = "none"

[pricing."*"]
input = 3.0
output = 15.0

[governance]
mode = "enforced"
admin_token = "{ADMIN}"

[[governance.keys]]
id = "{VK}"
secret = "{VK_SECRET}"
models = ["anthropic.*", "oa-*", "fb.*", "cached.*"]
budgets = [{{amount_usd = 100.0, period = "month"}}]
""" + "".join(f"""
[[governance.keys]]
id = "{key}"
secret = "{secret}"
models = ["anthropic.*"]
budgets = [{{amount_usd = 100.0, period = "month"}}]
""" for key, secret in UNIT_KEYS.values())


@pytest.fixture(scope="module")
def fakes():
    with FakeBedrock(AKID, SECRET) as fb, FakeOpenAI() as oa:
        yield fb, oa


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    fb, oa = fakes
    with Gateway(tmp_path_factory.mktemp("guardrails"), config(fb.url, oa.url)) as g:
        yield g


def client(gw, akid=VK, secret=VK_SECRET, sent=None):
    c = boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                     aws_access_key_id=akid, aws_secret_access_key=secret,
                     config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30))
    if sent is not None:        # the exact bytes boto3 sends
        c.meta.events.register("before-send.bedrock-runtime.*", lambda request, **kw: sent.append(request))
    return c


def rows_for(gw, rid: str, timeout: float = 10.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in request_log(gw.data_dir):
            if r["id"] == rid:
                return r
        time.sleep(0.1)
    raise AssertionError(f"no request-log row for {rid}")


def rid_of(resp) -> str:
    return resp["ResponseMetadata"]["RequestId"]


def header(resp, name: str) -> str:
    return resp["ResponseMetadata"]["HTTPHeaders"].get(name, "")


# --- relayed byte for byte ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["converse", "converse_stream"])
def test_guardrail_config_reaches_bedrock_byte_for_byte(gw, fakes, op):
    fb, _ = fakes
    sent = []
    cfg = dict(GUARD, **({"streamProcessingMode": "async"} if op == "converse_stream" else {}))
    resp = getattr(client(gw, sent=sent), op)(modelId=CLAUDE, messages=MSG, guardrailConfig=cfg,
                                               inferenceConfig={"maxTokens": 64})
    if op == "converse_stream":
        list(resp["stream"])
    got = fb.requests_for(model_id=CLAUDE)[-1]
    assert got.body == sent[-1].body
    assert got.json()["guardrailConfig"] == cfg


def test_invoke_guardrail_headers_reach_bedrock_unchanged(gw, fakes):
    fb, _ = fakes
    client(gw).invoke_model(modelId=CLAUDE, body=INVOKE_BODY, guardrailIdentifier="gr-abc123",
                            guardrailVersion="DRAFT", trace="ENABLED_FULL")
    got = fb.requests_for("InvokeModel", CLAUDE)[-1]
    assert got.headers["x-amzn-bedrock-guardrailidentifier"] == "gr-abc123"
    assert got.headers["x-amzn-bedrock-guardrailversion"] == "DRAFT"
    assert got.headers["x-amzn-bedrock-trace"] == "ENABLED_FULL"
    assert got.body == INVOKE_BODY.encode()


def test_on_a_fallback_target_with_a_target_model_too(gw, fakes):
    fb, _ = fakes
    fb.script("primary.model", {"status": 503, "code": "ServiceUnavailableException", "times": 2})
    sent = []
    c = client(gw, sent=sent)
    resp = c.converse(modelId="fb.chat", messages=MSG, guardrailConfig=GUARD, inferenceConfig={"maxTokens": 64})
    assert header(resp, "x-bf-target") == f"aws/{CLAUDE}"
    assert fb.requests_for("Converse", "primary.model")[-1].body == sent[-1].body
    assert fb.requests_for("Converse", CLAUDE)[-1].body == sent[-1].body
    c.invoke_model(modelId="fb.invoke", body=INVOKE_BODY, guardrailIdentifier="gr-abc123", guardrailVersion="1")
    got = fb.requests_for("InvokeModel", CLAUDE)[-1]
    assert got.headers["x-amzn-bedrock-guardrailidentifier"] == "gr-abc123"
    assert got.headers["x-amzn-bedrock-guardrailversion"] == "1"
    fb.clear_scripts()


# --- only targets that can apply it ------------------------------------------------------------------

def test_a_guardrail_request_skips_openai_for_the_bedrock_fallback(gw, fakes):
    fb, oa = fakes
    c = client(gw)
    before = len(oa.requests)
    resp = c.converse(modelId="oa-first.chat", messages=MSG, guardrailConfig=GUARD)
    assert header(resp, "x-bf-target") == f"aws/{CLAUDE}"
    assert len(oa.requests) == before                       # OpenAI never saw it
    assert fb.requests_for("Converse", CLAUDE)[-1].json()["guardrailConfig"] == GUARD
    row = rows_for(gw, rid_of(resp))
    assert row["provider"] == "aws" and row["attempts"] == 1
    # without a guardrail the route's first target serves it
    assert header(c.converse(modelId="oa-first.chat", messages=MSG), "x-bf-target") == "oa/gpt-4o-mini"
    # InvokeModel's guardrail headers count the same
    resp = c.invoke_model(modelId="oa-first.invoke", body=INVOKE_BODY, guardrailIdentifier="gr-abc123",
                          guardrailVersion="1")
    assert header(resp, "x-bf-target") == f"aws/{CLAUDE}"
    assert len(oa.requests) == before + 1


def test_a_guardrail_request_with_no_bedrock_target_is_refused(gw, fakes):
    _, oa = fakes
    before = len(oa.requests)
    c = client(gw)
    with pytest.raises(c.exceptions.ValidationException) as e:
        c.converse(modelId="oa-only.chat", messages=MSG, guardrailConfig=GUARD)
    msg = e.value.response["Error"]["Message"]
    assert "gr-abc123" in msg and "allow_unguarded = true" in msg and "oa/gpt-4o-mini" in msg
    with pytest.raises(c.exceptions.ValidationException):
        c.invoke_model(modelId="oa-only.invoke", body=INVOKE_BODY, guardrailIdentifier="gr-abc123",
                       guardrailVersion="1")
    assert len(oa.requests) == before
    # allow_unguarded = true: sent on, without the guardrail
    resp = c.converse(modelId="oa-unguarded.chat", messages=MSG, guardrailConfig=GUARD)
    assert header(resp, "x-bf-target") == "oa/gpt-4o-mini" and len(oa.requests) == before + 1
    assert "guardrail" not in json.dumps(oa.requests[-1].json).lower()


def test_a_guardrail_request_is_never_answered_from_the_cache(gw, fakes):
    fb, _ = fakes
    c = client(gw)
    msgs = [{"role": "user", "content": [{"text": "cache me if you can"}]}]
    first = c.converse(modelId="cached.chat", messages=msgs, inferenceConfig={"maxTokens": 64})
    again = c.converse(modelId="cached.chat", messages=msgs, inferenceConfig={"maxTokens": 64})
    assert header(again, "x-bf-cache") == "hit-exact"           # the route caches
    before = len(fb.requests_for("Converse", CLAUDE))
    for _ in range(2):
        r = c.converse(modelId="cached.chat", messages=msgs, inferenceConfig={"maxTokens": 64},
                       guardrailConfig=GUARD)
        assert header(r, "x-bf-cache") == ""
    assert len(fb.requests_for("Converse", CLAUDE)) == before + 2
    assert first["output"] == again["output"]


# --- ApplyGuardrail ------------------------------------------------------------------------------------

def test_apply_guardrail_routed_logged_and_priced_per_text_unit(gw, fakes):
    fb, _ = fakes
    gid = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123"
    content = [{"text": {"text": "a" * 1500}}, {"text": {"text": "is this ok?"}}]
    resp = client(gw).apply_guardrail(guardrailIdentifier=gid, guardrailVersion="DRAFT", source="INPUT",
                                      content=content)
    assert resp["action"] == "NONE" and resp["outputs"] == [] and resp["assessments"] == []
    assert resp["usage"]["contentPolicyUnits"] == 3 and resp["usage"]["topicPolicyUnits"] == 3
    assert "guardrailCoverage" in resp
    got = fb.requests_for("ApplyGuardrail", gid)[-1]
    assert got.sigv4_ok and got.path.endswith("/version/DRAFT/apply")
    assert got.json() == {"source": "INPUT", "content": content}
    # 3 units each of topic (0.15), content (0.15), word (free), sensitive information (0.10) per 1,000
    expected = GuardrailPrices().cost_micros({k: 3 for k in ("topicPolicyUnits", "contentPolicyUnits",
                                                              "wordPolicyUnits", "sensitiveInformationPolicyUnits")})
    assert expected == 3 * (150 + 150 + 100)
    assert header(resp, "x-bf-cost-usd") == f"{expected / 1e6:.6f}"
    row = rows_for(gw, rid_of(resp))
    assert row["op"] == "apply-guardrail" and row["model"] == gid and row["provider"] == "aws"
    assert row["vk"] == VK and row["error"] == ""
    assert round(row["cost_usd"] * 1e6) == expected


def test_apply_guardrail_intervention_is_passed_on(gw):
    resp = client(gw).apply_guardrail(guardrailIdentifier="gr-abc123", guardrailVersion="1", source="OUTPUT",
                                      content=[{"text": {"text": "please BLOCKME now"}}])
    assert resp["action"] == "GUARDRAIL_INTERVENED" and resp["outputs"][0]["text"]
    assert resp["assessments"][0]["wordPolicy"]["customWords"][0]["match"] == "BLOCKME"


def test_apply_guardrail_is_governed(gw, fakes):
    fb, _ = fakes
    before = len(fb.requests_for("ApplyGuardrail"))
    c = client(gw, akid="vk-nobody", secret="nobody-secret-0123456789")
    with pytest.raises(ClientError) as e:
        c.apply_guardrail(guardrailIdentifier="gr-abc123", guardrailVersion="1", source="INPUT",
                          content=[{"text": {"text": "hi"}}])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)
    with pytest.raises(client(gw).exceptions.ValidationException):
        client(gw).apply_guardrail(guardrailIdentifier="gr-abc123", guardrailVersion="1", source="INPUT",
                                   content=[])
    assert len(fb.requests_for("ApplyGuardrail")) == before


# --- guardrail units inside a model call -----------------------------------------------------------

POLICIES = ("topicPolicyUnits", "contentPolicyUnits", "wordPolicyUnits", "sensitiveInformationPolicyUnits")


def spent_micros(gw, key: str) -> int:
    req = urllib.request.Request(f"{gw.endpoint.rsplit('/bedrock', 1)[0]}/admin/usage?key={key}",
                                 headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    return round(sum(u["spent_usd"] for u in doc["usage"] if u.get("kind") == "budget") * 1_000_000)


def settled_micros(gw, key: str, timeout: float = 10.0) -> int:
    """What the ledger holds for `key` (a key only one test uses), once its one request settled."""
    end = time.monotonic() + timeout
    while (spent := spent_micros(gw, key)) == 0 and time.monotonic() < end:
        time.sleep(0.1)
    return spent


def unit_client(gw, op: str):
    return client(gw, *UNIT_KEYS[op])


def token_micros(usage: dict) -> int:
    return round(usage["inputTokens"] * 3.0 + usage["outputTokens"] * 15.0)     # [pricing."*"]


# the fake's trace: 1 unit per policy for the input's one text block, 1 for the answer's
GUARD_MICROS = GuardrailPrices().cost_micros({k: 2 for k in POLICIES})


def test_a_converse_trace_s_guardrail_units_are_charged_with_its_tokens(gw, fakes):
    assert GUARD_MICROS == 2 * (150 + 150 + 0 + 100)
    resp = unit_client(gw, "converse").converse(modelId=CLAUDE, messages=MSG, guardrailConfig=GUARD,
                                                inferenceConfig={"maxTokens": 64})
    assert "inputAssessment" in resp["trace"]["guardrail"]      # the client asked for the trace: it has it
    cost = round(float(header(resp, "x-bf-cost-usd")) * 1e6)
    assert cost == token_micros(resp["usage"]) + GUARD_MICROS
    assert round(rows_for(gw, rid_of(resp))["cost_usd"] * 1e6) == cost
    assert settled_micros(gw, UNIT_KEYS["converse"][0]) == cost


def test_a_converse_stream_trace_s_guardrail_units_are_charged_with_its_tokens(gw, fakes):
    cfg = dict(GUARD, streamProcessingMode="sync")
    resp = unit_client(gw, "stream").converse_stream(modelId=CLAUDE, messages=MSG, guardrailConfig=cfg,
                                      inferenceConfig={"maxTokens": 64})
    meta = [e["metadata"] for e in resp["stream"] if "metadata" in e][0]
    assert "guardrail" in meta["trace"]
    cost = round(rows_for(gw, rid_of(resp))["cost_usd"] * 1e6)
    assert cost == token_micros(meta["usage"]) + GUARD_MICROS
    assert settled_micros(gw, UNIT_KEYS["stream"][0]) == cost


def test_without_the_trace_bedrock_reports_no_units_and_only_tokens_are_charged(gw, fakes):
    resp = client(gw).converse(modelId=CLAUDE, messages=MSG, guardrailConfig=dict(GUARD, trace="disabled"),
                               inferenceConfig={"maxTokens": 64})
    assert "trace" not in resp
    assert round(float(header(resp, "x-bf-cost-usd")) * 1e6) == token_micros(resp["usage"])


def test_an_invoke_model_trace_s_guardrail_units_are_charged_with_its_tokens(gw, fakes):
    resp = unit_client(gw, "invoke").invoke_model(modelId=CLAUDE, body=INVOKE_BODY, guardrailIdentifier="gr-abc123",
                                   guardrailVersion="1", trace="ENABLED")
    doc = json.loads(resp["body"].read())
    assert "guardrail" in doc["amazon-bedrock-trace"]
    u = doc["usage"]
    cost = round(float(header(resp, "x-bf-cost-usd")) * 1e6)
    assert cost == round(u["input_tokens"] * 3.0 + u["output_tokens"] * 15.0) + GUARD_MICROS
    assert round(rows_for(gw, rid_of(resp))["cost_usd"] * 1e6) == cost
    assert settled_micros(gw, UNIT_KEYS["invoke"][0]) == cost
