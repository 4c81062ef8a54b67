"""The station flow of the dashboard (issue 17), in real headless Chromium over a real ``python
-m host serve`` (the fixtures of tests/e2e/test_dashboard.py) and a local fake relay: add a
station from a provider template and one from a pasted usage script, test the connection (the
request made, the answer's shape, the key masked), see the card, its history and its low-balance
alert, configure it, remove it. Screenshots of the flow go to docs/images/ too."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import test_dashboard
from playwright.sync_api import Page, expect
from support.relay import relayco, serve_relay
from test_dashboard import open_dashboard, shot

playwright, browser = test_dashboard.playwright, test_dashboard.browser
serve, page = test_dashboard.serve, test_dashboard.page

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
RELAYCO = relayco()
USAGE = """({
  request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) { return { remaining: r.left, unit: "USD" }; }
})"""
KEYS = {"sk-dash-north-1": 22.25, "sk-dash-paste-2": 140.0}


@pytest.fixture
def relay(fake_http):
    return serve_relay(fake_http, KEYS, {"account": {"plan": "pro", "email": "someone@example.com"}})


def docs_shot(page: Page, name: str) -> None:
    """A screenshot of the flow (tests/artifacts/dashboard/); with PLUGIN_HOST_DOCS_SHOTS=1 also
    copied beside docs/balances.md, which shows them (so that a test run leaves docs/ alone)."""
    path = shot(page, name)
    if os.environ.get("PLUGIN_HOST_DOCS_SHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / f"{name}.png")


@pytest.mark.timeout(120)
def test_add_test_configure_and_remove_stations_from_the_page(page, plugin_dir, serve, relay, tmp_path):
    plugin_dir.add("relayco.js", RELAYCO)
    toml = tmp_path / "dash.toml"
    toml.write_text("[server]\ninsecure_no_token = true\n"  # a pasted script is code: no token, no install
                    "[balances]\nmin_interval = 0\n"  # each refresh asks again at once
                    "[plugins.relayco]\nallow_private_network = true\n[plugins.pasted]\nallow_private_network = true\n")
    srv = serve(env={"PLUGIN_HOST_CONFIG": str(toml)})
    open_dashboard(page, srv)
    page.on("dialog", lambda dialog: dialog.accept())

    # from a provider template: the provider's configSchema is the form
    page.get_by_role("button", name="Add station").click()
    expect(page.locator("#station-source option")).to_have_text(["provider: relayco", "usage script (paste it)"])
    expect(page.locator("#station-cfg-apiKey")).to_have_attribute("type", "password")
    page.fill("#station-name", "north")
    page.fill("#station-title", "North relay")
    page.fill("#station-cfg-baseUrl", relay.url)
    page.fill("#station-cfg-apiKey", "sk-dash-north-1")
    page.fill("#station-low", "30")
    docs_shot(page, "stations-add-from-template")
    page.locator("#station-form").get_by_role("button", name="Add").click()
    expect(page.locator("#station-message")).to_have_text("added north")
    card = page.locator('#balances .card[data-provider="north"]')
    expect(card.locator("h3")).to_have_text("North relay")
    expect(card.locator(".balance")).to_have_text("22.25")
    # below its threshold: the alert shows on the card
    expect(card.locator(".alert")).to_contain_text("low balance")

    # test connection: the request made and the answer's shape, the key nowhere
    card.get_by_role("button", name="Test connection").click()
    report = card.locator(".test-result")
    expect(report).to_contain_text("connection works: 22.25 USD")
    expect(report.locator(".requests li")).to_have_text([re.compile(rf"^GET {re.escape(relay.url)}/balance -> 200, ")])
    expect(report.locator("pre.shape")).to_contain_text('"email": "string"')
    docs_shot(page, "stations-test-connection")
    assert "sk-dash-north-1" not in page.content()

    # from a pasted usage script
    page.get_by_role("button", name="Add station").click()
    page.select_option("#station-source", "")
    expect(page.locator("#station-script")).to_be_visible()
    page.fill("#station-name", "pasted")
    page.fill("#station-script", USAGE)
    page.fill("#station-cfg-baseUrl", relay.url)
    page.fill("#station-cfg-apiKey", "sk-dash-paste-2")
    docs_shot(page, "stations-add-from-script")
    page.locator("#station-form").get_by_role("button", name="Add").click()
    pasted = page.locator('#balances .card[data-provider="pasted"]')
    expect(pasted.locator(".balance")).to_have_text("140")

    # history: a refresh adds a point to each station's chart
    page.get_by_role("button", name="Refresh", exact=True).click()
    expect(card.locator("svg.history polyline")).to_have_attribute(
        "points", re.compile(r"^[\d.]+,[\d.]+ [\d.]+,[\d.]+"))
    docs_shot(page, "stations-cards")

    # configure: the station's own config, its key masked, saved through /api/stations
    card.get_by_role("button", name="Configure").click()
    expect(page.locator("#plugin-select")).to_have_value("station:north")
    form = page.locator("#config")
    expect(form.locator('[data-field="apiKey"]')).to_contain_text("set")
    expect(form.locator("#cfg-baseUrl")).to_have_value(relay.url)
    form.locator("#cfg-apiKey").fill("sk-nobody")
    form.get_by_role("button", name="Save").click()
    expect(form.locator(".form-msg")).to_have_text("saved")
    card.get_by_role("button", name="Test connection").click()
    expect(card.locator(".test-result")).to_contain_text("AUTH_ERROR")

    # remove: the card goes, the other station stays
    card.get_by_role("button", name="Remove").click()
    expect(card).to_have_count(0)
    expect(pasted).to_have_count(1)
    status, stations = srv.request("GET", "/api/stations")
    assert status == 200 and [s["name"] for s in stations] == ["pasted"]


@pytest.mark.timeout(90)
def test_a_station_on_a_private_address_offers_the_admin_the_setting_that_allows_it(page, plugin_dir, serve, relay):
    plugin_dir.add("relayco.js", RELAYCO)
    srv = serve()
    status, _ = srv.request("POST", "/api/stations", {"name": "lan", "plugin": "relayco",
                                                      "config": {"baseUrl": relay.url, "apiKey": "sk-dash-north-1"}})
    assert status == 201
    open_dashboard(page, srv)
    card = page.locator('#balances .card[data-provider="lan"]')
    expect(card.locator(".error")).to_contain_text("allow_private_network")
    offer = card.get_by_role("button", name="Allow private network for relayco")
    docs_shot(page, "stations-private-network-offer")
    offer.click()
    expect(card.locator(".balance")).to_have_text("22.25")
    status, info = srv.request("GET", "/api/plugins/relayco")
    assert status == 200 and info["state"] == "running"
