"""Hot reload compares what a plugin's files hold, not only their stat: a file saved again with
the same content (an editor's save without a change, ``touch``, a copy put in place again) keeps
the workers serving; a change to any file of the plugin still reloads it."""

from __future__ import annotations

import os

import pytest

from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_WATCH = ReloadConfig(enabled=False)  # rescans the test asks for only

MOD = """
export const metadata = { id: "svc", name: "svc", version: "1.0.0", apiVersion: "1.0" };
import { answer } from "./lib.js";
export function which() { return answer; }
export function pid() { return Deno.pid; }
"""


async def test_a_file_saved_again_unchanged_keeps_the_workers_and_a_change_reloads(plugin_dir, make_host):
    mod = plugin_dir.add("svc/mod.js", MOD, auto_metadata=False)
    lib = plugin_dir.add("svc/lib.js", "export const answer = 1;\n")
    async with make_host(reload=NO_WATCH) as h:
        kinds: list[str] = []
        h.subscribe(lambda e: kinds.append(e.kind) if e.plugin == "svc" else None)
        pid = await h.call("svc", "pid")
        os.utime(mod)  # touch
        await h.rescan()
        lib.write_text(lib.read_text())  # an editor's save without a change
        await h.rescan()
        spare = lib.with_name("lib.js.new")
        spare.write_text(lib.read_text())
        os.replace(spare, lib)  # the same content renamed into place: another inode
        await h.rescan()
        (mod.parent / ".lib.js.swp").write_bytes(os.urandom(64))  # vim's swap file, beside a save
        lib.write_text(lib.read_text())
        await h.rescan()
        assert kinds == [] and await h.call("svc", "pid") == pid  # before: four restarts
        lib.write_text("export const answer = 2;\n")  # a change in a file the module imports
        await h.rescan()
        assert kinds == ["reloaded"] and await h.call("svc", "which") == 2
        assert await h.call("svc", "pid") != pid
