"""Probe (issue 20): the host's own state services (the Redis of channel delivery, rate limits and
the cache; the PostgreSQL of [state] database) are as much the host's as its HTTP API: a plugin
allowed private networks may not reach them (there it could publish to any plugin's channel,
rewrite quotas and cached results, or the approvals table)."""

from __future__ import annotations

import pytest

from host import PermissionDenied, PoolConfig
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PROBE = """
export const metadata = { id: "prober", name: "prober", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["127.0.0.1"] } };
export async function connect(port) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port }); c.close(); return "connected";
}
"""


async def test_a_plugin_allowed_private_networks_cannot_reach_the_hosts_redis(plugin_dir, make_host, redis_url):
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    plugin_dir.add("prober.js", PROBE, auto_metadata=False)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         plugins={"prober": {"allow_private_network": True}},
                         state=StateConfig(channel_storage=redis_url)) as h:
        with pytest.raises(PermissionDenied):
            await h.call("prober", "connect", port)


async def test_a_plugin_cannot_reach_the_hosts_postgres_however_its_url_spells_the_address(
        plugin_dir, make_host, postgres_url):
    from urllib.parse import urlsplit

    url = urlsplit(postgres_url)
    libpq_style = f"postgresql://{url.username}:{url.password}@/{url.path.strip('/')}?host=127.0.0.1&port={url.port}"
    plugin_dir.add("prober.js", PROBE, auto_metadata=False)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         plugins={"prober": {"allow_private_network": True}},
                         state=StateConfig(database=libpq_style)) as h:
        with pytest.raises(PermissionDenied):
            await h.call("prober", "connect", url.port)
