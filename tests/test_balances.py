"""query_balances(): every balance plugin at once under its policies; a slow or broken station
never holds up the others."""

from __future__ import annotations

import time

import msgspec
import pytest

from host import (
    BalanceResult,
    BalancesConfig,
    CacheConfig,
    PluginSettings,
    PoolConfig,
    RetryConfig,
    WorkerLimits,
)

pytestmark = pytest.mark.anyio


def balance_plugin(pid: str, body: str, extra_meta: str = "") -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid.title()} Station", version: "1.0.0", '
            f'apiVersion: "1.0", capabilities: ["balance"] {extra_meta} }};\n' + body)


GOOD = """
let n = 0;
export async function queryBalance(config, ctx) {
  n++;
  return { balance: 12.5, currency: "USD", quota: 100, usedQuota: 87.5, expiresAt: "2027-01-01T00:00:00Z",
           rawData: { calls: n, region: config.region } };
}
"""
SLOW = "export async function queryBalance() { await new Promise((r) => setTimeout(r, 60000)); }"
AUTH = 'export function queryBalance() { throw new PluginError("AUTH_ERROR", "invalid api key"); }'
SHAPE = 'export function queryBalance() { return { balance: "lots", currency: "USD" }; }'
FLAKY = """
let n = 0;
export function queryBalance() {
  if (++n < 3) throw new PluginError("NETWORK_ERROR", "connection reset");
  return { balance: n, currency: "CNY" };
}
"""
NEEDS_KEY = balance_plugin("locked", "export function queryBalance() { return { balance: 1, currency: 'USD' }; }",
                           ', configSchema: { apiKey: { type: "string", required: true, secret: true } }')


@pytest.fixture
def stations(plugin_dir):
    plugin_dir.add("good.js", balance_plugin("good", GOOD,
                                             ', configSchema: { region: { type: "string", default: "eu" } }'))
    plugin_dir.add("slow.js", balance_plugin("slow", SLOW))
    plugin_dir.add("auth.js", balance_plugin("auth", AUTH))
    plugin_dir.add("shape.js", balance_plugin("shape", SHAPE))
    plugin_dir.add("flaky.js", balance_plugin("flaky", FLAKY))
    plugin_dir.add("locked.js", NEEDS_KEY)
    plugin_dir.add("calc.js", "export function queryBalance() { return { balance: 1, currency: 'X' }; }")
    return plugin_dir


ONE = PoolConfig(min_workers=1, max_workers=1)


async def test_every_station_answers_within_its_own_timeout(stations, make_host):
    plugins = {"flaky": PluginSettings(retry=RetryConfig(max_attempts=3, backoff=0.01, jitter=0))}
    async with make_host(pool=ONE, plugins=plugins) as h:
        t0 = time.monotonic()
        results = await h.query_balances(timeout=1.0)
        elapsed = time.monotonic() - t0
    by = {r.provider: r for r in results}
    # calc declares no capability, but exports queryBalance: a balance plugin (with a warning)
    assert sorted(by) == ["auth", "calc", "flaky", "good", "locked", "shape", "slow"]
    assert elapsed < 2.0  # the slow one is cut at its 1 s timeout, the others do not wait for it

    good = by["good"]
    assert (good.status, good.balance, good.currency, good.quota, good.used_quota) == ("success", 12.5, "USD", 100, 87.5)
    assert good.provider_name == "Good Station" and good.expires_at == "2027-01-01T00:00:00Z"
    assert good.raw_data == {"calls": 1, "region": "eu"}  # the plugin got its config
    assert good.error_message is None and not good.cached

    assert by["slow"].status == "timeout" and by["slow"].balance is None
    assert 900 <= by["slow"].duration < 1900
    assert (by["auth"].status, by["auth"].error_type) == ("error", "AUTH_ERROR")
    assert "invalid api key" in by["auth"].error_message
    assert (by["shape"].status, by["shape"].error_type) == ("error", "PARSE_ERROR")
    assert "balance must be a finite number" in by["shape"].error_message
    assert (by["flaky"].status, by["flaky"].balance) == ("success", 3)  # retried twice
    assert by["locked"].status == "error" and "apiKey" in by["locked"].error_message


async def test_results_come_from_the_cache_until_refreshed(stations, make_host):
    plugins = {"good": PluginSettings(cache=CacheConfig(enabled=True, ttl=60))}
    async with make_host(pool=ONE, plugins=plugins, balances=BalancesConfig(min_interval=0)) as h:
        first = {r.provider: r for r in await h.query_balances(timeout=0.5)}["good"]
        second = {r.provider: r for r in await h.query_balances(timeout=0.5)}["good"]
        assert second.cached and second.raw_data["calls"] == 1
        assert second.last_updated == first.last_updated  # the time of the plugin's answer
        third = {r.provider: r for r in await h.query_balances(timeout=0.5, refresh=True)}["good"]
        assert not third.cached and third.raw_data["calls"] == 2 and third.last_updated > first.last_updated


async def test_balance_results_encode_in_camel_case(stations, make_host):
    async with make_host(pool=ONE) as h:
        results = await h.query_balances(timeout=0.5)
    data = msgspec.json.decode(msgspec.json.encode(results))
    good = next(d for d in data if d["provider"] == "good")
    assert {"providerName", "usedQuota", "expiresAt", "lastUpdated", "errorMessage", "rawData"} <= set(good)
    assert good["lastUpdated"].endswith("Z")
    assert msgspec.json.decode(msgspec.json.encode(results[0]), type=BalanceResult) == results[0]


async def test_no_balance_plugins_gives_an_empty_list(plugin_dir, make_host):
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }")
    async with make_host(pool=ONE) as h:
        assert await h.query_balances() == []


async def test_a_plugin_with_its_own_call_timeout_is_waited_that_long(plugin_dir, make_host):
    """[plugins.ID.limits] call_timeout other than [limits]': that plugin's balance query waits it,
    not [balances] timeout; a plugin with limits of its own but the host's call timeout does not."""
    late = "export async function queryBalance() { await new Promise((r) => setTimeout(r, 1500)); return { balance: 7 }; }"
    plugin_dir.add("patient.js", balance_plugin("patient", late))
    plugin_dir.add("hasty.js", balance_plugin("hasty", late))
    plugins = {"patient": PluginSettings(limits=WorkerLimits(call_timeout=4)),
               "hasty": PluginSettings(limits=WorkerLimits(heap_mb=96))}
    every = BalancesConfig(timeout=0.8, min_interval=0)  # the second query asks again
    async with make_host(pool=ONE, plugins=plugins, balances=every) as h:
        by = {r.provider: r for r in await h.query_balances()}
        assert (by["patient"].status, by["patient"].balance) == ("success", 7)
        assert by["hasty"].status == "timeout"
        assert {r.provider: r.status for r in await h.query_balances(timeout=0.8, refresh=True)} == {
            "patient": "timeout", "hasty": "timeout"}  # a timeout given for the query is every station's


async def test_a_balance_query_that_throws_is_named_as_its_code_named_it(plugin_dir, make_host):
    """helper-106: a TypeError thrown in queryBalance read "PluginError" (the host's class for any
    error a plugin throws), and a result of the wrong type said Python's names ("got int", "got
    NoneType"); they say what the plugin's code threw, and JavaScript's names."""
    plugin_dir.add("oops.js", 'export const metadata = { id: "oops", name: "O", version: "1.0.0", apiVersion: "1.0",\n'
                   '  capabilities: ["balance"] };\n'
                   'export function queryBalance() { throw new TypeError("oops in query"); }\n', auto_metadata=False)
    plugin_dir.add("odd.js", 'export const metadata = { id: "odd", name: "O", version: "1.0.0", apiVersion: "1.0",\n'
                   '  capabilities: ["balance"] };\n'
                   'export function queryBalance() { return { balance: "abc" }; }\n', auto_metadata=False)
    async with make_host() as h:
        results = {r.provider: r for r in await h.query_balances(refresh=True)}
    oops = results["oops"]
    assert oops.status == "error" and oops.error_type == "TypeError", oops  # before: PluginError
    assert oops.error_message == "oops in query"
    odd = results["odd"]
    assert odd.error_type == "PARSE_ERROR" and "balance must be a finite number, got string 'abc'" in odd.error_message
