"""Balance alerts (issue 17): a station's balance falling below its ``low_balance``, coming back
above it, a station starting to fail and recovering: each said once, recorded with its time,
POSTed to the webhook and given to the command; a restart repeats nothing; a webhook that fails
never fails a query. A local fake station and a local webhook receiver, real workers."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from aiohttp import web

from host import BalancesConfig, BreakerConfig, InvalidConfig, PluginSettings, PoolConfig
from host.balances.alerts import AlertsConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


STATION = '''({
  request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) { return { remaining: r.left, unit: "USD" }; }
})'''


async def wait_for(predicate, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_each_change_is_said_once_recorded_posted_and_run(plugin_dir, make_host, fake_http, state_dir,
                                                                 tmp_path):
    (plugin_dir.root / "relay.usage.js").write_text(STATION)
    posted: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.json_response({"ok": True})

    fake_http.route("POST", "/hook", hook)
    left = {"value": 10.0}

    def balance(request: web.Request) -> web.Response:
        if left["value"] is None:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"left": left["value"]})

    fake_http.route("GET", "/balance", balance)
    record = tmp_path / "alerts.jsonl"
    command = [sys.executable, "-c", f"import sys; open({str(record)!r}, 'a').write(sys.stdin.read() + '\\n')"]
    alerts = AlertsConfig(webhook=fake_http.url + "/hook", command=command, timeout=10)
    plugins = {"relay": PluginSettings(config={"baseUrl": fake_http.url, "apiKey": "k"}, allow_private_network=True,
                                       breaker=BreakerConfig(enabled=False), low_balance=5)}
    config = dict(state_dir=str(state_dir), pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins,
                  balances=BalancesConfig(alerts=alerts, min_interval=0))  # every step asks the station
    steps = [(10.0, []), (3.0, ["low_balance"]), (2.5, []), (None, ["failing"]), (None, []),
             (2.0, ["recovered"]), (8.0, ["balance_recovered"]), (9.0, [])]
    async with make_host(**config) as h:
        for value, expected in steps:
            left["value"] = value
            before = len(posted)
            await h.query_balances(refresh=True)
            await wait_for(lambda n=before, e=expected: len(posted) == n + len(e))
            assert [p["kind"] for p in posted[before:]] == expected, (value, posted[before:])
        said = await h.balance_alerts("relay")
    kinds = ["low_balance", "failing", "recovered", "balance_recovered"]
    assert [a.kind for a in said] == kinds
    assert [p["kind"] for p in posted] == kinds
    low = posted[0]
    assert (low["provider"], low["balance"], low["threshold"], low["currency"]) == ("relay", 3.0, 5.0, "USD")
    assert said[0].time <= said[-1].time
    await wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == 4)
    assert [json.loads(line)["kind"] for line in record.read_text().splitlines()] == kinds

    left["value"] = 1.0  # low again, after a restart: said once, not again for the old state
    async with make_host(**config) as h:
        await h.query_balances(refresh=True)
        await h.query_balances(refresh=True)
        await wait_for(lambda: len(posted) == 5)
        said = await h.balance_alerts()
    assert [a.kind for a in said] == [*kinds, "low_balance"]


async def test_a_webhook_that_fails_never_fails_the_query(plugin_dir, make_host, fake_http, caplog):
    (plugin_dir.root / "relay.usage.js").write_text(STATION)
    fake_http.json("GET", "/balance", {"left": 1})
    fake_http.json("POST", "/hook", {"error": "no"}, status=500)
    alerts = AlertsConfig(webhook=fake_http.url + "/hook", command=["/nonexistent/alert-command"], low_balance=5)
    plugins = {"relay": PluginSettings(config={"baseUrl": fake_http.url, "apiKey": "k"}, allow_private_network=True)}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins,
                         balances=BalancesConfig(alerts=alerts)) as h:
        (b,) = await h.query_balances(refresh=True)
        assert b.status == "success" and b.balance == 1.0
        await wait_for(lambda: any("alert command" in r.getMessage() for r in caplog.records))
        await wait_for(lambda: any("answered 500" in r.getMessage() for r in caplog.records))
        assert [a.kind for a in await h.balance_alerts()] == ["low_balance"]  # recorded all the same


@pytest.mark.parametrize(("alerts", "named"), [
    ({"webhook": "ftp://x"}, "balances.alerts.webhook"),
    ({"command": []}, "balances.alerts.command"),
    ({"timeout": 0}, "balances.alerts.timeout"),
])
def test_bad_alert_settings_are_refused_naming_the_setting(alerts, named):
    from host import HostConfig

    with pytest.raises(InvalidConfig, match=named.replace(".", r"\.")):
        HostConfig(balances={"alerts": alerts})


async def test_alerts_reach_the_webhook_in_the_order_they_were_said(plugin_dir, make_host, fake_http):
    # Before: each query's alerts went in a task of their own, so a slow delivery of "low_balance"
    # let the next query's "failing" (or "recovered") arrive first.
    (plugin_dir.root / "relay.usage.js").write_text(STATION)
    posted: list[str] = []
    left: dict = {"value": 3.0}

    async def hook(request: web.Request) -> web.Response:
        kind = (await request.json())["kind"]
        if kind == "low_balance":
            await anyio.sleep(0.5)  # a slow receiver
        posted.append(kind)
        return web.json_response({"ok": True})

    def balance(request: web.Request) -> web.Response:
        if left["value"] is None:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"left": left["value"]})

    fake_http.route("POST", "/hook", hook)
    fake_http.route("GET", "/balance", balance)
    plugins = {"relay": PluginSettings(config={"baseUrl": fake_http.url, "apiKey": "k"}, allow_private_network=True,
                                       breaker=BreakerConfig(enabled=False), low_balance=5)}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins,
                         balances=BalancesConfig(alerts=AlertsConfig(webhook=fake_http.url + "/hook"),
                                                 min_interval=0)) as h:
        await h.query_balances(refresh=True)  # low_balance, delivered slowly
        left["value"] = None
        await h.query_balances(refresh=True)  # failing, said while the first is on its way
        await wait_for(lambda: len(posted) == 2)
    assert posted == ["low_balance", "failing"]
