"""What a request is charged (workers/governance/governor.py), with a stub ledger."""
import pytest

from finops.shared.config import build
from finops.shared.model import ChatRequest, Message
from finops.workers.governance.governor import UNPRICED, Governor
from finops.workers.providers.base import Call


class StubLedger:
    def __init__(self):
        self.settled = []

    async def reserve(self, rid, key_id, env, max_cost, est_tokens):
        self.reserved = (rid, key_id, env, max_cost, est_tokens)
        return {"ok": True, "remaining_usd": 1.0, "budget": "key 'vk-1' daily budget of $2", "requests_remaining": 9}

    def settle(self, rid, key_id, env, cost, tokens):
        self.settled.append((rid, key_id, env, cost, tokens))

    def close(self):
        pass


@pytest.fixture
def gov(tmp_path):
    cfg = build({"server": {"data_dir": str(tmp_path)},
                 "pricing": {"priced-*": {"input": 1000.0, "output": 2000.0}},
                 "governance": {"keys": [{"id": "vk-1", "secret": "s" * 20,
                                          "budgets": [{"amount_usd": 2, "period": "day"}]}]}}, "t", env={})
    cfg.server.data_dir = str(tmp_path)
    g = Governor(cfg)
    g.ledger = StubLedger()
    yield g
    g.close()


def call_for(gov, model="priced-model"):
    c = Call(rid="r1", op="converse-stream", model_id=model, upstream_model=model, env="prod")
    c.key = gov.index.directory.keys["vk-1"]
    return c


REQ = ChatRequest(messages=[Message("user", [{"text": "x" * 40}])], max_tokens=100)


async def test_reserves_input_plus_max_tokens_at_the_models_price(gov):
    c = call_for(gov)
    await gov.admit(c, REQ)
    rid, key, env, max_cost, est = gov.ledger.reserved
    n_in = c.admission.input_estimate
    assert (rid, key, env) == ("r1", "vk-1", "prod")
    assert max_cost == pytest.approx((n_in * 1000 + 100 * 2000) / 1e6)
    assert est == n_in + 100


async def test_settles_the_reported_usage(gov):
    c = call_for(gov)
    await gov.admit(c, REQ)
    cost = gov.settle(c, {"in": 10, "out": 20}, started=True)
    assert cost == pytest.approx((10 * 1000 + 20 * 2000) / 1e6)
    assert gov.ledger.settled == [("r1", "vk-1", "prod", cost, 30)]


async def test_a_cut_stream_is_charged_for_its_input_and_what_was_relayed(gov):
    c = call_for(gov)
    await gov.admit(c, REQ)
    cost = gov.settle(c, {}, produced_tokens=7, started=True)
    assert cost == pytest.approx((c.admission.input_estimate * 1000 + 7 * 2000) / 1e6)


async def test_a_failure_before_the_answer_is_not_charged_but_is_settled(gov):
    c = call_for(gov)
    await gov.admit(c, REQ)
    assert gov.settle(c, {}, started=False) == 0.0
    assert gov.ledger.settled[-1][3] == 0.0           # the reservation is released


async def test_unpriced_models_are_charged_at_the_dearest_rate(gov):
    c = call_for(gov, "some-new-model")
    await gov.admit(c, REQ)
    assert c.admission.price == UNPRICED


async def test_headers(gov):
    c = call_for(gov)
    await gov.admit(c, REQ)
    h = dict(gov.headers(c, {"in": 10, "out": 20}))
    assert float(h["x-bf-cost-usd"]) == pytest.approx(0.05)
    assert float(h["x-bf-budget-remaining-usd"]) == pytest.approx(1.0 + c.admission.max_cost - 0.05)
    assert h["x-bf-ratelimit-remaining-requests"] == "9" and "daily" in h["x-bf-budget"]
