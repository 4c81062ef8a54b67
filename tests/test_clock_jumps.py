"""The wall clock stepped (NTP, a VM resumed, an operator's `date -s`) while the host serves:
what measures a span of time must not take the jump for that span."""

from __future__ import annotations

import time

import anyio
import pytest
from support.processes import wait_for

from host import (
    BalancesConfig,
    CacheConfig,
    PluginSettings,
    PoolConfig,
    RateLimitConfig,
    RateLimited,
    WorkerLimits,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HOUR = 3600.0


def set_clock_back(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The process's wall clock from now on reads ``seconds`` earlier (monotonic time goes on)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - seconds)


async def test_rate_limit_window_is_not_stretched_by_the_clock_set_back(make_host, plugin_dir, monkeypatch):
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }")
    limit = RateLimitConfig(limit="2/second", strategy="reject")
    plugins = {"calc": PluginSettings(rate_limit=limit)}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        assert await h.call("calc", "add", 1, 2) == 3
        assert await h.call("calc", "add", 1, 2) == 3
        set_clock_back(monkeypatch, HOUR)
        with pytest.raises(RateLimited) as e:  # the window of one second is still full
            await h.call("calc", "add", 1, 2)
        # before: the two calls looked an hour in the future, so the plugin was refused for an hour
        assert 0 < e.value.retry_after <= 1.0, e.value
        await anyio.sleep(e.value.retry_after)  # the quota's own window, measured on the monotonic clock
        assert await h.call("calc", "add", 1, 2) == 3


async def test_cached_result_is_not_served_past_its_ttl_after_the_clock_set_back(make_host, plugin_dir, monkeypatch):
    plugin_dir.add("counter.js", "let n = 0; export function next() { return ++n; }")
    cache = CacheConfig(enabled=True, ttl=0.5, functions=["next"])
    plugins = {"counter": PluginSettings(cache=cache)}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        assert await h.call("counter", "next") == 1
        assert await h.call("counter", "next") == 1  # cached
        set_clock_back(monkeypatch, HOUR)
        await anyio.sleep(0.6)  # the entry's ttl has passed, as the monotonic clock tells
        # before: the entry looked stored an hour ahead, so it was fresh for another hour
        assert await h.call("counter", "next") == 2
        assert await h.call("counter", "next") == 2  # stored again, at the clock as it reads now


JUMP = """
export function jump(ms) {  // the worker's wall clock from now on reads ms later
  const real = Date.now;
  Date.now = () => real() + ms;
  return Deno.pid;
}
export function pid() { return Deno.pid; }
"""


async def test_workers_live_on_when_the_clock_jumps_forward(make_host, plugin_dir):
    plugin_dir.add("clock.js", JUMP)
    # the host pings every 2 s; the worker's heartbeat watch looks every 500 ms, so it looks
    # (three times) before the host's next word after the jump
    limits = WorkerLimits(heartbeat_interval=2.0, heartbeat_timeout=2.5)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), limits=limits) as h:
        pid = await h.call("clock", "jump", HOUR * 1000)
        seen: list[float] = []

        def pongs() -> bool:
            beat = h.plugin("clock").workers[0].last_heartbeat if h.plugin("clock").workers else None
            if beat is not None and beat not in seen:
                seen.append(beat)
            return len(seen) > 2

        await wait_for(pongs, timeout=10)
        # before: it took an hour since the host's last word for the host lost, and exited
        assert await h.call("clock", "pid") == pid
        assert h.plugin("clock").crashes == 0


STATION = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] };
let n = 0;
export function queryBalance() { n += 1; return { balance: n, currency: "USD" }; }
"""


async def test_balance_history_is_not_pruned_by_a_clock_stepped_years_ahead(make_host, plugin_dir, monkeypatch):
    plugin_dir.add("station.js", STATION)
    async with make_host(balances=BalancesConfig(min_interval=0, history_days=30)) as h:
        await h.query_balances()
        assert [p.balance for p in await h.balance_history("station")] == [1]
        set_clock_back(monkeypatch, -3 * 365 * 86400)  # three years ahead, for one query
        await h.query_balances()
        assert len(await h.balance_history("station")) >= 1  # its point written, on that clock
        monkeypatch.undo()
        await h.query_balances()
        # before: the query made in the future deleted every point older than 30 days before it
        # (the one it added sorts last: it carries the clock as it read then)
        assert [p.balance for p in await h.balance_history("station")] == [1, 3, 2]
