"""A plugin's persistent storage has a total cap (``limits.storage_max_bytes``, 64 MiB by
default), enforced by the host on every ``storage.set``: a plugin with no permissions at all
used to fill the disk at 100 MB/s with ``ctx.storage.set(random key, 1 MB)`` (B8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host import PluginSettings, PoolConfig, WorkerLimits
from host.services import ENTRY_OVERHEAD

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ONE = PoolConfig(min_workers=1, max_workers=1)
MIB = 1024 * 1024
VALUE = 1_000_000  # characters per value: the attack's "x".repeat(1e6)

HOG = """
export const metadata = { id: "hog", name: "hog", version: "1.0.0", apiVersion: "1.0" };
// The attack: random keys of 1 MB values until the host refuses.
export async function fill(ctx) {
  for (let n = 0; n < 1000; n++) {
    try { await ctx.storage.set("k" + Math.random(), "x".repeat(1e6)); }
    catch (e) { return { stored: n, name: e.name, message: e.message, isError: e instanceof Error }; }
  }
  return { stored: 1000 };
}
export async function attempt(fn, args, ctx) {
  try { return { ok: (await ctx.storage[fn](...args)) ?? null }; }
  catch (e) { return { name: e.name, message: e.message }; }
}
"""
OTHER = """
export const metadata = { id: "other", name: "other", version: "1.0.0", apiVersion: "1.0" };
export async function roundTrip(v, ctx) {
  const k = "v" + Math.random();
  await ctx.storage.set(k, v);
  return await ctx.storage.get(k);
}
"""


def stored_bytes(state: Path, plugin: str) -> int:
    """What the plugin's storage takes on disk: the database and its write-ahead log."""
    base = state / "storage" / f"{plugin}.sqlite3"
    return sum(p.stat().st_size for p in (base, Path(f"{base}-wal")) if p.exists())


async def test_storage_is_capped_per_plugin_and_the_cap_survives_a_restart(plugin_dir, make_host, state_dir):
    plugin_dir.add("hog.js", HOG)
    plugin_dir.add("other.js", OTHER)
    cap = WorkerLimits().storage_max_bytes
    assert cap == 64 * MIB  # the default
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        out = await h.call("hog", "fill")
        # msgpack adds 5 bytes to a 1 MB string; the key ("k0.123...") about 20
        assert out["name"] == "StorageFull" and out["isError"] is True
        assert out["stored"] == cap // (VALUE + 5 + 20 + ENTRY_OVERHEAD)
        assert "limits.storage_max_bytes" in out["message"] and str(cap) in out["message"]
        assert stored_bytes(state_dir, "hog") < cap + MIB + 8 * MIB  # the WAL may hold a few MB
        assert (state_dir / "storage" / "hog.sqlite3").stat().st_size < cap + MIB
        # other plugins are not affected
        assert await h.call("other", "roundTrip", "y" * 1000) == "y" * 1000
        # what is left under the cap still takes small values; a value too large for it is
        # refused, replacing a key with a value no larger is not, and a delete frees what it held
        assert await h.call("hog", "attempt", "set", ["tiny", 1]) == {"ok": None}
        assert (await h.call("hog", "attempt", "set", ["big", "x" * VALUE]))["name"] == "StorageFull"
        keys = (await h.call("hog", "attempt", "keys", []))["ok"]
        assert len(keys) == out["stored"] + 1
        assert await h.call("hog", "attempt", "set", [keys[0], "y" * VALUE]) == {"ok": None}
        assert await h.call("hog", "attempt", "delete", [keys[1]]) == {"ok": True}
        assert await h.call("hog", "attempt", "set", ["after-delete", "x" * VALUE]) == {"ok": None}
        assert (await h.call("hog", "attempt", "set", ["one-more", "x" * VALUE]))["name"] == "StorageFull"
        assert (await h.call("hog", "attempt", "get", ["after-delete"]))["ok"] == "x" * VALUE
    # the total is read from the database at open: the cap holds after a restart
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        again = await h.call("hog", "attempt", "set", ["after-restart", "x" * VALUE])
        assert again["name"] == "StorageFull"
        assert await h.call("hog", "attempt", "get", ["after-restart"]) == {"ok": None}
        assert await h.call("hog", "attempt", "set", ["small", "s"]) == {"ok": None}  # what is left fits
    assert (state_dir / "storage" / "hog.sqlite3").stat().st_size < cap + MIB


async def test_the_cap_is_set_per_plugin(plugin_dir, make_host):
    plugin_dir.add("hog.js", HOG)
    plugin_dir.add("other.js", OTHER)
    small = PluginSettings(limits=WorkerLimits(storage_max_bytes=3 * MIB))
    async with make_host(pool=ONE, plugins={"hog": small}) as h:
        out = await h.call("hog", "fill")
        assert out["stored"] == 3 and out["name"] == "StorageFull"
        assert "past its cap of 3145728 bytes" in out["message"]
        assert "limits.storage_max_bytes ([plugins.hog.limits] in host.toml)" in out["message"]
        for i in range(5):  # 5 MB under the default cap
            assert await h.call("other", "roundTrip", f"{i}" * VALUE) == f"{i}" * VALUE


CACHER = """
export const metadata = { id: "cacher", name: "cacher", version: "1.0.0", apiVersion: "1.0" };
// The attack: Deno writes the Cache API's entries under the host's DENO_DIR, no write grant
// needed and no quota of its own. Bounded here (256 MiB) so that the old code's run ends.
export async function fill() {
  localStorage.setItem("kept", "yes");
  const cache = await caches.open("c");
  const chunk = new Uint8Array(4 << 20).fill(120);
  for (let i = 0; i < 64; i++) {  // paced (200 MB/s at most), so that the host's look comes mid-way
    await cache.put(`https://x.invalid/${i}`, new Response(chunk));
    await new Promise((r) => setTimeout(r, 20));
  }
  return "filled";
}
export async function manyCaches() {  // each an empty directory or two, and a row
  for (let i = 0; i < 20000; i++) await caches.open(`c${i}`);
  return "opened";
}
export async function look() {
  const cache = await caches.open("c");
  return [localStorage.getItem("kept"), (await cache.keys()).length];
}
"""


async def test_the_cache_api_and_local_storage_count_against_the_storage_cap(plugin_dir, make_host, state_dir):
    """A plugin with no permission wrote 256 MiB through caches.open().put() into
    <state>/deno/location_data (4x storage_max_bytes, kept across restarts, nothing bounding it
    further: helper-73's finding). The host looks at those files while the worker runs: past
    the cap it kills the worker and removes the plugin's Cache API entries (a cache) once it is
    gone; localStorage, which Deno caps at 10 MB, stays."""
    from host import WorkerCrashed

    plugin_dir.add("cacher.js", CACHER)
    cap = 16 * MIB
    async with make_host(state_dir=str(state_dir), pool=ONE, limits=WorkerLimits(storage_max_bytes=cap)) as h:
        with pytest.raises(WorkerCrashed) as e:
            await h.call("cacher", "fill", timeout=60)  # before: "filled", 256 MiB on disk
        from host.runtime import tree_bytes, web_storage_dirs
        from host.worker import LIMIT_WEB_STORAGE

        assert e.value.reason == LIMIT_WEB_STORAGE, e.value
        cache_dir = web_storage_dirs(state_dir / "deno", h.plugin("cacher").id)[1]
        assert tree_bytes(cache_dir) < cap, tree_bytes(cache_dir)
        assert await h.call("cacher", "look") == ["yes", 0]  # a new worker; the cache emptied, localStorage kept
        assert any("Cache API" in e.message for e in h.logs("cacher", level="warning"))
        # Empty caches are directories, each counted as the block it takes (before: 20,000 took
        # 157 MiB and counted 0.6 MB)
        with pytest.raises(WorkerCrashed) as e:
            await h.call("cacher", "manyCaches", timeout=60)
        assert e.value.reason == LIMIT_WEB_STORAGE, e.value
        assert await h.call("cacher", "look") == ["yes", 0]
