"""Load balancing, fallbacks, retries (over the keys of a target, then the targets), circuit breakers
and deadlines, through real boto3 clients against the real processes, with two fake OpenAI
upstreams on loopback told to fail in each way."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError, EventStreamError

from tests.helpers.fake_providers import FakeAnthropic, FakeOpenAI
from tests.helpers.gateway import Gateway

KEY_A, KEY_B, KEY_NARROW, KEY_WIDE = "sk-test-a", "sk-test-b", "sk-test-narrow", "sk-test-wide"
KEY_GOOD, KEY_SPENT, KEY_P1, KEY_P2 = "sk-test-good", "sk-test-spent", "sk-test-p1", "sk-test-p2"
KEY_REVOKED, KEY_REVOKED_TOO = "sk-test-revoked", "sk-test-revoked-too"     # the fake refuses them: 401
ADMIN = "routing-admin-token-0123"
MSG = [{"role": "user", "content": [{"text": "hello"}]}]


def config(a: FakeOpenAI, b: FakeOpenAI, c: FakeAnthropic) -> str:
    common = ("read_timeout_seconds = 3\nfirst_byte_timeout_seconds = 1\n"
              "circuit_failures = 3\ncircuit_open_seconds = 2\n")
    return f"""
[server]
workers = 1

[governance]
admin_token = "{ADMIN}"

[providers.a]
kind = "openai"
base_url = "{a.url}"
keys = [{{api_key = "{KEY_A}"}}]
{common}
[providers.b]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_B}"}}]
{common}
[providers.k]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_NARROW}", weight = 9, models = ["gpt-4o*"]}}, {{api_key = "{KEY_WIDE}", weight = 1}}]

# keys of one target: the second key's weight is so small that the first is drawn first (1 - 1e-9)
[providers.two]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_REVOKED}", weight = 1}}, {{api_key = "{KEY_GOOD}", weight = 1e-9}}]

[providers.spent]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_SPENT}", weight = 1}}, {{api_key = "{KEY_GOOD}", weight = 1e-9}}]

[providers.lone]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_REVOKED}"}}]

[providers.both]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_REVOKED}"}}, {{api_key = "{KEY_REVOKED_TOO}"}}]

[providers.pair]
kind = "openai"
base_url = "{b.url}"
keys = [{{api_key = "{KEY_P1}", weight = 1}}, {{api_key = "{KEY_P2}", weight = 1e-9}}]

[providers.claude]
kind = "anthropic"
base_url = "{c.url}"
keys = [{{api_key = "sk-ant-test"}}]

[[routes]]
models = ["cross"]
targets = [{{provider = "a", model = "m-a", weight = 1}}, {{provider = "claude", model = "claude-haiku-4-5", weight = 0}}]

[[routes]]
models = ["weighted"]
targets = [{{provider = "a", model = "m-a", weight = 3}}, {{provider = "b", model = "m-b", weight = 1}}]

[[routes]]
models = ["fallback"]
targets = [{{provider = "a", model = "m-a", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1
retry_backoff_ms = 50

[[routes]]
models = ["deadline"]
targets = [{{provider = "a", model = "m-a", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
deadline_seconds = 1.5

[[routes]]
models = ["refused-key"]
targets = [{{provider = "two", model = "m-two", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1

[[routes]]
models = ["spent-key"]
targets = [{{provider = "spent", model = "m-spent", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1

[[routes]]
models = ["lone-key"]
targets = [{{provider = "lone", model = "m-lone", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1

[[routes]]
models = ["both-refused"]
targets = [{{provider = "both", model = "m-both", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1

[[routes]]
models = ["throttled-key"]
targets = [{{provider = "pair", model = "m-pair", weight = 1}}, {{provider = "b", model = "m-b", weight = 0}}]
retries = 1
retry_backoff_ms = 50

[default_route]
provider = "a"
"""


@pytest.fixture(scope="module")
def fakes():
    b_keys = (KEY_B, KEY_NARROW, KEY_WIDE, KEY_GOOD, KEY_SPENT, KEY_P1, KEY_P2)    # not the revoked ones
    with FakeOpenAI(api_keys=(KEY_A,)) as a, FakeOpenAI(api_keys=b_keys) as b, \
            FakeAnthropic(api_keys=("sk-ant-test",)) as c:
        yield a, b, c


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fakes):
    with Gateway(tmp_path_factory.mktemp("routing"), config(*fakes), workers=1) as g:
        yield g


@pytest.fixture()
def client(gw, fakes):
    for f in fakes:
        f.clear_scripts()
    return gw.client()


def served_by(r) -> str:
    return r["ResponseMetadata"]["HTTPHeaders"]["x-bf-target"]


def wait_closed(client, gw, target="a/m-a", timeout=10.0):
    """Let a circuit opened by an earlier test close again (healthy upstream, probe succeeds)."""
    deadline = time.monotonic() + timeout
    while circuit(gw, target).get("state", "closed") != "closed":
        assert time.monotonic() < deadline, circuit(gw, target)
        client.converse(modelId="fallback", messages=MSG)
        time.sleep(0.2)


def circuit(gw, name) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/admin/circuits",
                                 headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        doc = json.loads(r.read())
    states = [w[name] for w in doc["workers"].values() if name in w]
    return states[0] if states else {}


def test_weights_within_tolerance(client, fakes):
    a, b, _ = fakes
    na, nb = len(a.requests), len(b.requests)
    seen = {"a/m-a": 0, "b/m-b": 0}
    for _ in range(200):
        seen[served_by(client.converse(modelId="weighted", messages=MSG))] += 1
    assert len(a.requests) - na == seen["a/m-a"] and len(b.requests) - nb == seen["b/m-b"]
    share = seen["a/m-a"] / 200
    assert 0.65 <= share <= 0.85, seen         # 3:1 weights; 200 draws: ±0.1 is > 3 sigma


def test_fallback_to_the_next_target_with_its_own_model_name(client, fakes, gw):
    a, b, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"status": 503, "times": 2})
    na = len(a.requests)
    r = client.converse(modelId="fallback", messages=MSG)
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-bf-target"] == "b/m-b" and h["x-bf-attempts"] == "3"     # a, a again (retries = 1), b
    assert len(a.requests) - na == 2
    assert b.requests[-1].json["model"] == "m-b"
    assert r["output"]["message"]["content"][0]["text"] == "fake-openai: hello"


def test_a_retry_on_the_same_target_can_succeed(client, fakes, gw):
    a, _, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"status": 429, "times": 1})
    r = client.converse(modelId="fallback", messages=MSG)
    assert served_by(r) == "a/m-a" and r["ResponseMetadata"]["HTTPHeaders"]["x-bf-attempts"] == "2"


def test_a_stream_falls_back_before_its_first_byte(client, fakes, gw):
    a, _, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"status": 503, "times": 2})
    r = client.converse_stream(modelId="fallback", messages=MSG)
    assert served_by(r) == "b/m-b"
    assert "messageStop" in [next(iter(e)) for e in r["stream"]]


def test_no_retry_after_the_first_streamed_byte(client, fakes, gw):
    a, b, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"stream_events": 2, "then": "cut"})
    na, nb = len(a.requests), len(b.requests)
    r = client.converse_stream(modelId="fallback", messages=MSG)
    with pytest.raises(EventStreamError):
        for _ in r["stream"]:
            pass
    assert len(a.requests) - na == 1 and len(b.requests) == nb, "nothing retried once bytes went out"


def test_circuit_opens_stays_open_and_recovers(client, fakes, gw):
    a, b, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"status": 503})
    client.converse(modelId="fallback", messages=MSG)     # a fails twice (retries = 1)
    client.converse(modelId="fallback", messages=MSG)     # third failure in a row: the circuit opens
    assert circuit(gw, "a/m-a")["state"] == "open"
    na = len(a.requests)
    for _ in range(5):                                     # open: a gets no traffic at all
        assert served_by(client.converse(modelId="fallback", messages=MSG)) == "b/m-b"
    assert len(a.requests) == na
    a.clear_scripts()                                      # a recovers...
    time.sleep(2.1)                                        # ...and after circuit_open_seconds a probe goes through
    r = client.converse(modelId="fallback", messages=MSG)
    assert served_by(r) == "a/m-a" and len(a.requests) == na + 1
    assert circuit(gw, "a/m-a")["state"] == "closed"


def test_deadline_holds_when_every_target_is_silent(client, fakes, gw):
    a, b, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"delay": 5})
    b.script("*", {"delay": 5})
    t0 = time.monotonic()
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="deadline", messages=MSG)
    took = time.monotonic() - t0
    assert ei.value.response["Error"]["Code"] == "ModelTimeoutException"
    assert took < 2.5, took                    # first byte timeout 1 s on a, then the 1.5 s deadline


def test_time_to_first_byte_timeout_falls_back(client, fakes, gw):
    a, _, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"delay": 3, "times": 2})
    t0 = time.monotonic()
    r = client.converse(modelId="fallback", messages=MSG)
    assert served_by(r) == "b/m-b" and time.monotonic() - t0 < 3.5


def test_when_every_target_fails_the_client_gets_the_last_failure(client, fakes, gw):
    a, b, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"status": 503, "times": 2})
    b.script("*", {"status": 429, "times": 2})          # b is retried once too
    with pytest.raises(ClientError) as ei:
        client.converse(modelId="fallback", messages=MSG)
    assert ei.value.response["Error"]["Code"] == "ThrottlingException"
    assert ei.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-retry-after"].isdigit()


def test_per_key_model_restrictions(client, fakes):
    _, b, _ = fakes
    n = len(b.requests)
    for _ in range(10):
        client.converse(modelId="k/o3-mini", messages=MSG)              # only the wide key may serve o3
    keys = {r.headers["authorization"] for r in b.requests[n:]}
    assert keys == {f"Bearer {KEY_WIDE}"}
    n = len(b.requests)
    for _ in range(40):
        client.converse(modelId="k/gpt-4o-mini", messages=MSG)          # both keys, 9:1
    narrow = sum(r.headers["authorization"] == f"Bearer {KEY_NARROW}" for r in b.requests[n:])
    assert 28 <= narrow <= 40


def test_garbage_from_the_first_target_falls_back(client, fakes, gw):
    a, _, _ = fakes
    wait_closed(client, gw)
    a.script("*", {"garbage": True, "times": 1})
    assert served_by(client.converse(modelId="fallback", messages=MSG)) == "b/m-b"


def test_fallback_to_another_kind_of_provider(client, fakes):
    a, _, claude = fakes
    a.script("*", {"status": 500, "times": 1})
    r = client.converse_stream(modelId="cross", messages=MSG)
    assert served_by(r) == "claude/claude-haiku-4-5"
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in r["stream"] if "contentBlockDelta" in e)
    assert text == "fake-anthropic: hello"
    assert claude.requests[-1].json["model"] == "claude-haiku-4-5"


def keys_seen(fake, since: int) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests[since:]]


def headers(r) -> dict:
    return r["ResponseMetadata"]["HTTPHeaders"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_key_is_followed_by_another_key_of_the_same_target(client, fakes, stream):
    _, b, _ = fakes
    n = len(b.requests)
    if stream:
        r = client.converse_stream(modelId="refused-key", messages=MSG)
        assert "messageStop" in [next(iter(e)) for e in r["stream"]]
    else:
        r = client.converse(modelId="refused-key", messages=MSG)
        assert r["output"]["message"]["content"][0]["text"] == "fake-openai: hello"
    assert headers(r)["x-bf-target"] == "two/m-two" and headers(r)["x-bf-attempts"] == "2"
    assert keys_seen(b, n) == [KEY_REVOKED, KEY_GOOD]
    assert [q.json["model"] for q in b.requests[n:]] == ["m-two", "m-two"]


def test_exhausted_quota_is_followed_by_another_key_of_the_same_target(client, fakes, gw):
    _, b, _ = fakes
    b.script("*", {"status": 429, "quota": True, "api_key": KEY_SPENT})    # only this key's account is spent
    n = len(b.requests)
    r = client.converse(modelId="spent-key", messages=MSG)
    assert headers(r)["x-bf-target"] == "spent/m-spent" and headers(r)["x-bf-attempts"] == "2"
    assert keys_seen(b, n) == [KEY_SPENT, KEY_GOOD]
    # the spent key failed its own circuit; the target served the request, so its circuit did not
    assert circuit(gw, "spent#key0")["failures_in_a_row"] == 1
    assert circuit(gw, "spent/m-spent")["failures_in_a_row"] == 0


def test_a_refused_lone_key_falls_back_at_once(client, fakes):
    _, b, _ = fakes
    n = len(b.requests)
    r = client.converse(modelId="lone-key", messages=MSG)        # retries = 1, not used on a refused key
    assert headers(r)["x-bf-target"] == "b/m-b" and headers(r)["x-bf-attempts"] == "2"
    assert keys_seen(b, n) == [KEY_REVOKED, KEY_B]


def test_each_refused_key_is_tried_once_then_the_fallback(client, fakes):
    _, b, _ = fakes
    n = len(b.requests)
    r = client.converse(modelId="both-refused", messages=MSG)
    assert headers(r)["x-bf-target"] == "b/m-b" and headers(r)["x-bf-attempts"] == "3"
    seen = keys_seen(b, n)
    assert sorted(seen[:2]) == sorted([KEY_REVOKED, KEY_REVOKED_TOO]) and seen[2:] == [KEY_B]


def test_a_retry_after_throttling_uses_the_other_key(client, fakes):
    _, b, _ = fakes
    b.script("*", {"status": 429, "times": 1})
    n = len(b.requests)
    r = client.converse(modelId="throttled-key", messages=MSG)
    assert headers(r)["x-bf-target"] == "pair/m-pair" and headers(r)["x-bf-attempts"] == "2"
    assert keys_seen(b, n) == [KEY_P1, KEY_P2]        # the weight alone would draw P1 again
