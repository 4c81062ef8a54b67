"""The ``degrade`` rate-limit strategy: a balance query its rate limit refuses answers the
station's last balance, marked stale with its age; with none, it is the RateLimited error."""

from __future__ import annotations

import msgspec
import pytest

from host import BalancesConfig, HostConfig, PluginHost, PluginSettings, RateLimitConfig, RateLimited

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COUNTING = """
export const metadata = { id: "relay", name: "Relay", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"] };
let n = 0;
export function queryBalance() { n++; return { balance: 100 - n, currency: "USD", rawData: { n } }; }
export function ping() { return "pong"; }
"""


def settings(strategy: str) -> dict[str, PluginSettings]:
    return {"relay": PluginSettings(rate_limit=RateLimitConfig(limit="1/minute", strategy=strategy))}


EVERY_QUERY = BalancesConfig(min_interval=0)  # each query asks the station: its rate limit decides


async def test_a_rate_limited_query_answers_the_last_balance_marked_stale(plugin_dir, make_host):
    plugin_dir.add("relay.js", COUNTING)
    async with make_host(plugins=settings("degrade"), balances=EVERY_QUERY) as h:
        (fresh,) = await h.query_balances()
        assert (fresh.status, fresh.balance, fresh.stale, fresh.age) == ("success", 99, False, None)
        (again,) = await h.query_balances()  # the quota of 1 a minute is spent
        assert again.status == "success" and again.stale and again.cached
        assert (again.balance, again.raw_data, again.last_updated) == (99, {"n": 1}, fresh.last_updated)
        assert again.age is not None and 0 <= again.age < 30
        assert "rate limit" in again.error_message and 'strategy = "degrade"' in again.error_message
        assert msgspec.json.decode(msgspec.json.encode(again))["stale"] is True  # on the wire too
        # any other call of the plugin is refused at once, as with "reject"
        with pytest.raises(RateLimited):
            await h.call("relay", "ping")
        assert h.plugin("relay").rate_limited >= 2


async def test_with_no_balance_yet_a_degraded_query_is_the_rate_limit_error(plugin_dir, make_host):
    plugin_dir.add("relay.js", COUNTING)
    async with make_host(plugins=settings("degrade")) as h:
        await h.call("relay", "ping")  # spends the quota: no balance was ever answered
        (r,) = await h.query_balances()
        assert (r.status, r.error_type, r.stale) == ("error", "RateLimited", False)


async def test_after_a_restart_the_last_balance_comes_from_the_history(plugin_dir, state_dir):
    plugin_dir.add("relay.js", COUNTING)
    config = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state_dir))
    async with PluginHost(config) as h:
        (first,) = await h.query_balances()
    config = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state_dir), plugins=settings("degrade"))
    async with PluginHost(config) as h:
        await h.call("relay", "ping")
        (r,) = await h.query_balances()
        assert (r.status, r.stale, r.balance, r.currency) == ("success", True, first.balance, "USD")
        assert r.last_updated == first.last_updated


async def test_reject_still_rejects_a_balance_query(plugin_dir, make_host):
    plugin_dir.add("relay.js", COUNTING)
    async with make_host(plugins=settings("reject"), balances=EVERY_QUERY) as h:
        await h.query_balances()
        (r,) = await h.query_balances()
        assert (r.status, r.error_type, r.stale) == ("error", "RateLimited", False)

