"""The rate limits' in-memory shortcut (RateLimiter.took, the call path's) against the quotas it
skips ``acquire`` for: a host-wide quota with no per-plugin limit, and a plugin's own limit with
none in [policy]. Each call takes exactly one slot of each quota that applies. Real workers."""

from __future__ import annotations

import pytest

from host import PluginSettings, PolicyConfig, PoolConfig, RateLimitConfig, RateLimited

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE_WORKER = PoolConfig(min_workers=1, max_workers=1)
REJECT = RateLimitConfig(strategy="reject")  # no limit of its own


@pytest.fixture
def two(plugin_dir):
    plugin_dir.add("a.js", "export function ok() { return 'a'; }")
    plugin_dir.add("b.js", "export function ok() { return 'b'; }")
    return plugin_dir


async def test_the_host_wide_quota_counts_each_call_of_every_plugin_once(two, make_host):
    async with make_host(pool=ONE_WORKER, policy=PolicyConfig(global_limit="3/minute", rate_limit=REJECT)) as h:
        assert [await h.call("a", "ok"), await h.call("b", "ok"), await h.call("a", "ok")] == ["a", "b", "a"]
        for plugin in ("a", "b"):
            with pytest.raises(RateLimited, match="global"):
                await h.call(plugin, "ok")
        assert (h.plugin("a").rate_limited, h.plugin("b").rate_limited) == (1, 1)


async def test_a_plugins_own_quota_applies_with_none_in_policy_and_leaves_the_others_alone(two, make_host):
    own = {"a": PluginSettings(rate_limit=RateLimitConfig(limit="2/minute", strategy="reject"))}
    async with make_host(pool=ONE_WORKER, policy=PolicyConfig(rate_limit=REJECT), plugins=own) as h:
        assert [await h.call("a", "ok"), await h.call("a", "ok")] == ["a", "a"]
        with pytest.raises(RateLimited, match="plugin"):
            await h.call("a", "ok")
        assert [await h.call("b", "ok") for _ in range(5)] == ["b"] * 5
        assert (h.plugin("a").rate_limited, h.plugin("b").rate_limited) == (1, 0)


async def test_a_plugins_own_quota_and_the_host_wide_one_take_one_slot_each_per_call(two, make_host):
    own = {"a": PluginSettings(rate_limit=RateLimitConfig(limit="2/minute", strategy="reject"))}
    async with make_host(pool=ONE_WORKER, policy=PolicyConfig(global_limit="3/minute", rate_limit=REJECT),
                         plugins=own) as h:
        assert [await h.call("a", "ok"), await h.call("a", "ok")] == ["a", "a"]
        with pytest.raises(RateLimited, match="plugin"):  # its own is full; nothing taken of the global
            await h.call("a", "ok")
        assert await h.call("b", "ok") == "b"  # the global's third slot
        with pytest.raises(RateLimited, match="global"):
            await h.call("b", "ok")
