"""Relay stations from the shell and over HTTP (issue 17): ``balances add|stations|set|test|rm``
in a subprocess with a host of its own and through a running server's control socket, and the
``/api/stations`` routes; keys never appear in argv, output or files in clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.plugins import fresh_state
from support.relay import relayco, serve_relay
from support.servers import serve_process, served

from host import HostConfig, PluginHost, PluginSettings, PoolConfig

pytestmark = pytest.mark.timeout(90)

RELAYCO = relayco()
KEYS = {"sk-cli-alpha-1": 5.5, "sk-cli-beta-2": 7.25}


@pytest.fixture
def relay(fake_http):
    return serve_relay(fake_http, KEYS, {"plan": {"name": "pro"}})


@pytest.fixture
def setup(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("relayco.js", RELAYCO)
    state = fresh_state(tmp_path, shared_state)
    toml = tmp_path / "host.toml"
    toml.write_text(f'plugins_dir = "{plugin_dir.root}"\nstate_dir = "{state}"\n[reload]\ninterval = 0.2\n'
                    '[plugins.relayco]\nallow_private_network = true\n')
    return toml, state


def cli(toml, *args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host", *args, "--config", str(toml)], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**os.environ, **(env or {})})


def test_stations_from_the_shell_with_a_host_of_its_own(setup, relay, tmp_path):
    toml, state = setup
    env = {"RELAY_KEY": "sk-cli-alpha-1"}
    out = cli(toml, "balances", "add", "north", "--plugin", "relayco", "--title", "North relay", "--low-balance", "3",
              f"baseUrl={relay.url}", "--from-env", "apiKey=RELAY_KEY", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert (added["name"], added["config"]["apiKey"], added["lowBalance"]) == ("north", "********", 3)
    listed = cli(toml, "balances", "stations", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:2] == ["north", "North"]
    tested = cli(toml, "balances", "test", "north", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.splitlines()[0] == "station north: ok 5.5 USD"
    assert f"request  GET {relay.url}/balance -> 200" in tested.stdout
    assert '"plan": {' in tested.stdout and '"name": "string"' in tested.stdout
    table = cli(toml, "balances", "--refresh", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "North relay (north)" in table.stdout and "5.50" in table.stdout
    bad = cli(toml, "balances", "set", "north", "apiKey=sk-nobody", cwd=tmp_path)
    assert bad.returncode == 0, bad.stderr
    failing = cli(toml, "balances", "test", "north", "--json", cwd=tmp_path)
    assert failing.returncode == 1 and json.loads(failing.stdout)["result"]["errorType"] == "AUTH_ERROR"
    gone = cli(toml, "balances", "rm", "north", cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(cli(toml, "balances", "stations", "--json", cwd=tmp_path).stdout) == []
    everything = "".join(p.read_text(errors="replace") for p in state.glob("*.json"))
    assert "sk-cli-alpha-1" not in everything + out.stdout + tested.stdout


def test_a_script_file_saved_as_utf16_is_added_and_one_in_gbk_is_refused_saying_how_to_save_it(setup, tmp_path):
    """`balances add NAME --script FILE` read the file as UTF-8 alone: one Notepad saved as
    "Unicode" (UTF-16 with its BOM) was refused with Python's "'utf-8' codec can't decode byte
    0xff", which a plugin directory's script now reads (usage_scripts.read_script); a GBK one is
    refused naming the file and asking for UTF-8."""
    toml, _ = setup
    script = ('// \u4f59\u989d\r\n({ request: { url: "{{baseUrl}}/b", method: "GET" },\r\n'
              '  extractor: function (r) { return { remaining: r.balance }; } })\r\n')
    (tmp_path / "wide.js").write_bytes(script.encode("utf-16"))
    (tmp_path / "ansi.js").write_bytes(script.encode("gbk"))
    out = cli(toml, "balances", "add", "wide", "--script", str(tmp_path / "wide.js"), cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["kind"] == "script", out.stderr
    out = cli(toml, "balances", "add", "ansi", "--script", str(tmp_path / "ansi.js"), cwd=tmp_path)
    assert out.returncode == 2 and "save it as UTF-8" in out.stderr and "codec" not in out.stderr, out.stderr


def test_a_station_added_while_a_server_runs_is_served_at_once(setup, relay, tmp_path):
    toml, _ = setup
    with serve_process(tmp_path, "--config", str(toml)) as srv:
        out = cli(toml, "balances", "add", "south", "--plugin", "relayco", f"baseUrl={relay.url}",
                  "--from-env", "apiKey=K", env={"K": "sk-cli-beta-2"}, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        status, balances = srv.request("GET", "/api/balances?refresh=1")
        assert status == 200 and {b["provider"]: b["balance"] for b in balances} == {"south": 7.25}
        status, stations = srv.request("GET", "/api/stations")
        assert status == 200 and [s["name"] for s in stations] == ["south"]


def test_the_http_api_adds_tests_changes_and_removes_stations(plugin_dir, tmp_path, shared_state, relay):
    import anyio

    plugin_dir.add("relayco.js", RELAYCO)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)),
                     pool=PoolConfig(min_workers=1, max_workers=1),
                     plugins={"relayco": PluginSettings(allow_private_network=True)})

    async def main() -> None:
        async with PluginHost(cfg) as h, served(h, admin_token="t0ken") as (_, http):
            auth = {"Authorization": "Bearer t0ken"}
            body = {"name": "east", "plugin": "relayco", "title": "East", "lowBalance": 1,
                    "config": {"baseUrl": relay.url, "apiKey": "sk-cli-alpha-1"}}
            async with http.post("/api/stations", json=body) as r:
                assert r.status == 401  # changing stations needs the admin token
            async with http.post("/api/stations", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["config"]["apiKey"] == "********"
            async with http.post("/api/stations", json={**body, "bogus": 1}, headers=auth) as r:
                assert r.status == 400 and "bogus" in (await r.json())["error"]["message"]
            async with http.post("/api/stations/east/test", headers=auth) as r:
                report = await r.json()
                assert report["ok"] is True and report["shape"] == {"left": "number", "plan": {"name": "string"}}
            async with http.put("/api/stations/east/config", json={"apiKey": "********", "baseUrl": relay.url},
                                headers=auth) as r:
                assert r.status == 200  # a masked secret sent back keeps its value
            async with http.get("/api/balances?refresh=1", headers=auth) as r:
                assert {b["provider"]: b["balance"] for b in await r.json()} == {"east": 5.5}
            async with http.get("/api/stations/east/config", headers=auth) as r:
                assert await r.json() == {"baseUrl": relay.url, "apiKey": "********"}
            async with http.delete("/api/stations/east", headers=auth) as r:
                assert r.status == 200
            async with http.delete("/api/stations/east", headers=auth) as r:
                assert r.status == 404 and "no station named 'east'" in (await r.json())["error"]["message"]

    anyio.run(main)
