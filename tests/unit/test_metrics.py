"""Prometheus metrics (workers/observe/metrics.py): request-log rows in, the exposition text out,
read back with prometheus_client's own parser."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from finops.workers.observe import metrics
from finops.workers.observe.metrics import GAUGE_TTL, LATENCY_BUCKETS, Bounded, Metrics
from tests.helpers.logrows import DEFAULTS

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def r(**kw) -> dict:
    unknown = set(kw) - set(DEFAULTS)
    assert not unknown, unknown
    return {**DEFAULTS, **kw}


def parse(m: Metrics, **kw) -> dict:
    """{family name: family}, from a fresh render."""
    return {f.name: f for f in text_string_to_metric_families(m.render(**kw).decode())}


def samples(fams: dict, family: str, suffix: str = "") -> dict:
    """{frozenset of label items: value} of the family's samples named family + suffix."""
    return {frozenset(s.labels.items()): s.value for s in fams[family].samples if s.name == family + suffix}


def value(fams: dict, family: str, suffix: str = "", **labels):
    """The value of the one sample of `family + suffix` whose labels include `labels` (None: none)."""
    found = [s.value for s in fams[family].samples
             if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else None


def test_requests_counted_by_their_labels():
    m = Metrics()
    m.observe(r(model=HAIKU, env="prod", vk="vk-1"))
    m.observe(r(model=HAIKU, env="prod", vk="vk-1"))
    m.observe(r(model=SONNET, env="dev", vk="", op="converse-stream", stream=1, provider="openai"))
    m.observe(r(model=HAIKU, env="prod", vk="vk-1", status=429, error="ThrottlingException", error_origin="upstream"))
    fams = parse(m)
    got = samples(fams, "finops_requests", "_total")
    base = dict(op="converse", model=HAIKU, provider="bedrock", env="prod", virtual_key="vk-1")
    assert got == {
        frozenset({**base, "status": "200", "error": ""}.items()): 2.0,
        frozenset({**base, "status": "429", "error": "ThrottlingException"}.items()): 1.0,
        frozenset(dict(op="converse-stream", model=SONNET, provider="openai", env="dev", virtual_key="",
                       status="200", error="").items()): 1.0,
    }
    assert value(fams, "finops_request_log_rows", "_total") == 4.0


def test_latency_histogram_count_sum_and_buckets():
    m = Metrics()
    for ms in (3.0, 100.0, 100.1, 2000.0, 400_000.0):      # 0.1 s is in le="0.1" (le is inclusive)
        m.observe(r(latency_ms=ms))
    m.observe(r(latency_ms=50.0, op="invoke"))
    fams = parse(m)
    fam = "finops_request_duration_seconds"
    assert fams[fam].type == "histogram"
    lab = dict(op="converse", model=HAIKU, provider="bedrock")
    assert value(fams, fam, "_count", **lab) == 5
    assert value(fams, fam, "_sum", **lab) == pytest.approx(0.003 + 0.1 + 0.1001 + 2.0 + 400.0)
    buckets = {s.labels["le"]: s.value for s in fams[fam].samples
               if s.name == fam + "_bucket" and s.labels["op"] == "converse"}
    assert list(buckets) == [str(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
    assert buckets["0.005"] == 1 and buckets["0.05"] == 1
    assert buckets["0.1"] == 2                   # 3 ms and exactly 100 ms
    assert buckets["0.25"] == 3                  # + 100.1 ms
    assert buckets["1.0"] == 3 and buckets["2.5"] == 4
    assert buckets["300.0"] == 4                 # 400 s is past the last bound
    assert buckets["+Inf"] == 5
    assert value(fams, fam, "_count", op="invoke") == 1


def test_ttft_only_for_rows_that_have_one():
    m = Metrics()
    m.observe(r(ttft_ms=None))
    m.observe(r(stream=1, ttft_ms=250.0))
    m.observe(r(stream=1, ttft_ms=0.0))           # a first event at once still counts
    m.observe(r(model=SONNET, ttft_ms=None))
    fams = parse(m)
    fam = "finops_time_to_first_token_seconds"
    assert value(fams, fam, "_count", model=HAIKU, provider="bedrock") == 2
    assert value(fams, fam, "_sum", model=HAIKU) == pytest.approx(0.25)
    assert value(fams, fam, "_count", model=SONNET) is None
    assert value(fams, fam, "_bucket", model=HAIKU, le="0.005") == 1
    assert value(fams, fam, "_bucket", model=HAIKU, le="0.25") == 2


def test_tokens_by_type_and_cost():
    m = Metrics()
    m.observe(r(env="prod", vk="vk-1", input_tokens=100, output_tokens=20, cache_read_tokens=7,
                cache_write_tokens=0, cost_usd=0.25))
    m.observe(r(env="prod", vk="vk-1", input_tokens=1, output_tokens=2, cache_write_tokens=3, cost_usd=0.5))
    m.observe(r(env="dev", vk="", input_tokens=0, output_tokens=0, cost_usd=0.0))     # nothing to add
    fams = parse(m)
    tokens = samples(fams, "finops_tokens", "_total")
    lab = dict(model=HAIKU, provider="bedrock", env="prod", virtual_key="vk-1")
    assert tokens == {frozenset({**lab, "type": t}.items()): v
                      for t, v in (("input", 101), ("output", 22), ("cache_read", 7), ("cache_write", 3))}
    assert samples(fams, "finops_cost_usd", "_total") == {frozenset(lab.items()): pytest.approx(0.75)}


def test_cache_results_and_savings():
    m = Metrics()
    m.observe(r(cache=""))                                        # route without the cache: not counted
    m.observe(r(cache="miss", cost_usd=0.1))
    m.observe(r(cache="hit-exact", saved_usd=0.1, env="prod", vk="vk-1", attempts=0))
    m.observe(r(cache="hit-exact", saved_usd=0.05, env="prod", vk="vk-1", attempts=0))
    m.observe(r(cache="hit-semantic", cache_similarity=0.97, saved_usd=0.2, env="dev", vk="vk-2"))
    m.observe(r(cache="hit-exact", saved_usd=0.0))                # a hit on a free answer saves nothing
    fams = parse(m)
    assert samples(fams, "finops_cache_requests", "_total") == {
        frozenset(dict(model=HAIKU, result="miss").items()): 1,
        frozenset(dict(model=HAIKU, result="hit-exact").items()): 3,
        frozenset(dict(model=HAIKU, result="hit-semantic").items()): 1,
    }
    assert samples(fams, "finops_cache_saved_usd", "_total") == {
        frozenset(dict(model=HAIKU, env="prod", virtual_key="vk-1").items()): pytest.approx(0.15),
        frozenset(dict(model=HAIKU, env="dev", virtual_key="vk-2").items()): pytest.approx(0.2),
    }


def test_governance_rejections_and_upstream_errors_by_origin():
    m = Metrics()
    m.observe(r(error="ServiceQuotaExceededException", error_origin="governance", status=400, vk="vk-1",
                provider="", attempts=0))
    m.observe(r(error="ThrottlingException", error_origin="governance", status=429, vk="vk-1"))
    m.observe(r(error="ThrottlingException", error_origin="upstream", status=429, provider="openai"))
    m.observe(r(error="ModelTimeoutException", error_origin="upstream", status=408))
    m.observe(r(error="ValidationException", error_origin="client", status=400))     # neither
    m.observe(r(error="cancelled", error_origin="client"))
    m.observe(r(error="", error_origin="upstream"))                                    # no error: neither
    fams = parse(m)
    assert samples(fams, "finops_governance_rejections", "_total") == {
        frozenset(dict(reason="ServiceQuotaExceededException", virtual_key="vk-1").items()): 1,
        frozenset(dict(reason="ThrottlingException", virtual_key="vk-1").items()): 1,
    }
    assert samples(fams, "finops_upstream_errors", "_total") == {
        frozenset(dict(provider="openai", code="ThrottlingException").items()): 1,
        frozenset(dict(provider="bedrock", code="ModelTimeoutException").items()): 1,
    }
    assert sum(samples(fams, "finops_requests", "_total").values()) == 7


def test_bounded_label_values():
    b = Bounded(2)
    assert [b("a"), b("b"), b("c"), b("a"), b("d"), b("b")] == ["a", "b", "other", "a", "other", "b"]
    assert b.seen == {"a", "b"}
    assert Bounded()("x") == "x" and Bounded().limit == metrics.MAX_VALUES


def test_client_chosen_labels_fold_into_other():
    m = Metrics()
    m.model, m.env = Bounded(2), Bounded(1)
    for i in range(5):
        m.observe(r(model=f"model-{i}", env=f"env-{i}", cost_usd=1.0))
    m.observe(r(model="model-0", env="env-0", cost_usd=1.0))
    fams = parse(m)
    cost = {(dict(k)["model"], dict(k)["env"]): v for k, v in samples(fams, "finops_cost_usd", "_total").items()}
    assert cost == {("model-0", "env-0"): 2.0, ("model-1", "other"): 1.0, ("other", "other"): 3.0}
    # every family that carries the label uses the folded value
    models = {s.labels["model"] for f in fams.values() for s in f.samples if "model" in s.labels}
    assert models == {"model-0", "model-1", "other"}


def test_gauges_summed_over_processes_and_dropped_after_ttl():
    clock = Clock()
    m = Metrics(clock=clock)
    m.report("worker-1", "worker", {"inflight": 3, "queues": {"requestlog_rows": 10}, "semantic": 1})
    m.report("worker-2", "worker", {"inflight": 4, "queues": {"requestlog_rows": 5, "settles": 2}, "semantic": 1})
    m.report("frontend-1", "frontend", {"inflight": 6})
    fams = parse(m, own_queues={"observer_rows": 7})
    assert value(fams, "finops_requests_in_flight", process="worker") == 7
    assert value(fams, "finops_requests_in_flight", process="frontend") == 6
    assert samples(fams, "finops_queue_depth") == {frozenset({"queue": q}.items()): n for q, n in
                                                   (("requestlog_rows", 15), ("settles", 2), ("observer_rows", 7))}
    assert value(fams, "finops_cache_semantic_enabled") == 1

    # one worker without the embedding model: the layer is not on everywhere
    m.report("worker-2", "worker", {"inflight": 1, "queues": {"requestlog_rows": 5}, "semantic": 0})
    fams = parse(m)
    assert value(fams, "finops_requests_in_flight", process="worker") == 4
    assert value(fams, "finops_cache_semantic_enabled") == 0

    # worker-1 and the frontend stop reporting; worker-2 goes on
    clock.t += GAUGE_TTL / 2
    m.report("worker-2", "worker", {"inflight": 2, "queues": {"requestlog_rows": 1}})
    clock.t += GAUGE_TTL / 2 + 0.01
    fams = parse(m)
    assert value(fams, "finops_requests_in_flight", process="worker") == 2
    assert value(fams, "finops_requests_in_flight", process="frontend") == 0
    assert samples(fams, "finops_queue_depth") == {frozenset({"queue": "requestlog_rows"}.items()): 1}
    assert set(m.reports) == {"worker-2"}

    clock.t += GAUGE_TTL + 0.01                                   # nobody reports any more
    fams = parse(m)
    assert value(fams, "finops_requests_in_flight", process="worker") == 0
    assert samples(fams, "finops_queue_depth") == {}             # no stale depth of a gone process
    assert m.reports == {}


def test_gauge_exactly_at_ttl_still_counts():
    clock = Clock()
    m = Metrics(clock=clock)
    m.report("worker-1", "worker", {"inflight": 2})
    clock.t += GAUGE_TTL
    assert value(parse(m), "finops_requests_in_flight", process="worker") == 2


def test_restarts_counter():
    m = Metrics()
    fams = parse(m)
    assert fams["finops_process_restarts"].type == "counter" and fams["finops_process_restarts"].samples == []
    m.set_restarts({"worker": 3, "frontend": "1", "ledger": 0})
    fams = parse(m)
    assert samples(fams, "finops_process_restarts", "_total") == {
        frozenset({"kind": "worker"}.items()): 3, frozenset({"kind": "frontend"}.items()): 1,
        frozenset({"kind": "ledger"}.items()): 0}
    m.set_restarts({"worker": 4})                                  # the supervisor's file is the truth
    assert samples(parse(m), "finops_process_restarts", "_total") == {frozenset({"kind": "worker"}.items()): 4}
    assert "finops_process_restarts_total{kind=\"worker\"} 4.0" in m.render().decode()


def test_alert_counters_come_from_the_alerts_actor_counts():
    m = Metrics()
    fams = parse(m)
    assert fams["finops_alerts_sent"].type == "counter" and fams["finops_alerts_sent"].samples == []
    m.set_alerts({"sent": {"budget": 3, "forecast": 1}, "failed": {"budget": 1}, "pending": 2})
    fams = parse(m)
    assert samples(fams, "finops_alerts_sent", "_total") == {
        frozenset({"kind": "budget"}.items()): 3, frozenset({"kind": "forecast"}.items()): 1}
    assert samples(fams, "finops_alerts_failed", "_total") == {frozenset({"kind": "budget"}.items()): 1}


def test_names_follow_prometheus_conventions():
    m = Metrics()
    m.observe(r(vk="vk-1", env="prod", ttft_ms=10.0, input_tokens=1, output_tokens=1, cost_usd=0.1,
                cache="hit-exact", saved_usd=0.1))
    m.observe(r(error="ThrottlingException", error_origin="governance"))
    m.observe(r(error="ThrottlingException", error_origin="upstream"))
    m.report("worker-1", "worker", {"inflight": 1, "queues": {"q": 1}, "semantic": 1})
    m.set_restarts({"worker": 1})
    m.ledger_counts({"uncounted": 2, "settles_dropped": 1, "spend_dropped": 3})
    m.set_alerts({"sent": {"budget": 2}, "failed": {"anomaly": 1}, "pending": 0})
    m.cache_counts({"published": 3, "applied": 2})
    text = m.render().decode()
    fams = list(text_string_to_metric_families(text))
    assert len(fams) == 19
    for f in fams:
        assert f.name.startswith("finops_"), f.name
        assert f.samples, f"{f.name} has no sample"
        if f.type == "counter":
            assert all(s.name == f.name + "_total" for s in f.samples), f.name
        elif f.type == "histogram":
            assert f.name.endswith("_seconds"), f.name
            assert {s.name for s in f.samples} == {f.name + x for x in ("_bucket", "_count", "_sum")}
        else:
            assert f.type == "gauge", (f.name, f.type)
            assert not f.name.endswith("_total")
        if "usd" in f.name:
            assert f.name.endswith("_usd"), f.name        # the unit last (before _total)
    assert "_created" not in text
    assert "vk-1" in text and "secret" not in text
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert (kind == "counter") == name.endswith("_total"), line


def test_ledger_counts_add_up():
    m = Metrics()
    m.ledger_counts({"uncounted": 2})
    m.ledger_counts({"uncounted": 1, "settles_dropped": 4, "spend_dropped": 5})
    text = m.render().decode()
    assert "finops_ledger_uncounted_total 3.0" in text
    assert 'finops_ledger_dropped_total{what="settle"} 4.0' in text
    assert 'finops_ledger_dropped_total{what="spend_row"} 5.0' in text


def test_cache_replication_counts_add_up():
    m = Metrics()
    m.cache_counts({"published": 2, "applied": 5})
    m.cache_counts({"published": 1, "dropped": 4, "expired_skipped": 1})
    text = m.render().decode()
    assert 'finops_cache_replication_records_total{what="published"} 3.0' in text
    assert 'finops_cache_replication_records_total{what="applied"} 5.0' in text
    assert 'finops_cache_replication_records_total{what="dropped"} 4.0' in text
    assert 'finops_cache_replication_records_total{what="expired_skipped"} 1.0' in text
