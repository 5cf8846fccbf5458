"""One semantic cache for several `finops serve` nodes ([cache] replication = "redis"), through boto3:
two nodes (own ports and data dirs) on one real Redis, the workers embedding with the real MiniLM, a
fake OpenAI upstream counting what reaches it. A question answered through node a is, a moment
later, a semantic hit on node b for its paraphrase (and an exact hit for itself), never for
another virtual key; a node started later starts warm."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.helpers.fake_providers import FakeOpenAI
from tests.helpers.gateway import Gateway
from tests.system.test_cache import Client

ADMIN = "admin-token-cache-fleet-0123"
SECRET_A = "secret-a-0123456789abcdef"
SECRET_B = "secret-b-0123456789abcdef"
NO_STORE = {"x-bf-cache-no-store": "true"}   # b's own misses while it polls must not fill its cache


def config(o: FakeOpenAI, redis_url: str) -> str:
    return f"""
[providers.openai]
kind = "openai"
base_url = "{o.url}"
keys = [{{api_key = "sk-test-openai"}}]

[[routes]]
models = ["cached.*"]
provider = "openai"
model = "gpt-4o-mini"
[routes.cache]

[default_route]
provider = "openai"
model = "gpt-4o-mini"

[pricing."*"]
input = 3.0
output = 15.0

[governance]
admin_token = "{ADMIN}"
redis_url = "{redis_url}"

[[governance.keys]]
id = "vk-a"
secret = "{SECRET_A}"

[[governance.keys]]
id = "vk-b"
secret = "{SECRET_B}"

[cache]
replication = "redis"
"""


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as o:
        yield o


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, upstream, redis_server):
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    cfg = config(upstream, redis_server.url)
    gws = {}
    try:
        for name in ("a", "b"):
            gws[name] = Gateway(tmp_path_factory.mktemp(f"node-{name}"), cfg, workers=1,
                                extra_env={"FINOPS_NODE_NAME": f"node-{name}"}).start()
        yield gws, cfg
    finally:
        for g in gws.values():
            g.stop()


def stats(gw) -> dict:
    req = urllib.request.Request(gw.url + "/admin/cache", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def poll(ask, want: str, seconds: float, tries: list | None = None):
    """Ask until the cache answers `want` or `seconds` have passed; the last answer. `tries`
    collects each answer's verdict."""
    deadline = time.monotonic() + seconds
    while True:
        v, h, r = ask()
        if tries is not None:
            tries.append(v)
        if v == want or time.monotonic() > deadline:
            return v, h, r


def test_a_paraphrase_on_node_b_hits_node_as_answer_within_a_second_and_never_for_another_key(fleet, upstream):
    gws, _ = fleet
    on_a = Client(gws["a"], **{"x-bf-vk": SECRET_A})
    b_key_a = Client(gws["b"], **{"x-bf-vk": SECRET_A})
    b_key_b = Client(gws["b"], **{"x-bf-vk": SECRET_B})
    v, h, first = on_a.ask("What is the capital city of France?")
    assert v == "miss"
    calls = len(upstream.requests)

    tries: list = []
    v, h, r = poll(lambda: b_key_a.ask("Which city is the capital of France?", **NO_STORE), "hit-semantic", 1.0,
                   tries)
    assert v == "hit-semantic", f"node b did not find node a's answer within 1 s of it: {tries}"
    assert 0.85 <= float(h["x-bf-cache-similarity"]) < 1.0
    assert r["output"] == first["output"] and h["x-bf-cost-usd"] == "0.000000"
    assert b_key_a.ask("What is the capital city of France?", **NO_STORE)[0] == "hit-exact"   # exact layer too
    calls += len(tries) - 1                     # polls before the entry arrived went upstream (not stored)
    assert len(upstream.requests) == calls      # the hits did not

    # another virtual key on node b: its own scope, a miss, paraphrase or not
    assert b_key_b.ask("What is the capital city of France?", **NO_STORE)[0] == "miss"
    assert b_key_b.ask("Which city is the capital of France?", **NO_STORE)[0] == "miss"
    assert len(upstream.requests) == calls + 2
    s = stats(gws["b"])
    assert s["replication"]["node"] == "node-b" and s["replication"]["applied"] >= 1


def test_entries_travel_both_ways_and_a_new_node_starts_warm(fleet, tmp_path, upstream):
    gws, cfg = fleet
    on_b = Client(gws["b"], **{"x-bf-vk": SECRET_B})
    assert on_b.ask("How many moons does Mars have?")[0] == "miss"
    on_a = Client(gws["a"], **{"x-bf-vk": SECRET_B})
    assert poll(lambda: on_a.ask("How many moons does Mars have?", **NO_STORE), "hit-exact", 5.0)[0] == "hit-exact"
    calls = len(upstream.requests)
    with Gateway(tmp_path, cfg, workers=1, extra_env={"FINOPS_NODE_NAME": "node-c"}) as c:
        on_c = Client(c, **{"x-bf-vk": SECRET_B})
        v = poll(lambda: on_c.ask("How many moons orbit Mars?", **NO_STORE), "hit-semantic", 10.0)[0]
        assert v == "hit-semantic"
        assert on_c.ask("How many moons does Mars have?", **NO_STORE)[0] == "hit-exact"
    assert len(upstream.requests) == calls


def metric(gw, what: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "finops_cache_replication_records_total" and s.labels.get("what") == what:
                return s.value
    return 0.0


def test_replication_is_in_the_metrics_and_the_stats(fleet):
    gws, _ = fleet
    Client(gws["a"], **{"x-bf-vk": SECRET_A}).ask("What is the speed of light in a vacuum?")
    s = stats(gws["a"])["replication"]
    assert s["node"] == "node-a" and s["connected"] and s["dropped"] == 0
    deadline = time.monotonic() + 10        # the actors report once a second
    while metric(gws["a"], "published") < 1 or metric(gws["b"], "applied") < 1:
        assert time.monotonic() < deadline, "the replication counters never reached /metrics"
        time.sleep(0.2)
