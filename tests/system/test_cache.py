"""The response cache through boto3 against the real processes (cache actor, workers with the real
MiniLM embedder) and a fake OpenAI upstream that counts what reaches it."""
from __future__ import annotations

import json
import os
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig

from tests.helpers.fake_providers import FakeOpenAI
from tests.helpers.gateway import BIN, Gateway, request_log

ADMIN = "admin-token-cache-tests-0123"
MODEL = "cached.model-v1"
UNCACHED = "plain.model-v1"       # the default route: no [routes.cache]
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def config(o: FakeOpenAI, extra: str = "") -> str:
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

[[routes]]
models = ["shared.*"]
provider = "openai"
model = "gpt-4o-mini"
[routes.cache]
shared = true

[[routes]]
models = ["exactonly.*"]
provider = "openai"
model = "gpt-4o-mini"
[routes.cache]
semantic = false

[[routes]]
models = ["anthropic.*"]
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

[[governance.keys]]
id = "vk-a"
secret = "secret-a-0123456789abcdef"

[[governance.keys]]
id = "vk-b"
secret = "secret-b-0123456789abcdef"

[[governance.keys]]
id = "vk-c"
secret = "secret-c-0123456789abcdef"

[cache.keys."vk-c"]               # adjusts the routes that cache; the default route has no cache
threshold = 0.99
{extra}
"""


class Client:
    """A boto3 client whose extra request headers can be changed between calls."""

    def __init__(self, gw, **headers):
        self.headers = dict(headers)
        self.c = boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                              aws_access_key_id="finops-dummy", aws_secret_access_key="finops-dummy",
                              config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                                read_timeout=60))

        def add(request, **kwargs):
            for k, v in self.headers.items():
                request.headers.add_header(k, v)
        self.c.meta.events.register_first("before-sign.bedrock-runtime.*", add)

    def ask(self, text, model=MODEL, system=None, **headers):
        saved, self.headers = self.headers, {**self.headers, **headers}
        try:
            kw = {"system": [{"text": system}]} if system else {}
            r = self.c.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}],
                                inferenceConfig={"maxTokens": 64}, **kw)
        finally:
            self.headers = saved
        h = r["ResponseMetadata"]["HTTPHeaders"]
        return h.get("x-bf-cache"), h, r

    def stream(self, text, model=MODEL):
        r = self.c.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])
        return r["ResponseMetadata"]["HTTPHeaders"].get("x-bf-cache"), list(r["stream"])


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as o:
        yield o


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    with Gateway(tmp_path_factory.mktemp("cache"), config(upstream)) as g:
        yield g


@pytest.fixture()
def anon(gw):
    return Client(gw)


def upstream_calls(o) -> int:
    return len(o.requests)


def admin(gw, method, path):
    req = urllib.request.Request(gw.url + path, method=method, headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def without_metadata_latency(events):
    """Stream events with the per-answer latency fields the replay keeps as recorded."""
    return json.loads(json.dumps(events, default=str))


# --- hits and misses --------------------------------------------------------------------------------

def test_identical_question_is_an_exact_hit_that_costs_no_upstream_call(anon, upstream):
    v1, h1, r1 = anon.ask("How do I reverse a list in Python?")
    n = upstream_calls(upstream)
    v2, h2, r2 = anon.ask("How do I reverse a list in Python?")
    assert (v1, v2) == ("miss", "hit-exact")
    assert upstream_calls(upstream) == n                      # nothing reached the provider
    assert r2["output"] == r1["output"] and r2["usage"] == r1["usage"] and r2["stopReason"] == r1["stopReason"]
    assert h2["x-bf-cost-usd"] == "0.000000" and float(h2["x-bf-cache-saved-usd"]) > 0
    assert float(h1["x-bf-cost-usd"]) == pytest.approx(float(h2["x-bf-cache-saved-usd"]), abs=1e-6)


def test_whitespace_differences_are_the_same_exact_question(anon):
    anon.ask("What is the boiling point of water at sea level?")
    v, _, _ = anon.ask("  What is the boiling point of water   at sea level?\n")
    assert v == "hit-exact"


def test_paraphrase_is_a_semantic_hit_with_its_similarity(anon, upstream):
    anon.ask("What is the capital city of France?")
    n = upstream_calls(upstream)
    v, h, _ = anon.ask("Which city is the capital of France?")
    assert v == "hit-semantic"
    assert 0.85 <= float(h["x-bf-cache-similarity"]) < 1.0
    assert upstream_calls(upstream) == n


def test_unrelated_question_misses(anon):
    anon.ask("How many moons does Jupiter have?")
    v, h, _ = anon.ask("Write a haiku about autumn leaves.")
    assert v == "miss" and "x-bf-cache-similarity" not in h


def test_hard_negative_hits_at_the_default_threshold_and_direct_type_avoids_it(anon):
    """Documented result (docs/embeddings.md): MiniLM scores "string to int" against "int to
    string" at 0.998, so at the default 0.85 the reversed question gets the cached answer. That is
    the known limit of semantic caching; `x-bf-cache-type: direct` (or a route with
    semantic = false) is the way out for such traffic."""
    anon.ask("Convert a string to an int in Python")
    v, h, _ = anon.ask("Convert an int to a string in Python")
    assert v == "hit-semantic" and float(h["x-bf-cache-similarity"]) > 0.95
    v, _, _ = anon.ask("Convert an int to a string in Python", **{"x-bf-cache-type": "direct"})
    assert v == "miss"


def test_stricter_threshold_header_turns_a_paraphrase_into_a_miss(anon):
    anon.ask("How do I sort a dictionary by value in Python?")
    v, _, _ = anon.ask("How can I sort a Python dict by its values?", **{"x-bf-cache-threshold": "0.999"})
    assert v == "miss"
    # a looser value than the route's cannot loosen matching: an unrelated question still misses
    v, _, _ = anon.ask("What is the tallest mountain in Africa?", **{"x-bf-cache-threshold": "0.01"})
    assert v == "miss"


def test_bad_cache_headers_are_400_naming_the_header(anon):
    from botocore.exceptions import ClientError
    for name, value in (("x-bf-cache-ttl", "soon"), ("x-bf-cache-threshold", "2"), ("x-bf-cache-type", "fuzzy")):
        with pytest.raises(ClientError) as ei:
            anon.ask("anything at all", **{name: value})
        assert ei.value.response["Error"]["Code"] == "ValidationException"
        assert name in ei.value.response["Error"]["Message"]


def test_no_store_is_looked_up_but_not_stored(anon):
    v, _, _ = anon.ask("Name three primary colours.", **{"x-bf-cache-no-store": "true"})
    assert v == "miss"
    v, _, _ = anon.ask("Name three primary colours.")
    assert v == "miss"                     # the first answer was not stored
    v, _, _ = anon.ask("Name three primary colours.", **{"x-bf-cache-no-store": "true"})
    assert v == "hit-exact"                # no-store still looks up


def test_ttl_header_expires_the_entry(anon):
    v, _, _ = anon.ask("What year did the Apollo 11 mission land?", **{"x-bf-cache-ttl": "1s"})
    assert v == "miss"
    assert anon.ask("What year did the Apollo 11 mission land?")[0] == "hit-exact"
    time.sleep(1.5)
    assert anon.ask("What year did the Apollo 11 mission land?")[0] == "miss"


def test_explicit_cache_key_header(anon):
    anon.ask("first wording", **{"x-bf-cache-key": "faq-42"})
    v, _, r = anon.ask("a completely different wording", **{"x-bf-cache-key": "faq-42"})
    assert v == "hit-exact"


def test_other_context_is_another_scope(anon):
    anon.ask("Summarise the plot of Hamlet.", system="You are terse.")
    assert anon.ask("Summarise the plot of Hamlet.", system="You are verbose.")[0] == "miss"
    assert anon.ask("Summarise the plot of Hamlet.", model="cached.other-model")[0] == "miss"
    assert anon.ask("Summarise the plot of Hamlet.", system="You are terse.")[0] == "hit-exact"


# --- isolation --------------------------------------------------------------------------------------

def test_two_virtual_keys_never_see_each_others_answers(gw):
    a = Client(gw, **{"x-bf-vk": "secret-a-0123456789abcdef"})
    b = Client(gw, **{"x-bf-vk": "secret-b-0123456789abcdef"})
    assert a.ask("What is our internal launch codename?")[0] == "miss"
    assert a.ask("What is our internal launch codename?")[0] == "hit-exact"
    assert b.ask("What is our internal launch codename?")[0] == "miss"
    assert b.ask("What's our internal codename for the launch?")[0] == "hit-semantic"    # b's own entry
    assert Client(gw).ask("What is our internal launch codename?")[0] == "miss"           # anonymous: its own


def test_a_shared_route_serves_every_key_the_same_answer(gw):
    a = Client(gw, **{"x-bf-vk": "secret-a-0123456789abcdef"})
    b = Client(gw, **{"x-bf-vk": "secret-b-0123456789abcdef"})
    assert a.ask("What are the office opening hours?", model="shared.faq")[0] == "miss"
    assert b.ask("What are the office opening hours?", model="shared.faq")[0] == "hit-exact"


def test_exact_only_route_does_not_match_paraphrases(anon):
    anon.ask("How do I undo the last git commit?", model="exactonly.m")
    assert anon.ask("How can I revert my most recent git commit?", model="exactonly.m")[0] == "miss"
    assert anon.ask("How do I undo the last git commit?", model="exactonly.m")[0] == "hit-exact"


# --- per-key overrides ------------------------------------------------------------------------------

def test_a_key_override_adjusts_a_cached_route(gw):
    c = Client(gw, **{"x-bf-vk": "secret-c-0123456789abcdef"})
    assert c.ask("What is the capital city of Spain?")[0] == "miss"
    assert c.ask("What is the capital city of Spain?")[0] == "hit-exact"
    # a paraphrase anonymous callers get as a semantic hit (at the route's 0.85) is a miss at 0.99
    assert c.ask("Which city is the capital of Spain?")[0] == "miss"


def test_a_key_override_does_not_turn_the_cache_on_for_a_route_without_one(gw, upstream):
    c = Client(gw, **{"x-bf-vk": "secret-c-0123456789abcdef"})
    n = upstream_calls(upstream)
    v1, h1, r1 = c.ask("How many legs does a spider have?", model=UNCACHED)
    v2, h2, r2 = c.ask("How many legs does a spider have?", model=UNCACHED)
    assert upstream_calls(upstream) == n + 2                  # both reached the provider
    assert (v1, v2) == (None, None) and "x-bf-cache-saved-usd" not in h2
    assert float(h1["x-bf-cost-usd"]) > 0 and float(h2["x-bf-cost-usd"]) > 0


def test_key_overrides_alone_leave_the_cache_off(tmp_path, upstream):
    import subprocess
    from urllib.error import HTTPError

    cfg = f"""
[providers.openai]
kind = "openai"
base_url = "{upstream.url}"
keys = [{{api_key = "sk-test-openai"}}]

[default_route]
provider = "openai"
model = "gpt-4o-mini"

[pricing."*"]
input = 3.0
output = 15.0

[governance]
admin_token = "{ADMIN}"

[[governance.keys]]
id = "vk-a"
secret = "secret-a-0123456789abcdef"

[cache.keys."vk-a"]
threshold = 0.95
"""
    g = Gateway(tmp_path, cfg)
    out = subprocess.run([os.path.join(BIN, "finops"), "check-config"], env=g.env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cache: off" in out.stdout and "[routes.cache]" in out.stdout, out.stdout
    with g:
        a = Client(g, **{"x-bf-vk": "secret-a-0123456789abcdef"})
        n = upstream_calls(upstream)
        v1, _, _ = a.ask("What is the chemical symbol for gold?", model=UNCACHED)
        v2, h2, _ = a.ask("What is the chemical symbol for gold?", model=UNCACHED)
        assert (v1, v2) == (None, None) and float(h2["x-bf-cost-usd"]) > 0
        assert upstream_calls(upstream) == n + 2
        with pytest.raises(HTTPError) as ei:
            admin(g, "GET", "/admin/cache")
        assert ei.value.code == 404
        msg = json.loads(ei.value.read())["message"]
        assert "[routes.cache]" in msg and "turns it on" not in msg, msg


# --- streams ----------------------------------------------------------------------------------------

def test_converse_stream_hit_replays_the_same_events(anon, upstream):
    v1, live = anon.stream("Tell me a short story about a lighthouse.")
    n = upstream_calls(upstream)
    v2, replay = anon.stream("Tell me a short story about a lighthouse.")
    assert (v1, v2) == ("miss", "hit-exact")
    assert upstream_calls(upstream) == n
    assert [list(e) for e in replay] == [list(e) for e in live]
    assert replay == live


def test_invoke_model_with_response_stream_hit_replays_the_same_chunks(gw, upstream):
    c = Client(gw).c
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Describe the colour blue in one sentence."}]})
    runs = []
    for _ in range(2):
        r = c.invoke_model_with_response_stream(modelId=CLAUDE, body=body)
        chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
        runs.append((r["ResponseMetadata"]["HTTPHeaders"].get("x-bf-cache"), chunks))
    assert [v for v, _ in runs] == ["miss", "hit-exact"]
    assert runs[1][1] == runs[0][1]
    assert runs[0][1][0]["type"] == "message_start" and runs[0][1][-1]["type"] == "message_stop"


def test_invoke_model_hit(gw):
    c = Client(gw).c
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Name a prime number above 100."}]})
    out = []
    for _ in range(2):
        r = c.invoke_model(modelId=CLAUDE, body=body)
        out.append((r["ResponseMetadata"]["HTTPHeaders"].get("x-bf-cache"), json.loads(r["body"].read())))
    assert [v for v, _ in out] == ["miss", "hit-exact"] and out[0][1] == out[1][1]


# --- accounting -------------------------------------------------------------------------------------

def test_hits_are_logged_with_their_saving_and_the_ledger_keeps_it(gw):
    a = Client(gw, **{"x-bf-vk": "secret-a-0123456789abcdef"})
    _, h1, _ = a.ask("Which planet is known as the red planet?")
    _, h2, _ = a.ask("Which planet is known as the red planet?")
    assert h2["x-bf-cache"] == "hit-exact"
    rid = h2["x-amzn-requestid"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = [r for r in request_log(gw.data_dir) if r["id"] == rid]
        if rows:
            break
        time.sleep(0.1)
    assert rows and rows[0]["cache"] == "hit-exact" and rows[0]["cost_usd"] == 0
    assert rows[0]["saved_usd"] == pytest.approx(float(h1["x-bf-cost-usd"]), abs=1e-6)
    time.sleep(0.1)
    savings = admin(gw, "GET", "/admin/usage?key=vk-a")["savings"]
    assert sum(s["saved_usd"] for s in savings) >= float(h1["x-bf-cost-usd"]) - 1e-6


def test_admin_stats_and_clear_by_key(gw):
    a = Client(gw, **{"x-bf-vk": "secret-a-0123456789abcdef"})
    a.ask("What is the speed of light in vacuum?")
    stats = admin(gw, "GET", "/admin/cache")
    assert stats["entries"] >= 1 and stats["semantic"] is True
    assert stats["embedding_model"].startswith("all-MiniLM-L6-v2-onnx-int8@8199be6f")
    assert stats["by_owner"].get("key:vk-a", 0) >= 1
    out = admin(gw, "DELETE", "/admin/cache?key=vk-a")
    assert out["removed"] >= 1
    assert admin(gw, "GET", "/admin/cache")["by_owner"].get("key:vk-a", 0) == 0
    assert a.ask("What is the speed of light in vacuum?")[0] == "miss"


# --- restart and fallback ---------------------------------------------------------------------------

def test_entries_survive_a_restart(tmp_path, upstream):
    with Gateway(tmp_path, config(upstream)) as g:
        assert Client(g).ask("What does HTTP status 418 mean?")[0] == "miss"
        assert Client(g).stream("Count from one to five.")[0] == "miss"
    with Gateway(tmp_path, config(upstream)) as g:
        assert Client(g).ask("What does HTTP status 418 mean?")[0] == "hit-exact"
        assert Client(g).ask("What is the meaning of HTTP status code 418?")[0] == "hit-semantic"
        assert Client(g).stream("Count from one to five.")[0] == "hit-exact"


def test_without_an_embedding_model_the_cache_matches_exactly(tmp_path, upstream):
    with Gateway(tmp_path, config(upstream, '[cache]\nembedding_model = "none"\n')) as g:
        c = Client(g)
        assert c.ask("How do I reverse a list in Python?")[0] == "miss"
        assert c.ask("What's the way to reverse a Python list?")[0] == "miss"
        assert c.ask("How do I reverse a list in Python?")[0] == "hit-exact"
        stats = admin(g, "GET", "/admin/cache")
        assert stats["semantic"] is False and "none" in stats["semantic_off_reason"]


def test_a_model_that_cannot_load_falls_back_to_exact_and_says_so(tmp_path, upstream):
    from finops.workers.cache import embedder
    model = str(embedder._package_model())
    extra = f'[cache]\nembedding_model = "{model}"\nembedding_sha256 = "{"0" * 64}"\n'
    with Gateway(tmp_path, config(upstream, extra)) as g:
        c = Client(g)
        assert c.ask("How do I reverse a list in Python?")[0] == "miss"
        assert c.ask("How do I reverse a list in Python?")[0] == "hit-exact"
        stats = admin(g, "GET", "/admin/cache")
        assert stats["semantic"] is False and "sha256" in stats["semantic_off_reason"]
        assert "matches exactly only" in g.log()


def test_finops_cache_cli_with_the_gateway_running_and_stopped(tmp_path, upstream):
    import json as _json
    import subprocess

    g = Gateway(tmp_path, config(upstream))

    def cli(*args):
        r = subprocess.run([os.path.join(BIN, "finops"), "cache", *args], env=g.env(), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    with g:
        a = Client(g, **{"x-bf-vk": "secret-a-0123456789abcdef"})
        a.ask("How tall is Mount Everest?")
        a.ask("How tall is Mount Everest?", model="cached.other-model")
        Client(g).ask("How tall is Mount Everest?")
        stats = _json.loads(cli("stats", "--json"))
        assert stats["running"] is True and stats["entries"] == 3
        assert stats["by_owner"] == {"key:vk-a": 2, "anonymous": 1}
        assert "removed 1 cache entries" in cli("clear", "--key", "vk-a", "--model", "cached.other-model")
        assert a.ask("How tall is Mount Everest?", model="cached.other-model")[0] == "miss"   # cleared at once
        assert a.ask("How tall is Mount Everest?")[0] == "hit-exact"                         # the rest kept
    out = cli("stats")                                  # stopped: read from the cache file
    assert "gateway stopped" in out and "3 entries" in out
    assert "removed 3 cache entries" in cli("clear")
    assert _json.loads(cli("stats", "--json"))["entries"] == 0
