"""The observer's Prometheus text (workers/observe/exposition.py) is prometheus_client's, byte for
byte: the same operations on both give the same `generate_latest()` output."""
from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from finops.workers.observe import exposition as ours

BUCKETS = (0.005, 0.1, 1, 2.5, 300)


def build(mod, registry):
    c = mod.Counter("t_requests", "Requests, by outcome.\nSecond line with a \\ backslash.", ["model", "env"],
                    registry=registry)
    u = mod.Counter("t_rows", "Rows written.", registry=registry)
    g = mod.Gauge("t_inflight", "In flight.", ["process"], registry=registry)
    s = mod.Gauge("t_enabled", "On or off.", registry=registry)
    h = mod.Histogram("t_latency_seconds", "Latency.", ["op"], buckets=BUCKETS, registry=registry)
    e = mod.Counter("t_empty", "Never incremented.", ["x"], registry=registry)
    c.labels("m1", "prod").inc(1)
    c.labels("m1", 'we"ird\\\nenv').inc(2.5)
    c.labels("m1", "prod").inc(0.1 + 0.2)
    u.inc(123456789)
    g.labels("worker").set(3)
    g.labels("frontend").set(0)
    g.clear()
    g.labels("worker").set(7)
    s.set(1)
    for v in (0.001, 0.005, 0.0051, 0.25, 1, 299.9, 301, 123456.789, 0.1):
        h.labels("converse").observe(v)
    h.labels("invoke").observe(2)
    return e


@pytest.fixture
def theirs():
    prometheus_client.disable_created_metrics()
    yield
    prometheus_client.enable_created_metrics()


def test_the_text_is_prometheus_clients(theirs):
    r1, r2 = CollectorRegistry(auto_describe=True), ours.Registry()
    build(prometheus_client, r1)
    build(ours, r2)
    assert r2.render() == generate_latest(r1)


@pytest.mark.parametrize("value, text", [(1, "1.0"), (0.25, "0.25"), (123456789.0, "1.23456789e+08"),
                                         (float("inf"), "+Inf"), (-float("inf"), "-Inf"), (1e-09, "1e-09")])
def test_go_floats(value, text):
    assert ours.go_float(value) == text


def test_counters_only_go_up_and_labels_must_match():
    c = ours.Counter("t", "T.", ["a"])
    with pytest.raises(ValueError):
        c.labels("x").inc(-1)
    with pytest.raises(ValueError):
        c.labels("x", "y")
