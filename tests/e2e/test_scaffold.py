"""``python -m host new`` and ``validate``, through subprocesses: the scaffold validates, serves
a call and passes its own test; broken plugins are reported with what is wrong."""

from __future__ import annotations

import json
import os
import subprocess

from support.servers import run_cli

from host.runtime import find_deno


def test_new_then_validate_then_call_then_its_own_test_passes(tmp_path):
    state = str(tmp_path / "state")
    made = run_cli("--state-dir", state, "new", "hello-world", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "plugins" / "hello-world"
    assert sorted(p.name for p in root.iterdir()) == ["mod.ts", "mod_test.ts"]
    assert f"created {root / 'mod.ts'}" in made.stdout

    checked = run_cli("--state-dir", state, "validate", str(root), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[:3] == [
        f"ok: hello-world@0.1.0 ({root / 'mod.ts'})", "  exports: greet", "  permissions: none"]

    called = run_cli("--state-dir", state, "call", "hello-world", "greet", '"world"', cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == "Hello, world!"

    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "DENO_DIR": str(tmp_path / "deno-dir"),
           "HOME": str(tmp_path)}
    tested = subprocess.run([find_deno(), "test", "--no-remote", "--no-npm", str(root)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout and "0 failed" in tested.stdout

    again = run_cli("--state-dir", state, "new", "hello-world", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_new_refuses_a_name_that_is_not_a_plugin_id(tmp_path):
    for name in ("Bad Name", "../escape", "_underscore-first", "x" * 65):
        out = run_cli("new", name, cwd=tmp_path)
        assert out.returncode == 2 and "plugin name" in out.stderr, name
    assert not (tmp_path / "plugins").exists() or list((tmp_path / "plugins").iterdir()) == []


def test_validate_reports_what_is_wrong_and_what_is_risky(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.js").write_text(
        'export const metadata = { id: "broken", name: "b", version: "one", apiVersion: "1.0" };\n'
        "export function f() {}\n")
    (plugins / "wide.js").write_text(
        'export const metadata = { id: "wide", name: "w", version: "1.0.0", apiVersion: "1.0",\n'
        '  permissions: { net: true } };\nexport function f() {}\n')
    (plugins / "escape").mkdir()
    (plugins / "escape" / "mod.js").write_text(
        'export const metadata = { id: "escape", name: "e", version: "1.0.0", apiVersion: "1.0" };\n')
    os.symlink("/etc/passwd", plugins / "escape" / "passwd")
    state = str(tmp_path / "state")

    broken = run_cli("--state-dir", state, "validate", str(plugins / "broken.js"), cwd=tmp_path)
    assert broken.returncode == 1 and "invalid:" in broken.stderr and "version" in broken.stderr

    wide = run_cli("--state-dir", state, "validate", "--json", str(plugins / "wide.js"), cwd=tmp_path)
    assert wide.returncode == 0, wide.stderr
    report = json.loads(wide.stdout)
    assert (report["valid"], report["permissions"]) == (True, {"net": True})
    assert report["findings"] == ["net: true grants every host; list what is needed"]

    escape = run_cli("--state-dir", state, "validate", str(plugins / "escape"), cwd=tmp_path)
    assert escape.returncode == 1 and "leads outside the plugin directory" in escape.stderr

    missing = run_cli("--state-dir", state, "validate", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert missing.returncode == 1 and "not a plugin" in missing.stderr


RELAY_SCRIPT = """({
  request: {
    url: "{{baseUrl}}/api/user/self",
    method: "GET",
    headers: { "Authorization": "Bearer {{accessToken}}", "New-Api-User": "{{userId}}" }
  },
  extractor: function (response) {
    return { planName: response.data.group, remaining: response.data.quota / 500000, unit: "USD" };
  }
})
"""


def test_validate_checks_a_usage_script_as_the_host_loads_it(tmp_path):
    """A cc-switch usage script (``NAME.usage.js``, docs/balances.md's example) was "not a plugin:
    a .js/.ts file, ..." to ``validate``, though the host serves it: it is checked as the module
    the host generates from it, and a broken one is reported with what is wrong."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "relay.usage.js").write_text(RELAY_SCRIPT)
    (plugins / "nox.usage.js").write_text('({ request: { url: "{{baseUrl}}/x", method: "GET" }, extractor: 1 })')
    state = str(tmp_path / "state")

    good = run_cli("--state-dir", state, "validate", "--json", str(plugins / "relay.usage.js"), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert (report["valid"], report["id"], report["path"]) == (True, "relay", str(plugins / "relay.usage.js"))
    assert "queryBalance" in report["exports"] and report["capabilities"] == ["balance"]

    bad = run_cli("--state-dir", state, "validate", str(plugins / "nox.usage.js"), cwd=tmp_path)
    assert bad.returncode == 1 and "extractor must be a function" in bad.stderr, bad.stderr
    assert "not a plugin" not in bad.stderr
    assert not (tmp_path / "state" / "usage_scripts").exists() or not any((tmp_path / "state" / "usage_scripts").iterdir())


def test_validate_says_what_a_config_grant_resolves_to_and_the_path_once(tmp_path):
    """A net grant of ``{config.baseUrl}`` with no default showed "permissions: none", as if the
    plugin could reach nothing; and a broken plugin's error said its path twice ("invalid: PATH:
    ID: PATH: metadata..."). The grant is shown as the config decides it; the path once."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    head = 'export const metadata = { id: "%s", name: "r", version: "1.0.0", apiVersion: "1.0",\n'
    (plugins / "relay.js").write_text(head % "relay" + '  permissions: { net: ["{config.baseUrl}"] },\n'
                                      '  configSchema: { baseUrl: { type: "string" } } };\nexport function f() {}\n')
    (plugins / "fixed.js").write_text(head % "fixed" + '  permissions: { net: ["{config.baseUrl}", "api.example.com"] },\n'
                                      '  configSchema: { baseUrl: { type: "string", default: "https://relay.example:8443/v1" } } };\n'
                                      "export function f() {}\n")
    (plugins / "broken.js").write_text(
        'export const metadata = { id: "broken", name: "b", version: "one", apiVersion: "1.0" };\nexport function f() {}\n')
    state = str(tmp_path / "state")

    relay = run_cli("--state-dir", state, "validate", str(plugins / "relay.js"), cwd=tmp_path)
    assert relay.returncode == 0, relay.stderr
    assert relay.stdout.splitlines()[2:4] == [  # before: "  permissions: none"
        "  permissions: none until configured",
        "  net {config.baseUrl}: the host of config.baseUrl, granted once it is set (no default)"], relay.stdout
    fixed = run_cli("--state-dir", state, "validate", str(plugins / "fixed.js"), cwd=tmp_path)
    assert fixed.stdout.splitlines()[2:4] == [
        '  permissions: {"net": ["relay.example:8443", "api.example.com"]}',
        "  net {config.baseUrl}: the host of config.baseUrl, relay.example:8443 by default"], fixed.stdout
    as_json = json.loads(run_cli("--state-dir", state, "validate", "--json", str(plugins / "relay.js"),
                                 cwd=tmp_path).stdout)
    assert (as_json.get("permissions"), as_json["config_net"]) == (None, {"{config.baseUrl}": None})  # {}: left out

    broken = run_cli("--state-dir", state, "validate", str(plugins / "broken.js"), cwd=tmp_path)
    assert broken.returncode == 1 and "version" in broken.stderr
    assert broken.stderr.count(str(plugins / "broken.js")) == 1, broken.stderr
    assert broken.stderr.startswith(f"invalid: {plugins / 'broken.js'}: "), broken.stderr
