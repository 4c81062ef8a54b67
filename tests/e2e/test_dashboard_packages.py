"""Plugin packages on the dashboard (issue 18), in real headless Chromium over a real ``python -m
host serve`` (the fixtures of tests/e2e/test_dashboard.py): install a package from a file and its
sha256 (a wrong one refused with nothing installed), disable and enable it, uninstall it, and see
a plugin placed by hand refused. The server has an admin token: installing over HTTP needs one."""

from __future__ import annotations

import re

import pytest
import test_dashboard
from playwright.sync_api import expect
from support.packages import plugin_tar, sha256
from support.plugins import CALC
from support.processes import process_gone
from test_dashboard import TOKEN, row

playwright, browser = test_dashboard.playwright, test_dashboard.browser
serve, page = test_dashboard.serve, test_dashboard.page


@pytest.mark.timeout(120)
def test_install_disable_enable_and_uninstall_a_package_from_the_page(page, plugin_dir, serve, tmp_path):
    plugin_dir.add("calc.js", CALC)
    archive = tmp_path / "hello-1.0.0.tar.gz"
    archive.write_bytes(plugin_tar("hello", "1.0.0"))
    srv = serve(env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN})  # installing over HTTP needs one
    page.goto(srv.base + "/")
    page.fill("#token", TOKEN)
    page.locator("#login").get_by_role("button", name="Use token", exact=True).click()
    expect(page.locator("#status")).to_have_text(re.compile(r"^updated "))
    page.on("dialog", lambda dialog: dialog.accept())

    # a wrong sha256: refused, saying so, and nothing installed
    page.get_by_role("button", name="Install", exact=True).click()
    page.set_input_files("#package-file", str(archive))
    page.fill("#package-sha256", "0" * 64)
    page.locator("#package-form").get_by_role("button", name="Install").click()
    expect(page.locator("#package-message")).to_contain_text("sha256 mismatch")
    assert not (plugin_dir.root / "hello").exists()

    page.fill("#package-sha256", sha256(archive.read_bytes()))
    page.locator("#package-form").get_by_role("button", name="Install").click()
    expect(page.locator("#package-message")).to_have_text("installed hello@1.0.0 (running)")
    hello = row(page, "hello@1.0.0")
    expect(hello.locator("td").nth(1)).to_have_text("running")
    status, body = srv.request("POST", "/api/plugins/hello/call/version", {}, token=TOKEN)
    assert status == 200 and body["result"] == "1.0.0"

    hello.get_by_role("button", name="disable", exact=True).click()
    expect(hello.locator("td").nth(1)).to_have_text("disabled")
    hello.get_by_role("button", name="enable", exact=True).click()
    expect(hello.locator("td").nth(1)).to_have_text("running")
    expect(hello.locator(".pid")).to_have_text(re.compile(r"^\d+$"))
    workers = [int(p) for p in hello.locator(".pid").all_text_contents()]

    # a plugin placed by hand is not a package: refused, it keeps running
    calc = row(page, "calc@1.2.3")
    calc.get_by_role("button", name="uninstall", exact=True).click()
    expect(calc.locator(".action-msg")).to_contain_text("not installed with `install`")
    hello.get_by_role("button", name="uninstall", exact=True).click()
    expect(hello).to_have_count(0)
    assert all(process_gone(p) for p in workers)
    assert not (plugin_dir.root / "hello").exists()
    expect(calc.locator("td").nth(1)).to_have_text("running")
