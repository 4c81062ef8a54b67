"""Probe (issue 20): a result cache entry in the shared Redis that the host did not write (a hand
edit, another tool, anyone with that Redis) is a miss: the call is answered by the plugin, never
with an untyped error."""

from __future__ import annotations

import msgspec
import pytest

from host import PluginSettings, PoolConfig
from host.policy.cache import CacheEntry
from host.policy.config import CacheConfig, PolicyConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COUNTER = """
let n = 0;
export function next() { n += 1; return n; }
"""


@pytest.mark.parametrize("value", [b"\xc1", b"\x91" * 100_000 + b"\xc0"])
async def test_a_tampered_cache_entry_in_redis_is_a_miss(plugin_dir, make_host, redis_url, value):
    import redis

    plugin_dir.add("counter.js", COUNTER)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         policy=PolicyConfig(cache_storage=redis_url),
                         plugins={"counter": PluginSettings(cache=CacheConfig(enabled=True, functions=["next"]))}) as h:
        assert await h.call("counter", "next") == 1
        assert await h.call("counter", "next") == 1  # cached
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match="plugin-host:cache:counter:*"):
                entry = msgspec.msgpack.decode(client.get(key), type=CacheEntry)
                client.set(key, msgspec.msgpack.encode(msgspec.structs.replace(entry, value=value)))
        finally:
            client.close()
        assert await h.call("counter", "next") == 2  # a miss: the plugin answered
