"""What a request reserves and is charged (workers/governance/governor.py), with a stub ledger."""
import pytest

from finops.shared.config import build
from finops.shared.model import ChatRequest, ImageBlock, Message, TextBlock, request_tokens
from finops.workers.governance import bounds
from finops.workers.governance import governor
from finops.workers.governance.governor import UNPRICED, Charge, Governor
from finops.workers.request import Request


class StubLedger:
    def __init__(self):
        self.settled = []

    async def reserve(self, rid, key_id, env, max_cost, est_tokens):
        self.reserved = (rid, key_id, env, max_cost, est_tokens)
        return {"ok": True, "remaining_usd": 1.0, "budget": "key 'vk-1' daily budget of $2", "requests_remaining": 9}

    def settle(self, rid, key_id, env, cost, tokens, saved=0.0):
        self.settled.append((rid, key_id, env, cost, tokens))
        return [rid, key_id, env, cost, tokens]

    def close(self):
        pass


@pytest.fixture
def gov(tmp_path):
    cfg = build({"server": {"data_dir": str(tmp_path)},
                 "pricing": {"priced-*": {"input": 1000.0, "output": 2000.0}},
                 "governance": {"default_max_tokens": 64,
                                "keys": [{"id": "vk-1", "secret": "s" * 20,
                                          "budgets": [{"amount_usd": 2, "period": "day"}]},
                                         {"id": "vk-open", "secret": "o" * 20}]}}, "t", environ={})
    cfg.server.data_dir = str(tmp_path)
    g = Governor(cfg)
    g.ledger = StubLedger()
    yield g
    g.close()


def call_for(gov, model="priced-model", key="vk-1"):
    return Request(rid="r1", op="converse-stream", model_id=model, headers={}, environment="prod", started=0.0,
                   body=b"", key=gov.index.directory.keys[key])


REQ = ChatRequest(messages=[Message("user", [TextBlock("x" * 40)])], max_tokens=100)


async def test_reserves_the_input_bound_plus_max_tokens_at_the_dearest_prices(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    rid, key, env, max_cost, est = gov.ledger.reserved
    bound = bounds.input_bound(REQ, bounds.vendor_of("anthropic", "priced-model"), "priced-model").tokens
    assert bound >= 40                          # at least the text's UTF-8 bytes
    assert (rid, key, env) == ("r1", "vk-1", "prod")
    assert adm.input_bound == bound and adm.max_output == 100
    assert max_cost == (bound * 1000 + 100 * 2000) / 1e6
    assert est == bound + 100
    assert gov.output_cap(adm) is None            # the client capped its output itself


async def test_the_reservation_covers_every_target_the_request_may_try(gov):
    """A fallback to another vendor keeps the first reservation, so it bounds them all."""
    img = ChatRequest(messages=[Message("user", [TextBlock("look"), ImageBlock("png", b"x")])],
                      max_tokens=10)
    one = [bounds.input_bound(img, bounds.vendor_of(k, m), m).tokens
           for k, m in (("anthropic", "claude-3-5-sonnet-latest"), ("openai", "gpt-4o-mini"))]
    assert one[0] != one[1]
    c = call_for(gov)
    adm = await gov.admit(c, img, [("anthropic", "claude-3-5-sonnet-latest"), ("openai", "gpt-4o-mini")])
    assert adm.input_bound == max(one)


async def test_no_max_tokens_reserves_the_default_and_caps_the_upstream(gov):
    c = call_for(gov)
    adm = await gov.admit(c, ChatRequest(messages=REQ.messages), [("anthropic", "priced-model")])
    assert adm.max_output == 64 and gov.output_cap(adm) == 64


async def test_an_ungoverned_key_reserves_nothing_and_is_not_capped(gov):
    c = call_for(gov, key="vk-open")
    adm = await gov.admit(c, ChatRequest(messages=REQ.messages), [("anthropic", "priced-model")])
    assert not hasattr(gov.ledger, "reserved") and not adm.reserved
    assert gov.output_cap(adm) is None
    ch = gov.charge(adm, {"in": 10, "out": 20})
    assert ch.usd == (10 * 1000 + 20 * 2000) / 1e6      # charged the same as a governed key
    assert gov.settle(c, adm, ch) is None


async def test_charges_and_settles_exactly_the_reported_usage(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    ch = gov.charge(adm, {"in": 10, "out": 20, "cr": 3, "cw": 4}, req=REQ, started=True)
    assert ch == Charge(10 * 1000 + 20 * 2000 + 3 * 1000 + 4 * 1000, {"in": 10, "out": 20, "cr": 3, "cw": 4})
    assert ch.usd == 0.057 and ch.tokens == 37 and not ch.estimated
    assert gov.settle(c, adm, ch) == ["r1", "vk-1", "prod", 0.057, 37]
    assert gov.ledger.settled == [("r1", "vk-1", "prod", 0.057, 37)]


async def test_usage_above_the_reservation_is_still_charged_in_full(gov):
    """No cap at the reservation: what the upstream reported is what the request cost."""
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    big = {"in": 10 * adm.input_bound, "out": 1000}
    ch = gov.charge(adm, big, req=REQ)
    assert ch.micros > adm.max_micros
    assert ch.micros == big["in"] * 1000 + 1000 * 2000


async def test_a_cut_stream_is_charged_an_estimate_of_its_input_and_what_was_relayed(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    ch = gov.charge(adm, {}, req=REQ, produced_tokens=7, started=True)
    assert ch.estimated and ch.usage == {"in": request_tokens(REQ), "out": 7, "cr": 0, "cw": 0}
    assert ch.usd == (request_tokens(REQ) * 1000 + 7 * 2000) / 1e6
    assert gov.charge(adm, {}, req=REQ, produced_tokens=10_000, started=True).usage["out"] == 100   # at most maxTokens


async def test_a_failure_before_the_answer_is_not_charged_but_is_settled(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    ch = gov.charge(adm, {}, req=REQ, started=False)
    assert ch.usd == 0.0
    gov.settle(c, adm, ch)
    assert gov.ledger.settled[-1][3] == 0.0           # the reservation is released


async def test_unpriced_models_are_charged_at_the_dearest_rate(gov):
    c = call_for(gov, "some-new-model")
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    assert gov.price(c.model_id) == UNPRICED and adm.max_micros > 0


def test_unpriced_models_are_warned_about_once_and_remembered_within_a_bound(gov, monkeypatch, caplog):
    """Model ids come from clients: a client sending a new one per request (a default route serves
    any) must not grow the worker's memory of the ones it warned about without end."""
    monkeypatch.setattr(governor, "UNPRICED_NOTED_MAX", 50, raising=False)   # absent: no bound
    caplog.set_level("WARNING", logger="finops.governance")
    for _ in range(2):
        assert gov.price("unknown-model") == UNPRICED
    assert sum("unknown-model" in r.getMessage() for r in caplog.records) == 1
    for i in range(1000):
        assert gov.price(f"client-made-{i}") == UNPRICED
        assert len(gov._unpriced) <= 50


async def test_headers_show_the_charge(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("anthropic", "priced-model")])
    ch = gov.charge(adm, {"in": 10, "out": 20})
    h = dict(gov.headers(adm, ch))
    assert h["x-bf-cost-usd"] == "0.050000"
    assert float(h["x-bf-budget-remaining-usd"]) == pytest.approx(1.0 + adm.max_micros / 1e6 - 0.05)
    assert h["x-bf-ratelimit-remaining-requests"] == "9" and "daily" in h["x-bf-budget"]


async def test_the_reservation_prices_every_target_and_the_charge_the_one_that_answered(gov):
    """An alias the table does not price: each target's upstream model decides its price. The
    reservation covers the dearest target; the charge uses the prices of the one that answered."""
    c = call_for(gov, "my-alias")
    adm = await gov.admit(c, REQ, [("openai", "gpt-4o-mini"), ("openai", "priced-model")])
    b = bounds.input_bound(REQ, bounds.vendor_of("openai", "priced-model"), "priced-model").tokens
    assert adm.max_micros == b * 1000 + 100 * 2000                           # the dear one
    assert gov.charge(adm, {"in": 10, "out": 20}, "priced-model").micros == 10 * 1000 + 20 * 2000
    assert gov.charge(adm, {"in": 10, "out": 20}, "gpt-4o-mini").micros == round(10 * 0.15 + 20 * 0.6)


async def test_one_hour_cache_writes_are_charged_at_the_one_hour_price(gov):
    c = call_for(gov, model="claude-3-5-sonnet-latest")
    adm = await gov.admit(c, REQ, [("anthropic", "claude-3-5-sonnet-latest")])
    ch = gov.charge(adm, {"in": 0, "out": 0, "cr": 0, "cw": 1000, "cw1h": 400}, "claude-3-5-sonnet-latest")
    assert ch.micros == round(600 * 3.75 + 400 * 6.0)          # 5-minute 1.25x, 1-hour 2x input
    assert ch.usage == {"in": 0, "out": 0, "cr": 0, "cw": 1000, "cw1h": 400} and ch.tokens == 1000
    # the reservation priced the input at the 1-hour write price, the dearest it could be charged
    bound = adm.input_bound
    assert adm.max_micros == bound * 6 + 100 * 15


async def test_guardrail_units_of_a_call_are_charged_on_top_of_its_tokens(gov):
    c = call_for(gov)
    adm = await gov.admit(c, REQ, [("bedrock", "priced-model")])
    units = {"topicPolicyUnits": 2, "contentPolicyUnits": 2, "wordPolicyUnits": 2}
    ch = gov.charge(adm, {"in": 10, "out": 20, "cr": 0, "cw": 0, "gu": units}, "priced-model")
    # tokens, plus 2 topic and 2 content units at 0.15 per 1,000 (word filters are free)
    assert ch.micros == 10 * 1000 + 20 * 2000 + round(4 * 0.15 * 1000)
    assert ch.usage["gu"] == units and ch.tokens == 30
    # ApplyGuardrail (units, no tokens) stays priced by its units alone
    assert gov.charge(adm, {"in": 0, "out": 0, "gu": units}).micros == 600


async def test_a_guarded_call_reserves_its_guardrail_units(gov):
    c = call_for(gov)
    plain = await gov.admit(c, REQ, [("bedrock", "priced-model")])
    guarded = await gov.admit(c, REQ, [("bedrock", "priced-model")], guard_units=(1, 0))
    per_unit = sum(gov.guardrail_prices.per_1000[k] for k in ("contentPolicyUnits", "topicPolicyUnits",
                   "sensitiveInformationPolicyUnits", "contextualGroundingPolicyUnits",
                   "automatedReasoningPolicyUnits"))
    # 1 input unit, and 100 output tokens x 8 characters = 1 unit: every priced policy, 2 units each
    assert guarded.max_micros - plain.max_micros == round(2 * per_unit * 1000)
