"""``/api/stations`` as a form or a script sends it: a new station's fields checked in the order a
form shows them, each 400 naming its field; a station that does not exist is 404 on every route,
as a missing plugin is."""

from __future__ import annotations

import pytest
from support.plugins import fresh_state
from support.relay import relayco, serve_relay
from support.servers import served

from host import HostConfig, PluginHost, PluginSettings, PoolConfig, StationNotFound

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60),
              pytest.mark.parametrize("anyio_backend", ["asyncio"])]  # aiohttp

USAGE = """({
  request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) { return { remaining: r.left, unit: "USD" }; }
})"""


@pytest.fixture
def relay(fake_http):
    return serve_relay(fake_http, {"sk-alpha-0001": 11.5}, {})


def host_for(plugin_dir, tmp_path, shared_state) -> PluginHost:
    plugin_dir.add("relayco.js", relayco())
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)),
                     pool=PoolConfig(min_workers=1, max_workers=1),
                     plugins={"relayco": PluginSettings(allow_private_network=True)})
    return PluginHost(cfg)


async def test_a_new_stations_fields_are_checked_in_order_each_refusal_naming_its_field(
        plugin_dir, tmp_path, shared_state, relay):
    good = {"name": "east", "plugin": "relayco", "config": {"baseUrl": relay.url, "apiKey": "sk-alpha-0001"}}
    cases = [
        # before: "'relayco' is not ..." or a plugin's complaint, though the name was empty
        ({**good, "name": "", "plugin": "nope"}, "name: '' is not a valid station name"),
        ({**good, "name": "relayco"}, "name: 'relayco' is taken"),
        # before: "station east: 'nope' is not a loaded balance plugin", about the plugin, not the two given
        ({**good, "plugin": "nope", "script": USAGE}, "give one of plugin and script, not both"),
        ({"name": "east", "config": {}}, "give one of plugin (a balance plugin's id) and script"),
        ({**good, "plugin": "nope", "title": "x" * 101}, "title: at most 100 characters"),
        ({"name": "east", "script": "   "}, "script: the usage script must be 1 to"),
        ({**good, "plugin": "nope"}, "plugin: 'nope' is not a loaded balance plugin"),
        ({**good, "config": {"baseUrl": relay.url, "apiKey": 7}}, "config.apiKey"),
    ]
    async with host_for(plugin_dir, tmp_path, shared_state) as h, served(h) as (_, http):
        for body, said in cases:
            async with http.post("/api/stations", json=body) as r:
                status, error = r.status, (await r.json())["error"]
            assert (status, error["type"]) == (400, "InvalidConfig"), (body, error)
            assert said in error["message"], (body, error["message"])
        assert h.stations.list() == []  # nothing stored by any of them
        async with http.post("/api/stations", json=good) as r:
            assert r.status == 201, await r.text()


async def test_a_station_that_does_not_exist_is_404_on_every_route(plugin_dir, tmp_path, shared_state, relay):
    async with host_for(plugin_dir, tmp_path, shared_state) as h, served(h) as (_, http):
        for method, path, body in [("GET", "/api/stations/west/config", None),
                                   ("PUT", "/api/stations/west/config", {"apiKey": "sk-x"}),
                                   ("DELETE", "/api/stations/west", None),
                                   ("POST", "/api/stations/west/test", None)]:
            async with http.request(method, path, json=body) as r:
                status, error = r.status, (await r.json())["error"]
            # before: 400 InvalidConfig, as for a value the station refuses
            assert (status, error["type"]) == (404, "StationNotFound"), (method, path, error)
            assert "no station named 'west'" in error["message"]
        with pytest.raises(StationNotFound):
            await h.stations.remove("west")
