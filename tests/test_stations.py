"""Relay stations (issue 17): many stations per provider plugin, each with its own config,
secrets, breaker and history, served by the provider's one pool; added, changed, removed and
tested at run time; usage-script stations beside them."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from support.plugins import fresh_state
from support.relay import relayco, serve_relay

from host import (
    BalancesConfig,
    BreakerConfig,
    HostConfig,
    InvalidConfig,
    PluginHost,
    PluginSettings,
    PoolConfig,
)
from host.balances.stations import StationConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RELAYCO = relayco(key_in_query=True)

BALANCES = {"sk-alpha-0001": 11.5, "sk-beta-0002": 22.25, "sk-gamma-0003": 33.0}


@pytest.fixture
def relay(fake_http):
    return serve_relay(fake_http, BALANCES, {"owner": {"email": "someone@example.com"}})


def host_for(plugin_dir, tmp_path, shared_state, relay, **kw) -> PluginHost:
    plugin_dir.add("relayco.js", RELAYCO)
    settings = {"relayco": PluginSettings(allow_private_network=True, breaker=BreakerConfig(failure_threshold=2,
                                                                                           failure_rate=0))}
    kw.setdefault("balances", EVERY_QUERY)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)),
                     pool=PoolConfig(min_workers=1, max_workers=4), plugins=settings, **kw)
    return PluginHost(cfg)


EVERY_QUERY = BalancesConfig(min_interval=0)  # each query asks the stations (the tests change them between)


def toml_stations(relay, *keys: str) -> dict[str, StationConfig]:
    return {f"relay-{i}": StationConfig(plugin="relayco", name=f"Relay {i}",
                                        config={"baseUrl": relay.url, "apiKey": key})
            for i, key in enumerate(keys)}


async def test_stations_of_one_provider_share_its_pool_each_with_its_own_config(plugin_dir, tmp_path, shared_state,
                                                                                relay):
    stations = toml_stations(relay, "sk-alpha-0001", "sk-beta-0002", "sk-gamma-0003")
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=stations) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        pool = h._registry.pool_of("relayco")
        workers = len(pool.workers)
        history = await h.balance_history("relay-1")
    # the provider itself has no config of its own: only its stations are asked
    assert sorted(results) == ["relay-0", "relay-1", "relay-2"]
    assert {k: (b.status, b.balance, b.plugin, b.provider_name) for k, b in results.items()} == {
        "relay-0": ("success", 11.5, "relayco", "Relay 0"),
        "relay-1": ("success", 22.25, "relayco", "Relay 1"),
        "relay-2": ("success", 33.0, "relayco", "Relay 2")}
    assert workers == 1
    assert [p.balance for p in history] == [22.25]


async def test_a_failing_station_never_opens_the_circuit_of_the_others(plugin_dir, tmp_path, shared_state, relay):
    stations = toml_stations(relay, "sk-alpha-0001", "sk-revoked-9999")
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=stations) as h:
        for _ in range(4):
            results = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert results["relay-0"].status == "success"
    assert results["relay-1"].error_type == "CircuitOpen"


async def test_a_station_added_at_run_time_is_persisted_with_its_secret_sealed(plugin_dir, tmp_path, shared_state,
                                                                               relay):
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        item = await h.stations.add("mine", plugin="relayco", title="Mine", low_balance=5,
                                    config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        state = h.config.state_path
        listed = h.stations.list()
        grants = h._registry.grants(h._registry.record("relayco"))
    assert item["config"] == {"baseUrl": relay.url, "apiKey": "********"}
    assert (item["plugin"], item["kind"], item["title"], item["lowBalance"]) == ("relayco", "plugin", "Mine", 5)
    assert results["mine"].balance == 22.25
    assert "relayco" not in results  # no config of its own: not a station
    assert grants is not None and grants.net == [f"127.0.0.1:{relay.port}"]
    stations_json, config_json = (state / "stations.json").read_text(), (state / "config.json").read_text()
    assert "sk-beta-0002" not in stations_json + config_json + json.dumps(listed)
    assert json.loads(stations_json)["mine"] == {"plugin": "relayco", "name": "Mine", "low_balance": 5.0}
    assert json.loads(config_json)["station:mine"]["apiKey"].startswith("enc:v1:")  # never a plugin id

    # a new host on the same state directory serves it too
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        assert {b.provider: b.balance for b in await h.query_balances(refresh=True)} == {"mine": 22.25}
        await h.stations.remove("mine")
        # serving no station, the provider is a station of its own again (one waiting for a key)
        assert [(b.provider, b.status) for b in await h.query_balances(refresh=True)] == [
            ("relayco", "not_configured")]
        assert "station:mine" not in json.loads((h.config.state_path / "config.json").read_text())


async def test_a_station_is_checked_before_anything_is_stored(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        with pytest.raises(InvalidConfig, match="that key is revoked"):
            await h.stations.add("x", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "bad-0001"})
        with pytest.raises(InvalidConfig, match=r"config\.apiKey: the value is not of type string"):
            await h.stations.add("x", plugin="relayco", config={"baseUrl": relay.url, "apiKey": 12345})
        with pytest.raises(InvalidConfig, match="a plugin has that id"):
            await h.stations.add("relayco", plugin="relayco", config={})
        with pytest.raises(InvalidConfig, match="'nope' is not a loaded balance plugin"):
            await h.stations.add("x", plugin="nope", config={})
        with pytest.raises(InvalidConfig, match="not a valid station name"):
            await h.stations.add("no spaces", plugin="relayco", config={})
        assert h.stations.list() == []
        assert not (h.config.state_path / "stations.json").exists()


async def test_an_invalid_station_config_fails_that_station_alone(plugin_dir, tmp_path, shared_state, relay):
    stations = toml_stations(relay, "sk-alpha-0001")
    stations["broken"] = StationConfig(plugin="relayco", config={"baseUrl": relay.url, "apiKey": 7})
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=stations) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert results["relay-0"].balance == 11.5
    assert (results["broken"].status, results["broken"].error_type) == ("error", "InvalidConfig")
    assert "config.apiKey" in (results["broken"].error_message or "")


async def test_testing_a_station_shows_the_request_and_the_answer_shape_with_secrets_masked(
        plugin_dir, tmp_path, shared_state, relay):
    stations = toml_stations(relay, "sk-alpha-0001", "sk-nobody-0000")
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=stations) as h:
        good = await h.stations.test("relay-0")
        bad = await h.stations.test("relay-1")
        history = await h.balance_history()
    assert good["ok"] is True and good["result"]["balance"] == 11.5
    assert good["requests"] == [f"debug: fetchJson GET {relay.url}/balance?key=*** -> 200, "
                                f"{good['requests'][0].split(', ')[1]}, {good['requests'][0].split(', ')[2]}"]
    assert good["shape"] == {"left": "number", "owner": {"email": "string"}}
    assert bad["ok"] is False and bad["result"]["errorType"] == "AUTH_ERROR"
    assert "sk-alpha-0001" not in json.dumps(good) and "sk-nobody-0000" not in json.dumps(bad)
    assert history == []  # a test is not recorded


USAGE = """({
  request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) { return { remaining: r.left, unit: "USD" }; }
})"""


async def test_a_pasted_usage_script_becomes_a_station(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        item = await h.stations.add("pasted", script=USAGE, title="Pasted",
                                    config={"baseUrl": relay.url, "apiKey": "sk-gamma-0003"})
        h.config.plugins["pasted"] = PluginSettings(allow_private_network=True)
        await h.reload("pasted")
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        await h.stations.remove("pasted")
        after = [b.provider for b in await h.query_balances(refresh=True)]
    assert (item["kind"], item["plugin"], item["title"]) == ("script", "pasted", "Pasted")
    assert item["config"]["apiKey"] == "********"
    assert (results["pasted"].status, results["pasted"].balance) == ("success", 33.0)
    assert after == ["relayco"]  # the provider, with no station left, is its own (unconfigured) one


async def test_a_station_scripts_errors_name_the_station_not_a_host_toml_entry(plugin_dir, tmp_path, shared_state,
                                                                               relay):
    """A script added with `balances add NAME --script FILE` (or [stations.NAME] script) that does
    not parse was refused "at line 2, column 3 of host.toml usage_scripts.NAME", and a fixed host
    it may not leave was to be changed "in host.toml usage_scripts.NAME": a section the user never
    wrote. Its errors name the station."""
    broken = '({ request: { url: "{{baseUrl}}/x" method: "GET" }, extractor: function (r) { return r; } })'
    toml = {"listed": StationConfig(script=broken)}
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=toml) as h:
        with pytest.raises(InvalidConfig) as added:
            await h.stations.add("pasted", script=broken)
        infos = {i.id: i for i in h.plugins()}
    assert "station pasted" in str(added.value) and "host.toml" not in str(added.value), str(added.value)
    assert "host.toml stations.listed" in infos["listed"].error, infos["listed"].error


async def test_a_usage_script_station_is_not_taken_for_a_plugin_with_its_name(plugin_dir, tmp_path, shared_state,
                                                                              relay, caplog):
    """A script station is served by the usage-script plugin of its own name. Before: every
    balance query warned 'station pasted: a plugin has that id; rename the station', which no
    rename could help, and one whose script does not load was left out of the answer, unsaid."""
    broken = {"broken": StationConfig(script="({ request: ")}
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=broken) as h:
        await h.stations.add("pasted", script=USAGE, config={"baseUrl": relay.url, "apiKey": "sk-gamma-0003"})
        h.config.plugins["pasted"] = PluginSettings(allow_private_network=True)
        await h.reload("pasted")
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert results["pasted"].status == "success"
    assert results["broken"].status == "error" and (
        "broken: failed to load: SyntaxError" in results["broken"].error_message), results["broken"]
    assert not [r.getMessage() for r in caplog.records if "a plugin has that id" in r.getMessage()]


# ---------------------------------------------------------------- what an attacker review found


async def test_a_plugin_taking_a_stations_name_never_gets_its_key(plugin_dir, tmp_path, shared_state, relay):
    """Station configs are kept under station:NAME, which no plugin id can be: a usage script
    dropped in later under the station's name gets nothing of it, and the clash is shown."""
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        await h.stations.add("north", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-alpha-0001"})
        (plugin_dir.root / "north.usage.js").write_text(
            '({ request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },'
            ' extractor: function (r) { return { remaining: r.left }; } })')
        await h._registry.rescan()
        assert h.get_config("north") == {}  # the new plugin's own (empty) config
        listed = {s["name"]: s for s in h.stations.list()}
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert listed["north"]["error"] == "a plugin has the id 'north' too: rename the station"
    assert results["north"].plugin == "north" and results["north"].status == "not_configured"
    assert all("sk-alpha-0001" not in str(r) for _, _, r in relay.requests if r.get("Authorization") != "Bearer sk-alpha-0001")


@pytest.mark.parametrize("base", ["https://*.com", "https://x.example, https://y.example", "https://a b.example",
                                  "https://%2e.example", "https://" + "x" * 300 + ".example"])
async def test_a_station_whose_url_names_no_single_host_is_refused_and_grants_nothing(
        plugin_dir, tmp_path, shared_state, relay, base):
    async with host_for(plugin_dir, tmp_path, shared_state, relay,
                        stations=toml_stations(relay, "sk-alpha-0001")) as h:
        with pytest.raises(InvalidConfig, match="names no valid host"):
            await h.stations.add("bad", plugin="relayco", config={"baseUrl": base, "apiKey": "sk-beta-0002"})
        grants = h._registry.grants(h._registry.record("relayco"))
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        names = [s["name"] for s in h.stations.list()]
    assert grants is not None and grants.net == [f"127.0.0.1:{relay.port}"]
    assert results["relay-0"].balance == 11.5 and names == ["relay-0"]


async def test_a_bad_station_in_host_toml_fails_alone(plugin_dir, tmp_path, shared_state, relay):
    stations = toml_stations(relay, "sk-alpha-0001")
    stations["typo"] = StationConfig(plugin="relayco", config={"baseUrl": "https://*.com", "apiKey": "sk-typo-0009"})
    async with host_for(plugin_dir, tmp_path, shared_state, relay, stations=stations) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        alerts = await h.balance_alerts()
    assert results["relay-0"].balance == 11.5
    assert results["typo"].error_type == "InvalidConfig"
    assert "names no valid host" in (results["typo"].error_message or "")
    assert "sk-typo-0009" not in str(results) + str(alerts)


PATH_KEY = """
export const metadata = { id: "pathkey", name: "PathKey", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: { apiKey: { type: "string", secret: true }, baseUrl: { type: "string" } } };
export async function queryBalance(config, ctx) {
  const body = await ctx.fetchJson(`${config.baseUrl}/key/${encodeURIComponent(config.apiKey)}/balance`);
  return { balance: 1, currency: "USD", rawData: { tokens: { [config.apiKey]: body } } };
}
"""


async def test_a_key_in_a_request_path_or_an_answers_keys_is_masked_in_a_test(plugin_dir, tmp_path, shared_state,
                                                                               relay):
    secret = "sk-live/Ab+Cd=="
    relay.route("GET", f"/key/{secret}/balance", lambda request: web.json_response({"left": 1}))
    plugin_dir.add("pathkey.js", PATH_KEY)
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        h.config.plugins["pathkey"] = PluginSettings(allow_private_network=True)
        await h.reload("pathkey")
        await h.stations.add("pk", plugin="pathkey", config={"baseUrl": relay.url, "apiKey": secret})
        report = await h.stations.test("pk")
        log = [e.message for e in h.logs("pathkey")]
    text = json.dumps(report) + json.dumps(log)
    assert secret not in text and "sk-live%2FAb%2BCd%3D%3D" not in text
    assert report["requests"] == [f"debug: fetchJson GET {relay.url}/key/********/balance -> 200, "
                                  + report["requests"][0].split(", ", 1)[1]]
    assert report["shape"] == {"tokens": {"********": {"left": "number"}}}


async def test_a_corrupt_stations_file_never_stops_the_rescan(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        (h.config.state_path / "stations.json").write_text("{ not json")
        plugin_dir.add("later.js", "export function f() { return 7; }")
        await h._registry.rescan()
        assert await h.call("later", "f") == 7  # a plugin dropped in meanwhile still loads
        assert [s["name"] for s in h.stations.list()] == ["mine"]  # as read before


@pytest.mark.parametrize(("kw", "message"), [
    ({"title": "north\x1b[2J"}, "without control or bidirectional-override characters"),
    ({"title": "x" * 101}, "at most 100 characters"),
    ({"name": "host"}, "reserved for the host's own use"),
    ({"config": {"apiKey": "enc:v1:forged", "baseUrl": "https://r.example"}}, "a value may not start with enc:v1:"),
])
async def test_station_input_an_operator_would_regret_is_refused(plugin_dir, tmp_path, shared_state, relay, kw,
                                                                 message):
    args = {"name": "x", "title": None, "config": {"baseUrl": relay.url, "apiKey": "sk-alpha-0001"}, **kw}
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        with pytest.raises(InvalidConfig, match=message):
            await h.stations.add(args["name"], plugin="relayco", title=args["title"], config=args["config"])
        assert h.stations.list() == []


async def test_a_disabled_provider_is_neither_asked_nor_tested(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path, shared_state, relay,
                        stations=toml_stations(relay, "sk-alpha-0001")) as h:
        await h.disable("relayco")
        with pytest.raises(InvalidConfig, match="is disabled"):
            await h.stations.test("relay-0")
        assert await h.query_balances(refresh=True) == []
    assert relay.requests == []


async def test_two_processes_adding_one_name_never_overwrite_each_other(tmp_path):
    from host.balances.stations import STATIONS_FILE, Stations
    from host.plugins.config_store import FileConfigs
    from host.plugins.settings import ConfigStore

    first, second = Stations({}), Stations({})
    first.open(FileConfigs(ConfigStore(tmp_path, None, STATIONS_FILE)))
    second.open(FileConfigs(ConfigStore(tmp_path, None, STATIONS_FILE)))  # read before the first one's add
    await first.add("x", StationConfig(plugin="a"))
    with pytest.raises(InvalidConfig, match="just added by another request or process"):
        await second.add("x", StationConfig(plugin="b"))
    assert json.loads((tmp_path / STATIONS_FILE).read_text()) == {"x": {"plugin": "a"}}


async def test_a_config_left_by_an_add_that_stopped_halfway_is_named_and_cleared_by_remove(
        plugin_dir, tmp_path, shared_state, relay):
    # An add writes the station's config, then its definition. A config row with no station is
    # another process's add in progress, or one that stopped halfway (a host killed between the
    # two): never replaced (helper-81: replacing it let a lost race delete the winner's config),
    # refused naming both, and cleared by remove.
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-alpha-0001"})
        (h.config.state_path / "stations.json").write_text("{}")
        await h.rescan()
        assert "mine" not in {s["name"] for s in h.stations.list()}
        left = json.loads((h.config.state_path / "config.json").read_text())["station:mine"]
        with pytest.raises(InvalidConfig, match=r"being added by another process, or an add of it stopped halfway.*"
                                                r"balances rm mine"):
            await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-gamma-0003"})
        assert json.loads((h.config.state_path / "config.json").read_text())["station:mine"] == left  # untouched
        assert (await h.stations.remove("mine"))["removed"] == "the config an unfinished add left"
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-gamma-0003"})
        assert {b.provider: b.balance for b in await h.query_balances(refresh=True)} == {"mine": 33.0}


async def test_a_station_config_stored_under_its_bare_name_by_an_earlier_version_is_moved(
        plugin_dir, tmp_path, shared_state, relay):
    # helper-82's finding: the first versions of `balances add` stored a station's config under its
    # bare name; the host reads station:NAME, and the station came back "apiKey is not configured"
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        state = h.config.state_path
    data = json.loads((state / "config.json").read_text())
    data["mine"] = data.pop("station:mine")  # as those versions left it (the key sealed)
    (state / "config.json").write_text(json.dumps(data))
    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        assert {b.provider: b.balance for b in await h.query_balances(refresh=True)} == {"mine": 22.25}
    data = json.loads((state / "config.json").read_text())
    assert "mine" not in data and data["station:mine"]["apiKey"].startswith("enc:v1:")


async def test_a_bare_config_is_moved_only_for_a_station_no_plugin_owns_and_only_in_files(tmp_path):
    # helper-84's review: on a database shared by hosts with other plugins, a bare row may be another
    # host's plugin's; a plugin of this host with the station's name owns its bare row
    from types import SimpleNamespace

    from host import HostConfig
    from host.balances.stations import STATIONS_FILE, Stations
    from host.plugins.config_store import FileConfigs
    from host.plugins.host_lists import move_bare_station_configs
    from host.plugins.settings import ConfigStore
    from host.state_config import StateConfig

    stations, configs = Stations({}), FileConfigs(ConfigStore(tmp_path, None))
    stations.open(FileConfigs(ConfigStore(tmp_path, None, STATIONS_FILE)))
    for name in ("legacy", "owned"):
        await stations.add(name, StationConfig(plugin="relayco"))
        await configs.set(name, {"apiKey": f"sk-{name}"})
    on_pg = HostConfig(state_dir=str(tmp_path), state=StateConfig(database="postgresql://u@127.0.0.1:1/x"))
    found = [SimpleNamespace(id="owned")]  # the plugins this host found (only their ids are read)
    assert await move_bare_station_configs(on_pg, configs, stations, found) == found
    assert configs.get("legacy") == {"apiKey": "sk-legacy"}  # not moved on a shared database
    assert await move_bare_station_configs(HostConfig(state_dir=str(tmp_path)), configs, stations, found) == found
    assert (configs.get("station:legacy"), configs.get("legacy")) == ({"apiKey": "sk-legacy"}, None)
    assert (configs.get("owned"), configs.get("station:owned")) == ({"apiKey": "sk-owned"}, None)


async def test_a_command_beside_the_host_keeps_the_script_stations_modules(plugin_dir, tmp_path, shared_state, relay):
    from host.plugins.usage_scripts import discover_sources

    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        await h.stations.add("pasted", script=USAGE)
        module = h.config.state_path / "usage_scripts" / "pasted" / "mod.js"
        assert module.exists()
        ids = {s.id for s in discover_sources(h.config)}  # as `approve` or `import-cc-switch` run it
        assert "pasted" in ids and module.exists()


async def test_a_config_export_carries_the_stations_keys_to_another_host(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path / "a", shared_state, relay) as h:
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"})
        document = await h.export_config(passphrase="correct horse")
    assert "sk-beta-0002" not in json.dumps(document)
    assert document["stations"]["mine"]["apiKey"].startswith("enc:")
    async with host_for(plugin_dir, tmp_path / "b", shared_state, relay) as h:
        with pytest.raises(InvalidConfig, match="stations this host does not: mine"):
            await h.import_config(document, passphrase="correct horse")
        await h.stations.add("mine", plugin="relayco", config={"baseUrl": relay.url})
        imported = await h.import_config(document, passphrase="correct horse")
        assert imported == {"station:mine": {"baseUrl": relay.url, "apiKey": "********"}}
        assert {b.provider: b.balance for b in await h.query_balances(refresh=True)} == {"mine": 22.25}


async def test_allowing_a_private_network_is_kept_and_audited(plugin_dir, tmp_path, shared_state, relay):
    plugin_dir.add("relayco.js", RELAYCO)
    state = fresh_state(tmp_path, shared_state)
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state), pool=PoolConfig(min_workers=1, max_workers=1),
                     stations=toml_stations(relay, "sk-alpha-0001"), balances=EVERY_QUERY)
    async with PluginHost(cfg) as h:
        [refused] = await h.query_balances(refresh=True)
        assert refused.error_type == "NETWORK_ERROR" and "allow_private_network" in (refused.error_message or "")
        assert await h.allow_private_network("relayco", by="dashboard")
        assert [b.balance for b in await h.query_balances(refresh=True)] == [11.5]
    async with PluginHost(cfg) as h:  # kept across restarts
        assert [b.balance for b in await h.query_balances(refresh=True)] == [11.5]
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert [(e["plugin"], e["allow"], e["by"]) for e in audit if e["event"] == "allow_private_network"] == [
        ("relayco", True, "dashboard")]


async def test_a_station_removed_while_it_is_being_added_is_not_a_500(plugin_dir, tmp_path, shared_state, relay):
    """helper-95: a DELETE that ended while the POST adding the same station still restarted its
    provider made the add answer 500 (a StopIteration looking for the station it had added). The
    add says it was removed meanwhile (StationNotFound, a 404), and the remove wins. (The
    provider here takes 400 ms to load, so that the remove lands inside the add's restart.)"""
    import anyio

    from host import StationNotFound

    async with host_for(plugin_dir, tmp_path, shared_state, relay) as h:
        plugin_dir.add("relayco.js", "await new Promise((r) => setTimeout(r, 400));\n" + RELAYCO)
        await h.rescan()
        outcome: list[object] = []

        async def add() -> None:
            try:
                outcome.append(await h.stations.add("mine", plugin="relayco",
                                                    config={"baseUrl": relay.url, "apiKey": "sk-beta-0002"}))
            except StationNotFound as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(add)
            with anyio.fail_after(10):  # stored, and its provider restarting
                while "mine" not in {s["name"] for s in h.stations.list()}:
                    await anyio.sleep(0.005)
            await h.stations.remove("mine")
        listed = [s["name"] for s in h.stations.list()]
    assert len(outcome) == 1
    assert isinstance(outcome[0], StationNotFound) and "removed while it was being added" in outcome[0].message, \
        outcome
    assert listed == []


def test_a_store_written_in_a_thread_is_never_seen_new_stamp_old_names(tmp_path):
    """helper-95: a station removed answered 200 yet stayed listed (and DELETE kept answering
    200) for ~1.5 s: the store's write, in a worker thread, set the file's new stamp before its
    new names, and the stations' view, on the event loop, cached the old names under the new
    stamp. Stamp and names now change together (83 of 300 inserts were seen stale before)."""
    import sys
    import threading

    from host.plugins.settings import ConfigStore

    store = ConfigStore(tmp_path, None, "stations.json")
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the thread and this one take turns as often as they can
    stale = 0
    try:
        for i in range(300):
            key, done = f"k{i}", threading.Event()
            worker = threading.Thread(target=lambda key=key, done=done: (store.insert(key, {"a": 1}), done.set()))
            worker.start()
            cache: tuple[object, bool] | None = None
            while not done.is_set():  # what a view keyed by the stamp keeps
                stamp = store.stamp
                if cache is None or cache[0] != stamp:
                    cache = (stamp, key in store.names())
            worker.join()
            stale += cache is not None and cache[0] == store.stamp and not cache[1]
    finally:
        sys.setswitchinterval(switch)
    assert stale == 0


def test_a_source_named_dot_dot_is_the_plugin_it_leads_to(plugin_dir, monkeypatch):
    """`python -m host validate ..` from inside a plugin's directory: the hidden-link check read
    the name as given (".."), and the plugin was "not a plugin" (helper-96)."""
    from pathlib import Path

    from host.plugins.discovery import source_for

    plugin_dir.add("d/mod.js", "export function f() { return 1; }")
    (plugin_dir.root / "d" / "sub").mkdir()
    monkeypatch.chdir(plugin_dir.root / "d" / "sub")
    found = source_for(Path(".."))
    assert found is not None and found.id == "d"
