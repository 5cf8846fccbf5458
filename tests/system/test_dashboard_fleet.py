"""The /ui dashboard of one node shows the fleet's spend when the request log is on PostgreSQL
(`[observability] log_store = "postgres"`): two real `finops serve` nodes (tests/helpers/fleet.py)
write one log, boto3 requests go through both, and node 0's page in headless Chromium (as in
test_dashboard.py) shows both nodes' requests: its totals are the sum of every answer's
x-bf-cost-usd, and every tile and chart is the API's answer."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.helpers.fleet import Fleet
from tests.system.test_dashboard import (ADMIN, admin_get, browser, check_page_matches, money, open_page,  # noqa: F401
                                         tile, wait_settled)

pytestmark = pytest.mark.system

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PER_NODE = 5


def config_text(url: str) -> str:
    # prices high enough that the spend is dollars, as the tiles show cents
    return f"""
[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[pricing."*"]
input = 3000.0
output = 15000.0

[governance]
admin_token = "{ADMIN}"
timezone = "UTC"

[observability]
log_store = "postgres"
log_postgres_url = "{url}"
"""


def test_one_nodes_dashboard_shows_the_fleets_spend(tmp_path, postgres_url, browser):  # noqa: F811
    with Fleet(tmp_path, config_text(postgres_url), nodes=2, workers=1) as fleet:
        micros, ids = 0, set()
        for g in fleet:
            c = g.client()
            for i in range(PER_NODE):
                r = c.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"question {i}"}]}])
                h = r["ResponseMetadata"]["HTTPHeaders"]
                micros += int(Decimal(h["x-bf-cost-usd"]) * 1_000_000)
                ids.add(h["x-amzn-requestid"])
        n = 2 * PER_NODE
        assert len(ids) == n and micros > 0

        deadline = time.monotonic() + 30           # node 1's rows reach the shared log
        while True:
            data = admin_get(fleet[0], "/admin/dashboard?days=30")
            if data["totals"]["requests"] >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert data["totals"]["requests"] == n
        assert round(data["totals"]["cost_usd"] * 1_000_000) == micros

        ctx, page, console, _ = open_page(browser)
        try:
            page.goto(fleet[0].url + f"/ui/#token={ADMIN}")
            wait_settled(page)
            assert page.evaluate("document.body.dataset.error") is None, page.locator("#message").inner_text()
            assert tile(page, "requests") == f"{n:,}"
            assert tile(page, "spend") == money(micros / 1_000_000)
            check_page_matches(page, data)
            assert console.problems() == []
        finally:
            ctx.close()
