"""Hot reload against the way editors and deploy tools really write files: a change that keeps
the size and the mtime (``tar x``, ``cp -p``, ``rsync -a``), an editor's save that renames the
old file away before writing the new one, a copy still writing when the watcher looks."""

from __future__ import annotations

import os

import pytest

from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_WATCH = ReloadConfig(enabled=False)


def version(n: int, extra: str = "") -> str:
    return (f'export const metadata = {{ id: "svc", name: "svc", version: "1.0.{n}", apiVersion: "1.0" }};\n'
            f"export function which() {{ return {n}; }}\n" + extra)


async def test_a_new_version_with_the_old_size_and_mtime_is_reloaded(plugin_dir, make_host):
    """``cp -p``/``tar x`` of a version bump: same size, the mtime the file had elsewhere (here:
    the very one the host saw). Before, the change was never seen."""
    path = plugin_dir.add("svc.js", version(1))
    seen = path.stat()
    async with make_host(reload=NO_WATCH) as h:
        path.write_text(version(2))
        os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
        assert path.stat().st_size == seen.st_size
        await h.rescan()
        assert await h.call("svc", "which") == 2 and h.plugin("svc").version == "1.0.2"
