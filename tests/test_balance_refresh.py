"""What a balance query may make the host do: a station is asked once at a time (concurrent
queries, refreshes too, share that call) and at most once per ``balances.min_interval`` (a query
within it gets the last answer, marked cached, and adds no history point); over HTTP the read
token's ``limit`` parameters are bounded and a negative one is a 400 naming it."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import anyio
import pytest
from aiohttp import web
from support.servers import served

from host import BalancesConfig, PluginSettings, PoolConfig

pytestmark = pytest.mark.anyio

RELAY = """
export const metadata = { id: "relay", name: "Relay", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"], permissions: { net: ["127.0.0.1"] },
  configSchema: { baseUrl: { type: "string", required: true } } };
export async function queryBalance(config, ctx) {
  const answer = await (await fetch(config.baseUrl + "/balance", { signal: ctx.signal })).json();
  return { balance: answer.balance, currency: "USD" };
}
"""
ONE = PoolConfig(min_workers=1, max_workers=1, max_inflight=64)
READ, ADMIN = "read-5d1c0b9a", "admin-8e7f6a5b"


@pytest.fixture
def provider(fake_http):
    """The station's provider: answers after 0.3 s (so that queries overlap), counting hits."""
    hits = [0]

    async def balance(request: web.Request) -> web.Response:
        hits[0] += 1
        await asyncio.sleep(0.3)
        return web.json_response({"balance": 100 - hits[0]})

    fake_http.route("GET", "/balance", balance)
    fake_http.route("GET", "/v2/balance", balance)
    fake_http.hits = hits
    return fake_http


@pytest.fixture
def relay(plugin_dir, provider):
    plugin_dir.add("relay.js", RELAY)
    return {"relay": PluginSettings(allow_private_network=True, config={"baseUrl": provider.url})}


async def test_concurrent_refreshes_ask_the_station_once_and_record_one_point(relay, provider, make_host):
    # Before: 50 concurrent refreshes (GET /api/balances?refresh=1, the read token) asked the
    # provider 50 times and stored 50 history points.
    async with make_host(pool=ONE, plugins=relay) as h:
        answers = []

        async def refresh() -> None:
            answers.append((await h.query_balances(refresh=True))[0])

        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(refresh)
        points = await h.balance_history("relay")
    assert provider.hits[0] == 1
    assert {(a.status, a.balance) for a in answers} == {("success", 99.0)}
    assert sorted(a.cached for a in answers) == [False] + [True] * 29  # one asked, the others shared it
    assert len({a.last_updated for a in answers}) == 1
    assert [p.balance for p in points] == [99.0]


async def test_within_min_interval_a_refresh_gets_the_last_answer_and_after_it_asks_again(relay, provider, make_host):
    async with make_host(pool=ONE, plugins=relay, balances=BalancesConfig(min_interval=1.0)) as h:
        first = (await h.query_balances(refresh=True))[0]
        again = (await h.query_balances(refresh=True))[0]
        assert provider.hits[0] == 1
        assert (again.cached, again.balance, again.last_updated) == (True, first.balance, first.last_updated)
        await anyio.sleep(1.1)
        later = (await h.query_balances(refresh=True))[0]
        assert provider.hits[0] == 2 and not later.cached and later.balance == 98.0
        assert [p.balance for p in await h.balance_history("relay")] == [99.0, 98.0]



async def test_a_callers_own_short_timeout_is_not_the_stations_answer(relay, provider, make_host):
    """A query with its own 0.1 s timeout times out (the provider takes 0.3 s): that is the
    caller's, not the station's answer, so the next query within min_interval asks again
    (before: it got the first caller's timeout for min_interval)."""
    async with make_host(pool=ONE, plugins=relay) as h:
        assert (await h.query_balances(timeout=0.1))[0].status == "timeout"
        again = (await h.query_balances())[0]
    assert (again.status, again.cached) == ("success", False)

async def test_a_changed_config_asks_again_within_the_interval(relay, provider, make_host):
    async with make_host(pool=ONE, plugins=relay) as h:
        await h.query_balances()
        await h.set_config("relay", {"baseUrl": provider.url + "/v2"})
        assert not (await h.query_balances())[0].cached
        assert provider.hits[0] == 2 and provider.requests[-1][1] == "/v2/balance"


async def test_a_restarted_plugin_is_asked_again_within_the_interval(relay, provider, make_host):
    # a restart, a reload or private networks allowed give the plugin a new pool: its last
    # answer (an error that setting fixed, say) is not served again
    async with make_host(pool=ONE, plugins=relay) as h:
        await h.query_balances()
        assert await h.restart("relay")
        assert not (await h.query_balances())[0].cached and provider.hits[0] == 2


async def test_min_interval_zero_asks_every_time_but_still_once_at_a_time(relay, provider, make_host):
    async with make_host(pool=ONE, plugins=relay, balances=BalancesConfig(min_interval=0)) as h:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(h.query_balances)
        assert provider.hits[0] == 1
        await h.query_balances()
        await h.query_balances()
        assert provider.hits[0] == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_read_token_cannot_amplify_refreshes_nor_read_unbounded(relay, provider, make_host, tmp_path,
                                                                          anyio_backend):
    state = tmp_path / "state"
    async with make_host(pool=ONE, plugins=relay, state_dir=str(state)) as h, \
            served(h, admin_token=ADMIN, read_token=READ) as (_, http):
        auth = {"Authorization": f"Bearer {READ}"}

        async def refresh() -> int:
            async with http.get("/api/balances?refresh=1", headers=auth) as r:
                assert (await r.json())[0]["status"] == "success"
                return r.status

        statuses = await asyncio.gather(*(refresh() for _ in range(50)))
        assert set(statuses) == {200} and provider.hits[0] == 1
        with sqlite3.connect(state / "balances.sqlite3") as db:  # a long history: 12,000 points
            now = time.time()
            db.executemany("INSERT INTO points VALUES ('old', ?, 1, 'USD', NULL, NULL)",
                           [(now - 86400 - i,) for i in range(12_000)])
        async with http.get("/api/balances/history?limit=1000000", headers=auth) as r:
            assert r.status == 200 and len(await r.json()) == 10_000
        async with http.get("/api/balances/history?provider=relay", headers=auth) as r:
            assert [p["balance"] for p in await r.json()] == [99.0]  # one point for 50 refreshes
        for path in ("/api/balances/history?limit=-5", "/api/plugins/relay/logs?limit=-5",
                     "/api/balances/alerts?limit=-1", "/api/balances/history?limit=ten"):
            async with http.get(path, headers=auth) as r:
                body = await r.json()
                assert r.status == 400 and body["error"]["type"] == "BadRequest", (path, body)
                assert "limit must be a whole number of 0 or more" in body["error"]["message"], path
        async with http.get("/api/plugins/relay/logs?limit=5000", headers=auth) as r:
            assert r.status == 200
        async with http.get("/api/plugins/relay/logs?limit=1&limit=2", headers=auth) as r:  # helper-111: took 1
            assert r.status == 400 and "limit is given more than once" in (await r.json())["error"]["message"]
