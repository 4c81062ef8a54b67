"""Operating plugins (issue 18): enable/disable kept across restarts (and host.toml's
`[plugins.ID] enabled = false`), `status`, `list --state/--capability`, `config reset`, from
Python, over HTTP and from the CLI (with and without a server on the state directory), each
change in the audit log."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest
from support.plugins import CALC, fresh_state, vault_plugin
from support.servers import serve_process

from host import HostConfig, PluginHost, PluginSettings, PoolConfig

pytestmark = pytest.mark.timeout(90)

ONE = PoolConfig(min_workers=1, max_workers=1)
STATION = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"] };
export function queryBalance() { return { balance: 1, currency: "USD" }; }
"""
VAULT = vault_plugin("export function region(ctx) { return ctx.config.region; }\n")


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def audit(state) -> list[dict]:
    path = state / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_disable_and_enable_are_kept_across_restarts(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state), pool=ONE)

    async def run() -> None:
        async with PluginHost(cfg) as h:
            await h.disable("calc")
            assert h.plugin("calc").state == "disabled"
        async with PluginHost(cfg) as h:  # a restart keeps it off, saying why and how to undo it
            info = h.plugin("calc")
            assert info.state == "disabled" and "python -m host enable calc" in (info.error or "")
            await h.enable("calc")
            assert await h.call("calc", "add", 1, 2) == 3
        async with PluginHost(cfg) as h:
            assert h.plugin("calc").state == "running"

    anyio.run(run)
    assert [(e["event"], e["plugin"], e["by"]) for e in audit(state) if e["event"] in ("enable", "disable")] == [
        ("disable", "calc", "python"), ("enable", "calc", "python")]


def test_host_toml_keeps_a_plugin_off_until_it_is_enabled(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)), pool=ONE,
                     plugins={"calc": PluginSettings(enabled=False)})

    async def run() -> None:
        async with PluginHost(cfg) as h:
            info = h.plugin("calc")
            assert info.state == "disabled"
            assert info.error == "disabled in host.toml ([plugins.calc] enabled = false)"
            await h.enable("calc")  # the operator's later word wins, and is kept
        async with PluginHost(cfg) as h:
            assert await h.call("calc", "add", 2, 2) == 4

    anyio.run(run)


def test_a_hand_edited_switch_that_is_not_a_boolean_keeps_the_plugin_off(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state), pool=ONE)

    async def run() -> None:
        async with PluginHost(cfg) as h:
            await h.disable("calc")
        switches = state / "plugin_switches.json"
        text = switches.read_text()
        assert '"enabled": false' in text
        switches.write_text(text.replace('"enabled": false', '"enabled": "true"'))  # a string, not true
        async with PluginHost(cfg) as h:
            info = h.plugin("calc")
            assert info.state == "disabled" and "plugin_switches.json" in (info.error or "")
            assert '"enabled" for calc must be true or false' in (info.error or "")
            await h.enable("calc")  # rewrites it
            assert await h.call("calc", "add", 1, 1) == 2

    anyio.run(run)


def test_config_reset_forgets_the_stored_config(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("vault.js", VAULT)
    state = fresh_state(tmp_path, shared_state)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state), pool=ONE,
                     plugins={"vault": PluginSettings(config={"apiKey": "sk-from-toml", "region": "eu"})})

    async def run() -> None:
        async with PluginHost(cfg) as h:
            await h.set_config("vault", {"region": "us"})
            assert await h.call("vault", "region") == "us"
            assert await h.reset_config("vault") == {"apiKey": "********", "region": "eu"}
            assert await h.call("vault", "region") == "eu"

    anyio.run(run)
    assert "vault" not in json.loads((state / "config.json").read_text())
    assert [e["plugin"] for e in audit(state) if e["event"] == "config_reset"] == ["vault"]


def test_the_cli_switches_plugins_with_and_without_a_server(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("station.js", STATION)
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]

    # no server: stored for the next start; status says there is none
    out = cli("disable", "calc", *common, cwd=tmp_path)
    assert out.returncode == 0 and "applies at the next start" in out.stdout, out.stderr
    assert cli("status", *common, cwd=tmp_path).returncode == 3
    unknown = cli("disable", "nope", *common, cwd=tmp_path)
    assert unknown.returncode == 2 and "no plugin 'nope'" in unknown.stderr

    with serve_process(tmp_path, *common) as srv:
        status, calc = srv.request("GET", "/api/plugins/calc")
        assert status == 200 and calc["state"] == "disabled"
        listed = cli("list", "--state", "disabled", "--json", *common, cwd=tmp_path)
        assert [p["id"] for p in json.loads(listed.stdout)] == ["calc"]
        balances = cli("list", "--capability", "balance", "--json", *common, cwd=tmp_path)
        assert [p["id"] for p in json.loads(balances.stdout)] == ["station"]
        # through the server: applied at once
        out = cli("enable", "calc", *common, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "running", out.stderr
        shown = cli("status", *common, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0] == "server: ready, 2 plugin(s)"
        assert [line.split() for line in shown.stdout.splitlines()[2:]] == [["calc", "running"], ["station", "running"]]
        out = cli("disable", "station", *common, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "disabled"
        status, balances = srv.request("GET", "/api/balances")
        assert status == 200 and balances == []
    assert [(e["event"], e["plugin"], e["by"]) for e in audit(state) if e["event"] in ("enable", "disable")] == [
        ("enable", "calc", "cli"), ("disable", "station", "cli")]


def test_list_and_info_show_the_servers_plugins_when_one_runs(plugin_dir, tmp_path, shared_state):
    # Before: both started a host of their own beside the server and showed its states and
    # workers (a plugin in error on the server was "running" there, its calls 0).
    plugin_dir.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]
    alone = cli("list", "--json", *common, cwd=tmp_path)
    assert alone.returncode == 0 and alone.stderr == "", alone.stderr  # (the note is for a terminal)
    assert [(p["id"], p["calls"]) for p in json.loads(alone.stdout)] == [("calc", 0)]
    with serve_process(tmp_path, *common) as srv:
        for _ in range(3):
            assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[0] == 200
        pid = srv.request("GET", "/api/plugins/calc")[1]["workers"][0]["pid"]
        listed = cli("list", "--json", *common, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        [calc] = json.loads(listed.stdout)
        assert calc["calls"] == 3 and [w["pid"] for w in calc["workers"]] == [pid]
        info = cli("info", "calc", *common, cwd=tmp_path)
        assert info.returncode == 0 and json.loads(info.stdout)["calls"] == 3, info.stderr
        missing = cli("info", "nope", *common, cwd=tmp_path)
        assert missing.returncode == 1 and "nope" in missing.stderr
        table = cli("list", *common, cwd=tmp_path)
        assert table.stdout.split("\n")[1].split()[:2] == ["calc", "running"], table.stdout


NETTER = """
export const metadata = { id: "netter", name: "netter", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["api.one.example", "api.two.example"], env: ["NETTER_REGION"] } };
export async function can(host) {
  return (await Deno.permissions.query({ name: "net", host })).state;
}
"""


def test_the_cli_narrows_a_plugins_grants_with_and_without_a_server(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("netter.js", NETTER)
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]

    bad = cli("grants", "netter", "--narrow", "disk=/", *common, cwd=tmp_path)
    assert bad.returncode == 2 and "KIND one of net, read" in bad.stderr, bad.stderr
    # an override never widens: a host the manifest does not name is not granted
    wider = cli("grants", "netter", "--narrow", "net=evil.example", *common, cwd=tmp_path)
    assert wider.returncode == 0, wider.stderr
    assert json.loads(wider.stdout)["permissions"].get("net", []) == []
    # no server: a host started for the command keeps it; it applies at every start after
    out = cli("grants", "netter", "--narrow", "net=api.one.example", "--narrow", "env=false", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["api"] == {"net": ["api.one.example"], "env": False}
    assert shown["permissions"]["net"] == ["api.one.example"] and "env" not in shown["permissions"]

    with serve_process(tmp_path, *common) as srv:
        assert srv.request("POST", "/api/plugins/netter/call/can", {"args": ["api.one.example"]})[1]["result"] == "granted"
        assert srv.request("POST", "/api/plugins/netter/call/can", {"args": ["api.two.example"]})[1]["result"] != "granted"
        # through the server: its workers restart with the grants left
        out = cli("grants", "netter", "--reset", *common, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["api"] is None, out.stderr
        assert srv.request("POST", "/api/plugins/netter/call/can", {"args": ["api.two.example"]})[1]["result"] == "granted"
        listed = json.loads(cli("grants", "netter", *common, cwd=tmp_path).stdout)
        assert listed["permissions"]["net"] == ["api.one.example", "api.two.example"]
    events = [(e["plugin"], e["override"], e["by"]) for e in audit(state) if e["event"] == "grant_override"]
    assert events == [("netter", {"net": ["evil.example"]}, "cli"),
                      ("netter", {"net": ["api.one.example"], "env": False}, "cli"), ("netter", None, "cli")]
