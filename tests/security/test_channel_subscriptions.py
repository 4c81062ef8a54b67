"""What a worker listens to on the channel, and what it emits, is host memory: the host caps
both on what arrives. Plugin code can send ``channel.on`` host calls itself (through the
runtime's own ``hostCall``, or raw frames) without keeping a handler, so its heap never fills:
500,000 such calls grew the host by 250 MB in a minute (``ServiceLimits.max_subscriptions``).
An event waits in the host until each target reads it: one of its workers that reads nothing
and another emitting 60 events of 15 MiB at once grew the host 919 MiB (``max_value_bytes``)."""

from __future__ import annotations

import anyio
import pytest
from support.processes import peak_rss, wait_for

from host import HostError, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LISTENER = """
export const metadata = { id: "ears", name: "ears", version: "1.0.0", apiVersion: "1.0" };
const { hostCall } = await import(new URL("context.ts", Deno.mainModule).href);
// As an attack would: host calls only, no handler kept in the worker.
export async function subscribe(from, n) {
  for (let i = from; i < from + n; i++) {
    try { await hostCall("channel.on", ["event" + i], undefined); }
    catch (e) { return { listening: i, name: e.name, message: e.message }; }
  }
  return { listening: from + n };
}
export async function off(event) { await hostCall("channel.off", [event], undefined); return true; }
export async function onAgain(event, ctx) {
  try { await ctx.channel.on(event, () => {}); return "ok"; } catch (e) { return e.name; }
}
"""


async def test_a_worker_cannot_listen_to_more_events_than_the_host_allows(plugin_dir, make_host):
    plugin_dir.add("ears.js", LISTENER)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        out = await h.call("ears", "subscribe", 0, 1500, timeout=30)
        assert out["listening"] == 1000 and out["name"] == "ResourceLimitExceeded"
        assert "listens to 1000 events" in out["message"]
        assert await h.call("ears", "subscribe", 0, 1000) == {"listening": 1000}  # the same ones: no more room taken
        assert await h.call("ears", "onAgain", "new") == "ResourceLimitExceeded"
        assert await h.call("ears", "off", "event7") is True
        assert await h.call("ears", "onAgain", "new") == "ok"  # an off makes room
        assert await h.call("ears", "onAgain", "newer") == "ResourceLimitExceeded"


FAN = """
export const metadata = { id: "fan", name: "fan", version: "1.0.0", apiVersion: "1.0" };
export async function deaf(ms, ctx) {  // listens, then reads nothing for ``ms``
  await ctx.channel.on("e", () => {});
  console.log("deaf from now");
  await new Promise((r) => setTimeout(r, 10));
  const until = Date.now() + ms;
  while (Date.now() < until) {}
  return true;
}
export async function shout(n, size, ctx) {
  const big = "x".repeat(size);
  const sent = [];
  for (let i = 0; i < n; i++) sent.push(ctx.channel.emit("e", big).catch((e) => e.name));
  return await Promise.all(sent);
}
"""
MIB = 1024 * 1024




async def test_events_waiting_for_a_worker_that_reads_nothing_keep_host_memory_bounded(plugin_dir, make_host):
    plugin_dir.add("fan.js", FAN)
    async with make_host(pool=PoolConfig(min_workers=2, max_workers=2)) as h:
        async def deaf() -> None:
            try:
                await h.call("fan", "deaf", 4000, timeout=30)
            except HostError:
                pass

        said: list[str] = []
        h.add_log_listener(lambda plugin, worker, entry: said.append(entry.message))
        async with peak_rss() as seen, anyio.create_task_group() as tg:
            tg.start_soon(deaf)
            await wait_for(lambda: "deaf from now" in said, timeout=10)  # it listens, and reads no more
            sent = await h.call("fan", "shout", 60, 15 * MIB, timeout=30)
            assert sent == ["PayloadTooLarge"] * 60
            assert await h.call("fan", "shout", 1, 512 * 1024, timeout=30) in ([0], [1])  # under the bound: sent
            tg.cancel_scope.cancel()
        assert seen.growth < 250 * MIB, seen.mib()
