"""The dashboard served by ``python -m host serve`` at ``/``, driven end to end in real headless
Chromium (Debian's /usr/bin/chromium through Playwright, nothing downloaded): plugins and
their controls, approving a version that asks for more grants, balances with their history chart,
config forms generated from configSchema, the log view, and the admin token. Screenshots go to
tests/artifacts/dashboard/."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, Playwright, Request, expect, sync_playwright
from support.plugins import CALC, PluginDir
from support.processes import descendants
from support.servers import ServeProcess, run_cli, serve_process

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000  # a page state the test waits for (a restart, a poll round of 2 s) comes well within
TOKEN = "adm-dash-5e8c1f7a"
READ_TOKEN = "read-dash-0c4d93b6"
SECRET = "sk-live-dash-9b2e4d"
DASHBOARD_FILES = ("index.html", "app.js", "packages.js", "style.css")
BADGE_STATES = ("running", "degraded", "error", "disabled", "stopped", "discovered", "loading", "loaded", "closed", "open",
                "half_open", "success", "timeout", "starting", "ready", "stopping", "crashed")  # app.js BADGES

VAULT = """
export const metadata = {
  id: "vault", name: "Vault", version: "1.0.0", apiVersion: "1.0",
  configSchema: {
    apiKey: { type: "string", required: true, secret: true, description: "the provider's API key" },
    region: { type: "string", enum: ["eu", "us"], default: "eu", title: "Region" },
    retries: { type: "integer", default: 3 },
    verbose: { type: "boolean", default: false },
  },
};
export function validateConfig(config) {
  if (config.apiKey.startsWith("bad")) return { valid: false, message: "this key is revoked" };
  if (config.retries > 10) return { valid: false, message: "config.retries: at most 10" };
  return true;
}
export function region(ctx) { return ctx.config.region; }
export function keyTail(ctx) { return ctx.config.apiKey.slice(-4); }
"""

STATION = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] };
let asked = 0;
export function queryBalance() {
  asked += 1;
  return { balance: 20 - asked * 2.5, currency: "USD", quota: 100, usedQuota: 80 + asked * 2.5 };
}
"""

DOWN = """
export const metadata = { id: "down", name: "Down <i>Station</i>", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] };
export function queryBalance() { throw new Error("station is down <b>now</b>"); }
"""

# Markup in a plugin's name and in its load error must show as text, never become elements.
HOSTILE_NAME = '<img src=x onerror="window.pwned=1">'
HOSTILE = f"""
export const metadata = {{ id: "hostile", name: {HOSTILE_NAME!r}, version: "1.0.0", apiVersion: "1.0" }};
export function f() {{ return 1; }}
"""
BROKEN = """
throw new Error("<script>window.pwned=2</script> broke at load");
"""


def grower(n: int, *hosts: str) -> str:
    """Version 1.0.``n`` of the "grower" plugin, asking for ``hosts``; ``which()`` answers ``n``."""
    return f"""
export const metadata = {{ id: "grower", name: "Grower", version: "1.0.{n}", apiVersion: "1.0",
  permissions: {{ net: {list(hosts)!r} }} }};
export function which() {{ return {n}; }}
"""


def chromium_processes() -> list[int]:
    """Chromium (and Playwright driver) processes descended from this test process."""
    return descendants(lambda name: "chrom" in name.lower() or "headless" in name.lower())


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium for the module; none left running afterwards."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    expect.set_options(timeout=WAIT_MS)
    try:
        yield browser
    finally:
        browser.close()
    assert not chromium_processes(), f"chromium processes left behind: {chromium_processes()}"


@pytest.fixture
def serve(plugin_dir: PluginDir, state_dir: Path, tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """``serve(env=...)``: ``python -m host serve`` over the test's plugin dir, stopped (SIGTERM,
    every worker gone) after the page's teardown."""
    with ExitStack() as stack:
        def start(env: dict[str, str] | None = None) -> ServeProcess:
            return stack.enter_context(serve_process(
                tmp_path, "--plugins", str(plugin_dir.root), "--state-dir", str(state_dir), env=env))

        yield start


@pytest.fixture
def page(browser: Browser, serve: Callable[..., ServeProcess], request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (its own sessionStorage) with a page that records uncaught
    errors and the times of its plugin polls; a screenshot of how the test left it is saved
    while the server still runs."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.add_init_script("performance.setResourceTimingBufferSize(100000)")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        # when the page started each poll, by the page's own clock
        polls = page.evaluate("performance.getEntriesByType('resource')"
                              ".filter((e) => new URL(e.name).pathname === '/api/plugins').map((e) => e.startTime)")
    finally:
        shot(page, request.node.name)
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    gaps = [round(b - a) for a, b in itertools.pairwise(polls)]
    assert all(gap >= 2000 for gap in gaps), f"GET /api/plugins polled faster than every 2 s: {gaps} ms"


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and print where."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def row(page: Page, key: str) -> Locator:
    return page.locator(f'#plugins tr[data-plugin="{key}"]')


def open_dashboard(page: Page, srv: ServeProcess) -> None:
    page.goto(srv.base + "/")
    expect(page.locator("#status")).to_have_text(re.compile(r"^updated "))


@pytest.mark.timeout(90)
def test_page_shows_plugins_and_renders_their_text_as_text(page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("vault.js", VAULT)
    plugin_dir.add("hostile.js", HOSTILE)
    plugin_dir.add("broken.js", BROKEN)
    srv = serve()
    for path, kind in (("/", "text/html"), ("/dashboard/app.js", "text/javascript"),
                       ("/dashboard/style.css", "text/css"), ("/dashboard/index.html", "text/html")):
        with urllib.request.urlopen(srv.base + path, timeout=10) as r:
            assert r.status == 200 and r.headers.get_content_type() == kind, (path, r.headers)
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    open_dashboard(page, srv)

    calc = row(page, "calc@1.2.3")
    expect(calc.locator("td").nth(1)).to_have_text("running")
    expect(calc).to_contain_text("Calculator")
    expect(calc.locator(".pid")).to_have_text(re.compile(r"^\d+$"))
    expect(calc.locator(".heartbeat")).to_contain_text("ago")
    expect(calc.locator("td").nth(6)).to_have_text("closed")  # the circuit
    expect(calc.get_by_role("button", name="enable", exact=True)).to_be_disabled()
    # a plugin in error state: its reason shown, its controls there
    vault = row(page, "vault@1.0.0")
    expect(vault.locator("td").nth(1)).to_have_text("error")
    expect(vault.locator(".error")).to_contain_text("config.apiKey: is required")
    # markup from plugins is shown literally and never runs
    expect(row(page, "hostile@1.0.0")).to_contain_text(HOSTILE_NAME)
    expect(page.locator('#plugins tr[data-plugin^="broken"]')).to_contain_text("<script>window.pwned=2</script> broke at load")
    assert page.locator("#plugins img, #plugins script").count() == 0
    assert page.evaluate("window.pwned") is None
    expect(page.locator("#balances-empty")).to_be_visible()  # no balance plugins

    # live: a call made elsewhere shows in the table at the next poll
    assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[0] == 200
    expect(calc.locator(".calls")).to_have_text("1 call")
    expect(calc.locator("td").nth(4)).to_have_text(re.compile(r"^\d+\.\d ms$"))  # p50
    expect(calc.locator("td").nth(5)).to_have_text("0.0 %")  # error rate


@pytest.mark.timeout(90)
def test_restart_button_gives_the_plugin_a_new_worker(page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    srv = serve()
    open_dashboard(page, srv)
    calc = row(page, "calc@1.2.3")
    pid = calc.locator(".pid").first
    expect(pid).to_have_text(re.compile(r"^\d+$"))
    before = pid.text_content()
    calc.get_by_role("button", name="restart", exact=True).click()
    expect(calc.locator(".action-msg")).to_have_text("restarted")
    expect(pid).not_to_have_text(before)
    status, info = srv.request("GET", "/api/plugins/calc")
    assert status == 200 and pid.text_content() in {str(w["pid"]) for w in info["workers"]}
    assert int(before) not in {w["pid"] for w in info["workers"]}

    # disable and enable too: the buttons follow the state
    calc.get_by_role("button", name="disable", exact=True).click()
    expect(calc.locator("td").nth(1)).to_have_text("disabled")
    expect(calc.get_by_role("button", name="disable", exact=True)).to_be_disabled()
    calc.get_by_role("button", name="enable", exact=True).click()
    expect(calc.locator("td").nth(1)).to_have_text("running")
    expect(calc.locator(".pid")).to_have_text(re.compile(r"^\d+$"))


@pytest.mark.timeout(120)
def test_config_form_validates_shows_errors_by_field_and_saves_with_secrets_masked(
        page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("vault.js", VAULT)
    srv = serve()
    open_dashboard(page, srv)
    page.select_option("#plugin-select", "vault")
    form = page.locator("#config")
    field = lambda key: form.locator(f'[data-field="{key}"]')  # noqa: E731
    key, retries = form.locator("#cfg-apiKey"), form.locator("#cfg-retries")

    # the form follows the schema
    expect(key).to_have_attribute("type", "password")
    expect(field("apiKey")).to_contain_text("not set")
    expect(field("apiKey")).to_contain_text("the provider's API key")
    expect(field("region").locator("label")).to_have_text("Region")
    # (the default between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE: a plugin's text)
    expect(form.locator("#cfg-region option")).to_have_text(["— default (\u2068eu\u2069) —", "eu", "us"])
    expect(retries).to_have_attribute("step", "1")
    expect(form.locator("#cfg-verbose")).to_have_attribute("type", "checkbox")

    # caught in the page: a missing required value, a number that is no integer
    retries.fill("1.5")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(field("apiKey").locator(".field-error")).to_have_text("is required")
    expect(field("retries").locator(".field-error")).to_have_text("must be an integer")
    expect(form.locator(".form-msg")).to_have_text("Fix the marked fields.")

    # refused by the server: at the form, or next to the field it names
    key.fill("bad-" + SECRET)
    retries.fill("2")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(form.locator(".form-msg")).to_contain_text("rejected by the plugin: this key is revoked")
    expect(field("apiKey").locator(".field-error")).to_have_text("")
    key.fill(SECRET)
    retries.fill("11")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(field("retries").locator(".field-error")).to_have_text("at most 10")
    expect(form.locator(".form-msg")).to_have_text("Not saved.")
    shot(page, "config_error")

    # valid: saved, the secret masked and never put back in the page
    key.fill(SECRET)
    retries.fill("2")
    page.select_option("#cfg-region", "us")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(form.locator(".form-msg")).to_have_text("saved")
    expect(form.locator("dl.saved")).to_contain_text("********")
    expect(form.locator("#cfg-apiKey")).to_have_value("")
    expect(field("apiKey").locator(".secret-state")).to_have_text("set")
    expect(form.locator("#cfg-region")).to_have_value("1")  # "us", the second choice
    assert SECRET not in page.content()
    assert srv.request("GET", "/api/plugins/vault/config")[1] == {
        "apiKey": "********", "region": "us", "retries": 2, "verbose": False}
    expect(row(page, "vault@1.0.0").locator("td").nth(1)).to_have_text("running")
    assert srv.request("POST", "/api/plugins/vault/call/keyTail", {"args": []})[1]["result"] == SECRET[-4:]

    # saved again with the secret left empty: the stored one is kept
    page.select_option("#cfg-region", "eu")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(form.locator(".form-msg")).to_have_text("saved")
    assert srv.request("POST", "/api/plugins/vault/call/region", {"args": []})[1]["result"] == "eu"
    assert srv.request("POST", "/api/plugins/vault/call/keyTail", {"args": []})[1]["result"] == SECRET[-4:]
    assert SECRET not in srv.log()


@pytest.mark.timeout(90)
def test_balances_show_a_card_per_provider_and_a_history_chart(page, plugin_dir, serve, tmp_path):
    plugin_dir.add("station.js", STATION)
    plugin_dir.add("down.js", DOWN)
    toml = tmp_path / "dash.toml"
    toml.write_text("[balances]\nmin_interval = 0\n")  # the refresh asks again at once
    srv = serve(env={"PLUGIN_HOST_CONFIG": str(toml)})
    open_dashboard(page, srv)
    card = page.locator('#balances .card[data-provider="station"]')
    expect(card.locator(".badge")).to_have_text("success")
    expect(card.locator(".currency")).to_have_text("USD")
    page.get_by_role("button", name="Refresh", exact=True).click()
    expect(page.locator("#balances-status")).to_have_text(re.compile(r"^updated "))
    expect(card.locator(".balance")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    expect(card.locator(".quota")).to_contain_text(re.compile(r"used \d+(\.\d+)? of 100"))
    expect(card).to_contain_text(re.compile(r"updated (<1|\d+) s ago"))
    # the first load and the refresh both asked the station: two points, one line
    line = card.locator("svg.history polyline")
    expect(line).to_have_attribute("points", re.compile(r"^[\d.]+,[\d.]+ [\d.]+,[\d.]+$"))
    expect(card.locator("svg.history text")).to_have_count(4)  # both axes labelled at both ends
    status, history = srv.request("GET", "/api/balances/history?provider=station")
    assert status == 200 and len(history) == 2

    down = page.locator('#balances .card[data-provider="down"]')
    expect(down.locator(".badge")).to_have_text("error")
    expect(down).to_contain_text("station is down <b>now</b>")
    expect(down.locator("h3")).to_have_text("Down <i>Station</i>")
    expect(down).to_contain_text("No history yet.")
    assert page.locator("#balances b, #balances i").count() == 0


@pytest.mark.timeout(90)
def test_log_view_shows_console_lines_and_the_level_filter_hides_them(page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    srv = serve()
    open_dashboard(page, srv)
    page.select_option("#plugin-select", "calc")
    log = page.locator("#log")
    expect(log).to_contain_text("-> running")  # the lifecycle, already there
    assert srv.request("POST", "/api/plugins/calc/call/say", {"args": ["<b>hello</b> from the test"]})[0] == 200
    said = log.locator("li", has_text="said: <b>hello</b> from the test")
    expect(said).to_have_count(1)  # appended by the next poll, once
    expect(said.locator(".level")).to_have_text("info")
    expect(log.locator("li", has_text="warned").locator(".level")).to_have_text("warning")
    assert log.locator("b").count() == 0
    page.select_option("#log-level", "warning")
    expect(said).to_have_count(0)
    expect(log.locator("li", has_text="warned")).to_have_count(1)
    expect(log.locator("li.level-info, li.level-debug")).to_have_count(0)
    # and new lines keep coming, after the last one seen
    assert srv.request("POST", "/api/plugins/calc/call/say", {"args": ["again"]})[0] == 200
    expect(log.locator("li", has_text="warned")).to_have_count(2)
    expect(log.locator("li", has_text="said: again")).to_have_count(0)


@pytest.mark.timeout(90)
def test_with_a_token_configured_the_page_asks_for_it_then_reads_with_it(page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("station.js", STATION)
    srv = serve(env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN})
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if "/api/" in r.url else None)
    page.goto(srv.base + "/")
    login = page.locator("#login")
    expect(login).to_be_visible()  # asked for by the first read the server refused
    expect(page.locator("#login-message")).to_contain_text("needs a token to be read")
    expect(page.locator("#status")).to_have_text("cannot read the plugins: token required")
    expect(page.locator("#balances-status")).to_have_text("token required")
    expect(page.locator("#plugins tbody tr")).to_have_count(0)
    asked = len(sent)

    page.fill("#token", TOKEN)
    login.get_by_role("button", name="Use token", exact=True).click()
    expect(login).to_be_hidden()
    expect(row(page, "calc@1.2.3").locator("td").nth(1)).to_have_text("running")
    card = page.locator('#balances .card[data-provider="station"]')
    expect(card.locator(".balance")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))  # the balances, loaded again
    expect(card.locator("svg.history polyline")).to_have_count(1)
    page.select_option("#plugin-select", "station")
    expect(page.locator("#config")).to_have_text("This plugin has no configuration.")
    expect(page.locator("#log")).to_contain_text("-> running")
    expect(page.locator("#status")).to_have_text(re.compile(r"^updated "))

    before, after = sent[:asked], sent[asked:]
    assert before and all(r.header_value("authorization") is None for r in before)
    assert all(r.header_value("authorization") == f"Bearer {TOKEN}" for r in after), \
        [(r.url, r.header_value("authorization")) for r in after]
    paths = {urlsplit(r.url).path for r in after}
    assert {"/api/plugins", "/api/balances", "/api/balances/history", "/api/plugins/station/schema",
            "/api/plugins/station/config", "/api/plugins/station/logs"} <= paths, paths
    assert all(r.response().status == 200 for r in after if r.response())
    assert TOKEN not in srv.log()


@pytest.mark.timeout(90)
def test_with_a_read_token_a_restart_asks_for_the_admin_token_then_works(page, plugin_dir, serve):
    plugin_dir.add("calc.js", CALC)
    srv = serve(env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN, "PLUGIN_HOST_READ_TOKEN": READ_TOKEN})
    page.goto(srv.base + "/")
    login = page.locator("#login")
    expect(login).to_be_visible()  # reading needs a token: the read token does
    page.fill("#token", READ_TOKEN)
    login.get_by_role("button", name="Use token", exact=True).click()
    expect(login).to_be_hidden()
    expect(page.locator("#status")).to_have_text(re.compile(r"^updated "))
    calc = row(page, "calc@1.2.3")
    pid = calc.locator(".pid").first
    expect(pid).to_have_text(re.compile(r"^\d+$"))
    before = pid.text_content()

    calc.get_by_role("button", name="restart", exact=True).click()
    expect(login).to_be_visible()
    expect(page.locator("#login-message")).to_contain_text("needs the admin token")
    expect(calc.locator(".action-msg")).to_have_text("admin token required")
    # the read token is kept: the table still follows the host
    assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}, token=TOKEN)[0] == 200
    expect(calc.locator(".calls")).to_have_text("1 call")
    page.fill("#token", "wrong-token")
    login.get_by_role("button", name="Use token", exact=True).click()
    expect(page.locator("#login-message")).to_contain_text("The server refused that token")  # asked again
    shot(page, "token_asked")
    page.fill("#token", TOKEN)
    login.get_by_role("button", name="Use token", exact=True).click()  # and the restart goes through
    expect(login).to_be_hidden()
    expect(calc.locator(".action-msg")).to_have_text("restarted")
    expect(pid).not_to_have_text(before)
    expect(page.locator("#auth-state")).to_have_text("token set")
    # kept for this tab only: sessionStorage, not localStorage, not a cookie
    assert page.evaluate("Object.values(sessionStorage)") == [TOKEN]
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []

    page.get_by_role("button", name="Log out", exact=True).click()
    expect(page.locator("#auth-state")).to_have_text("no token")
    assert page.evaluate("sessionStorage.length") == 0
    expect(login).to_be_visible()  # the next read asks for a token again
    calc.get_by_role("button", name="reload", exact=True).click()
    expect(page.locator("#login-message")).to_contain_text("needs the admin token")
    expect(calc.locator(".action-msg")).to_have_text("admin token required")
    assert TOKEN not in srv.log() and READ_TOKEN not in srv.log()


@pytest.mark.timeout(120)
def test_a_version_asking_for_a_new_host_waits_while_the_old_serves_until_approve_applies_it(
        page, plugin_dir, serve):
    path = plugin_dir.add("grower.js", grower(1, "api.example.com"))
    srv = serve(env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN, "PLUGIN_HOST_READ_TOKEN": READ_TOKEN})

    def which() -> int:
        status, out = srv.request("POST", "/api/plugins/grower/call/which", {"args": []}, token=TOKEN)
        assert status == 200, out
        return out["result"]

    approvals: list[Request] = []
    page.on("request", lambda r: approvals.append(r) if r.url.endswith("/approve") else None)
    page.goto(srv.base + "/")
    login = page.locator("#login")
    page.fill("#token", READ_TOKEN)  # reading needs a token: the read token does
    login.get_by_role("button", name="Use token", exact=True).click()
    old = row(page, "grower@1.0.1")
    state = old.locator("td").nth(1)
    approve = old.get_by_role("button", name="approve", exact=True)
    expect(state).to_have_text("running")
    expect(approve).to_be_hidden()  # nothing waits
    assert which() == 1

    path.write_text(grower(2, "api.example.com", "exfil.example.net"))  # seen by the next rescan (1 s)
    expect(old.locator(".grants li")).to_have_text(["net: exfil.example.net"])
    expect(state.locator(".badge")).to_have_text(["running", "pending approval"])
    expect(old.locator("td.version")).to_have_text("1.0.1")
    assert which() == 1  # the approved version keeps serving
    assert old.locator(".grants bdi").count() == 1  # the plugin's text, isolated
    expect(approve).to_be_visible()
    shot(page, "approval_pending")

    approve.click()  # the read token may not approve: the admin token is asked for, then the click retried
    expect(login).to_be_visible()
    expect(page.locator("#login-message")).to_contain_text("needs the admin token")
    expect(old.locator(".action-msg")).to_have_text("admin token required")
    assert which() == 1
    page.fill("#token", TOKEN)
    login.get_by_role("button", name="Use token", exact=True).click()
    expect(login).to_be_hidden()

    new = row(page, "grower@1.0.2")  # the next poll shows the approved version in a row of its own
    expect(new.locator("td.version")).to_have_text("1.0.2")
    expect(new.locator("td").nth(1)).to_have_text("running")
    expect(new.locator(".grants")).to_have_count(0)
    expect(new.get_by_role("button", name="approve", exact=True)).to_be_hidden()
    expect(page.locator('#plugins tr[data-plugin^="grower"]')).to_have_count(1)
    assert which() == 2
    status, info = srv.request("GET", "/api/plugins/grower", token=TOKEN)
    assert status == 200 and info["version"] == "1.0.2" and info["pending_approval"] == []
    assert [(r.method, r.header_value("authorization"), r.response().status) for r in approvals] == [
        ("POST", f"Bearer {READ_TOKEN}", 401), ("POST", f"Bearer {TOKEN}", 200)]


@pytest.mark.timeout(120)
def test_a_plugin_widened_while_the_host_was_down_shows_pending_until_approved(
        page, plugin_dir, serve, state_dir, tmp_path):
    path = plugin_dir.add("grower.js", grower(1))
    first = run_cli("--plugins", str(plugin_dir.root), "--state-dir", str(state_dir), "call", "grower", "which",
                    cwd=tmp_path)  # loaded once: approved as it is
    assert first.returncode == 0 and first.stdout.strip() == "1", first.stdout + first.stderr
    path.write_text(grower(2, "exfil.example.net"))
    srv = serve()
    open_dashboard(page, srv)
    waiting = row(page, "grower@1.0.2")
    state = waiting.locator("td").nth(1)
    expect(state.locator(".badge")).to_have_text(["pending"])  # the state says it: no second badge
    expect(waiting.locator(".grants li")).to_have_text(["net: exfil.example.net"])
    expect(waiting.locator(".error")).to_contain_text("beyond its approved grants")
    expect(waiting.locator(".pid")).to_have_count(0)  # no worker runs it
    # a colour of its own: not the plain badge's ("plain"), nor any other state's
    colours = page.evaluate("""(states) => Object.fromEntries(states.map((state) => {
      const b = document.body.appendChild(document.createElement("span"));
      b.className = `badge is-${state}`;
      const colour = getComputedStyle(b).backgroundColor;
      b.remove();
      return [state, colour];
    }))""", ["pending", "plain", *BADGE_STATES])
    assert list(colours.values()).count(colours["pending"]) == 1, colours
    assert srv.request("POST", "/api/plugins/grower/call/which", {"args": []})[0] == 503
    shot(page, "approval_pending_state")

    waiting.get_by_role("button", name="approve", exact=True).click()
    expect(waiting.locator(".action-msg")).to_have_text("approved")
    expect(state).to_have_text("running")
    expect(waiting.locator(".grants")).to_have_count(0)
    expect(waiting.get_by_role("button", name="approve", exact=True)).to_be_hidden()
    assert srv.request("POST", "/api/plugins/grower/call/which", {"args": []})[1]["result"] == 2


@pytest.mark.timeout(60)
def test_page_works_with_no_plugins(page, plugin_dir, serve):
    srv = serve()
    open_dashboard(page, srv)
    expect(page.locator("#plugins-empty")).to_be_visible()
    expect(page.locator("#plugins")).to_be_hidden()
    expect(page.locator("#balances-empty")).to_be_visible()
    expect(page.locator("#config")).to_have_text("No plugin selected.")
    expect(page.locator("#log-empty")).to_have_text("No log entries.")


@pytest.mark.timeout(120)
def test_wheel_ships_the_dashboard_files(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=100)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("plugin_host-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for name in DASHBOARD_FILES:
            assert z.read(f"host/dashboard/{name}") == (REPO / "host" / "dashboard" / name).read_bytes()
