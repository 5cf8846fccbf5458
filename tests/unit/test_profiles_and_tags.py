"""Inference profiles -> base model (pricing, allow-lists, routes), prompt-cache savings, request
tags and the report's tag:NAME grouping. Pure cores, and the report over a real SQLite log."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from finops.shared.config import ConfigError, build
from finops.shared.governance import VirtualKey
from finops.shared.profiles import base_model, strip_geo
from finops.workers.governance.pricing import Price, PricingTable, cost_micros, prompt_cache_saved_micros
from finops.workers.observe import logdb, report, tagging
from tests.helpers.logrows import insert, row

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"


def cfg(**extra):
    raw = {"providers": {"mock": {"kind": "mock"}},
           "routes": [{"models": ["anthropic.claude-3-5*"], "provider": "mock"}],
           "default_route": {"provider": "mock", "model": "other"},
           "inference_profiles": [{"arn": ARN, "model": SONNET, "tags": {"team": "search"}}], **extra}
    return build(raw, "test")


@pytest.mark.parametrize("model_id,base", [
    ("us." + SONNET, SONNET), ("eu." + SONNET, SONNET), ("apac." + SONNET, SONNET), ("global." + SONNET, SONNET),
    ("us-gov." + SONNET, SONNET), ("jp." + SONNET, SONNET), ("au." + SONNET, SONNET), ("ca." + SONNET, SONNET),
    (SONNET, ""), ("gpt-4o", ""), ("usual.model", ""),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us." + SONNET, SONNET),
    ("arn:aws:bedrock:us-east-1::foundation-model/" + SONNET, SONNET),
    (ARN, SONNET), (ARN.replace(":", "%3A").replace("/", "%2F"), SONNET),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/unknown", ""),
])
def test_base_model(model_id, base):
    assert base_model(cfg(), model_id) == base


def test_strip_geo_strips_one_prefix():
    assert strip_geo("us.eu.x") == "eu.x" and strip_geo("x") == "x"


def test_routes_match_a_profile_by_its_base_model_after_its_own_id():
    c = cfg()
    assert c.route_for("us." + SONNET).models == ["anthropic.claude-3-5*"]
    assert c.route_for(ARN).models == ["anthropic.claude-3-5*"]
    assert c.route_for("us.anthropic.claude-3-haiku-20240307-v1:0") is c.default_route
    own = cfg(routes=[{"models": ["us.*"], "provider": "mock", "model": "us-route"},
                      {"models": ["anthropic.*"], "provider": "mock"}])
    assert own.route_for("us." + SONNET).model == "us-route"        # a glob on the id itself wins


def test_key_allow_lists_take_the_base_model():
    k = VirtualKey("vk-1", "s" * 16, models=("anthropic.claude-3-5*",))
    assert k.allows_model("us." + SONNET, SONNET) and k.allows_model(SONNET)
    assert not k.allows_model("us." + SONNET)                      # without the base model: its own text only
    assert not k.allows_model("us.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0")


@pytest.mark.parametrize("bad,says", [
    ({"arn": "not-an-arn", "model": SONNET}, r"inference_profiles\[0\]\.arn"),
    ({"arn": ARN}, "model"),
    ({"arn": ARN, "model": SONNET, "colour": "x"}, "colour"),
    ({"arn": ARN, "model": SONNET, "tags": {"team": "a'b"}}, r"inference_profiles\[0\]\.tags"),
])
def test_profile_config_errors(bad, says):
    with pytest.raises(ConfigError, match=says):
        cfg(inference_profiles=[bad])


def test_duplicate_profile_arns_are_refused():
    with pytest.raises(ConfigError, match="same arn"):
        cfg(inference_profiles=[{"arn": ARN, "model": SONNET}] * 2)


def test_profiles_are_priced_as_their_model_and_geo_premiums_kept():
    t = PricingTable()
    assert t.price_for("global." + SONNET) == t.price_for("us." + SONNET) == t.price_for(SONNET)
    s45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert t.price_for("us." + s45).input == pytest.approx(t.price_for("global." + s45).input * 1.1)
    assert t.price_for(ARN) is None and t.price_for(ARN, base_model(cfg(), ARN)) == t.price_for(SONNET)


# --- prompt-cache savings --------------------------------------------------------------------------

def test_prompt_cache_saved_is_the_difference_of_the_two_charges():
    p = Price(0.8, 4.0, cache_read=0.08, cache_write=1.0)
    saved = prompt_cache_saved_micros(p, 12, 30, 380, 7)
    assert saved == cost_micros(p, 12 + 380, 30, 0, 7) - cost_micros(p, 12, 30, 380, 7) == 274
    assert prompt_cache_saved_micros(p, 12, 30, 0, 100) == 0        # writes save nothing
    assert prompt_cache_saved_micros(Price(1.0, 1.0), 12, 30, 380) == 0   # no cache-read price: charged as input
    assert prompt_cache_saved_micros(None, 1, 1, 1) == 0


# --- request tags ----------------------------------------------------------------------------------

def test_converse_tags_come_from_request_metadata():
    assert tagging.request_tags("converse", {"requestMetadata": {"team": "a"}}, {}) == {"team": "a"}
    assert tagging.request_tags("converse-stream", {}, {tagging.HEADER: '{"team": "b"}'}) == {}


def test_invoke_tags_come_from_the_header_and_bad_headers_are_ignored():
    assert tagging.request_tags("invoke", None, {tagging.HEADER: '{"team": "b", "n": 1}'}) == {"team": "b"}
    assert tagging.request_tags("invoke", None, {tagging.HEADER: "not json"}) == {}
    assert tagging.request_tags("invoke", None, {}) == {}


def test_request_tags_win_over_profile_tags():
    request = SimpleNamespace(op="converse", model_id=ARN, headers={}, key=None)
    got = tagging.tags_of(request, {"requestMetadata": {"team": "ads", "x": "1"}}, cfg())
    assert dict(got) == {"team": "ads", "x": "1"}
    assert dict(tagging.tags_of(request, {}, cfg())) == {"team": "search"}
    assert tagging.dumps(got) == '{"team":"ads","x":"1"}' and tagging.dumps({}) == ""


# --- the report by tag -----------------------------------------------------------------------------

@pytest.fixture()
def db(tmp_path):
    db = logdb.open_db(str(tmp_path))
    t = 1_800_000_000.0
    insert(db, [row(ts=t, cost_usd=0.1, tags=json.dumps({"team": "ads"}), prompt_saved_usd=0.01),
                row(ts=t, cost_usd=0.2, tags=json.dumps({"team": "ads", "p": "x"})),
                row(ts=t, cost_usd=0.3, tags=json.dumps({"team": "search"})),
                row(ts=t, cost_usd=0.4, tags=""), row(ts=t, cost_usd=0.5, tags=None)])
    yield db
    db.close()


def test_report_by_tag_adds_up_to_the_untagged_total(db):
    rows = report.summarize(db, ["tag:team"], 0, 2e9)
    assert {r["tag:team"]: (r["requests"], r["cost_usd"]) for r in rows} == {
        "ads": (2, 0.3), "search": (1, 0.3), "": (2, 0.9)}
    assert report.total(rows)["cost_usd"] == report.summarize(db, [], 0, 2e9)[0]["cost_usd"] == 1.5
    assert report.total(rows)["prompt_saved_usd"] == 0.01


def test_report_filters_by_tag_and_groups_by_two_tags(db):
    assert report.summarize(db, [], 0, 2e9, where={"tag:team": "ads"})[0]["requests"] == 2
    rows = report.summarize(db, ["tag:team", "tag:p"], 0, 2e9)
    assert {(r["tag:team"], r["tag:p"]) for r in rows} == {("ads", ""), ("ads", "x"), ("search", ""), ("", "")}


@pytest.mark.parametrize("dim", ["tag:", "tag:it's", 'tag:a"b', "tag:" + "x" * 257])
def test_bad_tag_names_are_refused(db, dim):
    with pytest.raises(ValueError, match="tag name"):
        report.summarize(db, [dim], 0, 2e9)
