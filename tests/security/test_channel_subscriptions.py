"""What a worker listens to on the channel is host memory: the host caps it per worker
(``ServiceLimits.max_subscriptions``) on what arrives. Plugin code can send ``channel.on``
host calls itself (through the runtime's own ``hostCall``, or raw frames) without keeping a
handler, so its heap never fills: 500,000 such calls grew the host by 250 MB in a minute."""

from __future__ import annotations

import pytest

from host import PoolConfig

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
