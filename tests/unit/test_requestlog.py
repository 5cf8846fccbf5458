"""The request log's rows: calendar days in the governance time zone (finops.shared.logrow.Days),
the row a worker builds from a call and its reply (workers/observe/requestlog.py), its byte form,
and the observer writing rows as the frontends forward them."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from finops.shared import config as configmod
from finops.shared import envelope, logrow
from finops.shared.logrow import Days
from finops.workers.observe import logdb, requestlog
from finops.workers.observe.actor import ObserverActor
from finops.workers.observe.requestlog import BODY_LIMIT, RequestLog
from finops.workers.request import Attempt, Outcome, Progress, Request

PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")
T_WALL = 1_800_000_005.0        # time.time() when row() runs
T_MONO = 105.0                  # time.monotonic() then; the call started at 100.0: 5 s earlier


def at(tz, *args) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


# --- Days ----------------------------------------------------------------------------------

def test_days_around_midnight():
    days = Days("UTC")
    assert days(at(UTC, 2026, 11, 27, 0, 0, 0)) == "2026-11-27"
    assert days(at(UTC, 2026, 11, 27, 23, 59, 59) + 0.999) == "2026-11-27"
    assert days(at(UTC, 2026, 11, 28, 0, 0, 0)) == "2026-11-28"
    assert days(at(UTC, 2026, 11, 27, 0, 0, 0) - 0.001) == "2026-11-26"      # back in time: recomputed
    assert days(at(UTC, 2026, 11, 27, 12)) == "2026-11-27"


def test_days_in_paris_are_not_utc_days():
    days = Days("Europe/Paris")
    # 23:30 UTC on the 27th is 00:30 on the 28th in Paris (UTC+1 in November)
    assert days(at(UTC, 2026, 11, 27, 23, 30)) == "2026-11-28"
    assert days(at(UTC, 2026, 11, 27, 22, 59, 59)) == "2026-11-27"
    assert days(at(UTC, 2026, 11, 27, 23, 0, 0)) == "2026-11-28"             # Paris midnight exactly


def test_days_across_the_autumn_dst_change_in_paris():
    """2026-10-25 is 25 hours long in Paris: 03:00 CEST becomes 02:00 CET (01:00 UTC)."""
    days = Days("Europe/Paris")
    start = at(PARIS, 2026, 10, 25)                                     # 00:00 CEST = 22:00 UTC the 24th
    assert start == at(UTC, 2026, 10, 24, 22)
    assert days(start - 0.001) == "2026-10-24"
    assert days(start) == "2026-10-25"
    first_230 = at(UTC, 2026, 10, 25, 0, 30)                              # 02:30 CEST
    second_230 = at(UTC, 2026, 10, 25, 1, 30)                             # 02:30 CET, an hour later
    assert days(first_230) == days(second_230) == "2026-10-25"
    end = at(PARIS, 2026, 10, 26)                                       # 00:00 CET = 23:00 UTC the 25th
    assert end == at(UTC, 2026, 10, 25, 23) and end - start == 25 * 3600
    assert days(end - 0.001) == "2026-10-25"                            # the 25th hour is still the 25th
    assert days(end) == "2026-10-26"
    assert days(end + 23 * 3600) == "2026-10-26"                        # a normal 24-hour day again
    assert days(end + 24 * 3600) == "2026-10-27"


def test_days_across_the_spring_dst_change_in_paris():
    days = Days("Europe/Paris")
    start, end = at(PARIS, 2026, 3, 29), at(PARIS, 2026, 3, 30)          # a 23-hour day
    assert end - start == 23 * 3600
    assert days(start) == days(end - 0.001) == "2026-03-29"
    assert days(end) == "2026-03-30"


def test_days_matches_the_zone_for_every_hour_of_a_year():
    days = Days("Europe/Paris")
    t = at(UTC, 2026, 1, 1)
    for _ in range(366 * 24):
        assert days(t) == datetime.fromtimestamp(t, PARIS).date().isoformat(), t
        t += 3600 - 7        # not on the hour, drifting through every minute of the day


# --- row() ---------------------------------------------------------------------------------

def make_cfg(tmp_path, **observability) -> configmod.Config:
    return configmod.build({"server": {"data_dir": str(tmp_path / "data")}, "observability": observability,
                            "governance": {"timezone": "Europe/Paris"}}, "test")


@pytest.fixture
def logs(tmp_path, monkeypatch):
    """RequestLogs on a temp data dir, with a fixed clock."""
    monkeypatch.setattr(requestlog, "time", SimpleNamespace(time=lambda: T_WALL, monotonic=lambda: T_MONO))

    def make(customer_of=lambda team: "", **observability):
        return RequestLog(make_cfg(tmp_path, **observability), customer_of=customer_of)

    return make


def key(id_="vk-1", name="alice", team="search"):
    return SimpleNamespace(id=id_, name=name, team=team)


def request(key=None, key_label="", environment="prod", headers=None) -> Request:
    return Request(rid="req-1", op="converse-stream", model_id="anthropic.claude-3-haiku-20240307-v1:0",
                   headers={"user-agent": "Boto3/1.40 test"} if headers is None else headers,
                   environment=environment, started=100.0, body=b"", key=key, key_label=key_label)


LAST = Attempt(number=2, target="anthropic/claude-3-haiku-20240307", provider="anthropic",
               upstream_model="claude-3-haiku-20240307", fallback=True, key_index=None, key=None, key_circuit="",
               op="converse-stream", model_id="anthropic.claude-3-haiku-20240307-v1:0", headers={}, started=100.0)


def outcome(status=200, error="", origin="", usage=None, cost=0.012346, attempts=2, last=LAST, first_byte_ms=120,
            cache="miss", similarity=0.0, saved=0.0) -> Outcome:
    return Outcome(status, error, origin, usage or {}, cost, Progress(attempts, last, first_byte_ms),
                   cache=cache, similarity=similarity, saved_usd=saved)


def reply(stream=True, n=6):
    return SimpleNamespace(stream=stream, n=n, messages=lambda: n + 1)


def row(rl: RequestLog, *args, **kw) -> dict:
    """The row `rl.row()` packs, unpacked by name."""
    data = rl.row(*args, **kw)
    assert isinstance(data, bytes)
    return dict(zip(logdb.NAMES, logrow.unpack(data)))


def test_row_in_column_order(logs):
    teams = []

    def customer_of(team):
        teams.append(team)
        return "acme"

    rl = logs(customer_of=customer_of)
    d = row(rl, request(key=key()), outcome(usage={"in": 10, "out": 20, "cr": 3, "cw": 4}), reply())
    ts = T_WALL - 5.0
    assert d == {
        "id": "req-1", "ts": round(ts, 3), "day": datetime.fromtimestamp(ts, PARIS).date().isoformat(),
        "vk": "vk-1", "vk_name": "alice", "team": "search", "customer": "acme", "env": "prod",
        "op": "converse-stream", "stream": 1, "model": "anthropic.claude-3-haiku-20240307-v1:0",
        "provider": "anthropic", "upstream_model": "claude-3-haiku-20240307",
        "target": "anthropic/claude-3-haiku-20240307", "attempts": 2, "fallback": 1, "status": 200,
        "error": "", "error_origin": "", "latency_ms": 5000.0, "ttft_ms": 120,
        "input_tokens": 10, "output_tokens": 20, "cache_read_tokens": 3, "cache_write_tokens": 4,
        "cost_usd": 0.012346, "cache": "miss", "cache_similarity": None, "saved_usd": 0.0,
        "user_agent": "Boto3/1.40 test", "request_body": None, "response_body": None, "messages": 7,
        "prompt_saved_usd": 0.0, "tags": "", "service_tier": "",
    }
    assert teams == ["search"]
    # the observer takes it as it is
    assert list(logdb.NAMES) == [c for c, _ in logdb.COLUMNS] == list(logrow.NAMES)


def test_row_without_a_key(logs):
    rl = logs(customer_of=lambda team: pytest.fail("no team, no customer lookup"))
    d = row(rl, request(key_label="x" * 64), outcome(), reply())
    assert (d["vk"], d["vk_name"], d["team"], d["customer"]) == ("x" * 64, "", "", "")
    assert (d["input_tokens"], d["output_tokens"], d["cache_read_tokens"], d["cache_write_tokens"]) == (0, 0, 0, 0)
    d = row(rl, request(), outcome(usage=None), reply())                    # no usage at all
    assert d["vk"] == "" and d["input_tokens"] == 0


def test_row_of_a_key_without_a_team(logs):
    rl = logs(customer_of=lambda team: pytest.fail("no team, no customer lookup"))
    d = row(rl, request(key=key(team="")), outcome(), reply())
    assert (d["vk"], d["vk_name"], d["team"], d["customer"]) == ("vk-1", "alice", "", "")


def test_row_of_a_refusal_and_a_non_stream(logs):
    rl = logs()
    d = row(rl, request(key=key()), outcome(400, "ServiceQuotaExceededException", "governance", cost=0.0, attempts=0,
                                            last=None, first_byte_ms=None, cache=""), reply(stream=False, n=1))
    assert d["provider"] == "" and d["upstream_model"] == ""           # no provider: no upstream model
    assert (d["status"], d["error"], d["error_origin"]) == (400, "ServiceQuotaExceededException", "governance")
    assert d["stream"] == 0 and d["ttft_ms"] is None                  # first_byte_ms is for streams only
    assert (d["attempts"], d["fallback"], d["messages"]) == (0, 0, 2)


def test_row_of_a_cache_hit(logs):
    rl = logs()
    d = row(rl, request(), outcome(cache="hit-semantic", similarity=0.973456, saved=0.000123456789, cost=0.0,
                                   attempts=0, last=None), reply())
    assert (d["cache"], d["cache_similarity"], d["saved_usd"], d["cost_usd"]) == ("hit-semantic", 0.9735,
                                                                                  0.00012346, 0.0)


def test_row_cuts_env_and_user_agent(logs):
    rl = logs()
    d = row(rl, request(environment="e" * 100, headers={"user-agent": "u" * 500}), outcome(), reply())
    assert d["env"] == "e" * 64 and d["user_agent"] == "u" * 200
    assert row(rl, request(headers={}), outcome(), reply())["user_agent"] == ""


def test_bodies_only_when_given_and_cut(logs):
    rl = logs()
    d = row(rl, request(), outcome(), reply())
    assert d["request_body"] is None and d["response_body"] is None
    d = row(rl, request(), outcome(), reply(), b'{"messages": []}', b"")
    assert (d["request_body"], d["response_body"]) == (b'{"messages": []}', b"")
    big = bytes(range(256)) * (BODY_LIMIT // 256 + 10)
    d = row(rl, request(), outcome(), reply(), big, None)
    assert d["request_body"] == big[:BODY_LIMIT] and len(d["request_body"]) == BODY_LIMIT
    assert d["response_body"] is None
    d = row(rl, request(), outcome(), reply(), None, big)
    assert d["request_body"] is None and len(d["response_body"]) == BODY_LIMIT


def test_disabled_builds_no_row(logs):
    rl = logs(request_log=False)
    assert rl.row(request(key=key()), outcome(usage={"in": 1}), reply(), b"body", b"body") is None
    assert rl.refusal_row(request_msg("r", "converse", "m", {}), 503, "X") is None


def request_msg(rid: str, op: str, model: str, headers: dict) -> envelope.Request:
    return envelope.Request(rid=rid, op=op, model=model, body=b"{}", headers=headers, reply="", window=16,
                            deadline=60.0)


def test_refusal_row_is_the_gateways_own(logs):
    rl = logs()
    d = dict(zip(logdb.NAMES, logrow.unpack(rl.refusal_row(
        request_msg("r9", "converse", "m1", {"x-bf-env": "prod", "user-agent": "ua"}),
        503, "ServiceUnavailableException"))))
    assert (d["id"], d["op"], d["model"], d["env"], d["user_agent"]) == ("r9", "converse", "m1", "prod", "ua")
    assert (d["status"], d["error"], d["error_origin"], d["cost_usd"], d["vk"]) == (
        503, "ServiceUnavailableException", "gateway", 0.0, "")


# --- the byte form, and the observer -------------------------------------------------------

def test_pack_refuses_a_row_of_the_wrong_length_and_unpack_garbage():
    with pytest.raises(ValueError, match="36 values"):
        logrow.pack((1, 2, 3))
    for bad in (b"", b"\xc1", logrow._pack([1, 2]), logrow._pack({"a": 1})):
        with pytest.raises(ValueError):
            logrow.unpack(bad)


def test_the_observer_writes_packed_rows_as_frontends_forward_them(logs, tmp_path):
    rl = logs()
    cfg = make_cfg(tmp_path)
    obs = ObserverActor(cfg)
    try:
        a = rl.row(dataclasses.replace(request(key=key()), rid="a"), outcome(usage={"in": 1, "out": 2}), reply(),
                   b"req", b"resp")
        b = rl.row(dataclasses.replace(request(), rid="b"), outcome(), reply(stream=False))
        obs.handle({"k": "rows", "packed": [a, b, b"garbage"]})            # a bad one is dropped, not fatal
        assert obs.handle({"k": "flush"}) == {"rows": 2}
        db = logdb.open_db(cfg.server.data_dir, readonly=True)
        try:
            rows = {r["id"]: dict(r) for r in db.execute("SELECT * FROM requests")}
        finally:
            db.close()
        assert set(rows) == {"a", "b"}
        assert rows["a"]["vk"] == "vk-1" and rows["a"]["request_body"] == b"req" and rows["a"]["output_tokens"] == 2
        assert rows["b"]["stream"] == 0 and rows["b"]["ttft_ms"] is None
        assert rows["a"]["day"] == datetime.fromtimestamp(T_WALL - 5, PARIS).date().isoformat()
    finally:
        obs.close()


def test_row_keeps_prompt_cache_savings_and_tags(logs):
    rl = logs()
    o = dataclasses.replace(outcome(usage={"in": 10, "out": 20, "cr": 1000, "cw": 0}), prompt_saved_usd=0.00027,
                            tags={"team": "search", "app": "chat bot"})
    d = row(rl, request(key=key()), o, reply())
    assert d["prompt_saved_usd"] == 0.00027
    assert json.loads(d["tags"]) == {"app": "chat bot", "team": "search"}


def test_an_old_log_gains_the_new_columns(tmp_path):
    import sqlite3
    path = tmp_path / logdb.FILENAME
    old = sqlite3.connect(path)
    old_cols = [c for c in logdb.COLUMNS if c[0] not in ("prompt_saved_usd", "tags")]
    old.execute("CREATE TABLE requests (" + ", ".join(f"{c} {t}" for c, t in old_cols) + ", PRIMARY KEY (id)) "
                "WITHOUT ROWID")
    old.execute("INSERT INTO requests (id, ts, cost_usd) VALUES ('old-1', 1.0, 0.5)")
    old.commit()
    old.close()
    db = logdb.open_db(str(tmp_path))
    assert db.execute("SELECT id, cost_usd, prompt_saved_usd, tags FROM requests").fetchall() == [("old-1", 0.5, None, None)]
    assert logdb.migrate(db) == []          # once only
