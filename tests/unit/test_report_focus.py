"""`finops report --format focus`: the request log as a FOCUS 1.2 dataset. Every Mandatory
column of the spec is present with its type and format; the money equals `finops report`'s to the
micro-dollar on a log of thousands of rows; cache hits cost nothing and show what they saved."""
import csv
import io
import json
import math
import random
import re
from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from finops.shared.config import build
from finops.workers.observe import focus, logdb, report, report_cli
from tests.helpers.logrows import insert, row

UTC = timezone.utc
START = datetime(2026, 10, 28, tzinfo=UTC).timestamp()
TZ = "Europe/Paris"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"

# FOCUS 1.2's Mandatory columns and their data types, as the spec lists them
# (FOCUS_Spec, tag v1.2, specification/columns/*.md: "Feature level | Mandatory").
SPEC_MANDATORY = {
    "BilledCost": "Decimal", "BillingAccountId": "String", "BillingAccountName": "String",
    "BillingCurrency": "String", "BillingPeriodEnd": "Date/Time", "BillingPeriodStart": "Date/Time",
    "ChargeCategory": "String", "ChargeClass": "String", "ChargeDescription": "String",
    "ChargePeriodEnd": "Date/Time", "ChargePeriodStart": "Date/Time", "ContractedCost": "Decimal",
    "EffectiveCost": "Decimal", "InvoiceIssuerName": "String", "ListCost": "Decimal",
    "PricingQuantity": "Decimal", "PricingUnit": "String", "ProviderName": "String",
    "PublisherName": "String", "ServiceCategory": "String", "ServiceName": "String",
}
SPEC_NOT_NULL = {"BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
                 "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost",
                 "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName"}
SERVICE_CATEGORIES = {"AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
                      "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
                      "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
                      "Storage", "Web", "Other"}
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def make_rows(n=3000, seed=19) -> list[dict]:
    """`n` requests over 40 days across Oct/Nov/Dec 2026 in Paris: keys, teams, customers, envs,
    models, providers; errors, exact and semantic cache hits, odd costs."""
    rnd = random.Random(seed)
    keys = [("vk-a", "alice", "t1", "c1"), ("vk-b", "bob", "t2", "c1"), ("vk-c", "", "t3", "c2"),
            ("vk-d", "dave", "", ""), ("", "", "", "")]
    rows = []
    for i in range(n):
        vk, name, team, cust = keys[i % len(keys)]
        r = dict(ts=START + rnd.random() * 40 * 86400, vk=vk, vk_name=name, team=team, customer=cust,
                 env=rnd.choice(["prod", "dev", ""]), model=rnd.choice([HAIKU, PROFILE, "gpt-4o-mini"]),
                 provider=rnd.choice(["bedrock", "openai"]), input_tokens=rnd.randint(1, 5000),
                 output_tokens=rnd.randint(0, 900), cache_read_tokens=rnd.choice([0, 0, 128]),
                 cache_write_tokens=rnd.choice([0, 0, 0, 64]),
                 cost_usd=round(rnd.random() * 0.05, 6) + rnd.choice([0, 4e-7, 6e-7]))
        k = rnd.random()
        if k < 0.07:
            r.update(cache="hit-semantic", cache_similarity=0.97, saved_usd=round(rnd.random() * 0.02, 8),
                     cost_usd=0.0, input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
                     provider="")
        elif k < 0.12:
            r.update(cache="hit-exact", saved_usd=round(rnd.random() * 0.02, 8), cost_usd=0.0, input_tokens=0,
                     output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, provider="")
        elif k < 0.15:
            r.update(error="ThrottlingException", status=429, cost_usd=0.0, output_tokens=0)
        else:
            r.update(cache=rnd.choice(["miss", ""]))
        rows.append(row(tz=TZ, **r))
    return rows


ROWS = make_rows()
ALL = (START - 86400, START + 50 * 86400)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("log"))
    db = logdb.open_db(d)
    insert(db, ROWS)
    db.close()
    ro = logdb.open_db(d, readonly=True)
    yield d, ro
    ro.close()


def m(x) -> int:
    return int((Decimal(str(x)) * 1_000_000).to_integral_value())


def sql_micros(usd: float) -> int:
    """A request's USD as micro-dollars the way the report's SQL rounds (half away from zero)."""
    return math.floor(usd * 1_000_000 + 0.5)


def parse_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def check_type(name: str, kind: str, value: str) -> None:
    if kind == "Decimal":
        assert DECIMAL.match(value), (name, value)
    elif kind == "Date/Time":
        assert DATETIME.match(value), (name, value)
    elif kind == "JSON":
        obj = json.loads(value)
        assert isinstance(obj, dict) and all(isinstance(v, (str, int, float, bool)) or v is None
                                             for v in obj.values()), (name, value)
    else:
        assert isinstance(value, str)


# --- the columns ---------------------------------------------------------------------------------

def test_the_module_lists_every_mandatory_column_of_the_spec_with_its_type():
    cols = {c.name: c for c in focus.FOCUS_COLUMNS}
    assert set(focus.MANDATORY) == set(SPEC_MANDATORY)
    for name, kind in SPEC_MANDATORY.items():
        assert cols[name].type == kind and cols[name].level == "Mandatory", name
        assert cols[name].nullable == (name not in SPEC_NOT_NULL), name
    assert len(focus.COLUMN_NAMES) == len(set(focus.COLUMN_NAMES))
    custom = [c for c in focus.FOCUS_COLUMNS if c.level == "Custom"]
    assert custom and all(c.name.startswith("x_") for c in custom)          # FOCUS's custom-column prefix


def test_every_row_has_every_column_with_the_right_type_and_allowed_values(log):
    _, db = log
    rows = parse_csv(focus.to_focus_csv(focus.focus_rows(db, *ALL, TZ)))
    assert rows and list(rows[0]) == list(focus.COLUMN_NAMES)
    cols = {c.name: c for c in focus.FOCUS_COLUMNS}
    for r in rows:
        for name, c in cols.items():
            v = r[name]
            if v == "":
                assert c.nullable, (name, r)
                continue
            check_type(name, c.type, v)
            if c.allowed:
                assert v in c.allowed, (name, v)
        assert r["ServiceCategory"] in SERVICE_CATEGORIES
        assert r["ChargeCategory"] == "Usage" and r["ChargeClass"] == ""
        assert r["PricingQuantity"] != "" and r["PricingUnit"] == "Tokens"     # not null for Usage
        assert r["ConsumedQuantity"] == r["PricingQuantity"] and r["ConsumedUnit"] == "Tokens"
        assert r["ChargePeriodStart"] < r["ChargePeriodEnd"]
        assert r["BillingPeriodStart"] <= r["ChargePeriodStart"] and r["ChargePeriodEnd"] <= r["BillingPeriodEnd"]
        assert r["BillingCurrency"] == "USD"


def test_charge_periods_are_utc_hours_and_billing_periods_local_months(log):
    _, db = log
    rows = focus.focus_rows(db, *ALL, TZ)
    months = {(r["BillingPeriodStart"], r["BillingPeriodEnd"]) for r in rows}
    assert months == {("2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z"),      # Paris: CEST, then CET
                      ("2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z"),
                      ("2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z")}
    for r in rows:
        s = datetime.strptime(r["ChargePeriodStart"], "%Y-%m-%dT%H:%M:%SZ")
        e = datetime.strptime(r["ChargePeriodEnd"], "%Y-%m-%dT%H:%M:%SZ")
        assert s.minute == s.second == 0 and (e - s).total_seconds() == 3600


def test_a_half_hour_zone_cuts_the_hour_at_the_month_boundary(tmp_path):
    """Kolkata's month starts at 18:30 UTC: the 18:00-19:00 UTC hour is two charges, one per month."""
    tz = "Asia/Kolkata"
    t0 = datetime(2026, 11, 30, 18, 0, tzinfo=UTC).timestamp()
    db = logdb.open_db(str(tmp_path))
    insert(db, [row(tz=tz, ts=t0 + 600, cost_usd=0.1), row(tz=tz, ts=t0 + 2400, cost_usd=0.2)])
    db.close()
    with logdb.open_db(str(tmp_path), readonly=True) as ro:
        rows = focus.focus_rows(ro, t0 - 3600, t0 + 7200, tz)
    got = sorted((r["ChargePeriodStart"], r["ChargePeriodEnd"], r["BilledCost"], r["BillingPeriodStart"]) for r in rows)
    assert got == [("2026-11-30T18:00:00Z", "2026-11-30T18:30:00Z", "0.100000", "2026-10-31T18:30:00Z"),
                   ("2026-11-30T18:30:00Z", "2026-11-30T19:00:00Z", "0.200000", "2026-11-30T18:30:00Z")]


def test_day_grain_uses_local_days(log):
    _, db = log
    rows = focus.focus_rows(db, *ALL, TZ, grain="day")
    for r in rows:
        s = datetime.strptime(r["ChargePeriodStart"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert s.astimezone(ZoneInfo(TZ)).hour == 0                 # local midnight, in UTC
    hours = focus.focus_rows(db, *ALL, TZ)
    assert sum(m(r["BilledCost"]) for r in rows) == sum(m(r["BilledCost"]) for r in hours)
    assert len(rows) < len(hours)
    with pytest.raises(ValueError, match="grain"):
        focus.focus_rows(db, *ALL, TZ, grain="week")


# --- the money -----------------------------------------------------------------------------------

@pytest.mark.parametrize("where", [None, {"customer": "c1"}, {"env": "prod"}, {"key": ""}, {"model": HAIKU}])
def test_totals_equal_finops_reports_to_the_micro_dollar(log, where):
    _, db = log
    since, until = START + 2.5 * 86400, START + 33.3 * 86400
    rows = focus.focus_rows(db, since, until, TZ, where)
    t = report.total(report.summarize(db, ["key"], since, until, where))
    billed = sum(m(r["BilledCost"]) for r in rows)
    assert billed == sum(m(r["EffectiveCost"]) for r in rows) == m(t["cost_usd"])
    assert sum(m(r["ListCost"]) for r in rows) - billed == m(t["saved_usd"])
    assert sum(m(r["ContractedCost"]) for r in rows) == sum(m(r["ListCost"]) for r in rows)
    assert sum(m(r["x_CacheSavedCost"]) for r in rows) == m(t["saved_usd"])
    assert sum(int(r["x_Requests"]) for r in rows) == t["requests"]
    assert sum(int(r["x_CacheHits"]) for r in rows) == t["cache_hits"]
    assert sum(int(r["x_Errors"]) for r in rows) == t["errors"]
    assert sum(int(r["x_InputTokens"]) for r in rows) == t["input_tokens"]
    # and the python sum of the log (each request rounded to the micro-dollar) agrees
    pick = [r for r in ROWS if since <= r["ts"] < until and all(
        r[report.FILTERS[k]] == v for k, v in (where or {}).items())]
    assert billed == sum(sql_micros(r["cost_usd"]) for r in pick)


def test_cache_hits_cost_nothing_and_show_the_saving(log):
    _, db = log
    rows = focus.focus_rows(db, *ALL, TZ)
    hits = [r for r in rows if r["ServiceName"] == "LLM response cache"]
    assert {r["x_CacheHits"] == r["x_Requests"] for r in hits} == {True}
    assert any("semantic cache" in r["ChargeDescription"] for r in hits)
    assert any("exact cache" in r["ChargeDescription"] for r in hits)
    for r in hits:
        assert r["BilledCost"] == r["EffectiveCost"] == "0.000000"
        assert r["ListCost"] == r["ContractedCost"] == r["x_CacheSavedCost"] and m(r["ListCost"]) > 0
        assert r["ProviderName"] == r["InvoiceIssuerName"] == "FinOps gateway"
        assert r["ConsumedQuantity"] == "0"
    served = [r for r in rows if r["ServiceName"] == "LLM inference"]
    assert served and all(r["x_CacheHits"] == "0" and r["ListCost"] == r["BilledCost"] for r in served)
    sem = [r for r in ROWS if r["cache"] == "hit-semantic"]
    assert sum(m(r["x_CacheSavedCost"]) for r in hits if "semantic" in r["ChargeDescription"]) == \
        sum(sql_micros(r["saved_usd"]) for r in sem)


def test_names_tags_and_accounts(log):
    _, db = log
    rows = focus.focus_rows(db, *ALL, TZ)
    by_model = {r["ResourceId"]: r for r in rows if r["ServiceName"] == "LLM inference"}
    assert by_model[HAIKU]["PublisherName"] == "anthropic" and by_model[PROFILE]["PublisherName"] == "anthropic"
    assert by_model["gpt-4o-mini"]["PublisherName"] == by_model["gpt-4o-mini"]["ProviderName"]
    for r in rows:
        tags = json.loads(r["Tags"]) if r["Tags"] else {}
        assert all(k.startswith("finops/") and v for k, v in tags.items())
        assert r["BillingAccountId"] == (tags.get("finops/customer") or "unassigned")
        assert r["SubAccountId"] == (tags.get("finops/team") or None)
    anon = [r for r in rows if not r["Tags"] or "finops/virtual-key" not in json.loads(r["Tags"])]
    assert anon                                                   # the anonymous requests
    named = [json.loads(r["Tags"]) for r in rows if r["Tags"] and '"vk-a"' in r["Tags"]]
    assert named and all(t["finops/virtual-key-name"] == "alice" and t["finops/team"] == "t1" for t in named)


def test_money_strings_are_exact():
    assert focus.money(0) == "0.000000" and focus.money(1) == "0.000001"
    assert focus.money(12_345_678) == "12.345678" and focus.money(-5) == "-0.000005"
    assert focus.utc(0) == "1970-01-01T00:00:00Z"
    assert focus.publisher("eu.meta.llama3-8b-instruct-v1:0", "bedrock") == "meta"
    assert focus.publisher("mistral-large", "mistral") == "mistral"
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert focus.publisher(arn, "bedrock") == "anthropic"
    assert focus.publisher("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", "bedrock") == "bedrock"
    assert focus.publisher("My Model v2.1", "openai") == "openai"


# --- Parquet and the CLI -------------------------------------------------------------------------

def test_parquet_has_the_same_rows_and_typed_columns(log):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    _, db = log
    rows = focus.focus_rows(db, *ALL, TZ)
    table = pq.read_table(io.BytesIO(focus.to_focus_parquet(rows)))
    assert table.column_names == list(focus.COLUMN_NAMES) and table.num_rows == len(rows)
    assert pa.types.is_decimal(table.schema.field("BilledCost").type)
    assert pa.types.is_timestamp(table.schema.field("ChargePeriodStart").type)
    assert str(table.schema.field("ChargePeriodStart").type.tz) == "UTC"
    assert table.schema.metadata[b"focus_version"] == b"1.2"
    billed = sum(table.column("BilledCost").to_pylist())
    assert billed == sum(Decimal(r["BilledCost"]) for r in rows)


@pytest.fixture
def cfg(log):
    d, _ = log
    c = build({"server": {"data_dir": d}, "governance": {"timezone": TZ}}, "t", environ={})
    c.server.data_dir = d
    return c


def test_cli_writes_focus_csv_equal_to_the_reports_total(cfg, capsys, tmp_path):
    assert report_cli.main(["--format", "focus", "--month", "2026-11"], cfg) == 0
    out = capsys.readouterr().out
    rows = parse_csv(out)
    assert report_cli.main(["--by", "customer", "--month", "2026-11", "--format", "json"], cfg) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sum(m(r["BilledCost"]) for r in rows) == m(doc["total"]["cost_usd"]) > 0
    assert {r["BillingPeriodStart"] for r in rows} == {"2026-10-31T23:00:00Z"}
    path = tmp_path / "nov.csv"
    assert report_cli.main(["--format", "focus", "--month", "2026-11", "--grain", "day", "--output", str(path)], cfg) == 0
    err = capsys.readouterr().err
    assert f"to {path}" in err and "FOCUS 1.2" in err
    assert sum(m(r["BilledCost"]) for r in parse_csv(path.read_text())) == m(doc["total"]["cost_usd"])


def test_cli_parquet_without_pyarrow_says_how_to_get_it(cfg, capsys, tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_pyarrow(name, *a, **kw):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    code = report_cli.main(["--format", "focus", "--output", str(tmp_path / "x.parquet")], cfg)
    assert code == 2 and "finops-gateway[parquet]" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("argv,says", [
    (["--format", "focus", "--by", "model"], "--by does not apply"),
    (["--format", "focus", "--chargeback"], "pick one"),
    (["--output", "x.csv"], "--output is for --format focus"),
    (["--format", "focus", "--month", "2026-11", "--since", "7d"], "not both"),
    (["--format", "focus", "--month", "2026-13"], "--month '2026-13'"),
])
def test_cli_focus_usage_errors(cfg, capsys, argv, says):
    assert report_cli.main(argv, cfg) == 2
    assert says in capsys.readouterr().err
