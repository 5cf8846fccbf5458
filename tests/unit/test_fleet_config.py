"""The several-nodes keys of [governance] and [server]: what each needs, and the errors that say so."""
from __future__ import annotations

import socket

import pytest

from finops.shared.config import ConfigError, build, load

PG = "postgresql://finops:pw@db.internal:5432/finops"


def gov(**kw):
    return build({"governance": kw}, "test").governance


def test_embedded_defaults_need_neither_redis_nor_postgres():
    g = gov()
    assert (g.ledger, g.store, g.redis_failure) == ("local", "sqlite", "closed")
    assert g.redis_url == g.postgres_url == ""


def test_redis_ledger_with_its_durable_spend_store():
    g = gov(ledger="redis", redis_url="rediss://:s3cret@redis:6380/0", postgres_url=PG, redis_failure="open")
    assert (g.ledger, g.redis_failure) == ("redis", "open")


@pytest.mark.parametrize("kw, message", [
    ({"ledger": "redis", "postgres_url": PG}, "governance.redis_url: ledger = \"redis\" needs a redis://"),
    ({"ledger": "redis", "redis_url": "http://redis:6379", "postgres_url": PG}, "governance.redis_url"),
    ({"ledger": "redis", "redis_url": "redis://r:6379"}, "governance.postgres_url: ledger = \"redis\" needs PostgreSQL"),
    ({"store": "postgres"}, "governance.postgres_url: store = \"postgres\" needs"),
    ({"store": "postgres", "postgres_url": "mysql://x"}, "governance.postgres_url: expected postgresql://"),
    ({"ledger": "etcd"}, "governance.ledger"),
    ({"redis_failure": "maybe"}, "governance.redis_failure"),
    ({"redis_ca_file": "/nonexistent/ca.pem"}, "governance.redis_ca_file: no such file"),
])
def test_each_missing_piece_is_named(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        gov(**kw)


def test_node_name_defaults_to_the_host_name_and_reads_the_environment(tmp_path):
    cfg = load(None, environ={"FINOPS_DATA_DIR": str(tmp_path)})
    assert cfg.server.node_name == "" and cfg.server.node == socket.gethostname()
    cfg = load(None, environ={"FINOPS_DATA_DIR": str(tmp_path), "FINOPS_NODE_NAME": "b"})
    assert cfg.server.node == "b"


def test_cache_replication_uses_the_governance_redis_unless_it_has_its_own():
    from finops.workers.cache.replication import redis_target, where
    cfg = build({"governance": {"redis_url": "rediss://:pw@redis.internal:6380/0"},
                 "cache": {"replication": "redis"}}, "test")
    assert cfg.cache.replication == "redis" and cfg.cache.replication_maxlen == 100_000
    assert redis_target(cfg) == ("rediss://:pw@redis.internal:6380/0", "")
    assert where(redis_target(cfg)[0]) == "redis.internal:6380"          # never the password
    cfg = build({"governance": {"redis_url": "redis://a:6379/0"},
                 "cache": {"replication": "redis", "redis_url": "redis://cache:6379/2"}}, "test")
    assert redis_target(cfg)[0] == "redis://cache:6379/2"
    assert build({}, "test").cache.replication == "off"


@pytest.mark.parametrize("raw, message", [
    ({"cache": {"replication": "redis"}}, "cache.redis_url: replication = \"redis\" needs a redis://"),
    ({"cache": {"replication": "redis", "redis_url": "http://r:6379"}}, "cache.redis_url: expected a redis://"),
    ({"cache": {"replication": "gossip"}}, "cache.replication"),
    ({"cache": {"redis_ca_file": "/nonexistent/ca.pem"}}, "cache.redis_ca_file: no such file"),
])
def test_cache_replication_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build(raw, "test")
