"""`finops report`: summarize / parse_period / formatters over a temp request log, and the CLI."""
import csv
import io
import json
from datetime import datetime, timezone

import pytest

from finops.launcher import cli as finops_cli
from finops.shared.config import build
from finops.workers.observe import logdb, report, report_cli
from tests.helpers.logrows import insert, row

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
KEYS = [("vk-a", "alice", "t1", "c1"), ("vk-b", "bob", "t2", "c1"), ("vk-c", "carol", "t3", "c2"), ("", "", "", "")]


def make_rows() -> list[dict]:
    """80 requests over 8 days (2026-11-20 .. 2026-11-27 UTC) across keys, envs, models, providers,
    with errors, client-gone requests and cache hits."""
    rows = []
    for i in range(80):
        vk, name, team, customer = KEYS[i % 4]
        r = dict(ts=NOW - (i % 8) * DAY - 3600 - i, vk=vk, vk_name=name, team=team, customer=customer,
                 env=("prod", "dev", "")[i % 3], model=(HAIKU, SONNET)[i % 5 == 0],
                 provider=("bedrock", "openai")[i % 2], op=("converse", "converse-stream")[i % 3 == 1],
                 input_tokens=100 + i, output_tokens=10 * i, cache_read_tokens=i % 4,
                 cost_usd=round((i % 7 + 1) * 0.001234 + i * 0.0000017, 6), latency_ms=50.0 + i)
        if i % 11 == 0:
            r.update(error="ThrottlingException", status=429, cost_usd=0.0, input_tokens=0, output_tokens=0)
        elif i % 13 == 0:
            r.update(error="cancelled", status=499)
        elif i % 17 == 0:
            r.update(error="ModelStreamErrorException", status=200)
        if i % 9 == 4:
            r.update(cache="hit-exact" if i % 2 else "hit-semantic", saved_usd=round(0.0021 + i * 1e-6, 6),
                     cost_usd=0.0, input_tokens=0, output_tokens=0)
        elif i % 9 == 5:
            r.update(cache="miss")
        rows.append(row(**r))
    return rows


ROWS = make_rows()


@pytest.fixture
def log(tmp_path):
    db = logdb.open_db(str(tmp_path))
    insert(db, ROWS)
    db.close()
    ro = logdb.open_db(str(tmp_path), readonly=True)
    yield ro
    ro.close()


def micros(x):
    return round(x * 1_000_000)


def expected(rows, key):
    """Group `rows` in Python: {key(r): {metric: value}} (money as micro-dollars)."""
    out = {}
    for r in rows:
        e = out.setdefault(key(r), dict(requests=0, errors=0, input_tokens=0, output_tokens=0,
                                        cache_read_tokens=0, cost=0, saved=0, cache_hits=0))
        e["requests"] += 1
        e["errors"] += r["error"] not in ("", "cancelled", "client_gone")
        e["cache_hits"] += r["cache"].startswith("hit-")
        e["cost"] += micros(r["cost_usd"])
        e["saved"] += micros(r["saved_usd"])
        for k in ("input_tokens", "output_tokens", "cache_read_tokens"):
            e[k] += r[k]
    return out


def check_rows(got, rows, dims):
    cols = [c for d in dims for c, _, g in report.DIMENSIONS[d] if g]
    names = {"key": "vk"}
    exp = expected(rows, lambda r: tuple(r[names.get(c, c)] for c in cols))
    assert {tuple(g[c] for c in cols) for g in got} == set(exp)
    for g in got:
        e = exp[tuple(g[c] for c in cols)]
        assert (g["requests"], g["errors"], g["cache_hits"]) == (e["requests"], e["errors"], e["cache_hits"])
        assert (g["input_tokens"], g["output_tokens"], g["cache_read_tokens"]) == \
            (e["input_tokens"], e["output_tokens"], e["cache_read_tokens"])
        assert micros(g["cost_usd"]) == e["cost"] and micros(g["saved_usd"]) == e["saved"]


ALL = (NOW - 30 * DAY, NOW + 1)


# --- summarize -----------------------------------------------------------------------------------

def test_group_by_key_shows_names_sorted_by_cost(log):
    rows = report.summarize(log, ["key"], *ALL)
    assert list(rows[0]) == report.columns_for(["key"])
    assert list(rows[0])[:2] == ["key", "vk_name"]
    check_rows(rows, ROWS, ["key"])
    assert {(r["key"], r["vk_name"]) for r in rows} == {("vk-a", "alice"), ("vk-b", "bob"), ("vk-c", "carol"), ("", "")}
    costs = [r["cost_usd"] for r in rows]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("dims", [["team"], ["customer"], ["env"], ["model"], ["provider"], ["op"],
                                  ["status"], ["day"], ["customer", "team"], ["env", "model", "provider"],
                                  ["key", "day"], ["day", "model"]])
def test_grouping_matches_the_log_and_totals_are_the_sum_of_rows(log, dims):
    rows = report.summarize(log, dims, *ALL)
    check_rows(rows, ROWS, dims)
    t = report.total(rows)
    whole = expected(ROWS, lambda r: ())[()]
    assert t["requests"] == sum(r["requests"] for r in rows) == len(ROWS)
    assert t["errors"] == whole["errors"] and t["cache_hits"] == whole["cache_hits"]
    assert t["input_tokens"] == whole["input_tokens"] and t["output_tokens"] == whole["output_tokens"]
    assert micros(t["cost_usd"]) == sum(micros(r["cost_usd"]) for r in rows) == whole["cost"]
    assert micros(t["saved_usd"]) == whole["saved"]
    assert t["cost_usd"] == round(whole["cost"] / 1e6, 6)


def test_no_grouping_is_one_row_equal_to_the_total(log):
    [one] = report.summarize(log, [], *ALL)
    rows = report.summarize(log, ["model", "env"], *ALL)
    t = report.total(rows)
    for m in report.ADDITIVE:
        assert one[m] == t[m]
    assert one["avg_latency_ms"] == pytest.approx(t["avg_latency_ms"], abs=1e-3)
    assert one["avg_latency_ms"] == pytest.approx(sum(r["latency_ms"] for r in ROWS) / len(ROWS), abs=1e-3)


def test_day_first_sorts_by_day(log):
    rows = report.summarize(log, ["day", "model"], *ALL)
    days = [r["day"] for r in rows]
    assert days == sorted(days) and days[0] == "2026-11-20" and days[-1] == "2026-11-27"
    for d in set(days):
        costs = [r["cost_usd"] for r in rows if r["day"] == d]
        assert costs == sorted(costs, reverse=True)


def test_status_groups_http_status_and_error_code(log):
    rows = {(r["status"], r["error"]): r for r in report.summarize(log, ["status"], *ALL)}
    assert set(rows) == {(200, ""), (429, "ThrottlingException"), (499, "cancelled"), (200, "ModelStreamErrorException")}
    assert rows[(499, "cancelled")]["errors"] == 0             # the client left: not an error
    assert rows[(429, "ThrottlingException")]["errors"] == rows[(429, "ThrottlingException")]["requests"]
    assert rows[(200, "")]["errors"] == 0


@pytest.mark.parametrize("where, pick", [
    ({"env": "prod"}, lambda r: r["env"] == "prod"),
    ({"env": ""}, lambda r: r["env"] == ""),
    ({"key": ""}, lambda r: r["vk"] == ""),
    ({"key": "vk-b", "model": SONNET}, lambda r: r["vk"] == "vk-b" and r["model"] == SONNET),
    ({"team": "t1"}, lambda r: r["team"] == "t1"),
    ({"customer": "c1", "provider": "openai"}, lambda r: r["customer"] == "c1" and r["provider"] == "openai"),
    ({"day": "2026-11-25"}, lambda r: r["day"] == "2026-11-25"),
    ({"op": "converse-stream"}, lambda r: r["op"] == "converse-stream"),
    ({"status": "429"}, lambda r: r["status"] == 429),
    ({"status": "ThrottlingException"}, lambda r: r["error"] == "ThrottlingException"),
    ({"status": "ok"}, lambda r: r["error"] == ""),
    ({"key": "nobody"}, lambda r: False),
])
def test_where_filters(log, where, pick):
    rows = report.summarize(log, ["model"], *ALL, where=where)
    check_rows(rows, [r for r in ROWS if pick(r)], ["model"])


def test_period_is_half_open(log):
    since, until = NOW - 2 * DAY - 3600 - 100, NOW - 3600 - 50      # [since, until)
    rows = report.summarize(log, ["day"], since, until)
    check_rows(rows, [r for r in ROWS if since <= r["ts"] < until], ["day"])
    assert report.summarize(log, ["day"], NOW, NOW + 10) == []


def test_unknown_dimensions_are_refused(log):
    with pytest.raises(ValueError, match="unknown"):
        report.summarize(log, ["vk; DROP TABLE requests"], *ALL)
    with pytest.raises(ValueError, match="unknown"):
        report.summarize(log, ["model"], *ALL, where={"cost_usd": 1})
    with pytest.raises(ValueError, match="repeated"):
        report.summarize(log, ["model", "model"], *ALL)


def test_filter_values_are_parameters(log):
    assert report.summarize(log, ["model"], *ALL, where={"env": "x' OR '1'='1"}) == []


# --- parse_period --------------------------------------------------------------------------------

def ts(*a, tz="UTC"):
    from zoneinfo import ZoneInfo
    return datetime(*a, tzinfo=ZoneInfo(tz)).timestamp()


def test_period_defaults_and_relative():
    assert report.parse_period("", "", "UTC", now=NOW) == (NOW - 30 * DAY, NOW)
    assert report.parse_period("7d", "", "UTC", now=NOW) == (NOW - 7 * DAY, NOW)
    assert report.parse_period("24h", "30m", "UTC", now=NOW) == (NOW - DAY, NOW - 1800)
    assert report.parse_period("2w", "now", "UTC", now=NOW) == (NOW - 14 * DAY, NOW)


def test_period_iso_dates_are_whole_local_days():
    tz = "Europe/Paris"
    assert report.parse_period("2026-11-01", "2026-11-30", tz, now=NOW) == \
        (ts(2026, 11, 1, tz=tz), ts(2026, 12, 1, tz=tz))
    # a naive datetime is wall-clock time in the zone; an aware one is what it says
    assert report.parse_period("2026-11-01T08:00", "2026-11-02T00:00:00Z", tz, now=NOW) == \
        (ts(2026, 11, 1, 8, tz=tz), ts(2026, 11, 2))


def test_period_dst_fall_back_day_is_25_hours():
    a, b = report.parse_period("2026-10-25", "2026-10-25", "Europe/Paris", now=NOW)
    assert a == ts(2026, 10, 24, 22) and b - a == 25 * 3600
    a, b = report.parse_period("2026-03-29", "2026-03-29", "Europe/Paris", now=NOW)
    assert b - a == 23 * 3600


def test_period_names_are_calendar_aligned_in_the_zone():
    tz = "Europe/Paris"
    now = ts(2026, 11, 1, 0, 30, tz=tz)                  # 2026-10-31T23:30Z: already November in Paris
    assert report.parse_period("today", "today", tz, now=now) == (ts(2026, 11, 1, tz=tz), ts(2026, 11, 2, tz=tz))
    assert report.parse_period("yesterday", "yesterday", tz, now=now) == \
        (ts(2026, 10, 31, tz=tz), ts(2026, 11, 1, tz=tz))
    assert report.parse_period("this-month", "", tz, now=now) == (ts(2026, 11, 1, tz=tz), now)
    a, b = report.parse_period("last-month", "last-month", tz, now=now)
    assert (a, b) == (ts(2026, 10, 1, tz=tz), ts(2026, 11, 1, tz=tz))
    assert b - a == 31 * DAY + 3600                      # October has the fall-back hour
    assert a == ts(2026, 9, 30, 22) and b == ts(2026, 10, 31, 23)
    # in UTC the same instant is still October
    assert report.parse_period("this-month", "this-month", "UTC", now=now) == (ts(2026, 10, 1), ts(2026, 11, 1))
    # January's last month is last year's December
    jan = ts(2027, 1, 15, tz=tz)
    assert report.parse_period("last-month", "last-month", tz, now=jan) == (ts(2026, 12, 1, tz=tz), ts(2027, 1, 1, tz=tz))


@pytest.mark.parametrize("since, until, flag", [("last week", "", "--since"), ("", "2026-13-01", "--until"),
                                                ("7x", "", "--since"), ("today", "yesterday", "--since")])
def test_period_errors_name_the_flag(since, until, flag):
    with pytest.raises(ValueError, match=flag):
        report.parse_period(since, until, "UTC", now=NOW)


def test_period_unknown_zone():
    with pytest.raises(ValueError, match="time zone"):
        report.parse_period("7d", "", "Mars/Olympus", now=NOW)


# --- formatters ----------------------------------------------------------------------------------

def test_fmt_usd():
    assert report.fmt_usd(1.5) == "1.5000"
    assert report.fmt_usd(0.000123) == "0.000123"
    assert report.fmt_usd(12.34567) == "12.34567" and report.fmt_usd(0.5, 6) == "0.500000"
    assert report.fmt_usd(0.0) == "0.0000"


def test_table_is_aligned_with_a_total_line(log):
    rows = report.summarize(log, ["key"], *ALL)
    cols = report.columns_for(["key"])
    text = report.to_table(rows, cols)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["KEY", "VK_NAME", "REQUESTS"]
    assert len(lines) == len(rows) + 3 and set(lines[-2].replace(" ", "")) == {"-"}
    t = report.total(rows)
    last = lines[-1].split()
    assert last[0] == "TOTAL" and last[1] == f"{t['requests']:,}"
    assert report.fmt_usd(t["cost_usd"]) in last
    # numbers right-aligned: every REQUESTS cell ends in the same column
    end = lines[0].index("REQUESTS") + len("REQUESTS")
    for line in lines[1:-2] + lines[-1:]:
        assert line[end - 1] != " " and (len(line) == end or line[end] == " ")
    assert "-" in lines[1:-2][[r["key"] for r in rows].index("")].split()[:2]   # "" shows as "-"


def test_table_without_rows_has_a_zero_total():
    lines = report.to_table([], report.columns_for(["model"])).splitlines()
    assert lines[-1].split()[:3] == ["TOTAL", "0", "0"]


def test_csv_round_trip(log):
    rows = report.summarize(log, ["key", "env"], *ALL)
    back = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    assert [list(b) for b in back[:1]] == [report.columns_for(["key", "env"])]
    assert len(back) == len(rows)
    for b, r in zip(back, rows):
        assert b["key"] == r["key"] and b["env"] == r["env"] and int(b["requests"]) == r["requests"]
        assert float(b["cost_usd"]) == r["cost_usd"] and int(b["input_tokens"]) == r["input_tokens"]
    assert report.to_csv([], ["model", "requests"]) == "model,requests\n"


def test_json_round_trip(log):
    rows = report.summarize(log, ["model"], *ALL)
    doc = json.loads(report.to_json(rows, {"since": "x"}))
    assert doc["meta"] == {"since": "x"} and doc["rows"] == rows and doc["total"] == report.total(rows)


# --- the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def cfg(tmp_path):
    c = build({"server": {"data_dir": str(tmp_path)}, "governance": {"timezone": "UTC"}}, "t", environ={})
    c.server.data_dir = str(tmp_path)
    return c


@pytest.fixture
def logged(cfg, log):
    return cfg


def run(cfg, capsys, *argv):
    code = report_cli.main(list(argv), cfg)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_equals_summarize(logged, log, capsys):
    code, out, err = run(logged, capsys, "--by", "team,model", "--since", "2026-11-01", "--until", "2026-11-30",
                         "--env", "prod", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    since, until = report.parse_period("2026-11-01", "2026-11-30", "UTC")
    assert doc["rows"] == report.summarize(log, ["team", "model"], since, until, {"env": "prod"})
    check_rows(doc["rows"], [r for r in ROWS if r["env"] == "prod"], ["team", "model"])
    assert doc["meta"]["group_by"] == ["team", "model"] and doc["meta"]["where"] == {"env": "prod"}
    assert doc["meta"]["since"] == "2026-11-01T00:00:00+00:00" and doc["meta"]["until"] == "2026-12-01T00:00:00+00:00"
    assert micros(doc["total"]["cost_usd"]) == expected([r for r in ROWS if r["env"] == "prod"], lambda r: 0)[0]["cost"]


def test_cli_filters_and_csv(logged, capsys):
    code, out, err = run(logged, capsys, "--by", "day", "--key", "vk-a", "--team", "t1", "--customer", "c1",
                         "--model", HAIKU, "--provider", "bedrock", "--since", "2026-11-20", "--until", "2026-11-27",
                         "--format", "csv")
    assert code == 0, err
    back = list(csv.DictReader(io.StringIO(out)))
    pick = [r for r in ROWS if r["vk"] == "vk-a" and r["model"] == HAIKU and r["provider"] == "bedrock"]
    assert sum(int(b["requests"]) for b in back) == len(pick) > 0
    assert [b["day"] for b in back] == sorted({r["day"] for r in pick})


def test_cli_table_default_groups_by_key(logged, capsys):
    code, out, err = run(logged, capsys, "--since", "2026-11-01", "--until", "2026-11-30")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Requests from 2026-11-01T00:00:00+00:00 to 2026-12-01T00:00:00+00:00 (UTC)")
    assert lines[1].split()[:2] == ["KEY", "VK_NAME"] and lines[-1].startswith("TOTAL")
    assert lines[-1].split()[1] == str(len(ROWS))


def test_cli_nothing_matches(logged, capsys):
    code, out, _ = run(logged, capsys, "--key", "nobody")
    assert code == 0 and "No requests match." in out


def test_cli_missing_log_exits_1(cfg, capsys):
    code, out, err = run(cfg, capsys, "--by", "model")
    assert code == 1 and out == "" and "no request log at" in err and "requests.sqlite" in err


@pytest.mark.parametrize("argv, says", [
    (["--by", "colour"], "--by 'colour': unknown dimension"),
    (["--by", ","], "--by: give at least one dimension"),
    (["--by", "model,model"], "repeated"),
    (["--since", "last week"], "--since 'last week': expected"),
    (["--since", "today", "--until", "yesterday"], "is not before --until"),
    (["--format", "xml"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_args_exit_2(logged, capsys, argv, says):
    code, out, err = run(logged, capsys, *argv)
    assert code == 2 and says in err and out == ""


def test_finops_report_loads_the_config(tmp_path, log, capsys, monkeypatch):
    for var in ("FINOPS_CONFIG", "FINOPS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "finops.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[governance]\ntimezone = "Europe/Paris"\n')
    assert finops_cli.main(["report", "--by", "env", "--config", str(path), "--since", "2026-11-01",
                            "--until", "2026-11-30", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["timezone"] == "Europe/Paris" and doc["meta"]["since"] == "2026-11-01T00:00:00+01:00"
    assert sum(r["requests"] for r in doc["rows"]) == len(ROWS)
    assert finops_cli.main(["report", f"--config={path}", "--by", "nope"]) == 2
    assert finops_cli.main(["report", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
