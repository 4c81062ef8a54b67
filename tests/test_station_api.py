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


def host_for(plugin_dir, tmp_path, shared_state, **server) -> PluginHost:
    plugin_dir.add("relayco.js", relayco())
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)),
                     pool=PoolConfig(min_workers=1, max_workers=1),
                     plugins={"relayco": PluginSettings(allow_private_network=True)}, server=server)
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
    async with host_for(plugin_dir, tmp_path, shared_state, insecure_no_token=True) as h, served(h) as (_, http):
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


async def test_a_station_with_a_usage_script_is_code_and_needs_the_admin_token(
        plugin_dir, tmp_path, shared_state, relay):
    """A usage script is code the host runs in a Deno worker: with no admin token, POST
    /api/stations took any script (helper-99: it ran, fetch and Deno in reach), where installing a
    plugin and /execute are refused. It is refused as an install is; a station of a plugin is not."""
    script = {"name": "west", "script": USAGE, "config": {"baseUrl": relay.url, "apiKey": "sk-alpha-0001"}}
    good = {"name": "east", "plugin": "relayco", "config": {"baseUrl": relay.url, "apiKey": "sk-alpha-0001"}}
    async with host_for(plugin_dir, tmp_path, shared_state) as h, served(h) as (_, http):
        async with http.post("/api/stations", json=script) as r:
            status, error = r.status, (await r.json())["error"]
        assert (status, error["type"]) == (403, "Forbidden") and "needs an admin token" in error["message"]
        assert h.stations.list() == []  # before: 201, and the script ran at the next refresh
        async with http.post("/api/stations", json=good) as r:
            assert r.status == 201, await r.text()
    token = {"Authorization": "Bearer t0ken"}
    async with (host_for(plugin_dir, tmp_path / "tok", shared_state) as h, served(h, admin_token="t0ken") as (_, http),
                http.post("/api/stations", json=script, headers=token) as r):
        assert r.status == 201, await r.text()


async def test_connection_tests_run_a_few_at_once_and_the_rest_wait_their_turn(
        plugin_dir, tmp_path, shared_state, fake_http, monkeypatch):
    """Each connection test starts a Deno worker of its own: 25 at once started 25 workers (1.1
    GB) and 100 asked the provider 99 times (helper-99). At most TESTS_AT_ONCE run; every one
    still answers."""
    import anyio
    from aiohttp import web

    from host.balances import station_admin

    monkeypatch.setattr(station_admin, "TESTS_AT_ONCE", 2)
    inside = {"now": 0, "most": 0}

    async def balance(request: web.Request) -> web.Response:
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
        try:
            await anyio.sleep(0.3)
            return web.json_response({"left": 5})
        finally:
            inside["now"] -= 1

    fake_http.route("GET", "/balance", balance)
    config = {"baseUrl": fake_http.url, "apiKey": "sk-alpha-0001"}
    async with host_for(plugin_dir, tmp_path, shared_state) as h:
        h.config.plugins["west"] = PluginSettings(allow_private_network=True)  # the fake is on loopback
        await h.stations.add("west", script=USAGE, config=config)
        answers = []

        async def test_once() -> None:
            answers.append(await h.stations.test("west"))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(test_once)
    assert [a["ok"] for a in answers] == [True] * 8, answers[0]
    assert inside["most"] == 2  # before: 8 at once, each on a worker of its own


async def test_ten_removes_of_one_station_at_once_remove_it_once(plugin_dir, tmp_path, shared_state, relay):
    """helper-99: ten DELETEs of one station at once all answered 200, nine of them taking the
    config the first had not removed yet for one an unfinished add left."""
    import anyio

    async with host_for(plugin_dir, tmp_path, shared_state) as h:
        await h.stations.add("east", plugin="relayco", config={"baseUrl": relay.url, "apiKey": "sk-alpha-0001"})
        answers: list = []

        async def remove() -> None:
            try:
                answers.append(await h.stations.remove("east"))
            except StationNotFound as exc:
                answers.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(remove)
    removed = [a for a in answers if isinstance(a, dict)]
    assert len(removed) == 1 and removed[0]["name"] == "east", answers
    assert sum(isinstance(a, StationNotFound) for a in answers) == 9
