"""A station nobody has configured yet is `not_configured`, not an error: it never counts against
the plugin's circuit breaker (an unconfigured station used to show `circuit open after repeated
failures`), and the host's own health checks are never refused by an open breaker (issue 17,
states and messages)."""

from __future__ import annotations

import pytest

from host import BalancesConfig, BreakerConfig, CircuitOpen, HealthConfig, PluginSettings, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

STATION = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"],
  configSchema: { apiKey: { type: "string", secret: true } } };
export async function queryBalance(config) {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, "station: apiKey is not configured");
  throw new PluginError(ErrorTypes.PROVIDER_ERROR, "station: upstream answered 502");
}
let checks = 0;
export function healthCheck() { checks++; return { healthy: true }; }
export function healthChecks() { return checks; }
"""

TRIP = BreakerConfig(failure_threshold=2, failure_rate=0, cooldown=600)
ONE = PoolConfig(min_workers=1, max_workers=1)


async def test_an_unconfigured_station_is_not_an_error_and_never_opens_the_circuit(plugin_dir, make_host):
    plugin_dir.add("station.js", STATION)
    (plugin_dir.root / "relay.usage.js").write_text(
        '({ request: { url: "{{baseUrl}}/v1/usage", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },'
        ' extractor: function (r) { return { remaining: r.left }; } })')
    plugins = {"station": PluginSettings(breaker=TRIP), "relay": PluginSettings(breaker=TRIP)}
    async with make_host(pool=ONE, plugins=plugins) as h:
        for _ in range(6):
            results = {b.provider: b for b in await h.query_balances(refresh=True)}
        circuits = {pid: h.plugin(pid).circuit for pid in ("station", "relay")}
    assert {pid: b.status for pid, b in results.items()} == {"station": "not_configured", "relay": "not_configured"}
    assert "apiKey is not configured" in results["station"].error_message
    assert "baseUrl, apiKey not configured" in results["relay"].error_message
    assert circuits == {"station": "closed", "relay": "closed"}


async def test_health_checks_go_through_an_open_circuit(plugin_dir, make_host):
    plugin_dir.add("station.js", STATION)
    plugins = {"station": PluginSettings(breaker=TRIP, config={"apiKey": "k"})}
    async with make_host(pool=ONE, plugins=plugins, health=HealthConfig(interval=0),
                         balances=BalancesConfig(min_interval=0)) as h:
        for _ in range(2):  # two upstream failures open it (each refresh asks)
            assert (await h.query_balances(refresh=True))[0].error_type == "PROVIDER_ERROR"
        assert h.plugin("station").circuit == "open"
        with pytest.raises(CircuitOpen):
            await h.call("station", "queryBalance", {"apiKey": "k"})
        assert await h.check_health() == {"station@1.0.0": True}  # asked, not refused
        assert h.plugin("station").state == "running"
        assert h.plugin("station").circuit == "open"  # and not closed by it either


async def test_a_station_on_a_private_address_says_which_setting_allows_it(plugin_dir, make_host, fake_http):
    (plugin_dir.root / "lan.usage.js").write_text(
        '({ request: { url: "{{baseUrl}}/v1/usage", method: "GET", headers: { "x-key": "{{apiKey}}" } },'
        ' extractor: function (r) { return { remaining: 1 }; } })')
    fake_http.json("GET", "/v1/usage", {"left": 1})
    lan = {"baseUrl": f"http://localhost:{fake_http.port}", "apiKey": "k"}  # a name that resolves to loopback
    async with make_host(pool=ONE, plugins={"lan": PluginSettings(config=lan)}) as h:
        (b,) = await h.query_balances(refresh=True)
    assert (b.status, b.error_type) == ("error", "NETWORK_ERROR")
    assert "allow_private_network = true" in b.error_message and "127.0.0.1" in b.error_message
    assert fake_http.requests == []  # refused before it left
