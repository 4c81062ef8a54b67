"""``ctx.storage.keys()`` answers at most one value's worth (``max_value_bytes``, 1 MiB) of
keys, refused before they are read past it: a plugin with no permissions could store some
2.9 million tiny entries under the 64 MiB cap, then ask for its keys 64 times without reading
the answers, each held in the host as a list of Python strings until the worker read it."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from support.processes import peak_rss

from host import PoolConfig, WorkerLimits

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MIB = 1024 * 1024
LISTER = """
export const metadata = { id: "lister", name: "lister", version: "1.0.0", apiVersion: "1.0" };
export async function count(ctx) {
  try { return (await ctx.storage.keys()).length; } catch (e) { return e.name + ": " + e.message; }
}
// listings at once, then the worker reads nothing for a while: the answers wait in the host
export async function unread(n, ctx) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(ctx.storage.keys().then((k) => k.length, (e) => e.name));
  await new Promise((r) => setTimeout(r, 20));
  const until = Date.now() + 3000;
  while (Date.now() < until) {}
  return await Promise.all(out);
}
"""




def plant(state_dir, n: int) -> None:
    """The plugin's storage as ``n`` ctx.storage.set("k" + i, 1) would leave it (faster)."""
    (state_dir / "storage").mkdir(mode=0o700, exist_ok=True)
    db = sqlite3.connect(state_dir / "storage" / "lister.sqlite3")
    db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    db.executemany("INSERT INTO kv VALUES (?, ?)", ((f"k{i}", b"\x01") for i in range(n)))
    db.commit()
    db.close()
    os.chmod(state_dir / "storage" / "lister.sqlite3", 0o600)


async def test_listing_more_keys_than_one_answer_carries_is_refused_before_they_are_read(
        plugin_dir, make_host, state_dir):
    plugin_dir.add("lister.js", LISTER)
    plant(state_dir, 300_000)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), state_dir=str(state_dir)) as h:
        out = await h.call("lister", "count")
        assert out.startswith("PayloadTooLarge: storage.keys: the plugin's 300000 keys take 2288895 bytes")


async def test_unread_key_listings_keep_host_memory_flat(plugin_dir, make_host, state_dir):
    plugin_dir.add("lister.js", LISTER)
    plant(state_dir, 120_000)  # just under 1 MiB as one list
    limits = WorkerLimits(heartbeat_timeout=10)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), state_dir=str(state_dir), limits=limits) as h:
        assert await h.call("lister", "count") == 120_000
        async with peak_rss() as seen:
            t0 = time.monotonic()
            answers = await h.call("lister", "unread", 64, timeout=60)
        # those that waited for the store longer than limits' storage_timeout (5 s) gave up
        assert set(answers) <= {120_000, "StorageError"} and answers.count(120_000) >= 16, answers
        # 64 answers of ~1 MiB wait encoded, plus the listing being read (run alone: ~110 MiB; before: 396)
        assert seen.growth < 160 * MIB, f"{seen.mib()} in {time.monotonic() - t0:.1f} s"
