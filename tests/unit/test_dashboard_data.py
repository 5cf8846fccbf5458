"""dashboard_data: the JSON contract the web page is built against, over a temp request log."""
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from finops.shared.governance import Budget, Customer, Directory, RateLimit, Team, VirtualKey
from finops.workers.ledger.state import LedgerState
from finops.workers.observe import logdb
from finops.workers.observe.dashboard import dashboard_data
from tests.helpers.logrows import insert, row

TZ = "Europe/Paris"
PARIS = ZoneInfo(TZ)
NOW = datetime(2026, 11, 27, 11, 0, tzinfo=PARIS).timestamp()
TODAY = date(2026, 11, 27)
MODELS = ["anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0", "gpt-4o-mini"]
KEYS = [f"vk-{i}" for i in range(10)]
NAMES = {"vk-0": "alice", "vk-1": "dup", "vk-2": "dup", "vk-3": ""}          # vk-3 unnamed; others "key<i>"
ENVS = ["prod", "dev", ""]


def at(d: date, hour=12) -> float:
    return datetime(d.year, d.month, d.day, hour, tzinfo=PARIS).timestamp()


def make_rows() -> list[dict]:
    """35 days (the window is 30) x 10 keys + one anonymous request a day; errors, client-gone
    requests, cache hits; one request in the fall-back hour of 2026-10-25."""
    rows = []
    for back in range(35):
        d = TODAY - timedelta(days=back)
        for i, vk in enumerate(KEYS):
            r = dict(ts=at(d, 8 + i), vk=vk, vk_name=NAMES.get(vk, f"key{i}"), team="t1" if i < 5 else "t2",
                     customer="c1", env=ENVS[(i + back) % 3], model=MODELS[i % 3],
                     cost_usd=round((10 - i) * 0.001 + back * 1e-6, 6), input_tokens=100 + i, output_tokens=20 * i)
            if i == 0 and back % 5 == 0:
                r.update(error="ThrottlingException", status=429)
            if i == 1 and back % 4 == 0:
                r.update(error="cancelled", status=499)
            if i == 2 and back % 3 == 0:
                r.update(cache="hit-exact", saved_usd=0.003, cost_usd=0.0, input_tokens=0, output_tokens=0)
            rows.append(row(tz=TZ, **r))
        rows.append(row(tz=TZ, ts=at(d, 20), cost_usd=0.0005, model=MODELS[0], env="prod", input_tokens=7))
    # 02:30 local happens twice on 2026-10-25: this is the second one (01:30 UTC)
    rows.append(row(tz=TZ, ts=datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp(),
                    vk="vk-9", vk_name="key9", cost_usd=0.123456, env="dev", model=MODELS[2]))
    return rows


ROWS = make_rows()


@pytest.fixture
def db(tmp_path):
    w = logdb.open_db(str(tmp_path))
    insert(w, ROWS)
    w.close()
    ro = logdb.open_db(str(tmp_path), readonly=True)
    yield ro
    ro.close()


def m(x):
    return round(x * 1_000_000)


def in_window(r, days=30):
    return (TODAY - timedelta(days=days - 1)).isoformat() <= r["day"] <= TODAY.isoformat()


def directory() -> Directory:
    return Directory(
        keys={"vk-0": VirtualKey("vk-0", "s" * 16, name="alice", team="t1",
                                 budgets=(Budget(10.0, "month"),), rate_limits=(RateLimit("minute", requests=1000),)),
              "vk-1": VirtualKey("vk-1", "s" * 16, team="t1")},
        teams={"t1": Team("t1", customer="c1", budgets=(Budget(5.0, "month", env="prod"),))},
        customers={"c1": Customer("c1", budgets=(Budget(1.0, "day"),))})


def ledger_usage() -> list[dict]:
    """A real ledger's usage(), with vk-0's logged November spend settled on it."""
    led = LedgerState(directory(), clock=lambda: NOW, tz=TZ)
    for r in ROWS:
        if r["vk"] == "vk-0" and r["day"] >= "2026-11-01":
            assert led.reserve(r["id"], "vk-0", r["env"], 0.02, 10)["ok"]
            led.settle(r["id"], r["cost_usd"], 10)
    return led.usage()


CONTRACT = {"since", "until", "days", "totals", "spend_by_env", "spend_by_key", "spend_by_model", "top_models",
            "requests_by_day", "errors_by_day", "cache_hits_by_day", "saved_usd_by_day", "budgets"}


def test_contract_keys_and_lengths(db):
    doc = dashboard_data(db, ledger_usage(), 30, TZ, now=NOW)
    assert set(doc) == CONTRACT
    assert set(doc["totals"]) == {"requests", "errors", "error_rate", "cost_usd", "saved_usd", "cache_hits",
                                  "input_tokens", "output_tokens"}
    assert doc["since"] == "2026-10-29" and doc["until"] == "2026-11-27"
    assert doc["days"][0] == doc["since"] and doc["days"][-1] == doc["until"] and len(doc["days"]) == 30
    assert doc["days"] == sorted(set(doc["days"]))
    for k in ("requests_by_day", "errors_by_day", "cache_hits_by_day", "saved_usd_by_day"):
        assert len(doc[k]) == 30, k
    for k in ("spend_by_env", "spend_by_key", "spend_by_model"):
        assert doc[k] and all(len(s) == 30 for s in doc[k].values()), k
    for t in doc["top_models"]:
        assert set(t) == {"model", "requests", "cost_usd", "input_tokens", "output_tokens"}
    for b in doc["budgets"]:
        assert set(b) == {"label", "level", "owner", "period", "env", "limit_usd", "spent_usd", "remaining_usd",
                          "period_start", "resets_at", "burn", "forecast"}
        assert set(b["burn"]) == {"days", "cumulative_usd"} and len(b["burn"]["days"]) == len(b["burn"]["cumulative_usd"])
        assert set(b["forecast"]) == {"model", "projected_usd", "rate_usd_per_hour", "crosses_at", "days",
                                      "cumulative_usd"}
        assert len(b["forecast"]["days"]) == len(b["forecast"]["cumulative_usd"])
    json.dumps(doc)                                       # JSON-able as it is


def test_days_span_a_dst_change(db):
    doc = dashboard_data(db, [], 40, TZ, now=NOW)
    assert doc["days"][0] == "2026-10-19" and "2026-10-25" in doc["days"] and len(doc["days"]) == 40
    assert len(set(doc["days"])) == 40                    # the 25-hour day is one day, no gaps or repeats
    i = doc["days"].index("2026-10-25")
    assert doc["requests_by_day"][i] == 12               # 10 keys + anonymous + the fall-back-hour request
    assert dashboard_data(db, [], 1, TZ, now=NOW)["days"] == ["2026-11-27"]
    with pytest.raises(ValueError):
        dashboard_data(db, [], 0, TZ, now=NOW)


def test_totals_equal_the_log_and_the_daily_series(db):
    doc = dashboard_data(db, [], 30, TZ, now=NOW)
    win = [r for r in ROWS if in_window(r)]
    t = doc["totals"]
    errors = sum(1 for r in win if r["error"] not in ("", "cancelled", "client_gone"))
    assert t["requests"] == len(win) == sum(doc["requests_by_day"])
    assert t["errors"] == errors == sum(doc["errors_by_day"]) and errors > 0
    assert any(r["error"] == "cancelled" for r in win)   # ...which are not errors
    assert t["error_rate"] == round(errors / len(win), 6)
    assert t["cache_hits"] == sum(1 for r in win if r["cache"] == "hit-exact") == sum(doc["cache_hits_by_day"])
    assert m(t["saved_usd"]) == sum(m(r["saved_usd"]) for r in win) == sum(m(x) for x in doc["saved_usd_by_day"])
    assert m(t["cost_usd"]) == sum(m(r["cost_usd"]) for r in win)
    assert t["input_tokens"] == sum(r["input_tokens"] for r in win)
    assert t["output_tokens"] == sum(r["output_tokens"] for r in win)
    for k in ("spend_by_env", "spend_by_key", "spend_by_model"):
        assert sum(m(x) for s in doc[k].values() for x in s) == m(t["cost_usd"]), k
    for i, d in enumerate(doc["days"]):
        assert doc["requests_by_day"][i] == sum(1 for r in win if r["day"] == d)


def test_empty_log_gives_zeros(tmp_path):
    logdb.open_db(str(tmp_path)).close()
    with logdb.open_db(str(tmp_path), readonly=True) as db:
        doc = dashboard_data(db, [], 7, TZ, now=NOW)
    assert doc["totals"] == {"requests": 0, "errors": 0, "error_rate": 0.0, "cost_usd": 0.0, "saved_usd": 0.0,
                             "cache_hits": 0, "input_tokens": 0, "output_tokens": 0}
    assert doc["requests_by_day"] == [0] * 7 and doc["spend_by_key"] == {} and doc["top_models"] == []


def test_spend_by_env_names_no_env(db):
    doc = dashboard_data(db, [], 30, TZ, now=NOW)
    assert set(doc["spend_by_env"]) == {"prod", "dev", "(none)"}
    i = doc["days"].index("2026-11-27")
    today = [r for r in ROWS if r["day"] == "2026-11-27"]
    for env, name in (("prod", "prod"), ("dev", "dev"), ("", "(none)")):
        assert m(doc["spend_by_env"][name][i]) == sum(m(r["cost_usd"]) for r in today if r["env"] == env)


def test_keys_beyond_the_top_8_fold_into_other(db):
    doc = dashboard_data(db, [], 30, TZ, now=NOW)
    keys = doc["spend_by_key"]
    win = [r for r in ROWS if in_window(r)]
    spend = {vk: sum(m(r["cost_usd"]) for r in win if r["vk"] == vk) for vk in [*KEYS, ""]}
    ranked = sorted(spend, key=lambda vk: -spend[vk])
    assert ranked[8:] == ["vk-8", "vk-9", ""]             # ...which fold into "(other)"
    # vk-1 and vk-2 share a name, vk-3 has none
    label = {"vk-0": "alice", "vk-1": "dup (vk-1)", "vk-2": "dup (vk-2)", "vk-3": "vk-3"}
    assert list(keys) == [label.get(vk, f"key{vk[3:]}") for vk in ranked[:8]] + ["(other)"]
    assert set(keys) == {"alice", "dup (vk-1)", "dup (vk-2)", "vk-3", "key4", "key5", "key6", "key7", "(other)"}
    for i, d in enumerate(doc["days"]):
        rest = sum(m(r["cost_usd"]) for r in win if r["day"] == d and r["vk"] in ("vk-8", "vk-9", ""))
        assert m(keys["(other)"][i]) == rest
        assert m(keys["alice"][i]) == sum(m(r["cost_usd"]) for r in win if r["day"] == d and r["vk"] == "vk-0")


def test_anonymous_is_named_when_in_the_top(tmp_path):
    w = logdb.open_db(str(tmp_path))
    insert(w, [row(tz=TZ, ts=at(TODAY), cost_usd=0.5), row(tz=TZ, ts=at(TODAY), vk="vk-x", cost_usd=0.25)])
    doc = dashboard_data(w, [], 3, TZ, now=NOW)
    w.close()
    assert doc["spend_by_key"] == {"(anonymous)": [0.0, 0.0, 0.5], "vk-x": [0.0, 0.0, 0.25]}


def test_models_and_top_models(db):
    doc = dashboard_data(db, [], 30, TZ, now=NOW)
    win = [r for r in ROWS if in_window(r)]
    assert set(doc["spend_by_model"]) == set(MODELS)     # 3 models: nothing folded
    top = doc["top_models"]
    assert [t["cost_usd"] for t in top] == sorted((t["cost_usd"] for t in top), reverse=True)
    for t in top:
        mine = [r for r in win if r["model"] == t["model"]]
        assert t["requests"] == len(mine) and m(t["cost_usd"]) == sum(m(r["cost_usd"]) for r in mine)
        assert t["input_tokens"] == sum(r["input_tokens"] for r in mine)
        assert t["output_tokens"] == sum(r["output_tokens"] for r in mine)


def test_many_models_fold_and_top_models_keeps_8(tmp_path):
    w = logdb.open_db(str(tmp_path))
    insert(w, [row(tz=TZ, ts=at(TODAY), model=f"model-{i:02d}", cost_usd=(i + 1) / 100) for i in range(12)])
    doc = dashboard_data(w, [], 2, TZ, now=NOW)
    w.close()
    assert list(doc["spend_by_model"]) == [f"model-{i:02d}" for i in range(11, 3, -1)] + ["(other)"]
    assert doc["spend_by_model"]["(other)"] == [0.0, 0.1]                # 0.01 + 0.02 + 0.03 + 0.04
    assert [t["model"] for t in doc["top_models"]] == [f"model-{i:02d}" for i in range(11, 3, -1)]


def test_budgets_from_the_ledger_with_burn_down(db):
    usage = ledger_usage()
    doc = dashboard_data(db, usage, 30, TZ, now=NOW)
    budgets = {(b["level"], b["owner"]): b for b in doc["budgets"]}
    assert len(doc["budgets"]) == 3                      # the rate limit entry is not a budget
    assert [b["label"] for b in doc["budgets"]] == [u["label"] for u in usage if u["kind"] == "budget"]

    key = budgets[("key", "vk-0")]
    ledger = next(u for u in usage if u["level"] == "key" and u["kind"] == "budget")
    assert (key["limit_usd"], key["spent_usd"], key["remaining_usd"]) == \
        (ledger["limit_usd"], ledger["spent_usd"], ledger["remaining_usd"])
    assert key["period"] == "month" and key["env"] == ""
    assert key["period_start"] == "2026-10-31T23:00:00Z" and key["resets_at"] == "2026-11-30T23:00:00Z"
    burn = key["burn"]
    assert burn["days"][0] == "2026-11-01" and burn["days"][-1] == "2026-11-27" and len(burn["days"]) == 27
    cum = burn["cumulative_usd"]
    assert cum == sorted(cum) and cum[-1] == key["spent_usd"] > 0    # the log agrees with the ledger here
    nov = [r for r in ROWS if r["vk"] == "vk-0" and r["day"] >= "2026-11-01"]
    for i, d in enumerate(burn["days"]):
        assert m(cum[i]) == sum(m(r["cost_usd"]) for r in nov if r["day"] <= d)


def test_budget_env_filter_and_levels(db):
    doc = dashboard_data(db, ledger_usage(), 30, TZ, now=NOW)
    budgets = {(b["level"], b["owner"]): b for b in doc["budgets"]}
    team = budgets[("team", "t1")]
    ledger = next(u for u in ledger_usage() if u["level"] == "team")
    assert team["env"] == "prod" and team["limit_usd"] == 5.0
    assert (team["spent_usd"], team["remaining_usd"]) == (ledger["spent_usd"], ledger["remaining_usd"])
    pick = [r for r in ROWS if r["team"] == "t1" and r["env"] == "prod" and r["day"] >= "2026-11-01"]
    everything = [r for r in ROWS if r["team"] == "t1" and r["day"] >= "2026-11-01"]
    assert m(team["burn"]["cumulative_usd"][-1]) == sum(m(r["cost_usd"]) for r in pick)
    assert sum(m(r["cost_usd"]) for r in pick) < sum(m(r["cost_usd"]) for r in everything)
    cust = budgets[("customer", "c1")]
    assert cust["period"] == "day" and cust["burn"]["days"] == ["2026-11-27"]
    today = [r for r in ROWS if r["customer"] == "c1" and r["day"] == "2026-11-27"]
    assert m(cust["burn"]["cumulative_usd"][0]) == sum(m(r["cost_usd"]) for r in today)


def test_budget_burn_of_a_hand_made_entry_and_an_ended_period(db):
    entry = {"level": "key", "owner": "vk-9", "kind": "budget", "period": "month", "env": "dev",
             "label": "key 'vk-9' monthly budget of $1 (env dev)", "limit_usd": 1.0, "spent_usd": 0.25,
             "reserved_usd": 0.0, "remaining_usd": 0.75,
             "period_start": "2026-09-30T22:00:00Z", "resets_at": "2026-10-31T23:00:00Z"}   # October in Paris
    [b] = dashboard_data(db, [entry], 30, TZ, now=NOW)["budgets"]
    assert (b["spent_usd"], b["remaining_usd"], b["limit_usd"]) == (0.25, 0.75, 1.0)
    assert b["burn"]["days"][0] == "2026-10-01" and b["burn"]["days"][-1] == "2026-10-31"
    october = [r for r in ROWS if r["vk"] == "vk-9" and r["env"] == "dev" and "2026-10" in r["day"]]
    assert any(r["cost_usd"] == 0.123456 for r in october)       # the fall-back hour request counts
    assert m(b["burn"]["cumulative_usd"][-1]) == sum(m(r["cost_usd"]) for r in october)


# --- forecasts -----------------------------------------------------------------------------------

def test_budget_forecast_is_forecast_py_on_the_ledger_spend_and_the_log_shape(db):
    """The key budget's forecast: the ledger's spent, the log's November spend as points, the days
    after today to the month's end with the projection at each day's end."""
    from finops.workers.observe.forecast import forecast, projected_at
    from finops.workers.observe.report import day_bounds
    doc = dashboard_data(db, ledger_usage(), 30, TZ, now=NOW)
    key = next(b for b in doc["budgets"] if b["level"] == "key")
    fc = key["forecast"]
    assert fc["model"] == "ewma"
    assert fc["days"] == [f"2026-11-{d}" for d in range(28, 31)]          # Nov 28 .. 30
    start = datetime(2026, 11, 1, tzinfo=PARIS).timestamp()
    end = datetime(2026, 12, 1, tzinfo=PARIS).timestamp()
    pts = [(r["ts"], r["cost_usd"]) for r in ROWS if r["vk"] == "vk-0" and start <= r["ts"] < NOW]
    want = forecast(pts, start, end, NOW, limit=10.0, spent=key["spent_usd"])
    assert fc["projected_usd"] == pytest.approx(want.projected_usd, rel=1e-3)   # hourly buckets vs rows
    assert fc["projected_usd"] > key["spent_usd"] > 0
    assert fc["cumulative_usd"][-1] == pytest.approx(fc["projected_usd"], abs=1e-6)   # the last day ends at the reset
    assert fc["cumulative_usd"] == sorted(fc["cumulative_usd"])
    f = forecast(pts, start, end, NOW, spent=key["spent_usd"])
    assert fc["cumulative_usd"][0] == pytest.approx(projected_at(f, day_bounds(date(2026, 11, 28), TZ)[1]), rel=1e-3)
    assert fc["crosses_at"] is None                       # ~$0.3 a month against $10


def test_forecast_of_a_day_budget_and_one_already_spent(db):
    doc = dashboard_data(db, ledger_usage(), 30, TZ, now=NOW)
    cust = next(b for b in doc["budgets"] if b["level"] == "customer")     # $1 a day, c1 spends ~$0.06 by 11:00
    assert cust["forecast"]["days"] == [] and cust["forecast"]["cumulative_usd"] == []
    assert cust["forecast"]["projected_usd"] >= cust["spent_usd"]
    hand = {"level": "team", "owner": "t1", "kind": "budget", "period": "month", "env": "", "label": "team t1",
            "limit_usd": 0.05, "spent_usd": 0.2, "reserved_usd": 0.0, "remaining_usd": -0.15,
            "period_start": "2026-10-31T23:00:00Z", "resets_at": "2026-11-30T23:00:00Z"}
    [b] = dashboard_data(db, [hand], 30, TZ, now=NOW)["budgets"]
    crossed = datetime.fromisoformat(b["forecast"]["crosses_at"].replace("Z", "+00:00")).timestamp()
    t1 = sorted((r["ts"], r["cost_usd"]) for r in ROWS if r["team"] == "t1" and "2026-11-01" <= r["day"] and r["ts"] < NOW)
    acc, first = 0.0, None
    for t, c in t1:
        acc += c
        if acc >= 0.05:
            first = t
            break
    assert first is not None and abs(crossed - first) < 3600     # within the hour bucket that reached it


def test_usage_with_forecasts_adds_forecast_usd_to_budgets_only(db):
    from finops.workers.observe.dashboard import budget_forecasts, usage_with_forecasts
    usage = ledger_usage()
    out = usage_with_forecasts(db, usage, now=NOW)
    assert [u["label"] for u in out] == [u["label"] for u in usage]
    for u, o in zip(usage, out):
        if u["kind"] == "budget":
            [alone] = budget_forecasts(db, [u], NOW)              # the same, asked for one budget
            assert o["forecast_usd"] == alone.projected_usd >= u["spent_usd"]
            assert "forecast_crosses_at" in o
        else:
            assert o == u
    assert "forecast_usd" not in usage[0]                 # the ledger's entries are not changed


def test_forecasts_read_the_log_once_per_level_and_period_and_keep_owners_and_envs_apart(db):
    """Budgets of several keys (one per env) share one query; each still sees only its own rows."""
    from finops.workers.observe.dashboard import budget_forecasts
    from finops.workers.observe.forecast import forecast

    def entry(owner, env=""):
        return {"level": "key", "owner": owner, "kind": "budget", "period": "month", "env": env,
                "label": f"{owner}@{env}", "limit_usd": 1.0, "spent_usd": 0.0, "reserved_usd": 0.0,
                "remaining_usd": 1.0, "period_start": "2026-10-31T23:00:00Z", "resets_at": "2026-11-30T23:00:00Z"}
    usage = [entry("vk-3"), entry("vk-4"), entry("vk-4", "prod"), entry("vk-5", "dev"), entry("nobody")]
    queries = []
    db.set_trace_callback(queries.append)
    together = budget_forecasts(db, usage, NOW)
    db.set_trace_callback(None)
    assert sum(q.lstrip().upper().startswith("SELECT") for q in queries) == 1
    start = datetime(2026, 11, 1, tzinfo=PARIS).timestamp()
    end = datetime(2026, 12, 1, tzinfo=PARIS).timestamp()
    for u, f in zip(usage, together):
        assert f == budget_forecasts(db, [u], NOW)[0], u["label"]
        mine = [(r["ts"], r["cost_usd"]) for r in ROWS if r["vk"] == u["owner"] and start <= r["ts"] <= NOW
                and (not u["env"] or r["env"] == u["env"])]
        exact = forecast(mine, start, end, NOW, spent=0.0)
        assert f.projected_usd == pytest.approx(exact.projected_usd, rel=1e-3, abs=1e-9), u["label"]
    assert together[-1].projected_usd == 0.0
    assert together[1].projected_usd > together[2].projected_usd > 0        # all envs > prod only
