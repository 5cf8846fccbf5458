"""The spend dashboard at /ui, in headless Chromium (Debian's, driven by Playwright).

The page and its files come from the real gateway (`finops serve`), so the static route, its
headers and its CSP are exercised. The data API, /admin/dashboard, is intercepted in the
browser with a seeded answer of its JSON contract when the request carries the right admin
token; any other request goes on to the real gateway (so a wrong token meets the real 401).

Every page must render without a console error or warning. A full-page screenshot of the
seeded dashboard is kept in tests/artifacts/dashboard.png.
"""
from __future__ import annotations

import http.client
import json
import os
import random
from datetime import date, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers.chromium import ARGS, chromium_path
from tests.helpers.gateway import Gateway

pytestmark = pytest.mark.system

ADMIN = "dash-admin-token-0123456789"
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "artifacts")
TODAY = date(2026, 11, 27)
CANVASES = ["chart-spend-env", "chart-spend-key", "chart-spend-model", "chart-top-models",
            "chart-errors", "chart-cache"]
ENVS = ["prod", "staging", "dev", "(none)"]
KEYS = ["team-a-key", "team-b-key", "batch-jobs", "(anonymous)", "(other)"]   # the API folds keys past 8 into "(other)"
MODELS = ["anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-haiku-20240307-v1:0",
          "meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0", "amazon.titan-text-express-v1"]
CONFIG = f"""
[governance]
admin_token = "{ADMIN}"
"""


# --- seeded /admin/dashboard answers (the API's JSON contract) -----------------------------

def seeded(days: int, *, empty: bool = False) -> dict:
    rnd = random.Random(days)
    since = TODAY - timedelta(days=days - 1)
    day_list = [(since + timedelta(days=i)).isoformat() for i in range(days)]

    def spread(weights, total_by_day):
        out = {name: [] for name in weights}
        for t in total_by_day:
            for name, w in weights.items():
                out[name].append(round(t * w, 6))
        return out

    if empty:
        spend = [0.0] * days
        requests = [0] * days
    else:
        spend = [round(0.8 + 0.6 * rnd.random() + (0.5 if i % 7 in (1, 2, 3) else 0.0) + i * 0.01, 6)
                 for i in range(days)]
        requests = [int(300 + 250 * rnd.random()) for _ in range(days)]
    errors = [0 if empty else int(r * (0.01 + 0.04 * rnd.random())) for r in requests]
    hits = [0 if empty else int(r * 0.12) for r in requests]
    saved = [round(h * 0.0009, 6) for h in hits]
    by_env = spread(dict(zip(ENVS, (0.55, 0.2, 0.17, 0.08))), spend)
    by_key = spread(dict(zip(KEYS, (0.36, 0.3, 0.2, 0.08, 0.06))), spend)
    model_w = dict(zip(MODELS, (0.5, 0.12, 0.2, 0.13, 0.05)))
    by_model = spread(model_w, spend)
    total_cost = sum(spend)
    total_req = sum(requests)
    top = sorted(({"model": m, "requests": int(total_req * w), "cost_usd": round(total_cost * w, 6),
                   "input_tokens": int(total_req * w * 900), "output_tokens": int(total_req * w * 350)}
                  for m, w in model_w.items()), key=lambda r: -r["cost_usd"])
    data = {
        "since": day_list[0], "until": day_list[-1], "days": day_list,
        "totals": {"requests": total_req, "errors": sum(errors),
                   "error_rate": (sum(errors) / total_req) if total_req else 0.0,
                   "cost_usd": total_cost, "saved_usd": sum(saved), "cache_hits": sum(hits),
                   "input_tokens": total_req * 900, "output_tokens": total_req * 350},
        "spend_by_env": {} if empty else by_env,
        "spend_by_key": {} if empty else by_key,
        "spend_by_model": {} if empty else by_model,
        "top_models": [] if empty else top,
        "requests_by_day": requests, "errors_by_day": errors,
        "cache_hits_by_day": hits, "saved_usd_by_day": saved,
        "budgets": [] if empty else budgets(),
    }
    return data


def budgets() -> list[dict]:
    month = [(date(2026, 11, 1) + timedelta(days=i)).isoformat() for i in range(27)]
    cum, s = [], 0.0
    for i in range(27):
        s += 0.22 + 0.05 * (i % 5)
        cum.append(round(s, 4))
    week = [(date(2026, 11, 23) + timedelta(days=i)).isoformat() for i in range(5)]
    wcum = [0.9, 2.1, 3.0, 4.4, 5.2]
    return [
        {"label": "key team-a-key month", "level": "key", "owner": "team-a-key", "period": "month", "env": "",
         "limit_usd": 10.0, "spent_usd": cum[-1], "remaining_usd": max(0.0, 10.0 - cum[-1]),
         "period_start": "2026-11-01T00:00:00+00:00", "resets_at": "2026-12-01T00:00:00+00:00",
         "burn": {"days": month, "cumulative_usd": cum}},
        {"label": "team search week (env prod)", "level": "team", "owner": "search", "period": "week", "env": "prod",
         "limit_usd": 6.0, "spent_usd": wcum[-1], "remaining_usd": 6.0 - wcum[-1],
         "period_start": "2026-11-23T00:00:00Z", "resets_at": "2026-11-30T00:00:00Z",
         "burn": {"days": week, "cumulative_usd": wcum}},
    ]


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("dash"), CONFIG, workers=1) as gw:
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


def open_page(browser, *, empty: bool = False):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, reduced_motion="reduce",
                              device_scale_factor=1, timezone_id="UTC", locale="en-US")
    page = ctx.new_page()
    console = Console(page)
    asked: list[str] = []

    def answer(route):
        req = route.request
        if req.headers.get("authorization") != f"Bearer {ADMIN}":
            return route.continue_()       # the real gateway judges the token
        days = int(parse_qs(urlsplit(req.url).query).get("days", ["30"])[0])
        asked.append(str(days))
        route.fulfill(status=200, content_type="application/json", body=json.dumps(seeded(days, empty=empty)))

    page.route("**/admin/dashboard*", answer)
    return ctx, page, console, asked


def wait_settled(page):
    page.wait_for_function("() => document.body.dataset.ready === '1' || document.body.dataset.error !== undefined",
                           timeout=15000)


def chart_info(page, ids) -> dict:
    return page.evaluate("""(ids) => Object.fromEntries(ids.map(id => {
        const el = document.getElementById(id);
        const c = el && window.Chart.getChart(el);
        return [id, c ? {type: c.config.type, datasets: c.data.datasets.length, labels: c.data.labels.length,
                         width: el.clientWidth, height: el.clientHeight} : null];
    }))""", ids)


def tile(page, name) -> str:
    return page.locator(f"#tile-{name} .tile-value").inner_text()


# --- tests -------------------------------------------------------------------------------

def test_dashboard_renders_seeded_data(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        page.goto(gateway.url + f"/ui/#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.error") is None, page.locator("#message").inner_text()
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert asked == ["30"]
        # the token left the address bar and lives in this tab's sessionStorage
        assert "token" not in page.url and page.url.endswith("/ui/")
        assert page.evaluate("sessionStorage.getItem('finops.adminToken')") == ADMIN

        data = seeded(30)
        info = chart_info(page, CANVASES + ["chart-budget-0", "chart-budget-1"])
        for cid in CANVASES:
            assert info[cid] is not None, f"{cid} has no Chart instance"
            assert info[cid]["width"] > 200 and info[cid]["height"] > 150, info[cid]
        env = info["chart-spend-env"]
        assert (env["type"], env["datasets"], env["labels"]) == ("bar", len(ENVS), 30)
        assert info["chart-spend-key"]["datasets"] == len(KEYS) and info["chart-spend-key"]["labels"] == 30
        key_labels = page.evaluate("() => Chart.getChart(document.getElementById('chart-spend-key'))"
                                   ".data.datasets.map(d => d.label)")
        assert key_labels == KEYS            # by spend, "(other)" last
        assert info["chart-spend-model"]["datasets"] == len(MODELS) and info["chart-spend-model"]["labels"] == 30
        assert info["chart-top-models"]["datasets"] == 1 and info["chart-top-models"]["labels"] == len(MODELS)
        assert info["chart-errors"]["datasets"] == 2 and info["chart-errors"]["labels"] == 30
        assert info["chart-cache"]["datasets"] == 2 and info["chart-cache"]["labels"] == 30
        # burn-down: the month budget spans all of November (27 days seen + projection to the 30th)
        assert info["chart-budget-0"]["labels"] == 30 and info["chart-budget-0"]["datasets"] == 3
        assert info["chart-budget-1"]["labels"] == 7 and info["chart-budget-1"]["datasets"] == 3
        assert page.evaluate("document.body.dataset.charts") == str(len(CANVASES) + 2)
        assert page.evaluate("Object.keys(Chart.instances).length") == len(CANVASES) + 2

        t = data["totals"]
        assert tile(page, "spend") == f"${t['cost_usd']:,.2f}"
        assert tile(page, "requests") == f"{t['requests']:,}"
        assert tile(page, "errors") == f"{round(t['error_rate'] * 100, 2):g}%"
        assert tile(page, "cache") == f"${t['saved_usd']:,.2f}"
        assert tile(page, "tokens") == f"{t['input_tokens'] + t['output_tokens']:,}"
        assert f"{t['errors']:,} failed of {t['requests']:,}" in page.locator("#tile-errors").inner_text()

        cards = page.locator("#budgets .budget")
        assert cards.count() == 2
        first = cards.nth(0).inner_text()
        assert "key team-a-key month" in first and "of $10.00 spent" in first and "resets Dec 1, 2026" in first
        assert "$6.00" in cards.nth(1).inner_text() and "env prod" in cards.nth(1).inner_text()
        assert page.locator("#empty").is_hidden()

        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)

        # another period: a new request, and charts with as many days
        page.select_option("#period", "7")
        page.wait_for_function("() => document.body.dataset.ready === '1' && "
                               "Chart.getChart(document.getElementById('chart-spend-env')).data.labels.length === 7")
        assert asked == ["30", "7"]
        assert chart_info(page, ["chart-errors"])["chart-errors"]["labels"] == 7
        assert page.evaluate("Object.keys(Chart.instances).length") == len(CANVASES) + 2   # old charts destroyed

        # refresh reloads the same period
        page.click("#refresh")
        page.wait_for_function("() => document.body.dataset.ready === '1'")
        assert asked == ["30", "7", "7"]

        assert console.problems() == []
    finally:
        ctx.close()


def test_sign_in_form_then_no_fragment(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        page.goto(gateway.url + "/ui")                # no trailing slash: the same page
        page.wait_for_selector("#login", state="visible")
        assert page.evaluate("document.body.dataset.ready") is None
        page.fill("#token", ADMIN)
        page.click("#login-form button[type=submit]")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert page.locator("#login").is_hidden()
        assert chart_info(page, ["chart-spend-env"])["chart-spend-env"]["datasets"] == len(ENVS)
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
        assert asked == []
        # the browser itself logs the failed fetch; nothing else may be logged
        assert console.problems(allow=("status of 401",)) == []
    finally:
        ctx.close()


def test_empty_period_says_no_requests(gateway, browser):
    ctx, page, console, asked = open_page(browser, empty=True)
    try:
        page.goto(gateway.url + f"/ui/?days=7#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert asked == ["7"]
        assert page.locator("#empty").is_visible()
        assert "No requests in this period" in page.locator("#empty").inner_text()
        assert page.locator("#charts").is_hidden()
        assert page.evaluate("document.body.dataset.charts") == "0"
        assert all(v is None for v in chart_info(page, CANVASES).values())
        assert tile(page, "spend") == "$0.00" and tile(page, "requests") == "0" and tile(page, "errors") == "0%"
        assert "No budgets are configured" in page.locator("#budgets").inner_text()
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-empty.png"), full_page=True)
        assert console.problems() == []
    finally:
        ctx.close()


def test_narrow_screen_has_no_horizontal_scroll(gateway, browser):
    ctx, page, console, asked = open_page(browser)
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(gateway.url + f"/ui/#token={ADMIN}")
        wait_settled(page)
        assert page.evaluate("document.body.dataset.ready") == "1"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        widths = chart_info(page, CANVASES)
        assert all(0 < v["width"] <= 390 for v in widths.values()), widths
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-narrow.png"), full_page=True)
        assert console.problems() == []
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
