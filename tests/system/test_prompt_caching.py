"""Issue 18: prompt caching, inference profiles and request tags, through boto3 against the real
gateway with the fake Anthropic, OpenAI and Bedrock upstreams.

* Converse cachePoints become Anthropic cache_control breakpoints on the block before each one;
  the fake Anthropic keeps a real prompt cache (write once, read after), so the cache tokens the
  client sees, the cost it is charged (x-bf-cost-usd, the ledger via /admin/usage, the log) and
  what the log says prompt caching saved all follow from the pricing table's cache rates.
* OpenAI's automatic caching: cached_tokens read back, not double counted.
* The Bedrock relay keeps the cachePoints byte for byte.
* us. / global. / application inference profiles: priced, allowed and routed as their model.
* requestMetadata: tags in the log, `finops report --by tag:team`, /admin/report?by=tag:team.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from finops.workers.governance.pricing import PricingTable, cost_micros, prompt_cache_saved_micros
from tests.helpers.fake_bedrock import FakeBedrock
from tests.helpers.fake_providers import FakeAnthropic, FakeOpenAI
from tests.helpers.fake_server import tokens
from tests.helpers.gateway import Gateway, request_log

ADMIN = "cache-admin-token-0123456789"
AKID, SECRET = "AKIDPROVIDERKEY00001", "provider-secret-key"
HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"            # anthropic provider: read 0.08, write 1.00 per 1M
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"           # bedrock relay
APP_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5"
KEY_SECRET = "claude35-secret-0123456789ab"
ONE_HOUR_SECRET = "onehour-secret-0123456789ab"     # vk-onehour: only the 1-hour tests spend on it
BIN = os.path.dirname(sys.executable)
LONG = " ".join(f"word{i}" for i in range(300))                 # a long, stable system prompt
TOOL = {"toolSpec": {"name": "lookup", "description": "Look a thing up",
                     "inputSchema": {"json": {"type": "object", "properties": {"q": {"type": "string"}}}}}}
CP = {"cachePoint": {"type": "default"}}


def config(anthropic: FakeAnthropic, openai: FakeOpenAI, bedrock: FakeBedrock) -> str:
    return f"""
[governance]
admin_token = "{ADMIN}"

[[governance.keys]]
id = "vk-claude35"
secret = "{KEY_SECRET}"
models = ["anthropic.claude-3-5*"]
budgets = [{{amount_usd = 100.0, period = "month"}}]
tags = {{team = "key-team", cost_center = "cc-1"}}

[[governance.keys]]
id = "vk-onehour"
secret = "{ONE_HOUR_SECRET}"
models = ["anthropic.claude-3-5*"]
budgets = [{{amount_usd = 100.0, period = "month"}}]

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic.url}"
keys = [{{api_key = "sk-ant-test"}}]

[providers.openai]
kind = "openai"
base_url = "{openai.url}"
keys = [{{api_key = "sk-test-openai"}}]

[providers.aws]
kind = "bedrock"
base_url = "{bedrock.url}"
region = "us-east-1"
keys = [{{access_key_id = "{AKID}", secret_access_key = "{SECRET}"}}]

[[routes]]
models = ["{HAIKU}"]
provider = "anthropic"
model = "claude-3-5-haiku-latest"

[[routes]]
models = ["gpt-4o"]
provider = "openai"
model = "gpt-4o"

[[routes]]
models = ["anthropic.claude-3-5-sonnet*", "anthropic.claude-3-haiku*"]
provider = "aws"

[[inference_profiles]]
arn = "{APP_ARN}"
model = "{SONNET}"
tags = {{team = "search", app = "profile-app"}}
"""


@pytest.fixture(scope="module")
def fakes():
    with FakeAnthropic() as a, FakeOpenAI() as o, FakeBedrock(AKID, SECRET) as b:
        yield {"anthropic": a, "openai": o, "bedrock": b}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    with Gateway(tmp_path_factory.mktemp("prompt-caching"),
                 config(fakes["anthropic"], fakes["openai"], fakes["bedrock"])) as g:
        yield g


def client_for(gw, headers=None):
    c = boto3.client("bedrock-runtime", endpoint_url=f"http://127.0.0.1:{gw.port}/bedrock", region_name="us-east-1",
                     aws_access_key_id="finops-dummy-key", aws_secret_access_key="finops-dummy-secret",
                     config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30))
    sent = []

    def add(request, **kwargs):
        for k, v in (headers or {}).items():
            request.headers.add_header(k, v)

    def record(request, **kwargs):
        sent.append(request.body)
    c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    c.meta.events.register("before-send.bedrock-runtime.*", record)
    c.sent = sent
    return c


@pytest.fixture()
def client(gw, fakes):
    for f in fakes.values():
        f.clear_scripts()
    return client_for(gw, {"x-bf-vk": KEY_SECRET})


def log_row(gw, request_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in request_log(gw.data_dir) if r["id"] == request_id]
        if rows or time.monotonic() > deadline:
            assert rows, f"no request log row for {request_id}"
            return rows[0]
        time.sleep(0.1)


def admin(gw, path):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}{path}", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def spent_micros(gw, key: str = "vk-claude35") -> int:
    doc = admin(gw, f"/admin/usage?key={key}")
    return round(sum(u["spent_usd"] for u in doc["usage"] if u.get("kind") == "budget") * 1_000_000)


def settled_micros(gw, want: int, key: str = "vk-onehour", timeout: float = 10.0) -> int:
    """The ledger's spend for `key`, once it reaches `want` (its settles travel apart from the
    answers) or the timeout passes: the caller asserts it."""
    end = time.monotonic() + timeout
    while (spent := spent_micros(gw, key)) != want and time.monotonic() < end:
        time.sleep(0.1)
    return spent


def quiet_spend(gw, key: str = "vk-claude35", timeout: float = 10.0) -> int:
    """The ledger's spend for `key` once two looks 0.3 s apart agree: the settles of requests
    answered before have arrived (a settle reaches the ledger within milliseconds of its answer)."""
    end = time.monotonic() + timeout
    last = spent_micros(gw, key)
    while time.monotonic() < end:
        time.sleep(0.3)
        now = spent_micros(gw, key)
        if now == last:
            return now
        last = now
    return last


def micros(header: str) -> int:
    return round(float(header) * 1_000_000)


def cached_request(question: str, doc: str = "") -> dict:
    """A request with a cachePoint after the tools, the system prompt and a stable first message;
    `doc` varies the cached prefix (the fake's cache outlives a test)."""
    return {"system": [{"text": LONG}, CP],
            "messages": [{"role": "user", "content": [{"text": f"a stable document {doc} " * 20}, CP]},
                         {"role": "assistant", "content": [{"text": "noted"}]},
                         {"role": "user", "content": [{"text": question}]}],
            "toolConfig": {"tools": [TOOL, CP]}}


# --- Anthropic: breakpoints, cache usage, price ---------------------------------------------------

def test_cache_points_become_cache_control_on_the_block_before_each(client, fakes):
    client.converse(modelId=HAIKU, **cached_request("placement?"))
    body = fakes["anthropic"].requests[-1].json
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    first, answer, question = body["messages"]
    assert first["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in b for m in (answer, question) for b in m["content"])


def test_a_cache_read_is_reported_and_costs_less_by_the_tables_rate(gw, client, fakes):
    price = PricingTable().price_for(HAIKU)
    before = quiet_spend(gw)       # the earlier tests' settles (they travel apart from the answers) are in
    first = client.converse(modelId=HAIKU, **cached_request("first question", "price"))
    second = client.converse(modelId=HAIKU, **cached_request("second question", "price"))
    u1, u2 = first["usage"], second["usage"]
    # the first call wrote the prefix, the second read it; inputTokens excludes both (Bedrock's meaning)
    assert u1["cacheWriteInputTokens"] > 0 and "cacheReadInputTokens" not in u1
    assert u2["cacheReadInputTokens"] == u1["cacheWriteInputTokens"] and "cacheWriteInputTokens" not in u2
    assert u2["inputTokens"] == u1["inputTokens"]
    c1 = micros(first["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    c2 = micros(second["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    assert c1 == cost_micros(price, u1["inputTokens"], u1["outputTokens"], 0, u1["cacheWriteInputTokens"])
    assert c2 == cost_micros(price, u2["inputTokens"], u2["outputTokens"], u2["cacheReadInputTokens"], 0)
    uncached = cost_micros(price, u2["inputTokens"] + u2["cacheReadInputTokens"], u2["outputTokens"])
    assert c2 < uncached and uncached - c2 == prompt_cache_saved_micros(price, u2["inputTokens"], u2["outputTokens"],
                                                                         u2["cacheReadInputTokens"])
    # header = ledger = log, to the micro-dollar
    rows = [log_row(gw, r["ResponseMetadata"]["RequestId"]) for r in (first, second)]
    assert [round(r["cost_usd"] * 1e6) for r in rows] == [c1, c2]
    assert (rows[0]["cache_write_tokens"], rows[1]["cache_read_tokens"]) == (u1["cacheWriteInputTokens"],
                                                                             u2["cacheReadInputTokens"])
    assert round(rows[1]["prompt_saved_usd"] * 1e6) == uncached - c2 and rows[0]["prompt_saved_usd"] == 0
    assert settled_micros(gw, before + c1 + c2, key="vk-claude35") - before == c1 + c2


def test_stream_metadata_carries_the_cache_tokens(client, fakes):
    client.converse(modelId=HAIKU, **cached_request("warm", "stream"))
    r = client.converse_stream(modelId=HAIKU, **cached_request("streamed", "stream"))
    usage = [e["metadata"]["usage"] for e in r["stream"] if "metadata" in e][0]
    assert usage["cacheReadInputTokens"] > 0 and "cacheWriteInputTokens" not in usage


def test_more_than_four_cache_points_is_refused_as_bedrock_does(client, fakes):
    n = len(fakes["anthropic"].requests)
    body = cached_request("too many")
    body["system"] = [{"text": "a"}, CP, {"text": "b"}, CP, {"text": "c"}, CP]
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=HAIKU, **body)
    assert ei.value.response["Error"]["Code"] == "ValidationException"
    assert "5 cachePoint blocks" in ei.value.response["Error"]["Message"]
    assert len(fakes["anthropic"].requests) == n            # never sent upstream


def test_invoke_model_claude_body_reports_the_cache_fields(client, fakes):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "invoke with a cached system"}]}
    first = json.loads(client.invoke_model(modelId=HAIKU, body=json.dumps(body))["body"].read())
    second = json.loads(client.invoke_model(modelId=HAIKU, body=json.dumps(body))["body"].read())
    assert first["usage"]["cache_creation_input_tokens"] > 0
    assert second["usage"]["cache_read_input_tokens"] == first["usage"]["cache_creation_input_tokens"]


# --- OpenAI: automatic caching read back ---------------------------------------------------------

def test_openai_cached_tokens_are_read_back_without_double_counting(gw, fakes):
    c = client_for(gw)
    fakes["openai"].script("gpt-4o", {"cached_tokens": 1024})
    r = c.converse(modelId="gpt-4o", messages=[{"role": "user", "content": [{"text": "automatic cache"}]}])
    sent = fakes["openai"].requests[-1]
    u = r["usage"]
    assert u["cacheReadInputTokens"] == 1024
    assert u["inputTokens"] == tokens("automatic cache")      # prompt_tokens minus the cached ones
    assert "cache_control" not in json.dumps(sent.json)
    price = PricingTable().price_for("gpt-4o")
    want = cost_micros(price, u["inputTokens"], u["outputTokens"], 1024)
    assert micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) == want
    row = log_row(gw, r["ResponseMetadata"]["RequestId"])
    assert row["cache_read_tokens"] == 1024 and row["input_tokens"] == u["inputTokens"]
    assert round(row["prompt_saved_usd"] * 1e6) == prompt_cache_saved_micros(price, u["inputTokens"], u["outputTokens"],
                                                                             1024) > 0


# --- Bedrock relay: byte for byte -----------------------------------------------------------------

def test_bedrock_relay_keeps_cache_points_byte_for_byte_and_prices_bedrocks_cache_usage(gw, client, fakes):
    fakes["bedrock"].script(SONNET, {"cache_read": 2000, "cache_write": 100})
    r = client.converse(modelId=SONNET, **cached_request("relay"), inferenceConfig={"maxTokens": 100})
    rec = [x for x in fakes["bedrock"].requests if x.operation == "Converse"][-1]
    assert rec.body == client.sent[-1] and b'"cachePoint"' in rec.body
    # without maxTokens on a key with a budget, governance adds its output cap: the body is
    # re-encoded, and its cachePoints are still all there, in place
    client.converse(modelId=SONNET, **cached_request("relay"))
    rec = [x for x in fakes["bedrock"].requests if x.operation == "Converse"][-1]
    sent = json.loads(client.sent[-1])
    assert {k: v for k, v in rec.json().items() if k != "inferenceConfig"} == sent
    u = r["usage"]
    assert (u["cacheReadInputTokens"], u["cacheWriteInputTokens"]) == (2000, 100)
    want = cost_micros(PricingTable().price_for(SONNET), u["inputTokens"], u["outputTokens"], 2000, 100)
    assert micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) == want


# --- 1-hour cache writes: reported as the upstream did, charged at the 1-hour write price ----------

CP_1H = {"cachePoint": {"type": "default", "ttl": "1h"}}


def one_hour_request(question: str, doc: str) -> dict:
    """Tools and system cached for an hour (Anthropic wants 1-hour breakpoints before 5-minute
    ones), the first message for five minutes."""
    body = cached_request(question, doc)
    body["system"] = [{"text": LONG}, CP_1H]
    body["toolConfig"] = {"tools": [TOOL, CP_1H]}
    return body


@pytest.fixture()
def one_hour(gw, fakes):
    """A client on vk-onehour, the key only the 1-hour tests spend on (its ledger total is theirs)."""
    for f in fakes.values():
        f.clear_scripts()
    return client_for(gw, {"x-bf-vk": ONE_HOUR_SECRET})


def test_anthropic_one_hour_cache_writes_cost_twice_the_input_price(gw, one_hour, fakes):
    client = one_hour
    price = PricingTable().price_for(HAIKU)
    assert price.cache_write_1h == 2 * price.input and price.cache_write == 1.25 * price.input
    before = settled_micros(gw, spent_micros(gw, "vk-onehour"))
    r = client.converse(modelId=HAIKU, **one_hour_request("an hour", "1h"))
    body = fakes["anthropic"].requests[-1].json
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    u = r["usage"]
    one_hour = tokens(LONG)                                  # the prefix up to the 1-hour breakpoint
    w = u["cacheWriteInputTokens"]
    assert w > one_hour
    # the client sees what the upstream reported, in Bedrock's terms: 1h before 5m
    assert u["cacheDetails"] == [{"ttl": "1h", "inputTokens": one_hour}, {"ttl": "5m", "inputTokens": w - one_hour}]
    c = micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    assert c == cost_micros(price, u["inputTokens"], u["outputTokens"], 0, w, one_hour)
    assert c - cost_micros(price, u["inputTokens"], u["outputTokens"], 0, w) == round(one_hour * 0.75 * price.input)
    # header = log = ledger, to the micro-dollar
    assert round(log_row(gw, r["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == c
    assert settled_micros(gw, before + c) == before + c
    # a stream: its metadata event says the same, and the log and the ledger charge the same way
    before += c
    s = client.converse_stream(modelId=HAIKU, **one_hour_request("an hour, streamed", "1h-stream"))
    usage = [e["metadata"]["usage"] for e in s["stream"] if "metadata" in e][0]
    assert usage["cacheDetails"][0] == {"ttl": "1h", "inputTokens": one_hour}
    want = cost_micros(price, usage["inputTokens"], usage["outputTokens"], 0, usage["cacheWriteInputTokens"], one_hour)
    row = log_row(gw, s["ResponseMetadata"]["RequestId"])
    assert round(row["cost_usd"] * 1e6) == want and settled_micros(gw, before + want) == before + want


def test_anthropic_invoke_model_one_hour_writes_are_charged_as_reported(gw, client, fakes):
    price = PricingTable().price_for(HAIKU)
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "system": [{"type": "text", "text": LONG + " invoke", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": "invoke with a system cached for an hour"}]}
    r = client.invoke_model(modelId=HAIKU, body=json.dumps(body))
    doc = json.loads(r["body"].read())
    u = doc["usage"]                                          # passed through unchanged
    assert u["cache_creation"] == {"ephemeral_5m_input_tokens": 0,
                                   "ephemeral_1h_input_tokens": u["cache_creation_input_tokens"]} and u["cache_creation_input_tokens"] > 0
    c = micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    w = u["cache_creation_input_tokens"]
    assert c == cost_micros(price, u["input_tokens"], u["output_tokens"], 0, w, w)
    assert round(log_row(gw, r["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == c


def test_bedrock_one_hour_cache_writes_pass_through_and_are_charged_at_the_one_hour_price(gw, one_hour, fakes):
    client = one_hour
    price = PricingTable().price_for(SONNET)
    fakes["bedrock"].script(SONNET, {"cache_write": 1000, "cache_write_1h": 600})
    before = settled_micros(gw, spent_micros(gw, "vk-onehour"))
    r = client.converse(modelId=SONNET, **cached_request("relay 1h"), inferenceConfig={"maxTokens": 100})
    u = r["usage"]
    assert u["cacheWriteInputTokens"] == 1000
    assert u["cacheDetails"] == [{"ttl": "1h", "inputTokens": 600}, {"ttl": "5m", "inputTokens": 400}]
    c = micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    assert c == cost_micros(price, u["inputTokens"], u["outputTokens"], 0, 1000, 600)
    assert c == round(u["inputTokens"] * 3.0 + u["outputTokens"] * 15.0 + 400 * 3.75 + 600 * 6.0)
    assert round(log_row(gw, r["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == c
    assert settled_micros(gw, before + c) == before + c
    # ConverseStream: the metadata event's cacheDetails
    s = client.converse_stream(modelId=SONNET, **cached_request("relay 1h stream"), inferenceConfig={"maxTokens": 100})
    usage = [e["metadata"]["usage"] for e in s["stream"] if "metadata" in e][0]
    assert usage["cacheDetails"][0] == {"ttl": "1h", "inputTokens": 600}
    want = cost_micros(price, usage["inputTokens"], usage["outputTokens"], 0, 1000, 600)
    assert round(log_row(gw, s["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == want


def test_bedrock_invoke_model_one_hour_writes_from_the_claude_body(gw, client, fakes):
    price = PricingTable().price_for(SONNET)
    fakes["bedrock"].script(SONNET, {"cache_write": 1000, "cache_write_1h": 1000})
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": "relay invoke 1h"}]}
    r = client.invoke_model(modelId=SONNET, body=json.dumps(body))
    doc = json.loads(r["body"].read())
    assert doc["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 1000
    u = doc["usage"]
    c = micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
    assert c == cost_micros(price, u["input_tokens"], u["output_tokens"], 0, 1000, 1000)
    assert round(log_row(gw, r["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == c
    # the stream: the 1-hour part is in its first chunk (message_start), the total in the metrics
    s = client.invoke_model_with_response_stream(modelId=SONNET, body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in s["body"] if "chunk" in e]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    want = cost_micros(price, metrics["inputTokenCount"], metrics["outputTokenCount"], 0, 1000, 1000)
    assert round(log_row(gw, s["ResponseMetadata"]["RequestId"])["cost_usd"] * 1e6) == want


# --- inference profiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["us.", "global.", "eu."])
def test_cross_region_profiles_are_allowed_priced_and_routed_as_their_model(gw, client, fakes, profile):
    model_id = profile + SONNET
    r = client.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": "profile"}]}])
    rec = [x for x in fakes["bedrock"].requests if x.operation == "Converse"][-1]
    assert rec.model_id == model_id                         # the upstream gets the id the client sent
    u = r["usage"]
    want = cost_micros(PricingTable().price_for(SONNET), u["inputTokens"], u["outputTokens"])
    assert micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) == want > 0
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-bf-target"].startswith("aws/")


def test_a_key_glob_does_not_reach_another_model_through_a_profile(client):
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="us.anthropic.claude-3-haiku-20240307-v1:0",
                        messages=[{"role": "user", "content": [{"text": "no"}]}])
    assert ei.value.response["Error"]["Code"] == "AccessDeniedException"


def test_application_profile_arn_priced_and_tagged_by_its_config(gw, client, fakes):
    r = client.converse(modelId=APP_ARN, messages=[{"role": "user", "content": [{"text": "app profile"}]}],
                        requestMetadata={"app": "from-request"})
    rec = [x for x in fakes["bedrock"].requests if x.operation == "Converse"][-1]
    assert rec.model_id == APP_ARN
    u = r["usage"]
    want = cost_micros(PricingTable().price_for(SONNET), u["inputTokens"], u["outputTokens"])
    assert micros(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"]) == want
    row = log_row(gw, r["ResponseMetadata"]["RequestId"])
    # key tags, then the profile's, then the request's: the later wins on a name
    assert json.loads(row["tags"]) == {"team": "search", "app": "from-request", "cost_center": "cc-1"}


def test_key_tags_are_on_every_request_and_request_tags_win(gw, client):
    plain = client.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "key tags"}]}])
    tagged = client.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "key tags"}]}],
                             requestMetadata={"team": "ads"})
    rows = [log_row(gw, r["ResponseMetadata"]["RequestId"]) for r in (plain, tagged)]
    assert json.loads(rows[0]["tags"]) == {"team": "key-team", "cost_center": "cc-1"}
    assert json.loads(rows[1]["tags"]) == {"team": "ads", "cost_center": "cc-1"}


# --- requestMetadata as tags ----------------------------------------------------------------------

def test_request_metadata_tags_group_the_report_and_add_up(gw, fakes, tmp_path):
    c = client_for(gw, {"x-bf-env": "tagged"})
    msgs = [{"role": "user", "content": [{"text": "tagged request"}]}]
    ids = [c.converse(modelId=SONNET, messages=msgs, requestMetadata=md)["ResponseMetadata"]["RequestId"]
           for md in ({"team": "ads"}, {"team": "ads", "project": "x"}, {"team": "search"}, None)
           if md is not None] + [c.converse(modelId=SONNET, messages=msgs)["ResponseMetadata"]["RequestId"]]
    c.invoke_model(modelId=SONNET, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20,
                                                    "messages": [{"role": "user", "content": "invoke tagged"}]}),
                   requestMetadata=json.dumps({"team": "search"}))
    rows = [log_row(gw, i) for i in ids]
    assert [json.loads(r["tags"] or "{}").get("team") for r in rows] == ["ads", "ads", "search", None]
    cfg = tmp_path / "finops.toml"
    cfg.write_text(f'[server]\ndata_dir = "{gw.data_dir}"\n')
    out = subprocess.run([os.path.join(BIN, "finops"), "report", "--by", "tag:team", "--env", "tagged",
                          "--format", "json", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_team = {r["tag:team"]: r for r in doc["rows"]}
    assert set(by_team) == {"ads", "search", ""}
    assert (by_team["ads"]["requests"], by_team["search"]["requests"], by_team[""]["requests"]) == (2, 2, 1)
    untagged = subprocess.run([os.path.join(BIN, "finops"), "report", "--by", "env", "--env", "tagged",
                               "--format", "json", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    whole = json.loads(untagged.stdout)["total"]
    assert doc["total"]["cost_usd"] == whole["cost_usd"] > 0 and doc["total"]["requests"] == whole["requests"] == 5
    assert sum(round(r["cost_usd"] * 1e6) for r in doc["rows"]) == round(whole["cost_usd"] * 1e6)
    api = admin(gw, "/admin/report?by=tag:team&env=tagged")
    assert {r["tag:team"]: r["requests"] for r in api["rows"]} == {"ads": 2, "search": 2, "": 1}
    assert admin(gw, "/admin/report?by=env&env=tagged&tag:team=ads")["total"]["requests"] == 2
