"""Relay stations added at run time and the plugin switches (enable/disable) in PostgreSQL
(``[state] database``, tables ``plugin_stations`` and ``plugin_switches``), on the real postgres
of tests/support/postgres.py: a station added through one host is served by the other after its
rescan, and one removed there is gone here; a plugin disabled through one host stops being
served by the other at its rescan, and enabled again likewise; nothing of it lands in the
state directories' files. Also two ``serve`` processes over HTTP, where the bound is the other
host's ``[reload] interval`` (hot reload on or off)."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
from cryptography.fernet import Fernet
from support.plugins import CALC, fresh_state
from support.relay import relayco, serve_relay
from support.servers import two_serve_processes

from host import HostConfig, InvalidConfig, PluginHost, PluginSettings, PluginUnavailable, PoolConfig
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

ONE = PoolConfig(min_workers=1, max_workers=1)
RELAYCO = relayco(key_in_query=True)
KEYS = {"sk-alpha-0001": 11.5, "sk-beta-0002": 22.25}


@pytest.fixture
def plugins(plugin_dir, monkeypatch):
    """calc and the relayco provider; one secret key for every host ($PLUGIN_HOST_SECRET_KEY)."""
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("relayco.js", RELAYCO)
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", Fernet.generate_key().decode())
    return plugin_dir


@pytest.fixture
def relay(fake_http):
    return serve_relay(fake_http, KEYS, {})


def host_on(plugins, root, shared_state, url: str) -> PluginHost:
    return PluginHost(HostConfig(plugins_dir=str(plugins.root), state_dir=str(fresh_state(root, shared_state)),
                                 pool=ONE, state=StateConfig(database=url), reload={"enabled": False},
                                 plugins={"relayco": PluginSettings(allow_private_network=True)}))


def row(url: str, table: str, key: str) -> dict | None:
    with psycopg.connect(url) as db:
        found = db.execute(f"SELECT value FROM {table} WHERE key = %s", [key]).fetchone()
    return None if found is None else json.loads(found[0])


async def test_a_station_added_through_one_host_is_served_by_the_other(
        plugins, relay, tmp_path, shared_state, postgres_url):
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a, \
            host_on(plugins, tmp_path / "b", shared_state, postgres_url) as b:
        await a.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        assert "mine" not in {s["name"] for s in b.stations.list()}  # b has not polled yet
        await b.rescan()  # the watcher's poll: b reads the table, restarts the provider with the station
        listed = {s["name"]: s for s in b.stations.list()}
        assert (listed["mine"]["plugin"], listed["mine"]["origin"]) == ("relayco", "added")
        results = {r.provider: r for r in await b.query_balances(refresh=True)}
        assert (results["mine"].status, results["mine"].balance) == ("success", 22.25)
        assert row(postgres_url, "plugin_stations", "mine") == {"plugin": "relayco"}
        await b.stations.remove("mine")
        await a.rescan()
        assert "mine" not in {s["name"] for s in a.stations.list()}
        await a.stations.add("twice", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-alpha-0001"})
        with pytest.raises(InvalidConfig, match="just added by another request or process"):  # b has not polled yet
            await b.stations.add("twice", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        await b.rescan()
        results = {r.provider: r for r in await b.query_balances(refresh=True)}
        assert results["twice"].balance == 11.5  # a's station, with a's key
    assert row(postgres_url, "plugin_stations", "mine") is None
    assert not any((tmp_path / n / "state" / "stations.json").exists() for n in "ab")


async def test_a_stations_config_is_stored_before_the_station(plugins, relay, tmp_path, shared_state, postgres_url):
    # The CI failure of 2f38941: the other host polled between the two writes of an add (the
    # station's row, then its config) and listed "mine" with {}. Hosts read the stations before
    # the configs, so the config row must be the older one: PostgreSQL's xmin, the id of the
    # transaction that wrote each row, says which was written first.
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a, \
            host_on(plugins, tmp_path / "b", shared_state, postgres_url) as b:
        await a.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        with psycopg.connect(postgres_url) as db:
            (config_tx,) = db.execute("SELECT xmin::text::bigint FROM plugin_config WHERE key = 'station:mine'").fetchone()
            (station_tx,) = db.execute("SELECT xmin::text::bigint FROM plugin_stations WHERE key = 'mine'").fetchone()
        assert config_tx < station_tx
        await b.rescan()
        [listed] = [s for s in b.stations.list() if s["name"] == "mine"]
        assert listed["config"]["apiKey"] == "********"


async def test_a_plugin_disabled_through_one_host_stops_on_the_other(plugins, tmp_path, shared_state, postgres_url):
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a, \
            host_on(plugins, tmp_path / "b", shared_state, postgres_url) as b:
        assert await b.call("calc", "add", 1, 2) == 3
        await a.disable("calc", by="alice")
        assert row(postgres_url, "plugin_switches", "calc")["enabled"] is False
        await b.rescan()
        with pytest.raises(PluginUnavailable, match="disabled by alice"):
            await b.call("calc", "add", 1, 2)
        await b.enable("calc", by="bob")
        await a.rescan()
        assert await a.call("calc", "add", 2, 2) == 4
        assert await b.call("calc", "add", 3, 2) == 5
    async with host_on(plugins, tmp_path / "c", shared_state, postgres_url) as c:  # a third host starts with them
        await c.disable("calc")
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a:
        assert a.plugin("calc").state == "disabled"
    assert not any((tmp_path / n / "state" / "plugin_switches.json").exists() for n in "abc")


def wait_for(what: str, answer, deadline: float = 20.0):
    """Poll ``answer()`` every 50 ms until it is not None; the value and the seconds it took."""
    start = time.monotonic()
    while (found := answer()) is None:
        assert time.monotonic() - start < deadline, f"{what} never happened"
        time.sleep(0.05)
    return found, time.monotonic() - start


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hot_reload", ["true", "false"])  # off: the watcher still polls the database
def test_two_serve_processes_share_stations_and_switches(
        tmp_path, shared_state, postgres_url, postgres_server, plugins, relay, hot_reload):
    (tmp_path / "host.toml").write_text(
        f'[state]\ndatabase = "{postgres_url}"\n[reload]\nenabled = {hot_reload}\ninterval = 0.2\n'
        '[plugins.relayco]\nallow_private_network = true\n')
    env = {"PLUGIN_HOST_SECRET_KEY": Fernet.generate_key().decode()}
    with two_serve_processes(tmp_path, shared_state, plugins.root, running="calc", env=env) as (one, two):
        status, out = one.request("POST", "/api/stations", {"name": "mine", "plugin": "relayco",
                                                            "config": {"baseUrl": relay.url, "apiKey": "sk-alpha-0001"}})
        assert status == 201, (out, one.log()[-3000:])

        def listed():
            _, items = two.request("GET", "/api/stations")
            return next((s for s in items if s["name"] == "mine"), None)
        station, _ = wait_for("the station on the other host", listed)
        assert station["plugin"] == "relayco" and station["config"]["apiKey"] == "********"

        status, out = one.request("POST", "/api/plugins/calc/disable")
        assert status == 200, out

        def refused():
            status, out = two.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})
            return (status, out) if status != 200 else None
        (status, out), took = wait_for("calc refused on the other host", refused)
        assert status == 503 and "disabled" in json.dumps(out), out
        assert took < 10, took  # [reload] interval = 0.2 s, plus a rescan, on a loaded machine
        status, out = two.request("POST", "/api/plugins/calc/enable")
        assert status == 200, out
        wait_for("calc served again on the first host", lambda: True if one.request(
            "POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[0] == 200 else None)
        logs = one.log() + two.log()
    assert postgres_server.password not in logs and "sk-alpha-0001" not in logs


async def test_with_the_database_gone_a_disable_or_an_add_is_a_state_error_and_calls_go_on(
        plugins, relay, tmp_path, shared_state, postgres_url, postgres_server, caplog):
    from host import StateError

    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a:
        with postgres_server.admin() as admin:
            admin.execute(f"DROP DATABASE {postgres_url.rsplit('/', 1)[1]} WITH (FORCE)")
        with pytest.raises(StateError) as e:
            await a.disable("calc")
        with pytest.raises(StateError):
            await a.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        with pytest.raises(StateError):
            await a.rescan()  # the watcher logs it and polls again at the next interval
        assert await a.call("calc", "add", 1, 2) == 3  # still enabled, still served
    assert "the plugin switches ([state] database) failed" in e.value.message
    assert postgres_server.password not in e.value.message + caplog.text


async def test_two_hosts_switching_one_plugin_at_once_keep_both_switches(
        plugins, tmp_path, shared_state, postgres_url):
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a, \
            host_on(plugins, tmp_path / "b", shared_state, postgres_url) as b:
        await b.disable("calc", by="bob")
        await a.allow_private_network("calc", True, by="alice")  # before a polled b's disable
        assert row(postgres_url, "plugin_switches", "calc") | {"at": 0, "private_network_at": 0} == {
            "enabled": False, "by": "bob", "at": 0,
            "allow_private_network": True, "private_network_by": "alice", "private_network_at": 0}
        await a.rescan()  # and a still learns of b's disable
        with pytest.raises(PluginUnavailable, match="disabled by bob"):
            await a.call("calc", "add", 1, 2)


@pytest.mark.parametrize("damage", ["{not json", "[1]"])
async def test_a_damaged_station_row_leaves_that_station_out_and_every_host_starts(
        plugins, relay, tmp_path, shared_state, postgres_url, caplog, damage):
    """Before: one hand-edited row of plugin_stations stopped every host sharing the database at
    its next start (and `config export`), calc and the other stations with it."""
    hurt = f"hurt{uuid.uuid4().hex[:6]}"  # warnings are said once a while per station: a name of its own
    async with host_on(plugins, tmp_path / "a", shared_state, postgres_url) as a:
        await a.stations.add("good", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-alpha-0001"})
        await a.stations.add(hurt, plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE plugin_stations SET value = %s WHERE key = %s", [damage, hurt])
    async with host_on(plugins, tmp_path / "b", shared_state, postgres_url) as b:
        assert await b.call("calc", "add", 1, 2) == 3
        assert [s["name"] for s in b.stations.list()] == ["good"]
        assert (await b.export_config())["stations"].keys() == {"good"}
    assert f"station {hurt} left out: [state] database, table plugin_stations: the row for '{hurt}'" in caplog.text
