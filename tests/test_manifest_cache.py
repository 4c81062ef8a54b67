"""The manifest cache (issue 20, density): a host started again on the same state directory
spawns no worker to read a plugin whose files are unchanged, reads again one whose content
changed (even at the same size and within one clock tick), survives a damaged cache file, and
bounds the workers loading plugins at once so that many plugins all load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest
from support.plugins import CALC

from host import PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LAZY = PoolConfig(min_workers=0, max_workers=1)


def plugin(i: int, word: str = "hi") -> str:
    return (f'export const metadata = {{ id: "p{i:03d}", name: "P", version: "1.0.0", apiVersion: "1.0" }};\n'
            f'export function hello(name) {{ return "{word} " + name; }}\n')


def spawns(state) -> list[str]:
    path = state / "audit.jsonl"
    return [e["plugin"] for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "spawn"]


async def test_an_unchanged_plugin_is_not_loaded_again_and_a_changed_one_is(plugin_dir, make_host, state_dir):
    for i in range(3):
        plugin_dir.add(f"p{i:03d}.js", plugin(i))
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert sorted(spawns(state_dir)) == ["p000", "p001", "p002"]  # one load each
        assert {p.state for p in h.plugins()} == {"running"}
    assert (state_dir / "manifests.msgpack").stat().st_mode & 0o777 == 0o600

    plugin_dir.add("p001.js", plugin(1, "yo"))  # same size, new content, maybe the same mtime tick
    (plugin_dir.root / "p002.js").write_text(plugin(2).replace("hello", "howdy"))  # a new export
    before = len(spawns(state_dir))
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert sorted(spawns(state_dir)[before:]) == ["p001", "p002"]  # p000 came from the cache
        assert h.plugin("p000").exports == ["hello"] and h.plugin("p002").exports == ["howdy"]
        assert await h.call("p001", "hello", "x") == "yo x"
        assert await h.call("p000", "hello", "x") == "hi x"


async def test_a_damaged_cache_is_set_aside_and_the_plugins_load(plugin_dir, make_host, state_dir):
    plugin_dir.add("p000.js", plugin(0))
    (state_dir / "manifests.msgpack").write_bytes(b"\xc1 not msgpack")
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert await h.call("p000", "hello", "x") == "hi x"
    before = len(spawns(state_dir))
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:  # written anew, and used
        assert h.plugin("p000").state == "running"
        assert len(spawns(state_dir)) == before


async def test_sixty_plugins_loading_at_once_all_load(plugin_dir, make_host, state_dir):
    for i in range(60):
        plugin_dir.add(f"p{i:03d}.js", plugin(i))
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert {p.state for p in h.plugins()} == {"running"} and len(h.plugins()) == 60
        assert await h.call("p059", "hello", "x") == "hi x"


async def test_a_removed_plugin_leaves_the_cache_at_the_next_write(plugin_dir, make_host, state_dir):
    plugin_dir.add("p000.js", plugin(0))
    plugin_dir.add("p001.js", plugin(1))
    async with make_host(pool=LAZY, state_dir=str(state_dir)):
        pass
    (plugin_dir.root / "p001.js").unlink()
    plugin_dir.add("p002.js", plugin(2))  # a load, so the file is written again
    async with make_host(pool=LAZY, state_dir=str(state_dir)):
        pass
    entries = msgspec.msgpack.decode((state_dir / "manifests.msgpack").read_bytes())["entries"]
    assert sorted(p.rsplit("/", 1)[1] for p in entries) == ["p000.js", "p002.js"]


async def test_only_metadata_that_passed_the_check_is_kept_in_the_cache(plugin_dir, make_host, state_dir):
    """helper-114: what the no-permission worker found was kept before it was checked: a module
    exporting 1.6 million strings in an invalid metadata (it ends in error) held ~115 MiB of host
    memory and 11 MB of manifests.msgpack, read again at every start."""
    plugin_dir.add("junk.js", 'export const metadata = { id: "junk", name: "junk", version: "1.0.0", apiVersion: "1.0", '
                   'junk: Array.from({ length: 200000 }, (_, i) => "s" + i) };\nexport function f() { return 1; }\n')
    plugin_dir.add("calc.js", CALC)
    async with make_host(state_dir=str(state_dir)) as h:
        assert h.plugin("junk").state == "error" and "junk" in (h.plugin("junk").error or "")
        assert await h.call("calc", "add", 1, 2) == 3
    data = (state_dir / "manifests.msgpack").read_bytes()
    entries = msgspec.msgpack.decode(data)["entries"]
    assert [Path(m).name for m in entries] == ["calc.js"] and len(data) < 20_000, (list(entries), len(data))


async def test_an_edit_to_a_hidden_module_the_plugin_imports_is_seen(plugin_dir, make_host, state_dir):
    root = plugin_dir.root / "hid"
    root.mkdir(parents=True)
    (root / "mod.js").write_text('import { metadata as m } from "./.meta.js";\nexport const metadata = m;\n'
                                 "export function hello() { return 1; }\n")
    (root / ".meta.js").write_text('export const metadata = { id: "hid", name: "H", version: "1.0.0", '
                                   'apiVersion: "1.0", permissions: { net: ["api.example.com"] } };\n')
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert h.plugin("hid").permissions.get("net") == ["api.example.com"]
    (root / ".meta.js").write_text('export const metadata = { id: "hid", name: "H", version: "1.0.0", '
                                   'apiVersion: "1.0" };\n')  # the grant removed, in a hidden file
    async with make_host(pool=LAZY, state_dir=str(state_dir)) as h:
        assert not h.plugin("hid").permissions.get("net")


def test_a_huge_file_in_a_plugin_directory_is_not_read_into_memory(tmp_path):
    """The digest read every file whole (``read_bytes``, then a copy joined with its path): a
    1 GiB file (sparse: ``truncate -s 1G``) in a plugin's directory took 2.1 GB of the host's
    memory and 6.5 s of its event loop, twice per load; a larger one than the machine's memory
    ended the host. Now files are read in chunks, a large one is known by its stat (a write
    changes its ctime), and loads take the digest in a thread."""
    import tracemalloc

    from host.plugins.manifest_cache import content_digest

    root = tmp_path / "big"
    root.mkdir()
    (root / "mod.js").write_text("export const x = 1;\n")
    blob = root / "blob.bin"
    with open(blob, "wb") as f:
        f.truncate(256 * 1024 * 1024)
    tracemalloc.start()
    try:
        first = content_digest(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert first is not None and peak < 16 * 1024 * 1024, peak
    with open(blob, "r+b") as f:  # same size, same mtime: still seen
        st = os.stat(blob)
        f.seek(1000)
        f.write(b"x")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert content_digest(root) != first
    (root / "mod.js").write_text("export const x = 2;\n")  # a small file still by its content
    assert content_digest(root) not in (None, first)
