"""Service tiers and latency-optimized inference through boto3 against the real processes (issue 18):
serviceTier and performanceConfig reach Bedrock unchanged, become OpenAI's service_tier, and the tier
the upstream reported is priced at its rate (x-bf-cost-usd = the request log) and logged."""
from __future__ import annotations

import json
import time

import pytest

from finops.workers.governance.pricing import Price, PricingTable, cost_micros
from finops.workers.governance.tiers import TierPricing
from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.fake_providers import FakeOpenAI
from tests.helpers.gateway import Gateway, request_log

AKID, SECRET = "AKIDPROVIDERKEY00001", "provider-secret-key"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
MSG = [{"role": "user", "content": [{"text": "one two three four"}]}]
HAIKU_PRICING = {"input": 0.25, "output": 1.25, "tiers": {"flex": {"input": 0.1, "output": 0.5}}}


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
models = ["gpt-*"]
provider = "oa"

[default_route]
provider = "aws"

[pricing."anthropic.claude-3-haiku*"]
input = 0.25
output = 1.25
tiers = {{flex = {{input = 0.1, output = 0.5}}}}
"""


@pytest.fixture(scope="module")
def fakes():
    with FakeBedrock(AKID, SECRET) as fb, FakeOpenAI() as oa:
        yield fb, oa


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    fb, oa = fakes
    with Gateway(tmp_path_factory.mktemp("tiers"), config(fb.url, oa.url)) as g:
        yield g


def row_of(gw, rid: str) -> dict:
    for _ in range(100):
        for r in request_log(gw.data_dir):
            if r["id"] == rid:
                return r
        time.sleep(0.1)
    raise AssertionError(f"no log row for {rid}")


def expected(model: str, tier: str, n_in: int, n_out: int, pricing=None) -> int:
    table = PricingTable(pricing)
    base = table.price_for(model)
    return cost_micros(TierPricing(pricing).price(tier, base, model), n_in, n_out)


def cost_header(resp) -> int:
    return round(float(resp["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) * 1e6)


def test_bedrock_converse_tier_relayed_priced_and_logged(gw, fakes):
    fb, _ = fakes
    c = gw.client()
    std = c.converse(modelId=CLAUDE, messages=MSG)
    pri = c.converse(modelId=CLAUDE, messages=MSG, serviceTier={"type": "priority"},
                     performanceConfig={"latency": "optimized"})
    sent = fb.requests_for("Converse", CLAUDE)[-1].json()
    assert sent["serviceTier"] == {"type": "priority"} and sent["performanceConfig"] == {"latency": "optimized"}
    assert pri["serviceTier"] == {"type": "priority"} and pri["performanceConfig"] == {"latency": "optimized"}
    u = pri["usage"]
    want = expected(CLAUDE, "priority", u["inputTokens"], u["outputTokens"])
    assert want == round(cost_header(std) * 1.75) and cost_header(pri) == want > cost_header(std)
    row = row_of(gw, pri["ResponseMetadata"]["RequestId"])
    assert row["service_tier"] == "priority" and round(row["cost_usd"] * 1e6) == want
    assert row_of(gw, std["ResponseMetadata"]["RequestId"])["service_tier"] == ""


def test_the_tier_reported_is_priced_not_the_one_asked(gw, fakes):
    fb, _ = fakes
    fb.script(CLAUDE, {"service_tier": "default", "times": 1})
    resp = gw.client().converse(modelId=CLAUDE, messages=MSG, serviceTier={"type": "priority"})
    u = resp["usage"]
    assert cost_header(resp) == expected(CLAUDE, "default", u["inputTokens"], u["outputTokens"])
    assert row_of(gw, resp["ResponseMetadata"]["RequestId"])["service_tier"] == "default"


def test_converse_stream_flex_from_the_config_tier_price(gw):
    resp = gw.client().converse_stream(modelId=HAIKU, messages=MSG, serviceTier={"type": "flex"})
    events = list(resp["stream"])
    meta = events[-1]["metadata"]
    assert meta["serviceTier"] == {"type": "flex"}
    pricing = {"anthropic.claude-3-haiku*": HAIKU_PRICING}
    want = expected(HAIKU, "flex", meta["usage"]["inputTokens"], meta["usage"]["outputTokens"], pricing)
    assert want == cost_micros(Price(0.1, 0.5), meta["usage"]["inputTokens"], meta["usage"]["outputTokens"])
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert row["service_tier"] == "flex" and round(row["cost_usd"] * 1e6) == want


def test_invoke_model_tier_and_latency_headers(gw, fakes):
    fb, _ = fakes
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "one two three four"}]})
    resp = gw.client().invoke_model(modelId=CLAUDE, body=body, serviceTier="priority",
                                    performanceConfigLatency="optimized")
    got = fb.requests_for("InvokeModel", CLAUDE)[-1]
    assert got.headers["x-amzn-bedrock-service-tier"] == "priority"
    assert got.headers["x-amzn-bedrock-performanceconfig-latency"] == "optimized"
    assert resp["serviceTier"] == "priority" and resp["performanceConfigLatency"] == "optimized"
    h = resp["ResponseMetadata"]["HTTPHeaders"]
    want = expected(CLAUDE, "priority", int(h["x-amzn-bedrock-input-token-count"]),
                    int(h["x-amzn-bedrock-output-token-count"]))
    assert cost_header(resp) == want
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert row["service_tier"] == "priority" and round(row["cost_usd"] * 1e6) == want


@pytest.mark.parametrize("tier,sent", [("priority", "priority"), ("flex", "flex"), ("reserved", None)])
def test_openai_gets_service_tier(gw, fakes, tier, sent):
    _, oa = fakes
    resp = gw.client().converse(modelId="gpt-5", messages=MSG, serviceTier={"type": tier})
    got = oa.requests[-1].json
    assert got.get("service_tier") == sent
    served = sent or "default"
    u = resp["usage"]
    want = expected("gpt-5", served, u["inputTokens"], u["outputTokens"])
    assert cost_header(resp) == want
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert row["service_tier"] == served and round(row["cost_usd"] * 1e6) == want
    if tier == "priority":       # OpenAI's published priority price: 2x standard for gpt-5
        assert want == 2 * expected("gpt-5", "default", u["inputTokens"], u["outputTokens"])


def test_openai_stream_priced_in_the_tier_it_reports(gw, fakes):
    resp = gw.client().converse_stream(modelId="gpt-5", messages=MSG, serviceTier={"type": "priority"})
    meta = list(resp["stream"])[-1]["metadata"]
    want = expected("gpt-5", "priority", meta["usage"]["inputTokens"], meta["usage"]["outputTokens"])
    row = row_of(gw, resp["ResponseMetadata"]["RequestId"])
    assert row["service_tier"] == "priority" and round(row["cost_usd"] * 1e6) == want
