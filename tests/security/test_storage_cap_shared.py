"""The storage cap (``limits.storage_max_bytes``) holds for a plugin served by several host
processes on one state directory (``serve --processes N``): each counts what the others wrote."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from support.plugins import fresh_state

from host import PoolConfig, WorkerLimits
from host.services import ENTRY_OVERHEAD
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ONE = PoolConfig(min_workers=1, max_workers=1)
CAP = 200_000

FILL = """
export const metadata = { id: "hog", name: "hog", version: "1.0.0", apiVersion: "1.0" };
export async function fill(prefix, ctx) {
  for (let n = 0; n < 1000; n++) {
    try { await ctx.storage.set(prefix + n, "x".repeat(10000)); }
    catch (e) { return { stored: n, name: e.name }; }
  }
  return { stored: 1000 };
}
export async function one(ctx) { await ctx.storage.set("one", 1); return (await ctx.storage.keys()).length; }
export async function count(ctx) { return (await ctx.storage.keys()).length; }
"""


async def test_two_hosts_on_one_state_directory_share_one_storage_cap(plugin_dir, make_host, state_dir):
    plugin_dir.add("hog.js", FILL)
    limits = WorkerLimits(storage_max_bytes=CAP)
    async with make_host(pool=ONE, limits=limits, state_dir=str(state_dir)) as a, \
            make_host(pool=ONE, limits=limits, state_dir=str(state_dir)) as b:
        assert await b.call("hog", "one") == 1     # b has counted its storage: one entry
        first = await a.call("hog", "fill", "a")   # a fills the cap
        assert first["name"] == "StorageFull" and 0 < first["stored"] < 1000
        second = await b.call("hog", "fill", "b")  # b sees it full
        assert second == {"stored": 0, "name": "StorageFull"}
        assert await a.call("hog", "count") == first["stored"] + 1


@pytest.mark.parametrize("shared", ["state_dir", "database"])
async def test_hosts_filling_one_storage_at_once_stay_under_its_cap(
        plugin_dir, make_host, state_dir, tmp_path, shared_state, shared, request):
    plugin_dir.add("hog.js", FILL)
    limits, pool = WorkerLimits(storage_max_bytes=CAP), PoolConfig(min_workers=2, max_workers=2)
    if shared == "database":  # two machines: a state directory each, one database
        state = StateConfig(database=request.getfixturevalue("postgres_url"))
        dirs = [str(fresh_state(tmp_path / n, shared_state)) for n in "ab"]
    else:
        state, dirs = StateConfig(), [str(state_dir)] * 2
    async with make_host(pool=pool, limits=limits, state_dir=dirs[0], state=state) as a, \
            make_host(pool=pool, limits=limits, state_dir=dirs[1], state=state) as b:
        assert await a.call("hog", "one") == 1 and await b.call("hog", "one") == 1
        stored = []

        async def fill(h, prefix):
            stored.append((await h.call("hog", "fill", prefix))["stored"])

        async with anyio.create_task_group() as tg:
            for h, prefix in ((a, "a"), (b, "b"), (a, "c"), (b, "d"), (a, "e"), (b, "f")):
                tg.start_soon(fill, h, prefix)
        entry = len("a0") + len(msgspec.msgpack.encode("x" * 10000)) + ENTRY_OVERHEAD
        assert (sum(stored) - 2) * entry <= CAP  # keys of up to 4 characters: a margin of 2 entries
        assert await a.call("hog", "count") == sum(stored) + 1
