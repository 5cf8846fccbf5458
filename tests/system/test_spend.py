"""Spend is what the upstream reported: boto3 against the real gateway, with a fake Anthropic
upstream that reports its own usage. The cost header, the ledger (/admin/usage) and the request
log agree to the micro-dollar, alone, under concurrency on a budget and across a kill -9 of the
ledger, and the reservation is an upper bound of what the upstream can report (README: How budgets
stay exact)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.helpers.fake_providers import FakeAnthropic
from tests.helpers.gateway import Gateway, request_log

ADMIN = "admin-token-for-spend-tests"
ANTHROPIC_KEY = "sk-ant-test"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PRICE = 1000.0        # USD per million tokens, every kind: a token costs exactly $0.001
# what the fake reports for every answer: 12 input, 5 cache-read, 7 cache-write, 34 output tokens
USAGE = {"input_tokens": 12, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7, "output_tokens": 34}
COST = (12 + 5 + 7 + 34) * PRICE / 1e6          # $0.058
PROMPT = "Summarise: budgets"                    # 18 characters: the old 4-characters-per-token estimate
                                                 # gave 8 input tokens, fewer than the 24 reported


def key(id_: str, secret: str, budget: float | None = None) -> str:
    b = f"budgets = [{{amount_usd = {budget}, period = \"day\"}}]\n" if budget is not None else ""
    return f'[[governance.keys]]\nid = "{id_}"\nsecret = "{secret}"\n{b}'


def config(fake: FakeAnthropic, governance: str = "") -> str:
    return f"""
[server]
workers = 2

[providers.anthropic]
kind = "anthropic"
base_url = "{fake.url}"
keys = [{{api_key = "{ANTHROPIC_KEY}"}}]

[default_route]
provider = "anthropic"
model = "claude-3-5-sonnet-20240620"

[pricing."*"]
input = {PRICE}
output = {PRICE}

[governance]
mode = "enforced"
admin_token = "{ADMIN}"
default_max_tokens = 64
{governance}
{key("vk-big", "big-secret-0123456789abcdef", 100.0)}
{key("vk-burst", "burst-secret-0123456789abcdef", 0.25)}
{key("vk-free", "free-secret-0123456789abcdef")}
{key("vk-cap", "cap-secret-0123456789abcdef", 100.0)}
{key("vk-pdf", "pdf-secret-0123456789abcdef", 10.0)}
"""


def message(text: str, usage: dict) -> dict:
    return {"id": "msg_fake_spend", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-20240620",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}


def stream_events(usage: dict) -> list:
    start = {k: v for k, v in usage.items() if k != "output_tokens"}
    return [
        {"type": "message_start", "message": {"id": "msg_fake_spend", "type": "message", "role": "assistant",
                                              "model": "claude-3-5-sonnet-20240620", "content": [],
                                              "stop_reason": None, "stop_sequence": None,
                                              "usage": {**start, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "budgets "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hold"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": usage["output_tokens"]}},
        {"type": "message_stop"},
    ]


@pytest.fixture(scope="module")
def fake():
    with FakeAnthropic(api_keys=(ANTHROPIC_KEY,)) as f:
        yield f


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    with Gateway(tmp_path_factory.mktemp("spend"), config(fake)) as g:
        yield g


def client(gw: Gateway, secret: str):
    c = gw.client()

    def add_key(request, **kwargs):
        request.headers.add_header("x-bf-vk", secret)
    c.meta.events.register_first("before-sign.bedrock-runtime.*", add_key)
    return c


def admin(gw: Gateway, path: str) -> dict:
    req = urllib.request.Request(gw.url + path, headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def spent(gw: Gateway, key_id: str) -> float:
    rows = [u for u in admin(gw, f"/admin/usage?key={key_id}")["usage"] if u["kind"] == "budget"
            and u["level"] == "key"]
    return rows[0]["spent_usd"]


def rows_of(gw: Gateway, ids: set, timeout: float = 10.0) -> dict:
    """The request log's rows with these ids, once all are there (rows land within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {r["id"]: r for r in request_log(gw.data_dir) if r["id"] in ids}
        if len(got) == len(ids) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def converse(c, max_tokens: int | None = 40):
    kw = {"inferenceConfig": {"maxTokens": max_tokens}} if max_tokens else {}
    return c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": PROMPT}]}], **kw)


def test_the_header_the_ledger_and_the_log_charge_the_reported_usage(gw, fake):
    """One Converse call whose upstream reports 12 input, 5 cache-read, 7 cache-write and 34 output
    tokens: every place that shows its cost shows $0.058, even though the old input estimate (about
    4 characters per token) would have reserved less than that."""
    fake.script("*", {"body": message("budgets hold", USAGE)})
    try:
        before = spent(gw, "vk-big")
        r = converse(client(gw, "big-secret-0123456789abcdef"))
    finally:
        fake.clear_scripts()
    assert r["usage"] == {"inputTokens": 12, "outputTokens": 34, "totalTokens": 46, "cacheReadInputTokens": 5,
                          "cacheWriteInputTokens": 7, "cacheDetails": [{"ttl": "5m", "inputTokens": 7}]}
    rid = r["ResponseMetadata"]["RequestId"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"] == f"{COST:.6f}" == "0.058000"
    row = rows_of(gw, {rid})[rid]
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["output_tokens"]) == (
        12, 5, 7, 34)
    assert row["cost_usd"] == COST
    assert round(spent(gw, "vk-big") - before, 6) == COST


def test_a_key_without_a_budget_is_charged_the_same(gw, fake):
    fake.script("*", {"body": message("budgets hold", USAGE)})
    try:
        r = converse(client(gw, "free-secret-0123456789abcdef"))
    finally:
        fake.clear_scripts()
    rid = r["ResponseMetadata"]["RequestId"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"] == "0.058000"
    assert rows_of(gw, {rid})[rid]["cost_usd"] == COST


def test_48_concurrent_streams_on_a_budget_never_overspend_and_the_ledger_equals_the_log(gw, fake):
    """A burst of 48 streams on a $0.25 budget: each admitted stream is charged exactly what its
    upstream reported ($0.058), the ledger's spend equals the sum of the logged costs to the
    micro-dollar, and it stays within the budget because each reservation bounds its usage."""
    fake.script("*", {"events": stream_events(USAGE), "event_delay": 0.02})
    c = client(gw, "burst-secret-0123456789abcdef")

    def one(_):
        try:
            r = c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
                                  inferenceConfig={"maxTokens": 40})
            events = list(r["stream"])
            return "ok", r["ResponseMetadata"]["RequestId"], events[-1]["metadata"]["usage"]
        except ClientError as e:
            return e.response["Error"]["Code"], e.response["ResponseMetadata"]["RequestId"], None

    try:
        with ThreadPoolExecutor(48) as pool:
            results = list(pool.map(one, range(48)))
    finally:
        fake.clear_scripts()
    ok = [r for r in results if r[0] == "ok"]
    refused = [r for r in results if r[0] != "ok"]
    assert ok and refused, results
    assert {r[0] for r in refused} == {"ServiceQuotaExceededException"}
    assert all(u == {"inputTokens": 12, "outputTokens": 34, "totalTokens": 46, "cacheReadInputTokens": 5,
                     "cacheWriteInputTokens": 7, "cacheDetails": [{"ttl": "5m", "inputTokens": 7}]}
               for _, _, u in ok)
    rows = rows_of(gw, {rid for _, rid, _ in results})
    assert len(rows) == 48
    logged = round(sum(r["cost_usd"] for r in rows.values()), 6)
    assert all(rows[rid]["cost_usd"] == COST for _, rid, _ in ok)
    assert logged == round(len(ok) * COST, 6)
    assert spent(gw, "vk-burst") == logged <= 0.25


def test_a_request_without_max_tokens_is_capped_at_what_it_reserved(gw, fake):
    """A governed request without maxTokens reserves governance.default_max_tokens of output and the
    gateway sends that cap upstream, so the upstream cannot produce more than was reserved."""
    fake.requests.clear()
    converse(client(gw, "cap-secret-0123456789abcdef"), max_tokens=None)
    assert fake.requests[-1].json["max_tokens"] == 64
    converse(client(gw, "cap-secret-0123456789abcdef"), max_tokens=20)
    assert fake.requests[-1].json["max_tokens"] == 20               # the client's own cap stands


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
       b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n")


def test_where_no_bound_exists_the_overshoot_is_the_reported_excess_and_then_the_budget_refuses(gw, fake):
    """A PDF's tokens have no proven bound (its text is compressed): the reservation is the
    vendor's per-page estimate. When the upstream reports more, the request is still charged what
    it reported, the budget is overshot by exactly that, and the next request is refused."""
    c = client(gw, "pdf-secret-0123456789abcdef")
    msgs = [{"role": "user", "content": [{"text": "Summarise the report"},
                                         {"document": {"format": "pdf", "name": "report", "source": {"bytes": PDF}}}]}]
    usage = {"input_tokens": 12_000, "output_tokens": 34}           # $12.034 against a $10 budget
    fake.script("*", {"body": message("a long report", usage), "times": 1})
    try:
        r = c.converse(modelId=CLAUDE, messages=msgs, inferenceConfig={"maxTokens": 40})
    finally:
        fake.clear_scripts()
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"] == "12.034000"
    rid = r["ResponseMetadata"]["RequestId"]
    assert rows_of(gw, {rid})[rid]["cost_usd"] == 12.034
    budget = [u for u in admin(gw, "/admin/usage?key=vk-pdf")["usage"] if u["kind"] == "budget"][0]
    assert (budget["spent_usd"], budget["remaining_usd"]) == (12.034, -2.034)      # the overshoot, exactly
    with pytest.raises(c.exceptions.ServiceQuotaExceededException):
        converse(c)


# --- a ledger crash (kill -9) ---------------------------------------------------------------------

def wait_for(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return got


def snapshot_reserves(data_dir: str, rid: str) -> bool:
    """The ledger's last snapshot (governance.sqlite) holds `rid`'s reservation open."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'governance.sqlite')}?mode=ro", uri=True, timeout=5)
    try:
        r = db.execute("SELECT doc FROM ledger_snapshot").fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return r is not None and rid in {x["rid"] for x in json.loads(r[0])["reservations"]}


def test_a_ledger_killed_between_snapshots_loses_no_settled_spend(tmp_path, fake):
    """kill -9 of the ledger: it restarts from its last snapshot, which may be a second old. The
    settles it applied since are sent again by the frontend, so the ledger's spend still equals
    the request log's and the cost headers, to the micro-dollar, and no reservation stays open or
    is charged in full at its TTL. Stream A is reserved before the last snapshot and settles after
    it; stream B is reserved (most likely) and settled after it; both settles reach the ledger
    while it is stopped (SIGSTOP), so it takes them with it when killed."""
    with Gateway(tmp_path, config(fake, "reservation_ttl_seconds = 4")) as g:
        c = client(g, "big-secret-0123456789abcdef")
        costs = {}                      # rid -> what the client was told it cost
        logged = set()                  # every request's rid (failures too: they are logged at $0)

        def quick(n: int) -> None:
            fake.script("*", {"body": message("budgets hold", USAGE)})
            done = 0
            while done < n:
                try:
                    r = converse(c)
                except ClientError as e:            # the ledger is restarting: a retryable 503
                    assert e.response["Error"]["Code"] == "ServiceUnavailableException", e.response
                    logged.add(e.response["ResponseMetadata"]["RequestId"])
                    time.sleep(0.05)
                    continue
                rid = r["ResponseMetadata"]["RequestId"]
                costs[rid] = float(r["ResponseMetadata"]["HTTPHeaders"]["x-bf-cost-usd"])
                logged.add(rid)
                done += 1

        def stream():
            r = c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
                                  inferenceConfig={"maxTokens": 40})
            return r["ResponseMetadata"]["RequestId"], r["stream"]

        try:
            quick(5)
            [ledger] = g.child_pids("workers.ledger.actor")
            fake.script("*", {"events": stream_events(USAGE), "event_delay": 0.4})
            rid_a, events_a = stream()                  # reserved ...
            wait_for("the ledger's snapshot of stream A's reservation", lambda: snapshot_reserves(g.data_dir, rid_a))
            rid_b, events_b = stream()
            os.kill(ledger, signal.SIGSTOP)             # ... applies nothing more, snapshots nothing more
            try:
                usage = [list(events)[-1]["metadata"]["usage"] for events in (events_a, events_b)]
                wait_for("the streams' rows", lambda: len(rows_of(g, {rid_a, rid_b}, timeout=0)) == 2)
            finally:
                os.kill(ledger, signal.SIGKILL)         # with the settles of A and B (a stopped process dies too)
            assert usage == [{"inputTokens": 12, "outputTokens": 34, "totalTokens": 46, "cacheReadInputTokens": 5,
                              "cacheWriteInputTokens": 7, "cacheDetails": [{"ttl": "5m", "inputTokens": 7}]}] * 2
            costs[rid_a] = costs[rid_b] = COST          # the usage the client saw, at the price
            logged |= {rid_a, rid_b}
            wait_for("a new ledger", lambda: g.child_pids("workers.ledger.actor") not in ([], [ledger]))
            quick(3)
        finally:
            fake.clear_scripts()

        def settled():
            budget = [u for u in admin(g, "/admin/usage?key=vk-big")["usage"] if u["kind"] == "budget"][0]
            return budget if budget["reserved_usd"] == 0 else None
        budget = wait_for("no reservation left open", settled)          # settled, or charged at its TTL
        rows = rows_of(g, logged)
        assert len(rows) == len(logged)
        log_total = round(sum(r["cost_usd"] for r in rows.values()), 6)
        assert {rid: rows[rid]["cost_usd"] for rid in costs} == costs
        assert budget["spent_usd"] == log_total == round(sum(costs.values()), 6) == round(10 * COST, 6)
