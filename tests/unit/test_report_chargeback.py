"""`finops report --chargeback`: per customer and team for a month, with cache savings, a total
reconciled to the request log (equal to `finops report`'s TOTAL), CSV for finance."""
import csv
import io
import json
from contextlib import closing
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from finops.shared.config import build
from finops.workers.observe import chargeback as cb
from finops.workers.observe import logdb, report, report_cli
from tests.helpers.logrows import insert, row

TZ = "Europe/Paris"
PARIS = ZoneInfo(TZ)
TEAMS = [("t-search", "acme"), ("t-ads", "acme"), ("t-lab", "globex"), ("", "")]


def at(day: int, hour: int, month: int = 11) -> float:
    return datetime(2026, month, day, hour, tzinfo=PARIS).timestamp()


def make_rows() -> list[dict]:
    """November 2026 in Paris, plus requests just before and after it (which must not count)."""
    rows = []
    for i in range(400):
        team, cust = TEAMS[(i // 2) % 4]
        r = dict(ts=at(1 + i % 30, i % 24), vk=f"vk-{i % 7}", team=team, customer=cust,
                 env=("prod", "dev")[i % 2], cost_usd=round(0.0017 * (i % 9 + 1) + i * 1e-6, 6),
                 input_tokens=100 + i, output_tokens=i)
        if i % 10 == 3:
            r.update(cache="hit-semantic", saved_usd=0.00311, cost_usd=0.0, input_tokens=0, output_tokens=0)
        elif i % 10 == 7:
            r.update(cache="hit-exact", saved_usd=0.0021, cost_usd=0.0, input_tokens=0, output_tokens=0)
        rows.append(row(tz=TZ, **r))
    rows.append(row(tz=TZ, ts=at(31, 23, month=10) + 3599, team="t-ads", customer="acme", cost_usd=5.0))
    rows.append(row(tz=TZ, ts=at(1, 0, month=12), team="t-ads", customer="acme", cost_usd=7.0))
    return rows


ROWS = make_rows()
NOV = [r for r in ROWS if r["day"].startswith("2026-11")]


@pytest.fixture
def cfg(tmp_path):
    db = logdb.open_db(str(tmp_path))
    insert(db, ROWS)
    db.close()
    c = build({"server": {"data_dir": str(tmp_path)}, "governance": {"timezone": TZ}}, "t", environ={})
    c.server.data_dir = str(tmp_path)
    return c


@pytest.fixture
def db(cfg):
    ro = logdb.open_db(cfg.server.data_dir, readonly=True)
    yield ro
    ro.close()


def m(x):
    return round(x * 1_000_000)


def run(cfg, capsys, *argv):
    code = report_cli.main(list(argv), cfg)
    out, err = capsys.readouterr()
    return code, out, err


def test_month_period_is_the_local_calendar_month():
    since, until = cb.month_period("2026-11", TZ)
    assert (since, until) == (at(1, 0), at(1, 0, month=12))
    assert cb.month_period("2026-12", "UTC")[1] - cb.month_period("2026-12", "UTC")[0] == 31 * 86400
    for bad in ("2026-13", "2026-1", "nov", ""):
        with pytest.raises(ValueError, match="--month"):
            cb.month_period(bad, TZ)


def test_rows_per_customer_and_team_with_savings_and_shares(db):
    rows, total = cb.chargeback(db, *cb.month_period("2026-11", TZ))
    assert list(rows[0]) == cb.chargeback_columns(["customer", "team"])
    assert {(r["customer"], r["team"]) for r in rows} == {(c, t) for t, c in TEAMS}
    for r in rows:
        mine = [x for x in NOV if (x["customer"], x["team"]) == (r["customer"], r["team"])]
        assert r["requests"] == len(mine)
        assert m(r["cost_usd"]) == sum(m(x["cost_usd"]) for x in mine)
        assert m(r["saved_usd"]) == sum(m(x["saved_usd"]) for x in mine) > 0
        assert r["cache_hits"] == sum(x["cache"].startswith("hit-") for x in mine)
        assert m(r["list_usd"]) == m(r["cost_usd"]) + m(r["saved_usd"])
        assert r["cost_share_pct"] == round(100 * m(r["cost_usd"]) / m(total["cost_usd"]), 2)
    assert [r["cost_usd"] for r in rows] == sorted((r["cost_usd"] for r in rows), reverse=True)
    assert total["requests"] == len(NOV) and total["cost_share_pct"] == 100.0
    assert m(total["cost_usd"]) == sum(m(x["cost_usd"]) for x in NOV)          # Oct 31 and Dec 1 left out
    assert m(total["list_usd"]) == m(total["cost_usd"]) + m(total["saved_usd"])


def test_total_equals_finops_reports_total(db):
    since, until = cb.month_period("2026-11", TZ)
    _, total = cb.chargeback(db, since, until, ["env"])
    t = report.total(report.summarize(db, ["key"], since, until))
    for k in ("requests", "cost_usd", "saved_usd", "cache_hits", "input_tokens", "output_tokens"):
        assert total[k] == t[k], k


def test_an_unreconciled_grouping_is_refused(db, monkeypatch):
    real = report.summarize
    monkeypatch.setattr(cb, "summarize", lambda db, by, *a, **kw: real(db, by, *a, **kw)[1:] if by else real(db, by, *a, **kw))
    with pytest.raises(cb.Unreconciled, match="request log"):
        cb.chargeback(db, *cb.month_period("2026-11", TZ))


def test_cli_table_by_default(cfg, capsys):
    code, out, err = run(cfg, capsys, "--chargeback", "--month", "2026-11")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Chargeback from 2026-11-01T00:00:00+01:00 to 2026-12-01T00:00:00+01:00 (Europe/Paris)"
    assert lines[1].split() == [c.upper() for c in cb.chargeback_columns(["customer", "team"])]
    total_line = next(line for line in lines if line.startswith("TOTAL"))
    with closing(logdb.open_db(cfg.server.data_dir, readonly=True)) as db:
        rows, total = cb.chargeback(db, *cb.month_period("2026-11", TZ))
    cells = total_line.split()
    assert cells[0] == "TOTAL" and cells[1] == f"{total['requests']:,}"
    assert [float(c) for c in cells[-5:]] == [total["cost_usd"], total["saved_usd"], total["prompt_saved_usd"],
                                              total["list_usd"], 100.0]
    assert len(lines) == 2 + len(rows) + 3                    # heading, header, rows, rule, TOTAL, reconciled
    assert lines[-1].startswith(f"Reconciled: {len(NOV):,} requests and {total['cost_usd']:.6f} USD")


def test_cli_csv_for_finance_ends_with_the_total(cfg, capsys):
    code, out, err = run(cfg, capsys, "--chargeback", "--month", "2026-11", "--format", "csv")
    assert code == 0, err
    got = list(csv.DictReader(io.StringIO(out)))
    body, last = got[:-1], got[-1]
    assert last["customer"] == "TOTAL" and last["team"] == ""
    assert int(last["requests"]) == len(NOV) == sum(int(r["requests"]) for r in body)
    assert m(float(last["cost_usd"])) == sum(m(float(r["cost_usd"])) for r in body) == sum(m(x["cost_usd"]) for x in NOV)
    assert m(float(last["saved_usd"])) == sum(m(x["saved_usd"]) for x in NOV)
    code, out, _ = run(cfg, capsys, "--month", "2026-11", "--by", "team", "--format", "json")
    assert m(float(last["cost_usd"])) == m(json.loads(out)["total"]["cost_usd"])      # = finops report


def test_cli_by_env_and_filters(cfg, capsys):
    code, out, _ = run(cfg, capsys, "--chargeback", "--month", "2026-11", "--by", "customer,env", "--customer", "acme",
                       "--format", "json")
    doc = json.loads(out)
    assert code == 0 and {(r["customer"], r["env"]) for r in doc["rows"]} == {("acme", "prod"), ("acme", "dev")}
    assert doc["total"]["requests"] == sum(1 for x in NOV if x["customer"] == "acme")


@pytest.mark.parametrize("argv,says", [
    (["--chargeback", "--by", "tag:it's"], "a tag name is 1 to 256 letters"),
    (["--chargeback", "--month", "2026-11", "--until", "today"], "not both"),
    (["--chargeback", "--month", "november"], "expected a month like 2026-11"),
])
def test_cli_chargeback_usage_errors(cfg, capsys, argv, says):
    code, _, err = run(cfg, capsys, *argv)
    assert code == 2 and says in err
