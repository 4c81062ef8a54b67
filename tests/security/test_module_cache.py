"""Deno's module cache (``<state>/deno``) is written by every worker with no grant at all: a plugin
with no permission importing ever-new modules made at run time (``data:`` and ``blob:`` TypeScript,
its own file under ever-new ``?query`` strings) grew it without bound, 365 MB in seconds from 30
modules of 1 MB (helper-97). Nothing is emitted for such modules, and the host drops their rows
from the cache databases past ``module_cache.MAX_BYTES`` (host/module_cache.py)."""

from __future__ import annotations

import logging

import anyio
import pytest

from host import PoolConfig, module_cache

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

FILLER = """
export const metadata = { id: "filler", name: "F", version: "1.0.0", apiVersion: "1.0" };
export async function fill(n, kb) {
  for (let i = 0; i < n; i++) {
    const body = `export const x${i}: number = ${Math.random()};\\nexport const pad: string = "${"y".repeat(kb * 1024)}";`;
    await import("data:application/typescript;base64," + btoa(body));
    await import(URL.createObjectURL(new Blob([body], { type: "application/typescript" })));
    await import(import.meta.url + "?v=" + i + Math.random());
  }
  return n;
}
export function ping() { return "pong"; }
"""


async def test_modules_made_at_run_time_do_not_grow_the_module_cache_without_bound(
        plugin_dir, make_host, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(module_cache, "MAX_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(module_cache, "CHECK_EVERY", 0.1)
    plugin_dir.add("filler.js", FILLER, auto_metadata=False)
    state = tmp_path / "own-state"  # a DENO_DIR of its own, measured alone
    deno_dir = state / "deno"
    async with make_host(state_dir=str(state), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        start = module_cache.size(deno_dir)
        # 3 x 40 modules of 100 KB: ~30 MB of cache rows before
        assert await h.call("filler", "fill", 40, 100, timeout=90) == 40
        with anyio.fail_after(30):
            while module_cache.size(deno_dir) > module_cache.MAX_BYTES:
                await anyio.sleep(0.1)
        assert await h.call("filler", "ping") == "pong"
        await h.restart("filler")  # the runtime's own rows were kept: a new worker starts
        assert await h.call("filler", "ping") == "pong"
    gen = deno_dir / "gen"
    assert sorted(p.name for p in gen.iterdir() if p.is_dir()) == ["file"]  # before: data/ and blob/, 8 MB
    assert (gen / "data").is_file() and (gen / "blob").is_file()
    assert module_cache.size(deno_dir) < max(start, 1) + module_cache.MAX_BYTES
    assert any("module cache" in r.getMessage() and "made at run time" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_the_guard_replaces_what_was_there(tmp_path):
    gen = tmp_path / "gen"
    (gen / "data" / "sub").mkdir(parents=True)
    (gen / "data" / "sub" / "x.js").write_text("x" * 1000)
    (gen / "blob").symlink_to(tmp_path / "elsewhere")
    module_cache.guard(tmp_path)
    module_cache.guard(tmp_path)  # twice: nothing changes
    for name in ("data", "blob"):
        path = gen / name
        assert path.is_file() and not path.is_symlink() and path.stat().st_size == 0
