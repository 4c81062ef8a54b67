"""The result cache (memory storage) through real workers: hits, keys, TTL, LRU, refresh,
stale-while-revalidate, one call per key under concurrency, and persistence across a restart.
Redis storage: tests/test_redis.py."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from support.processes import wait_for

from host import CacheConfig, HostConfig, PluginError, PluginSettings, PoolConfig, RateLimitConfig
from host.policy.cache import CacheEntry, ResultCache, cache_key, digest, make_entry

pytestmark = pytest.mark.anyio

# Counts its calls in storage: the count is the same whichever worker runs the call.
COUNTER = """
export const metadata = {
  id: "counter", name: "Counter", version: "1.0.0", apiVersion: "1.0",
  configSchema: { region: { type: "string", default: "eu" } },
};
async function bump(ctx) {
  const n = ((await ctx.storage.get("n")) ?? 0) + 1;
  await ctx.storage.set("n", n);
  return n;
}
export async function queryBalance(x, ctx) { return { x, n: await bump(ctx) }; }
export async function lookup(x, ctx) { return { x, n: await bump(ctx) }; }
export async function slowLookup(ms, ctx) {
  await new Promise((r) => setTimeout(r, ms));
  return { n: await bump(ctx) };
}
export async function failing(ctx) { await bump(ctx); throw new PluginError("NETWORK_ERROR", "down"); }
export async function big(bytes, ctx) { await bump(ctx); return "x".repeat(bytes); }
export async function calls(ctx) { return (await ctx.storage.get("n")) ?? 0; }
export function healthCheck() { return true; }
"""

ONE = PoolConfig(min_workers=1, max_workers=2)


def cached(**kw) -> dict[str, PluginSettings]:
    return {"counter": PluginSettings(cache=CacheConfig(enabled=True, **kw))}


@pytest.fixture
def counter(plugin_dir, tmp_path):
    plugin_dir.add("counter.js", COUNTER)
    return tmp_path / "state"


async def test_a_repeated_call_is_answered_from_the_cache(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        first = await h.call("counter", "queryBalance", "a")
        assert first == {"x": "a", "n": 1}
        assert await h.call("counter", "queryBalance", "a") == first
        assert await h.call("counter", "queryBalance", "b") == {"x": "b", "n": 2}  # other args: miss
        assert await h.call("counter", "calls") == 2
        info = h.plugin("counter")
        assert (info.cache_hits, info.cache_misses, info.cache_entries) == (1, 2, 2)


async def test_a_cached_result_is_a_copy(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        first = await h.call("counter", "queryBalance", "a")
        first["n"] = 99
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 1


async def test_only_listed_functions_are_cached_and_host_driven_ones_never(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "lookup", "a")
        await h.call("counter", "lookup", "a")
        assert await h.call("counter", "calls") == 2  # only queryBalance by default
    cfg = CacheConfig(enabled=True, functions=["*"])
    assert cfg.applies("lookup") and not cfg.applies("healthCheck") and not cfg.applies("onEvent")
    assert not CacheConfig().applies("queryBalance")  # off by default


async def test_the_key_includes_the_config(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "queryBalance", "a")
        await h.set_config("counter", {"region": "us"})
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2


async def test_a_new_version_does_not_see_the_old_versions_results(counter, plugin_dir, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "queryBalance", "a")
        plugin_dir.add("counter.js", COUNTER.replace('"1.0.0"', '"1.1.0"'))
        assert await h.reload("counter")
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2


async def test_entries_expire_after_their_ttl(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(ttl=0.2)) as h:
        await h.call("counter", "queryBalance", "a")
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 1
        await anyio.sleep(0.25)  # the TTL itself is what is tested
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2


async def test_least_recently_used_entries_go_first(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(max_entries=2)) as h:
        await h.call("counter", "queryBalance", "a")   # n=1
        await h.call("counter", "queryBalance", "b")   # n=2
        await h.call("counter", "queryBalance", "a")   # hit: a is now the most recent
        await h.call("counter", "queryBalance", "c")   # n=3, evicts b
        assert h.plugin("counter").cache_entries == 2
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 1
        assert (await h.call("counter", "queryBalance", "b"))["n"] == 4


async def test_refresh_calls_anyway_and_caches_the_new_result(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "queryBalance", "a")
        assert (await h.call("counter", "queryBalance", "a", refresh=True))["n"] == 2
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2


async def test_stale_results_are_served_while_refreshed_in_the_background(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(ttl=0.2, stale_ttl=30)) as h:
        await h.call("counter", "queryBalance", "a")
        await anyio.sleep(0.25)  # past the TTL, inside the stale window
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 1  # stale, at once
        await wait_for(lambda: h.plugin("counter").cache_refreshes == 1)
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2  # the refreshed one
        info = h.plugin("counter")
        assert info.cache_stale == 1 and info.cache_hits == 1


async def test_concurrent_misses_call_the_plugin_once(counter, make_host):
    async with make_host(pool=PoolConfig(min_workers=2, max_workers=4), state_dir=str(counter),
                         plugins=cached(functions=["slowLookup"])) as h:
        results = []

        async def one() -> None:
            results.append(await h.call("counter", "slowLookup", 200))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        assert results == [{"n": 1}] * 8
        assert await h.call("counter", "calls") == 1


async def test_failures_are_not_cached(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(functions=["failing"])) as h:
        for _ in range(2):
            with pytest.raises(PluginError):
                await h.call("counter", "failing")
        assert await h.call("counter", "calls") == 2
        assert h.plugin("counter").cache_entries == 0


async def test_results_over_max_value_bytes_are_not_cached(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter),
                         plugins=cached(functions=["big"], max_value_bytes=1000)) as h:
        assert len(await h.call("counter", "big", 10)) == 10
        await h.call("counter", "big", 10)
        await h.call("counter", "big", 5000)
        await h.call("counter", "big", 5000)
        assert await h.call("counter", "calls") == 3


async def test_a_cache_hit_uses_no_rate_limit_quota(counter, make_host):
    plugins = {"counter": PluginSettings(cache=CacheConfig(enabled=True),
                                         rate_limit=RateLimitConfig(limit="1/minute", strategy="reject"))}
    async with make_host(pool=ONE, state_dir=str(counter), plugins=plugins) as h:
        for _ in range(5):
            assert (await h.call("counter", "queryBalance", "a"))["n"] == 1
        assert h.plugin("counter").rate_limited == 0


async def test_clear_cache(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "queryBalance", "a")
        await h.call("counter", "queryBalance", "b")
        assert await h.clear_cache("counter") == 2
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 3


async def test_set_policy_turns_the_cache_on(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter)) as h:
        await h.call("counter", "queryBalance", "a")
        h.set_policy("counter", cache=CacheConfig(enabled=True))
        await h.call("counter", "queryBalance", "a")
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 2


async def test_persisted_entries_warm_the_cache_after_a_restart(counter, make_host):
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(persist=True)) as h:
        first = await h.call("counter", "queryBalance", "a")
        await h.call("counter", "queryBalance", "gone", refresh=True)
    assert (counter / "cache.sqlite3").stat().st_mode & 0o777 == 0o600
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached(persist=True)) as h:
        assert h.plugin("counter").cache_entries == 2  # loaded at start
        assert await h.call("counter", "queryBalance", "a") == first
        assert await h.call("counter", "calls") == 2  # the plugin was not called again
    # without persist, nothing is written
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        await h.call("counter", "queryBalance", "fresh")
    async with make_host(pool=ONE, state_dir=str(counter), plugins=cached()) as h:
        assert (await h.call("counter", "queryBalance", "fresh"))["n"] == 4


def test_expired_persisted_entries_are_dropped_at_warm_up(tmp_path):
    cache = ResultCache("memory://", tmp_path)
    live = make_entry({"v": 1}, CacheConfig(enabled=True, ttl=60, persist=True))
    dead = CacheEntry(live.value, 1.0, 2.0, 3.0)
    anyio.run(cache.put, "p", b"live", live, CacheConfig(enabled=True, persist=True))
    anyio.run(cache.put, "p", b"dead", dead, CacheConfig(enabled=True, persist=True))
    cache.close()
    again = ResultCache("memory://", tmp_path)
    assert again.warm_up() == 1
    assert anyio.run(again.get, "p", b"live").result() == {"v": 1}
    again.close()


def test_keys_are_stable_and_distinguish_their_parts():
    assert digest("p", {"a": 1, "b": 2}) == digest("p", {"b": 2, "a": 1})
    assert digest("p", "fn", [1]) != digest("p", "fn", [[1]])
    assert digest("p", "fn", [b"x"]) != digest("p", "fn", ["x"])
    assert cache_key("p", {"a": 1, "b": 2}) == cache_key("p", {"b": 2, "a": 1})
    long = cache_key("p", "fn", ["x" * 1000])
    assert long.startswith(b"#") and len(long) == 21 and long != cache_key("p", "fn", ["x" * 1001])


def test_cache_config_is_validated():
    from host import InvalidConfig

    with pytest.raises(InvalidConfig, match="ttl"):
        HostConfig(plugins={"x": PluginSettings(cache=CacheConfig(ttl=0))})
    with pytest.raises(InvalidConfig, match="max_entries"):
        HostConfig(policy={"cache": {"max_entries": 0}})


async def test_a_state_dir_under_home_holds_the_cache_file_with_the_rest(counter, make_host, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    async with make_host(pool=ONE, state_dir="~/state", plugins=cached(persist=True)) as h:
        await h.call("counter", "queryBalance", "a")
    state = tmp_path / "home" / "state"
    assert (state / "cache.sqlite3").exists() and (state / "storage").is_dir()
    assert not Path("~").exists()  # nothing under a literal "~" in the working directory
