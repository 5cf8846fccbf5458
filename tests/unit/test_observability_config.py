"""[observability], [cache] and route cache tables: checked at load, errors that name the key."""
from __future__ import annotations

import importlib.util

import pytest

from finops.shared import config

BASE = {"providers": {"m": {"kind": "mock"}}, "default_route": {"provider": "m"}}


def build(**tables):
    return config.build({**BASE, **tables}, "test")


@pytest.mark.parametrize("table, needle", [
    ({"observability": {"log_retention_days": -1}}, "observability.log_retention_days"),
    ({"observability": {"trace_sample_ratio": 1.5}}, "observability.trace_sample_ratio"),
    ({"observability": {"otlp_endpoint": "collector:4318"}}, "observability.otlp_endpoint"),
    ({"observability": {"otlp_headers": {"a": 1}}}, "observability.otlp_headers"),
    ({"observability": {"bogus": 1}}, "observability.bogus"),
    ({"cache": {"embedding_pooling": "max"}}, "cache.embedding_pooling"),
    ({"cache": {"embedding_model": "/no/such/model.onnx"}}, "cache.embedding_model"),
    ({"cache": {"keys": {"vk-1": {"threshold": 0}}}}, "cache.keys.vk-1.threshold"),
    ({"routes": [{"models": ["*"], "provider": "m", "cache": {"ttl_seconds": 0}}]}, "routes[0].cache.ttl_seconds"),
    ({"routes": [{"models": ["*"], "provider": "m", "cache": {"max_entries": 0}}]}, "routes[0].cache.max_entries"),
])
def test_bad_values_name_the_key(table, needle):
    with pytest.raises(config.ConfigError) as ei:
        build(**table)
    assert needle in str(ei.value)


def test_traces_without_the_sdk_say_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a))
    with pytest.raises(config.ConfigError) as ei:
        build(observability={"otlp_endpoint": "http://localhost:4318"})
    assert "finops-gateway[otel]" in str(ei.value)


def test_defaults_and_which_routes_cache():
    cfg = build()
    o = cfg.observability
    assert (o.request_log, o.log_retention_days, o.otlp_endpoint, o.metrics_auth) == (True, 30.0, "", False)
    assert cfg.caching is False
    cfg = build(routes=[{"models": ["a.*"], "provider": "m", "cache": {}}])
    assert cfg.caching is True and cfg.routes[0].cache.threshold == 0.85 and cfg.routes[0].cache.ttl_seconds == 300
    assert cfg.routes[0].name == "a.*"
    assert build(cache={"keys": {"vk-1": {"shared": True}}}).caching is False     # overrides adjust, never start
    assert build(routes=[{"models": ["a.*"], "provider": "m", "cache": {"enabled": False}}]).caching is False
