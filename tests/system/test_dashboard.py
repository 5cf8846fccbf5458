"""The spend dashboard at /ui, in headless Chromium (Debian's, driven by Playwright), on real data.

Everything comes from the real gateway (`finops serve`): the page and its files (so the static
route, its headers and its CSP are exercised), and the data, GET /admin/dashboard, computed from
its request log and its ledger. Before the gateway starts, its data directory is seeded with
three weeks of history: request-log rows (several envs, virtual keys, models, errors, cache hits)
and the ledger's counters as the same requests would have left them (reserve + settle through
`LedgerState`, saved as the snapshot the ledger restores at start), so every budget's spend and
its burn-down agree. Then real boto3 traffic goes through the mock provider with virtual keys
that have budgets, so today's numbers include live requests the gateway logged and charged itself.

The page is checked against the API's own answer (fetched here with the admin token): tiles,
the datasets of every chart, a card per ledger budget. The empty state is a fresh gateway with
no rows. Only answers the real gateway cannot give (a broken body) are intercepted in the browser.

Every page must render without a console error or warning. Full-page screenshots are kept in
tests/artifacts/ (dashboard.png is the one docs/dashboard.png is copied from).
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from finops.shared import config as configmod
from finops.workers.governance.directory import load_directory
from finops.workers.ledger.state import LedgerState
from finops.workers.governance.store import Store
from finops.workers.observe import logdb
from tests.helpers.chromium import ARGS, chromium_path
from tests.helpers.gateway import Gateway, request_log
from tests.helpers.logrows import insert, row

pytestmark = pytest.mark.system

ADMIN = "dash-admin-token-0123456789"
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "artifacts")
CANVASES = ["chart-spend-env", "chart-spend-key", "chart-spend-model", "chart-top-models",
            "chart-errors", "chart-cache"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
HISTORY_DAYS = 21            # today and the 20 days before it

# Bedrock on-demand prices, USD per 1M tokens (input, output)
MODELS = {
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (3.0, 15.0),
    "anthropic.claude-3-haiku-20240307-v1:0": (0.25, 1.25),
    "meta.llama3-1-70b-instruct-v1:0": (0.99, 0.99),
    "mistral.mistral-large-2407-v1:0": (2.0, 6.0),
    "amazon.titan-text-express-v1": (0.2, 0.6),
}
SONNET, HAIKU, LLAMA, MISTRAL, TITAN = MODELS


@dataclass
class Key:
    id: str
    secret: str
    name: str
    team: str
    budgets: str = ""             # TOML, as in the config
    per_day: int = 0              # requests on a weekday
    envs: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    tokens_in: tuple = (500, 2000)
    tokens_out: tuple = (100, 500)
    cache: float = 0.0            # share of the requests answered from the cache
    weekends: bool = True


KEYS = [
    Key("vk-checkout", "checkout-secret-0123456789", "checkout-web", "payments",
        '[{amount_usd = 12.0, period = "month"}]', 60, {"prod": 0.8, "staging": 0.2}, {SONNET: 0.6, HAIKU: 0.4},
        (800, 2500), (150, 600)),
    Key("vk-search", "search-secret-0123456789ab", "search-api", "search", "", 120, {"prod": 0.9, "dev": 0.1},
        {HAIKU: 0.5, LLAMA: 0.3, SONNET: 0.2}, (2000, 6000), (100, 400), cache=0.15),
    Key("vk-batch", "batch-secret-0123456789abc", "batch-summaries", "data",
        '[{amount_usd = 1.5, period = "day"}]', 40, {"prod": 0.7, "staging": 0.3}, {MISTRAL: 0.6, SONNET: 0.4},
        (3000, 9000), (400, 1200)),
    Key("vk-support", "support-secret-0123456789a", "support-bot", "support",
        '[{amount_usd = 8.0, period = "month"}]', 80, {"prod": 1.0}, {HAIKU: 0.6, SONNET: 0.25, TITAN: 0.15},
        (800, 2200), (150, 450), cache=0.25),
    Key("vk-notebooks", "notebook-secret-0123456789", "analyst-notebooks", "data", "", 25, {"dev": 1.0},
        {SONNET: 0.5, LLAMA: 0.3, MISTRAL: 0.2}, (1000, 12000), (200, 1500), weekends=False),
    Key("", "", "", "", "", 15, {"": 0.6, "dev": 0.4}, {TITAN: 0.4, HAIKU: 0.4, LLAMA: 0.2}, (200, 1500), (50, 400)),
]
BY_ID = {k.id: k for k in KEYS}
LIVE = [("vk-checkout", "prod", SONNET, 6), ("vk-checkout", "staging", HAIKU, 2),
        ("vk-batch", "staging", MISTRAL, 4)]                # (key, env, model, requests): live traffic


def config_text() -> str:
    teams = "".join(f'\n[[governance.teams]]\nid = "{t}"\n' for t in ("payments", "data", "support"))
    teams += '\n[[governance.teams]]\nid = "search"\nbudgets = [{amount_usd = 5.0, period = "week", env = "prod"}]\n'
    keys = "".join(f'\n[[governance.keys]]\nid = "{k.id}"\nsecret = "{k.secret}"\nname = "{k.name}"\n'
                   f'team = "{k.team}"\n' + (f"budgets = {k.budgets}\n" if k.budgets else "")
                   for k in KEYS if k.id)
    return f"""
[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[pricing."*"]
input = 3.0
output = 15.0

[governance]
admin_token = "{ADMIN}"
timezone = "UTC"
{teams}{keys}"""


# --- three weeks of history ------------------------------------------------------------------

def pick(rnd: random.Random, weights: dict):
    return rnd.choices(list(weights), list(weights.values()))[0]


def history(now: float) -> list[dict]:
    """Request-log rows for today (before `now`) and the HISTORY_DAYS - 1 days before, in UTC;
    sorted by time. Deterministic for a given day."""
    today = datetime.fromtimestamp(now, timezone.utc).date()
    rnd = random.Random(today.toordinal())
    midnight = datetime(today.year, today.month, today.day, tzinfo=timezone.utc).timestamp()
    rows = []
    for back in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=back)
        start = midnight - back * 86400
        span = (now - 1 - start) if back == 0 else 86400.0
        weekend = day.weekday() >= 5
        incident = back == 6                       # an upstream incident: many 503s that day
        growth = 1.0 + 0.015 * (HISTORY_DAYS - back)
        for k in KEYS:
            if weekend and not k.weekends:
                continue
            n = int(k.per_day * growth * (0.45 if weekend else 1.0) * rnd.uniform(0.8, 1.2))
            for _ in range(n):
                model = pick(rnd, k.models)
                pin, pout = MODELS[model]
                stream = rnd.random() < 0.3
                r = dict(ts=round(start + rnd.random() * span, 3), vk=k.id, vk_name=k.name, team=k.team,
                         env=pick(rnd, k.envs), model=model, provider="bedrock", upstream_model=model,
                         target=f"bedrock/{model}", op="converse-stream" if stream else "converse",
                         stream=int(stream), latency_ms=round(rnd.uniform(400, 6000), 1),
                         ttft_ms=round(rnd.uniform(200, 900), 1) if stream else None,
                         user_agent="Boto3/1.40.0 md/Botocore#1.40.0 ua/2.1 os/linux lang/python#3.12")
                tin, tout = rnd.randint(*k.tokens_in), rnd.randint(*k.tokens_out)
                cost = round((tin * pin + tout * pout) / 1e6, 6)     # whole micro-dollars: sums are exact
                fate = rnd.random()
                if fate < (0.12 if incident else 0.015):
                    code, status = rnd.choice([("ServiceUnavailableException", 503), ("ThrottlingException", 429),
                                               ("ModelTimeoutException", 408), ("InternalServerException", 500)])
                    r.update(error=code, status=status, error_origin="upstream", attempts=rnd.randint(2, 3))
                elif fate < 0.135 and k.id == "vk-notebooks":
                    r.update(error="AccessDeniedException", status=403, error_origin="governance", attempts=0,
                             provider="", upstream_model="", target="")
                elif fate < 0.14:
                    r.update(error="cancelled", status=200, error_origin="client",
                             input_tokens=tin, cost_usd=round(tin * pin / 1e6, 6))
                elif k.cache and fate < 0.14 + k.cache:
                    semantic = rnd.random() < 0.3
                    r.update(cache="hit-semantic" if semantic else "hit-exact", attempts=0,
                             cache_similarity=round(rnd.uniform(0.93, 0.99), 4) if semantic else None,
                             saved_usd=cost, latency_ms=round(rnd.uniform(3, 40), 1))
                else:
                    r.update(input_tokens=tin, output_tokens=tout, cost_usd=cost, cache="miss" if k.cache else "")
                rows.append(row(**r))
    rows.sort(key=lambda r: r["ts"])
    return rows


def seed(gw: Gateway, rows: list[dict]) -> list[dict]:
    """Write `rows` to the gateway's request log, and the ledger snapshot the same requests would
    have left (each reserved at its cost, then settled); returns the ledger's usage."""
    store = Store.open(gw.data_dir)
    try:
        cfg = configmod.load(gw.config_path, environ={"FINOPS_DATA_DIR": gw.data_dir})
        store.sync_config(cfg.governance)
        clock = [0.0]
        state = LedgerState(load_directory(store, cfg), clock=lambda: clock[0], tz=cfg.governance.timezone)
        for r in rows:
            if not r["vk"] or r["error_origin"] == "governance":      # anonymous, or refused before the ledger
                continue
            clock[0] = r["ts"]
            tokens = r["input_tokens"] + r["output_tokens"]
            assert state.reserve(r["id"], r["vk"], r["env"], r["cost_usd"], tokens)["ok"], r
            state.settle(r["id"], r["cost_usd"], tokens, saved_usd=r["saved_usd"])
        clock[0] = time.time()
        store.save_snapshot(state.snapshot())
        usage = state.usage()
    finally:
        store.close()
    db = logdb.open_db(gw.data_dir)
    try:
        insert(db, rows)
    finally:
        db.close()
    return [u for u in usage if u["kind"] == "budget"]


def live_client(gw: Gateway, secret: str, env: str):
    c = gw.client()

    def add(request, **kwargs):
        request.headers.add_header("x-bf-vk", secret)
        request.headers.add_header("x-bf-env", env)
    c.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return c


def send_live_traffic(gw: Gateway) -> int:
    n = 0
    for key_id, env, model, count in LIVE:
        c = live_client(gw, BY_ID[key_id].secret, env)
        for i in range(count):
            msg = [{"role": "user", "content": [{"text": f"Summarise order #{1000 + i} for the {env} report."}]}]
            if i % 3 == 2:
                out = c.converse_stream(modelId=model, messages=msg, inferenceConfig={"maxTokens": 300})
                assert any("contentBlockDelta" in e for e in out["stream"])
            else:
                out = c.converse(modelId=model, messages=msg, inferenceConfig={"maxTokens": 300})
                assert out["usage"]["outputTokens"] > 0
            n += 1
    return n


# --- the admin API, as the test sees it --------------------------------------------------------

def admin_get(gw: Gateway, path: str) -> dict:
    req = urllib.request.Request(gw.url + path, headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read())


def budget_spend(gw: Gateway) -> dict:
    return {(u["level"], u["owner"], u["period"]): u["spent_usd"]
            for u in admin_get(gw, "/admin/usage")["usage"] if u["kind"] == "budget"}


@dataclass
class Seeded:
    gw: Gateway
    rows: list          # the seeded history
    ledger: list        # the seeded ledger's budgets (before live traffic)
    live: list          # the live requests' log rows


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("dash"), config_text(), workers=1)
    rows = history(time.time())
    ledger = seed(gw, rows)
    with gw:
        sent = send_live_traffic(gw)
        deadline = time.monotonic() + 15
        while True:        # the live rows are in the log and their costs in the ledger
            live = [r for r in request_log(gw.data_dir) if r["provider"] == "mock"]
            expect = {(u["level"], u["owner"], u["period"]): u["spent_usd"] for u in ledger}
            for r in live:
                for level, owner in (("key", r["vk"]), ("team", r["team"])):
                    for k in expect:
                        if k[:2] == (level, owner):
                            expect[k] = round(expect[k] + r["cost_usd"], 6)
            got = budget_spend(gw)
            if len(live) == sent and all(abs(got[k] - v) < 2e-6 for k, v in expect.items()):
                break
            assert time.monotonic() < deadline, (len(live), sent, got, expect)
            time.sleep(0.1)
        yield Seeded(gw, rows, ledger, live)


@pytest.fixture(scope="module")
def gateway(seeded):
    return seeded.gw


@pytest.fixture(scope="module")
def empty_gateway(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("dash-empty"), f'[governance]\nadmin_token = "{ADMIN}"\n',
                 workers=1) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    exe = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Console:
    """Everything the page logged, and its uncaught errors."""

    def __init__(self, page):
        self.messages: list[tuple[str, str]] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))

    def problems(self, allow: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return [(t, m) for t, m in self.messages
                if t in ("error", "warning", "pageerror") and not any(a in m for a in allow)]


def open_page(browser, *, width: int = 1440):
    """A fresh tab; `asked` lists the `days` of every /admin/dashboard request it makes."""
    ctx = browser.new_context(viewport={"width": width, "height": 900}, reduced_motion="reduce",
                              device_scale_factor=1, timezone_id="UTC", locale="en-US")
    page = ctx.new_page()
    console = Console(page)
    asked: list[str] = []

    def seen(req):
        u = urlsplit(req.url)
        if u.path == "/admin/dashboard":
            asked.append(parse_qs(u.query).get("days", ["?"])[0])
    page.on("request", seen)
    return ctx, page, console, asked


def wait_settled(page):
    page.wait_for_function("() => document.body.dataset.ready === '1' || document.body.dataset.error !== undefined",
                           timeout=15000)


def charts(page, ids) -> dict:
    """Per canvas id: its Chart.js instance's type, labels, datasets (label, full name, data) and size."""
    return page.evaluate("""(ids) => Object.fromEntries(ids.map(id => {
        const el = document.getElementById(id);
        const c = el && window.Chart.getChart(el);
        return [id, c ? {type: c.config.type, labels: c.data.labels, width: el.clientWidth, height: el.clientHeight,
                         datasets: c.data.datasets.map(d => ({label: d.label, name: d.fullName, data: d.data}))}
                      : null];
    }))""", ids)


def tile(page, name) -> str:
    return page.locator(f"#tile-{name} .tile-value").inner_text()


# --- what the page should show for a value (its Intl formats, en-US) -------------------------

def _round(v, places: int) -> Decimal:
    # Intl rounds the number's exact value half away from zero
    return Decimal(v).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def money(v: float) -> str:
    assert v == 0 or abs(v) >= 0.01, v      # below a cent the page shows 2 significant digits
    return f"${_round(v, 2):,.2f}"


def percent(v: float, places: int = 2) -> str:
    s = f"{_round(Decimal(v) * 100, places):,f}"
    return (s.rstrip("0").rstrip(".") if "." in s else s) + "%"


def day_label(iso: str) -> str:
    y, m, d = map(int, iso.split("-"))
    return f"{MONTHS[m - 1]} {d}"


def short_model(model_id: str) -> str:
    """dashboard.js shortModel(), for the ids used here."""
    return model_id.split(".", 1)[1].rsplit("-v", 1)[0]


def check_page_matches(page, data: dict) -> None:
    """The rendered page shows `data` (an /admin/dashboard answer): tiles, every chart's
    datasets, a card per budget."""
    t = data["totals"]
    assert tile(page, "spend") == money(t["cost_usd"])
    assert tile(page, "requests") == f"{t['requests']:,}"
    assert tile(page, "errors") == percent(t["error_rate"])
    assert tile(page, "cache") == money(t["saved_usd"])
    assert tile(page, "tokens") == f"{t['input_tokens'] + t['output_tokens']:,}"
    assert f"{t['errors']:,} failed of {t['requests']:,}" in page.locator("#tile-errors").inner_text()
    assert f"{t['cache_hits']:,} cache hits" in page.locator("#tile-cache").inner_text()
    n = len(data["days"])
    assert page.locator("#range").inner_text().startswith(day_label(data["since"]))
    assert page.locator("#range").inner_text().endswith(f"{n} days")

    info = charts(page, CANVASES)
    labels = [day_label(d) for d in data["days"]]
    for cid in CANVASES:
        assert info[cid] is not None, f"{cid} has no Chart instance"
        assert info[cid]["width"] > 150 and info[cid]["height"] > 150, (cid, info[cid])
    for cid, series, kind in (("chart-spend-env", "spend_by_env", "bar"), ("chart-spend-key", "spend_by_key", "bar"),
                              ("chart-spend-model", "spend_by_model", "line")):
        c = info[cid]
        assert c["type"] == kind and c["labels"] == labels, cid
        assert [d["name"] for d in c["datasets"]] == list(data[series]), cid      # by spend, as the API ranks
        assert {d["name"]: d["data"] for d in c["datasets"]} == data[series], cid
    top = info["chart-top-models"]
    assert top["labels"] == [short_model(m["model"]) for m in data["top_models"]]
    assert top["datasets"][0]["data"] == [m["cost_usd"] for m in data["top_models"]]
    errs = info["chart-errors"]
    assert errs["labels"] == labels and [d["label"] for d in errs["datasets"]] == ["Requests", "Error rate"]
    assert errs["datasets"][0]["data"] == data["requests_by_day"]
    rates = [e / r if r else None for e, r in zip(data["errors_by_day"], data["requests_by_day"])]
    assert errs["datasets"][1]["data"] == pytest.approx(rates)
    cache = info["chart-cache"]
    assert cache["labels"] == labels
    assert {d["label"]: d["data"] for d in cache["datasets"]} == {"Saved (USD)": data["saved_usd_by_day"],
                                                                   "Cache hits": data["cache_hits_by_day"]}

    cards = page.locator("#budgets .budget")
    assert cards.count() == len(data["budgets"])
    burns = charts(page, [f"chart-budget-{i}" for i in range(len(data["budgets"]))])
    for i, b in enumerate(data["budgets"]):
        card = cards.nth(i)
        assert card.locator("h3").inner_text() == b["label"]
        ratio = b["spent_usd"] / b["limit_usd"]
        assert card.locator(".spent").inner_text() == \
            f"{money(b['spent_usd'])} of {money(b['limit_usd'])} spent ({percent(ratio, 1)})"
        assert f"{money(b['remaining_usd'])} remaining" in card.inner_text()
        reset = datetime.fromisoformat(b["resets_at"].replace("Z", "+00:00"))
        assert f"resets {MONTHS[reset.month - 1]} {reset.day}, {reset.year}" in card.inner_text()
        burn = burns[f"chart-budget-{i}"]
        assert burn is not None and burn["width"] > 150, b["label"]
        spent = burn["datasets"][0]["data"]
        assert burn["labels"][:len(b["burn"]["days"])] == [day_label(d) for d in b["burn"]["days"]]
        assert spent[:len(b["burn"]["days"])] == b["burn"]["cumulative_usd"]
        assert all(v is None for v in spent[len(b["burn"]["days"]):])          # the rest of the period
        assert burn["datasets"][1]["data"] == [b["limit_usd"]] * len(burn["labels"])
        # the server's forecast, drawn as it is (the page asked a moment later: the clock moved a little)
        fc, n = b["forecast"], len(b["burn"]["days"])
        assert burn["labels"][n:] == [day_label(d) for d in fc["days"]]
        if fc["days"]:
            proj = burn["datasets"][2]
            assert proj["label"] == "Projected"
            assert proj["data"][:n - 1] == [None] * (n - 1) and proj["data"][n - 1] == b["burn"]["cumulative_usd"][-1]
            assert proj["data"][n:] == pytest.approx(fc["cumulative_usd"], rel=1e-4)
        shown = re.search(r"forecast: \$([\d,.]+) by the reset", card.inner_text())
        assert shown and float(shown.group(1).replace(",", "")) == pytest.approx(fc["projected_usd"], abs=0.006)
    assert page.evaluate("document.body.dataset.charts") == str(len(CANVASES) + len(data["budgets"]))
    assert page.evaluate("Object.keys(Chart.instances).length") == len(CANVASES) + len(data["budgets"])


# --- tests -------------------------------------------------------------------------------

def test_the_api_has_the_seeded_and_live_data(seeded):
    """What the page is then checked against: the API's answer covers the seeded history and the
    live requests, and each budget's ledger spend equals its burn-down from the log."""
    gw = seeded.gw
    data = admin_get(gw, "/admin/dashboard?days=30")
    window = [r for r in seeded.rows if r["day"] >= data["since"]] + seeded.live
    t = data["totals"]
    assert t["requests"] == len(window)
    assert t["cost_usd"] == round(sum(round(r["cost_usd"] * 1e6) for r in window) / 1e6, 6)
    assert t["cache_hits"] == sum(r["cache"].startswith("hit") for r in window) > 0
    assert t["saved_usd"] > 1 and 0 < t["errors"] < t["requests"] / 10
    assert set(data["spend_by_env"]) == {"prod", "staging", "dev", "(none)"}
    assert set(data["spend_by_key"]) == {k.name for k in KEYS if k.id} | {"(anonymous)"}
    assert set(data["spend_by_model"]) == set(MODELS)
    assert data["requests_by_day"][:30 - HISTORY_DAYS] == [0] * (30 - HISTORY_DAYS)
    assert all(n > 0 for n in data["requests_by_day"][30 - HISTORY_DAYS:])

    budgets = {(b["level"], b["owner"], b["period"]): b for b in data["budgets"]}
    assert set(budgets) == {("key", "vk-checkout", "month"), ("key", "vk-batch", "day"),
                            ("key", "vk-support", "month"), ("team", "search", "week")}
    assert budgets[("team", "search", "week")]["env"] == "prod"
    seeded_spend = {(u["level"], u["owner"], u["period"]): u["spent_usd"] for u in seeded.ledger}
    for k, b in budgets.items():
        assert b["spent_usd"] == pytest.approx(b["burn"]["cumulative_usd"][-1], abs=2e-6), k
        assert 0.01 <= b["spent_usd"] < b["limit_usd"], k
        live = sum(r["cost_usd"] for r in seeded.live if r["vk"] == k[1])
        assert b["spent_usd"] == pytest.approx(seeded_spend[k] + live, abs=2e-6), k
        assert b["forecast"]["projected_usd"] >= b["spent_usd"], k
    month = budgets[("key", "vk-checkout", "month")]["forecast"]
    assert month["model"] == "ewma" and month["rate_usd_per_hour"] > 0
    # /admin/usage carries the same forecast for each budget
    usage = {(u["level"], u["owner"], u["period"]): u for u in admin_get(gw, "/admin/usage")["usage"]
             if u["kind"] == "budget"}
    for k, b in budgets.items():
        assert usage[k]["forecast_usd"] == pytest.approx(b["forecast"]["projected_usd"], rel=1e-3), k
    # the live requests were charged to the keys that sent them
    assert {r["vk"] for r in seeded.live} == {"vk-checkout", "vk-batch"}
    assert all(r["cost_usd"] > 0 and r["status"] == 200 for r in seeded.live)


def test_dashboard_renders_the_gateways_data(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        data = admin_get(gateway, "/admin/dashboard?days=30")
        page.goto(gateway.url + f"/ui/#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.error") is None, page.locator("#message").inner_text()
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert asked == ["30"]
        # the token left the address bar and lives in this tab's sessionStorage
        assert "token" not in page.url and page.url.endswith("/ui/")
        assert page.evaluate("sessionStorage.getItem('finops.adminToken')") == ADMIN

        check_page_matches(page, data)
        assert page.locator("#empty").is_hidden()
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)

        # another period: a new request, and the page shows that answer
        page.select_option("#period", "7")
        page.wait_for_function("() => document.body.dataset.ready === '1' && "
                               "Chart.getChart(document.getElementById('chart-spend-env')).data.labels.length === 7")
        assert asked == ["30", "7"]
        check_page_matches(page, admin_get(gateway, "/admin/dashboard?days=7"))

        # refresh reloads the same period
        page.click("#refresh")
        page.wait_for_function("() => document.body.dataset.ready === '1'")
        assert asked == ["30", "7", "7"]
        assert page.evaluate("Object.keys(Chart.instances).length") == len(CANVASES) + len(data["budgets"])

        assert console.problems() == []
    finally:
        ctx.close()


def test_sign_in_form_then_no_fragment(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        page.goto(gateway.url + "/ui")                # no trailing slash: the same page
        page.wait_for_selector("#login", state="visible")
        assert page.evaluate("document.body.dataset.ready") is None
        assert asked == []
        page.fill("#token", ADMIN)
        page.click("#login-form button[type=submit]")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert asked == ["30"]
        assert page.locator("#login").is_hidden()
        env = charts(page, ["chart-spend-env"])["chart-spend-env"]
        assert {d["name"] for d in env["datasets"]} == {"prod", "staging", "dev", "(none)"}
        page.click("#signout")
        page.wait_for_selector("#login", state="visible")
        assert page.evaluate("sessionStorage.getItem('finops.adminToken')") is None
        assert page.evaluate("Object.keys(Chart.instances).length") == 0
        assert console.problems() == []
    finally:
        ctx.close()


def test_wrong_token_shows_the_gateways_message(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        page.goto(gateway.url + "/ui/#token=not-the-token")
        wait_settled(page)
        err = page.evaluate("document.body.dataset.error")
        assert err == "The admin API needs Authorization: Bearer <governance.admin_token>."   # the real 401
        assert page.locator("#message").inner_text() == err
        assert page.locator("#login").is_visible() and page.locator("#dashboard").is_hidden()
        assert page.evaluate("sessionStorage.getItem('finops.adminToken')") is None
        assert asked == ["30"]
        # the browser itself logs the failed fetch; nothing else may be logged
        assert console.problems(allow=("status of 401",)) == []
    finally:
        ctx.close()


def test_empty_gateway_says_no_requests(empty_gateway, browser):
    """A fresh gateway: no request logged yet, no budget configured."""
    ctx, page, console, asked = open_page(browser)
    try:
        data = admin_get(empty_gateway, "/admin/dashboard?days=7")
        assert data["totals"]["requests"] == 0 and data["budgets"] == [] and data["spend_by_env"] == {}
        page.goto(empty_gateway.url + f"/ui/?days=7#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert asked == ["7"]
        assert page.locator("#empty").is_visible()
        assert "No requests in this period" in page.locator("#empty").inner_text()
        assert page.locator("#charts").is_hidden()
        assert page.evaluate("document.body.dataset.charts") == "0"
        assert all(v is None for v in charts(page, CANVASES).values())
        assert tile(page, "spend") == "$0.00" and tile(page, "requests") == "0" and tile(page, "errors") == "0%"
        assert day_label(data["since"]) in page.locator("#range").inner_text()
        assert "No budgets are configured" in page.locator("#budgets").inner_text()
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-empty.png"), full_page=True)
        assert console.problems() == []
    finally:
        ctx.close()


def test_narrow_screen_has_no_horizontal_scroll(gateway, browser):
    ctx, page, console, asked = open_page(browser, width=390)
    try:
        page.goto(gateway.url + f"/ui/#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        widths = charts(page, CANVASES + ["chart-budget-0"])
        assert all(0 < v["width"] <= 390 for v in widths.values()), widths
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-narrow.png"), full_page=True)
        assert console.problems() == []
    finally:
        ctx.close()


@pytest.mark.parametrize("status, body, message", [
    (200, "<html>proxy login</html>", "The gateway's dashboard data is not valid JSON."),
    (502, "<html>Bad gateway</html>", "The gateway answered HTTP 502 Bad Gateway."),
])
def test_unusable_answer_shows_a_message(gateway, browser, status, body, message):
    """What the real gateway never answers (something between the browser and it did): the
    answer is intercepted in the browser."""
    ctx, page, console, asked = open_page(browser)
    try:
        page.route("**/admin/dashboard*", lambda route: route.fulfill(status=status, body=body,
                                                                       content_type="text/html"))
        page.goto(gateway.url + f"/ui/#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.error") == message
        assert page.locator("#message").inner_text() == message
        assert page.evaluate("document.body.dataset.ready") is None
        assert page.evaluate("sessionStorage.getItem('finops.adminToken')") == ADMIN    # kept: not an auth failure
        assert console.problems(allow=(f"status of {status}",)) == []
    finally:
        ctx.close()


# --- the static route, over plain HTTP ----------------------------------------------------

def get(gateway, path: str, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)   # the path goes out exactly as given
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_ui_serves_index_with_strict_headers(gateway):
    for path in ("/ui/", "/ui"):
        status, headers, body = get(gateway, path)
        assert status == 200, (path, body)
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert headers["x-amzn-requestid"]
        assert b'id="chart-spend-env"' in body and b"<script>" not in body   # no inline script
    status, headers, body = get(gateway, "/ui/dashboard.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert int(headers["content-length"]) == len(body)
    status, headers, body = get(gateway, "/ui/chart.umd.min.js")
    assert status == 200 and b"Chart.js v4." in body[:200]
    status, headers, body = get(gateway, "/ui/", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


@pytest.mark.parametrize("path", ["/ui/../shared/config.py", "/ui/nope.js", "/ui/%2e%2e/shared/config.py",
                                  "/ui/sub/index.html", "/ui/.hidden", "/ui//index.html", "/uix"])
def test_ui_unknown_paths_are_404(gateway, path):
    status, headers, body = get(gateway, path)
    assert status == 404, (path, status, body)
    assert headers.get("x-amzn-errortype", "").startswith(("ResourceNotFoundException", "UnknownOperationException"))
    assert "message" in json.loads(body)
    assert b"import" not in body      # no file content leaks
