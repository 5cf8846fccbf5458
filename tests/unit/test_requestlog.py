"""The workers' side of the request log (workers/observe/requestlog.py): calendar days in the
governance time zone, the row record() builds from a call and its reply, and flush() while the
observer is away or there."""
from __future__ import annotations

import logging
import os
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import msgpack
import pytest
import zmq

from finops.shared import config as configmod
from finops.shared import transport
from finops.workers.observe import logdb, requestlog
from finops.workers.observe.actor import ObserverActor
from finops.workers.observe.requestlog import BODY_LIMIT, Days, RequestLog
from finops.workers.providers.base import Call

PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")
T_WALL = 1_800_000_005.0        # time.time() when record() runs
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


# --- record() ------------------------------------------------------------------------------

def make_cfg(tmp_path, **observability) -> configmod.Config:
    return configmod.build({"server": {"data_dir": str(tmp_path / "data")}, "observability": observability,
                            "governance": {"timezone": "Europe/Paris"}}, "test")


@pytest.fixture
def logs(tmp_path, monkeypatch):
    """RequestLogs on a temp data dir, with a fixed clock; each is closed at the end."""
    monkeypatch.setattr(requestlog, "time", SimpleNamespace(time=lambda: T_WALL, monotonic=lambda: T_MONO))
    made = []

    def make(customer_of=lambda team: "", **observability):
        rl = RequestLog(make_cfg(tmp_path, **observability), customer_of=customer_of)
        made.append(rl)
        return rl

    yield make
    for rl in made:
        rl.rows.clear()          # nothing to send at close
        rl.close()


def key(id_="vk-1", name="alice", team="search"):
    return SimpleNamespace(id=id_, name=name, team=team)


def call(**kw) -> Call:
    c = Call(rid="req-1", op="converse-stream", model_id="anthropic.claude-3-haiku-20240307-v1:0",
             upstream_model="claude-3-haiku-20240307", headers={"user-agent": "Boto3/1.40 test"},
             virtual_key="", env="prod", started=100.0)
    c.provider, c.target, c.attempts, c.fallback = "anthropic", "anthropic/claude-3-haiku-20240307", 2, True
    c.first_byte_ms = 120
    c.cost_usd, c.cache, c.cache_similarity, c.saved_usd = 0.0123456789, "miss", 0.0, 0.0
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def reply(stream=True, n=7):
    return SimpleNamespace(stream=stream, n=n)


def as_dict(rl: RequestLog, i: int = -1) -> dict:
    r = rl.rows[i]
    assert isinstance(r, tuple) and len(r) == len(logdb.NAMES)
    return dict(zip(logdb.NAMES, r))


def test_record_builds_a_row_in_column_order(logs):
    teams = []

    def customer_of(team):
        teams.append(team)
        return "acme"

    rl = logs(customer_of=customer_of)
    rl.record(call(key=key()), 200, "", "", {"in": 10, "out": 20, "cr": 3, "cw": 4}, reply())
    ts = T_WALL - 5.0
    assert as_dict(rl) == {
        "id": "req-1", "ts": round(ts, 3), "day": datetime.fromtimestamp(ts, PARIS).date().isoformat(),
        "vk": "vk-1", "vk_name": "alice", "team": "search", "customer": "acme", "env": "prod",
        "op": "converse-stream", "stream": 1, "model": "anthropic.claude-3-haiku-20240307-v1:0",
        "provider": "anthropic", "upstream_model": "claude-3-haiku-20240307",
        "target": "anthropic/claude-3-haiku-20240307", "attempts": 2, "fallback": 1, "status": 200,
        "error": "", "error_origin": "", "latency_ms": 5000.0, "ttft_ms": 120,
        "input_tokens": 10, "output_tokens": 20, "cache_read_tokens": 3, "cache_write_tokens": 4,
        "cost_usd": 0.01234568, "cache": "miss", "cache_similarity": None, "saved_usd": 0.0,
        "user_agent": "Boto3/1.40 test", "request_body": None, "response_body": None, "messages": 7,
    }
    assert teams == ["search"]
    # the observer takes it as it is
    assert list(logdb.NAMES) == [c for c, _ in logdb.COLUMNS]


def test_record_without_a_key(logs):
    rl = logs(customer_of=lambda team: pytest.fail("no team, no customer lookup"))
    rl.record(call(virtual_key="x" * 64), 200, "", "", {}, reply())
    d = as_dict(rl)
    assert (d["vk"], d["vk_name"], d["team"], d["customer"]) == ("x" * 64, "", "", "")
    assert (d["input_tokens"], d["output_tokens"], d["cache_read_tokens"], d["cache_write_tokens"]) == (0, 0, 0, 0)
    rl.record(call(), 200, "", "", None, reply())                        # no usage at all
    assert as_dict(rl)["vk"] == "" and as_dict(rl)["input_tokens"] == 0


def test_record_a_key_without_a_team(logs):
    rl = logs(customer_of=lambda team: pytest.fail("no team, no customer lookup"))
    rl.record(call(key=key(team="")), 200, "", "", {}, reply())
    d = as_dict(rl)
    assert (d["vk"], d["vk_name"], d["team"], d["customer"]) == ("vk-1", "alice", "", "")


def test_record_a_refusal_and_a_non_stream(logs):
    rl = logs()
    c = call(key=key(), provider="", target="", attempts=0, fallback=False, cost_usd=0.0, cache="")
    rl.record(c, 400, "ServiceQuotaExceededException", "governance", {}, reply(stream=False, n=1))
    d = as_dict(rl)
    assert d["provider"] == "" and d["upstream_model"] == ""           # no provider: no upstream model
    assert (d["status"], d["error"], d["error_origin"]) == (400, "ServiceQuotaExceededException", "governance")
    assert d["stream"] == 0 and d["ttft_ms"] is None                  # first_byte_ms is for streams only
    assert (d["attempts"], d["fallback"], d["messages"]) == (0, 0, 1)


def test_record_a_cache_hit(logs):
    rl = logs()
    rl.record(call(cache="hit-semantic", cache_similarity=0.973456, saved_usd=0.000123456789, cost_usd=0.0,
                   attempts=0), 200, "", "", {}, reply())
    d = as_dict(rl)
    assert (d["cache"], d["cache_similarity"], d["saved_usd"], d["cost_usd"]) == ("hit-semantic", 0.9735,
                                                                                  0.00012346, 0.0)


def test_record_cuts_env_and_user_agent(logs):
    rl = logs()
    rl.record(call(env="e" * 100, headers={"user-agent": "u" * 500}), 200, "", "", {}, reply())
    d = as_dict(rl)
    assert d["env"] == "e" * 64 and d["user_agent"] == "u" * 200
    rl.record(call(headers={}), 200, "", "", {}, reply())
    assert as_dict(rl)["user_agent"] == ""


def test_bodies_only_when_given_and_cut(logs):
    rl = logs()
    rl.record(call(), 200, "", "", {}, reply())
    assert as_dict(rl)["request_body"] is None and as_dict(rl)["response_body"] is None
    rl.record(call(), 200, "", "", {}, reply(), b'{"messages": []}', b"")
    assert (as_dict(rl)["request_body"], as_dict(rl)["response_body"]) == (b'{"messages": []}', b"")
    big = bytes(range(256)) * (BODY_LIMIT // 256 + 10)
    rl.record(call(), 200, "", "", {}, reply(), big, None)
    d = as_dict(rl)
    assert d["request_body"] == big[:BODY_LIMIT] and len(d["request_body"]) == BODY_LIMIT
    assert d["response_body"] is None
    rl.record(call(), 200, "", "", {}, reply(), None, big)
    assert as_dict(rl)["request_body"] is None and len(as_dict(rl)["response_body"]) == BODY_LIMIT


def test_disabled_records_nothing(logs):
    rl = logs(request_log=False)
    rl.record(call(key=key()), 200, "", "", {"in": 1}, reply(), b"body", b"body")
    assert rl.rows == []
    rl.flush()
    assert rl.sent == 0 and rl.dropped == 0


# --- flush() -------------------------------------------------------------------------------

def test_flush_keeps_rows_while_the_observer_is_away(logs):
    rl = logs()
    for i in range(3):
        rl.record(call(rid=f"r{i}"), 200, "", "", {}, reply())
    rl.flush()
    assert [r[0] for r in rl.rows] == ["r0", "r1", "r2"]
    assert rl.sent == 0 and rl.dropped == 0


def test_flush_drops_the_oldest_past_max_buffered(logs, monkeypatch, caplog):
    monkeypatch.setattr(requestlog, "MAX_BUFFERED", 5)
    rl = logs()
    for i in range(8):
        rl.record(call(rid=f"r{i}"), 200, "", "", {}, reply())
    with caplog.at_level(logging.ERROR, logger="finops.requestlog"):
        rl.flush()
    assert [r[0] for r in rl.rows] == ["r3", "r4", "r5", "r6", "r7"]
    assert rl.dropped == 3
    assert "3 dropped (3 in all)" in caplog.text
    rl.flush()                                                          # at the limit: nothing more goes
    assert rl.dropped == 3 and len(rl.rows) == 5
    for i in range(8, 10):
        rl.record(call(rid=f"r{i}"), 200, "", "", {}, reply())
    rl.flush()
    assert [r[0] for r in rl.rows] == ["r5", "r6", "r7", "r8", "r9"] and rl.dropped == 5


def test_flush_sends_one_message_the_observer_writes(logs, tmp_path):
    """With an observer announced in the run dir, flush() sends the buffer as one "rows" message;
    handed to the observer actor, the rows land in SQLite."""
    rl = logs()
    cfg = make_cfg(tmp_path)
    pull = transport.make_socket(zmq.PULL)
    endpoint = transport.bind(pull, transport.endpoint_for("observer", cfg.run_dir, cfg.server.transport))
    announced = transport.announce(cfg.run_dir, "observer", endpoint)
    obs = ObserverActor(cfg)
    try:
        rl.record(call(rid="a", key=key()), 200, "", "", {"in": 1, "out": 2}, reply(), b"req", b"resp")
        rl.record(call(rid="b"), 200, "", "", {}, reply(stream=False))
        rl.flush()
        assert rl.rows == [] and rl.sent == 2
        rl.flush()                                                       # nothing buffered: nothing sent
        assert pull.poll(2000)
        msg = msgpack.unpackb(pull.recv(), raw=False)
        assert not pull.poll(100)
        assert msg["k"] == "rows" and len(msg["rows"]) == 2
        obs.handle(msg)
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
        transport.withdraw(announced)
        pull.close(linger=0)


def test_close_reports_rows_it_could_not_send(tmp_path, caplog):
    rl = RequestLog(make_cfg(tmp_path))
    rl.record(call(started=0.0), 200, "", "", {}, reply())
    with caplog.at_level(logging.ERROR, logger="finops.requestlog"):
        rl.close()
    assert "observer unreachable at exit; 1 rows lost" in caplog.text
    assert os.path.isdir(make_cfg(tmp_path).run_dir)
