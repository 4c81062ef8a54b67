"""Probe (issue 20): whoever can publish on the channel Redis can send a malformed message; it
is ignored with a warning, and the messages after it are still delivered."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from support.processes import wait_for

from host import PoolConfig
from host.channel_relay import PREFIX
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CHAT = """
export const metadata = { id: "chat", name: "Chat", version: "1.0.0", apiVersion: "1.0" };
const got = [];
export async function listen(ctx) { await ctx.channel.on("msg", (d) => { got.push(d); }); return true; }
export function heard() { return got; }
"""


async def test_a_deeply_nested_channel_message_is_ignored_and_the_next_one_delivered(
        plugin_dir, make_host, redis_url):
    import redis

    plugin_dir.add("chat.js", CHAT, auto_metadata=False)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         state=StateConfig(channel_storage=redis_url)) as h:
        relay = h._services.relay
        with anyio.fail_after(10):
            await relay.subscribed.wait()
        await h.call("chat", "listen")
        client = redis.Redis.from_url(redis_url)
        try:
            pipe = client.pipeline()
            pipe.publish(PREFIX + "chat", b"\x93" + b"\x91" * 100_000 + b"\xc0")  # nested past any stack
            pipe.publish(PREFIX + "chat", msgspec.msgpack.encode([b"elsewhere", "msg", {"n": 1}]))
            pipe.execute()
        finally:
            client.close()
        with anyio.move_on_after(5):
            while await h.call("chat", "heard") != [{"n": 1}]:
                await anyio.sleep(0.05)
        assert await h.call("chat", "heard") == [{"n": 1}]
        assert relay.received == 1


HOG = """
export const metadata = { id: "hog", name: "Hog", version: "1.0.0", apiVersion: "1.0" };
export async function listen(ctx) { await ctx.channel.on("msg", () => {}); return true; }
export function busy(ms) { const end = Date.now() + ms; while (Date.now() < end) {} return true; }
"""


async def test_a_busy_subscriber_of_one_plugin_does_not_hold_up_another_plugins_events(
        plugin_dir, make_host, redis_url):
    import redis

    from host import WorkerLimits

    plugin_dir.add("chat.js", CHAT, auto_metadata=False)
    plugin_dir.add("hog.js", HOG, auto_metadata=False)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, max_inflight=2),
                         limits=WorkerLimits(heartbeat_timeout=4, max_write_buffer_bytes=64 * 1024),
                         state=StateConfig(channel_storage=redis_url)) as h:
        relay = h._services.relay
        with anyio.fail_after(10):
            await relay.subscribed.wait()
        await h.call("chat", "listen")
        await h.call("hog", "listen")
        client = redis.Redis.from_url(redis_url)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: h.call("hog", "busy", 3000, timeout=10))
            await wait_for(lambda: h.pool("hog").workers[0].load == 1, timeout=10)  # busy: reads nothing
            try:
                for _ in range(20):  # more than its socket and write buffer hold
                    client.publish(PREFIX + "hog", msgspec.msgpack.encode([b"elsewhere", "msg", "x" * 200_000]))
                client.publish(PREFIX + "chat", msgspec.msgpack.encode([b"elsewhere", "msg", {"n": 1}]))
            finally:
                client.close()
            t0 = anyio.current_time()
            with anyio.move_on_after(8):
                while await h.call("chat", "heard") != [{"n": 1}]:
                    await anyio.sleep(0.05)
            took = anyio.current_time() - t0
        assert took < 1.0, f"chat's event waited {took:.1f}s behind hog's"
