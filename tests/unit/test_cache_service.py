"""The response cache as the pipeline sees it (workers/cache/service.py): the x-bf-cache-* headers,
what a recorded answer keeps, per-key policy overrides, and the plan of a request."""
from __future__ import annotations

import msgpack
import pytest

from finops.shared import config as configmod
from finops.shared.config import CachePolicy
from finops.shared.errors import GatewayError
from finops.shared.governance import VirtualKey
from finops.shared.model import ChatRequest, Message, TextBlock
from finops.workers.cache import keys, service
from finops.workers.cache.service import Cache, parse_ttl, recorded_answer, request_options
from finops.workers.request import Request


# --- parse_ttl ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("300", 300), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1.5h", 5400),
    (" 5M ", 300), ("30d", 30 * 86400), ("0.5", 0.5),
])
def test_parse_ttl(value, seconds):
    assert parse_ttl(value) == seconds


@pytest.mark.parametrize("value", ["0", "-5", "soon", "31d", "", "s", "0m", "nan", "inf", "5w", "5 minutes",
                                   "2592001"])
def test_parse_ttl_rejects(value):
    with pytest.raises(GatewayError) as ei:
        parse_ttl(value)
    assert ei.value.code == "ValidationException" and ei.value.status == 400
    assert "x-bf-cache-ttl" in ei.value.message


# --- request_options ----------------------------------------------------------------------------------

POLICY = CachePolicy(threshold=0.85, ttl_seconds=300, semantic=True)


def test_request_options_defaults_come_from_the_policy():
    assert request_options({}, POLICY) == {"ttl": 300, "threshold": 0.85, "exact": True, "semantic": True,
                                           "store": True, "key": ""}
    off = request_options({}, CachePolicy(semantic=False, threshold=0.9, ttl_seconds=60))
    assert (off["semantic"], off["threshold"], off["ttl"]) == (False, 0.9, 60)


def test_ttl_header():
    assert request_options({"x-bf-cache-ttl": "2h"}, POLICY)["ttl"] == 7200


@pytest.mark.parametrize("header, expected", [("0.95", 0.95), ("0.5", 0.85), ("0.85", 0.85), ("1", 1.0)])
def test_threshold_may_only_be_stricter(header, expected):
    assert request_options({"x-bf-cache-threshold": header}, POLICY)["threshold"] == expected


@pytest.mark.parametrize("header, value", [
    ("x-bf-cache-threshold", "0"), ("x-bf-cache-threshold", "1.5"), ("x-bf-cache-threshold", "high"),
    ("x-bf-cache-threshold", "-0.9"), ("x-bf-cache-threshold", "nan"), ("x-bf-cache-threshold", ""),
    ("x-bf-cache-ttl", "forever"), ("x-bf-cache-type", "fuzzy"), ("x-bf-cache-type", "exact"),
])
def test_bad_header_values_are_a_400_naming_the_header(header, value):
    with pytest.raises(GatewayError) as ei:
        request_options({header: value}, POLICY)
    assert ei.value.code == "ValidationException" and ei.value.status == 400
    assert ei.value.message.startswith(header)


@pytest.mark.parametrize("kind, exact, semantic", [("direct", True, False), ("semantic", False, True),
                                                   (" Direct ", True, False), ("SEMANTIC", False, True)])
def test_cache_type(kind, exact, semantic):
    out = request_options({"x-bf-cache-type": kind}, POLICY)
    assert (out["exact"], out["semantic"]) == (exact, semantic)


def test_semantic_type_cannot_turn_on_a_route_without_semantic():
    out = request_options({"x-bf-cache-type": "semantic"}, CachePolicy(semantic=False))
    assert out["semantic"] is False


@pytest.mark.parametrize("value, store", [("true", False), ("1", False), ("yes", False), ("TRUE", False),
                                          (" true ", False), ("false", True), ("0", True), ("no", True)])
def test_no_store(value, store):
    assert request_options({"x-bf-cache-no-store": value}, POLICY)["store"] is store


def test_explicit_key_disables_the_semantic_layer():
    out = request_options({"x-bf-cache-key": "faq-7"}, POLICY)
    assert (out["key"], out["exact"], out["semantic"]) == ("faq-7", True, False)
    # even with type=semantic: the key is exact by definition
    out = request_options({"x-bf-cache-key": "faq-7", "x-bf-cache-type": "semantic"}, POLICY)
    assert (out["exact"], out["semantic"]) == (True, False)


# --- recorded_answer ----------------------------------------------------------------------------------

HEADERS = [("content-type", "application/json"), ("x-amzn-RequestId", "abc"), ("x-bf-target", "mock/m"),
           ("X-BF-Cost-USD", "0.1"), ("x-amzn-bedrock-input-token-count", "5")]
KEPT = [["content-type", "application/json"], ["x-amzn-bedrock-input-token-count", "5"]]


def test_recorded_non_stream_answer():
    tape = [("head", 200, HEADERS, False), ("body", b'{"output": 1}')]
    assert recorded_answer(tape) == {"status": 200, "stream": False, "usage": {}, "headers": KEPT,
                                     "body": b'{"output": 1}'}


def test_recorded_stream_answer():
    usage = {"in": 5, "out": 7, "cr": 0, "cw": 0}
    tape = [("head", 200, HEADERS, True),
            ("chunks", [("messageStart", b"a"), ("contentBlockDelta", b"b")]),
            ("chunks", [("messageStop", b"c")]),
            ("end", usage)]
    ans = recorded_answer(tape)
    assert ans["stream"] is True and ans["status"] == 200 and ans["headers"] == KEPT
    assert ans["chunks"] == [[["messageStart", b"a"], ["contentBlockDelta", b"b"]], [["messageStop", b"c"]]]
    assert ans["usage"] == usage
    # what the actor stores survives msgpack unchanged
    assert msgpack.unpackb(msgpack.packb(ans, use_bin_type=True), raw=False) == ans


@pytest.mark.parametrize("tape", [
    None,                                                            # an error cleared the tape
    [],
    [("head", 200, HEADERS, False)],                                 # no body
    [("head", 200, HEADERS, True), ("chunks", [("messageStart", b"a")])],        # stream without end
    [("head", 200, HEADERS, True)],
    [("head", 429, HEADERS, False), ("body", b"{}")],                # not a 200
    [("head", 500, HEADERS, True), ("end", {})],
    [("body", b"{}")],                                               # no head
    [("head", 200, HEADERS, False), ("body", b"{}"), ("body", b"{}")],
    [("head", 200, HEADERS, False), ("chunks", [])],
])
def test_incomplete_or_failed_answers_are_not_recorded(tape):
    assert recorded_answer(tape) is None


async def test_replay_sends_the_recorded_answer():
    class FakeReply:
        def __init__(self):
            self.sent = []

        async def head(self, status, headers, stream):
            self.sent.append(("head", status, headers, stream))

        async def body(self, data):
            self.sent.append(("body", data))

        async def chunks(self, events):
            self.sent.append(("chunks", events))

        async def end(self, usage=None):
            self.sent.append(("end", usage))

    usage = {"in": 1, "out": 2, "cr": 0, "cw": 0}
    tape = [("head", 200, HEADERS, True), ("chunks", [("messageStart", b"a")]), ("end", usage)]
    ans = msgpack.unpackb(msgpack.packb(recorded_answer(tape), use_bin_type=True), raw=False)
    r = FakeReply()
    got = await Cache.replay(service.Hit("hit-exact", ans, 1.0, 0.0), r, [["x-bf-cache", "hit-exact"]])
    assert got == usage
    assert r.sent == [("head", 200, KEPT + [["x-bf-cache", "hit-exact"]], True),
                      ("chunks", [("messageStart", b"a")]), ("end", usage)]


# --- Cache.policy and plan ----------------------------------------------------------------------------

def make_cfg(tmp_path, **cache):
    raw = {
        "providers": {"mock": {"kind": "mock"}},
        "routes": [
            {"models": ["claude*"], "provider": "mock", "name": "claude",
             "cache": {"threshold": 0.9, "ttl_seconds": 600, "max_entries": 50}},
            {"models": ["shared*"], "provider": "mock", "name": "shared", "cache": {"shared": True}},
            {"models": ["off*"], "provider": "mock", "name": "off", "cache": {"enabled": False}},
        ],
        "default_route": {"provider": "mock"},
        "server": {"data_dir": str(tmp_path)},
        "cache": {"embedding_model": "none",
                  "keys": {"vk-strict": {"threshold": 0.97, "ttl_seconds": 30},
                           "vk-off": {"enabled": False},
                           "vk-on": {"semantic": False},
                           "vk-enable": {"enabled": True},
                           "vk-share": {"shared": True}},
                  **cache},
    }
    return configmod.build(raw, "test")


@pytest.fixture
def cache(tmp_path):
    c = Cache(make_cfg(tmp_path))
    yield c
    c.close()


def vk(kid):
    return VirtualKey(id=kid, secret="s")


def test_config_builds_with_a_data_dir(tmp_path):
    cfg = make_cfg(tmp_path)
    assert cfg.server.data_dir == str(tmp_path) and cfg.run_dir == str(tmp_path / "run")
    assert cfg.caching and cfg.cache.keys["vk-strict"] == {"threshold": 0.97, "ttl_seconds": 30}


def test_policy_of_a_route(cache):
    route = cache.cfg.route_for("claude-3")
    p = cache.policy(route, None)
    assert (p.threshold, p.ttl_seconds, p.max_entries, p.shared, p.semantic) == (0.9, 600, 50, False, True)
    assert cache.policy(route, vk("vk-plain")) == p


def test_key_overrides_merge_into_the_route_policy(cache):
    route = cache.cfg.route_for("claude-3")
    p = cache.policy(route, vk("vk-strict"))
    # overridden: threshold, ttl; kept from the route: max_entries
    assert (p.threshold, p.ttl_seconds, p.max_entries, p.enabled) == (0.97, 30, 50, True)
    # the route's own policy is not changed by the merge
    assert cache.policy(route, None).threshold == 0.9


def test_key_override_can_turn_caching_off(cache):
    assert cache.policy(cache.cfg.route_for("claude-3"), vk("vk-off")) is None


@pytest.mark.parametrize("key", [None, "vk-plain", "vk-on", "vk-strict", "vk-share", "vk-enable"])
def test_a_route_without_cache_stays_off_whatever_the_key(cache, key):
    """An override adjusts a route's cache; it never switches one on."""
    route = cache.cfg.route_for("titan")           # the default route: no cache table
    assert route.cache is None
    assert cache.policy(route, vk(key) if key else None) is None
    assert cache.plan(call(model="titan", key=vk(key) if key else None), route, req()) is None


@pytest.mark.parametrize("key", [None, "vk-plain", "vk-on", "vk-enable"])
def test_disabled_route_stays_off_whatever_the_key(cache, key):
    route = cache.cfg.route_for("off-model")
    assert cache.policy(route, vk(key) if key else None) is None


def test_key_overrides_alone_do_not_start_the_cache(tmp_path):
    raw = {"providers": {"mock": {"kind": "mock"}}, "default_route": {"provider": "mock"},
           "server": {"data_dir": str(tmp_path)},
           "cache": {"keys": {"vk-a": {"threshold": 0.95}, "vk-b": {"enabled": True}}}}
    assert configmod.build(raw, "test").caching is False


def call(op="converse", model="claude-3", key=None, headers=None):
    return Request(rid="r1", op=op, model_id=model, headers=headers or {}, environment="", started=0.0, body=b"",
                   key=key)


def req(question="How do I reverse a list?"):
    return ChatRequest(messages=[Message("user", [TextBlock(question)])], system=["terse"])


def test_plan(cache):
    route = cache.cfg.route_for("claude-3")
    p = cache.plan(call(key=vk("vk-a")), route, req())
    assert p.owner == "key:vk-a" and p.ns == "claude|key:vk-a"
    assert (p.ttl, p.threshold, p.exact_layer, p.store) == (600, 0.9, True, True)
    assert p.semantic_layer is False                  # embedding_model = "none"
    assert p.question == "How do I reverse a list?"
    ctx, q = keys.split(req())
    assert p.scope == keys.scope_key("converse", "claude-3", "key:vk-a", ctx)
    assert p.exact == keys.exact_key(p.scope, q)


def test_plan_separates_keys_unless_the_route_shares(cache):
    route = cache.cfg.route_for("claude-3")
    a, b = cache.plan(call(key=vk("vk-a")), route, req()), cache.plan(call(key=vk("vk-b")), route, req())
    anon = cache.plan(call(), route, req())
    assert len({a.scope, b.scope, anon.scope}) == 3 and anon.owner == "anonymous"
    shared = cache.cfg.route_for("shared-1")
    a, b = (cache.plan(call(model="shared-1", key=vk(k)), shared, req()) for k in ("vk-a", "vk-b"))
    assert a.owner == b.owner == "shared:shared" and a.scope == b.scope and a.exact == b.exact
    # a key override can make a route shared for that key
    s = cache.plan(call(key=vk("vk-share")), route, req())
    assert s.owner == "shared:claude"


def test_plan_uses_the_explicit_key_and_headers(cache):
    route = cache.cfg.route_for("claude-3")
    p1 = cache.plan(call(key=vk("vk-a"), headers={"x-bf-cache-key": "k1"}), route, req("one"))
    p2 = cache.plan(call(key=vk("vk-a"), headers={"x-bf-cache-key": "k1"}), route, req("two"))
    assert p1.exact == p2.exact == keys.explicit_key("converse", "claude-3", "key:vk-a", "k1")
    p = cache.plan(call(key=vk("vk-a"), headers={"x-bf-cache-ttl": "1m", "x-bf-cache-no-store": "1",
                                                 "x-bf-cache-threshold": "0.95"}), route, req())
    assert (p.ttl, p.store, p.threshold) == (60, False, 0.95)
    with pytest.raises(GatewayError):
        cache.plan(call(headers={"x-bf-cache-ttl": "never"}), route, req())


def test_plan_is_none_when_not_cached(cache):
    route = cache.cfg.route_for("claude-3")
    assert cache.plan(call(op="count-tokens"), route, req()) is None
    assert cache.plan(call(key=vk("vk-off")), route, req()) is None
    assert cache.plan(call(model="titan"), cache.cfg.route_for("titan"), req()) is None
    from finops.shared.model import EmbedRequest
    assert cache.plan(call(op="invoke"), route, EmbedRequest(texts=["x"])) is None


def test_plan_of_a_request_with_a_lone_surrogate_does_not_fail(cache):
    """JSON may carry a lone "\\ud800" escape; it cannot be hashed as UTF-8. Such a request is
    not cached, rather than failing with an internal error because the route caches."""
    route = cache.cfg.route_for("claude-3")
    assert cache.plan(call(), route, req("hi \ud800 there")) is None
    bad_ctx = ChatRequest(messages=[Message("user", [TextBlock("q")])], system=["sys \udfff"])
    assert cache.plan(call(), route, bad_ctx) is None
    assert cache.plan(call(headers={"x-bf-cache-key": "k"}), route, req("hi \ud800")) is None
    assert cache.plan(call(), route, req("fine")) is not None


def test_semantic_layer_needs_an_embedder_and_a_question(tmp_path):
    from finops.workers.cache.embedder import HashEmbedder
    c = Cache(make_cfg(tmp_path))
    try:
        c.embedder = HashEmbedder()
        route = c.cfg.route_for("claude-3")
        assert c.plan(call(), route, req()).semantic_layer is True
        assert c.plan(call(), route, req("   ")).semantic_layer is False
        assert c.plan(call(headers={"x-bf-cache-type": "direct"}), route, req()).semantic_layer is False
        assert c.plan(call(key=vk("vk-on")), route, req()).semantic_layer is False
    finally:
        c.close()


def test_store_sends_only_complete_answers_within_the_size_limit(tmp_path):
    c = Cache(make_cfg(tmp_path, max_entry_bytes=2000))
    sent = []
    c.client.put = lambda msg: sent.append(msg) or True
    try:
        route = c.cfg.route_for("claude-3")
        cl = call(key=vk("vk-a"))
        p = c.plan(cl, route, req())
        ok = [("head", 200, HEADERS, False), ("body", b'{"output": 1}')]
        assert c.store(p, cl, ok, None, 0.25) is True
        m = sent[-1]
        assert (m["scope"], m["exact"], m["ns"], m["ns_max"], m["owner"], m["model"], m["ttl"], m["saved"]) == \
            (p.scope, p.exact, "claude|key:vk-a", 50, "key:vk-a", "claude-3", 600, 0.25)
        assert msgpack.unpackb(m["answer"], raw=False) == recorded_answer(ok)
        assert "vec" not in m
        assert c.store(p, cl, None, None, 0.25) is False
        assert c.store(p, cl, [("head", 200, HEADERS, False)], None, 0.25) is False
        big = [("head", 200, HEADERS, False), ("body", b"x" * 3000)]
        assert c.store(p, cl, big, None, 0.25) is False
        p.semantic_layer = True          # a semantic plan whose lookup could not embed: skipped
        assert c.store(p, cl, ok, None, 0.25) is False
        assert len(sent) == 1
    finally:
        c.close()
