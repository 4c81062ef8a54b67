"""Channel events between hosts (``[state] channel_storage = "redis://..."``) queue in the host
while Redis is slow, and in the other hosts while the plugin's workers there read nothing: the
queues are bounded in bytes, not only in count (an event may be as large as a frame, 16 MiB)."""

from __future__ import annotations

import socket

import anyio
import pytest
from support.processes import peak_rss, wait_for
from support.servers import two_hosts

from host import PoolConfig
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MIB = 1024 * 1024
LOUD = """
export const metadata = { id: "loud", name: "loud", version: "1.0.0", apiVersion: "1.0" };
export async function shout(n, size, ctx) {
  const big = "x".repeat(size);
  for (let i = 0; i < n; i++) await ctx.channel.emit("e", big);
  return n;
}
// listens, then reads nothing (its main thread busy) for ``ms``
export async function deaf(ms, ctx) {
  await ctx.channel.on("e", () => {});
  console.log("deaf from now");
  await new Promise((r) => setTimeout(r, 10));
  const until = Date.now() + ms;
  while (Date.now() < until) {}
  return true;
}
"""




async def test_events_for_other_hosts_queue_no_more_bytes_than_the_outbox_allows(plugin_dir, make_host):
    plugin_dir.add("loud.js", LOUD)
    hanging = socket.socket()  # a Redis that accepts the connection and never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    url = f"redis://127.0.0.1:{hanging.getsockname()[1]}/0"
    try:
        async with make_host(state=StateConfig(channel_storage=url), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
            assert await h.call("loud", "shout", 1, 10) == 1
            async with peak_rss() as seen:
                assert await h.call("loud", "shout", 400, MIB - 64, timeout=60) == 400  # 400 MiB of events
                await anyio.sleep(0.2)
            assert seen.growth < 160 * MIB, seen.mib()
    finally:
        hanging.close()


async def test_events_from_other_hosts_queue_no_more_bytes_than_the_inbox_allows(
        plugin_dir, make_host, tmp_path, shared_state, redis_url):
    plugin_dir.add("loud.js", LOUD)
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(channel_storage=redis_url),
                         pool=PoolConfig(min_workers=1, max_workers=1)) as (a, b):
        for h in (a, b):
            with anyio.fail_after(10):
                await h._services.relay.subscribed.wait()
        said: list[str] = []
        b.add_log_listener(lambda plugin, worker, entry: said.append(entry.message))
        async with peak_rss() as seen, anyio.create_task_group() as tg:
            tg.start_soon(b.call, "loud", "deaf", 6000)  # b's worker listens, then reads nothing
            await wait_for(lambda: "deaf from now" in said, timeout=10)
            assert await a.call("loud", "shout", 400, MIB - 64, timeout=60) == 400  # 400 MiB of events
            await anyio.sleep(1)
            tg.cancel_scope.cancel()
        # both hosts in this process: 129-176 MiB run alone, 268 once in a loaded full run; all 400
        # MiB of events held, as before the inbox was bounded, would be over 400
        assert seen.growth < 320 * MIB, "two hosts: " + seen.mib()
