"""Changes made through one process of ``serve --processes 2`` (issue 20: one state): the client
that made a change through whichever process accepted it finds it served by every process when
the answer comes, also with hot reload off (``[reload] enabled = false``, where no process
rescans on its own), and a restart restarts the plugin, not the accepting process's part of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import pytest
from support.plugins import fresh_state
from support.servers import run_cli, serve_process

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120), pytest.mark.parametrize("anyio_backend", ["asyncio"])]

TAGGED = """
export const metadata = { id: "tagged", name: "Tagged", version: "1.0.0", apiVersion: "1.0",
  configSchema: { tag: { type: "string", default: "first" } } };
export function tag(ctx) { return [Deno.ppid, ctx.config.tag]; }
"""
ROUNDS = 16  # calls on connections of their own: both processes take some (checked)
MAX_ROUNDS = 2000


@asynccontextmanager
async def two_processes(plugin_dir, tmp_path, shared_state) -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    """``serve --processes 2`` with hot reload off, both processes serving ``tagged``: a client
    opening a connection per request, and the options that name the server to the CLI."""
    plugin_dir.add("tagged.js", TAGGED)
    (tmp_path / "host.toml").write_text("[reload]\nenabled = false\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state)),
              "--config", str(tmp_path / "host.toml")]
    with serve_process(tmp_path, *common, "--processes", "2") as srv:
        async with aiohttp.ClientSession(srv.base, connector=aiohttp.TCPConnector(force_close=True)) as s:
            pids: set[int] = set()
            while len(pids) < 2:  # the pytest-timeout bounds it
                async with s.post("/api/plugins/tagged/call/tag", json={}) as r:
                    if r.status == 200:
                        pids.add((await r.json())["result"][0])
            yield s, common


async def _answers(s: aiohttp.ClientSession, *, both: bool = True) -> tuple[set[int], list[object]]:
    """ROUNDS calls, and with ``both`` more until each process answered one (the kernel hands
    a new connection to whichever process accepts first, the same one many times in a row when
    the machine is busy): the processes that answered 200, and each answer (the tag, or the status)."""
    pids: set[int] = set()
    out: list[object] = []
    while len(out) < ROUNDS or (both and len(pids) < 2 and len(out) < MAX_ROUNDS):
        async with s.post("/api/plugins/tagged/call/tag", json={}) as r:
            if r.status == 200:
                pid, tag = (await r.json())["result"]
                pids.add(pid)
                out.append(tag)
            else:
                out.append(r.status)
    return pids, out


async def test_a_change_through_one_process_is_served_by_every_one_when_it_answers(
        plugin_dir, tmp_path, shared_state, anyio_backend):
    # Before: with hot reload off no process rescanned the shared state, so the other process
    # served the old config (and a disabled plugin) until it was restarted.
    async with two_processes(plugin_dir, tmp_path, shared_state) as (s, common):
        async with s.put("/api/plugins/tagged/config", json={"tag": "second"}) as r:
            assert r.status == 200, await r.text()
        pids, tags = await _answers(s)
        assert len(pids) == 2 and tags == ["second"] * len(tags)

        async with s.post("/api/plugins/tagged/disable") as r:
            assert r.status == 200, await r.text()
        _, refused = await _answers(s, both=False)
        assert refused == [503] * ROUNDS

        async with s.post("/api/plugins/tagged/enable") as r:
            assert r.status == 200, await r.text()
        pids, tags = await _answers(s)
        assert len(pids) == 2 and tags == ["second"] * len(tags)

        # the CLI's change goes through the control socket (process 0), which has the other follow
        out = await anyio.to_thread.run_sync(lambda: run_cli("config", "set", "tagged", "tag=third", *common,
                                                             cwd=tmp_path))
        assert out.returncode == 0, out.stderr
        pids, tags = await _answers(s)
        assert len(pids) == 2 and tags == ["third"] * len(tags)


async def test_a_restart_through_one_process_restarts_the_workers_of_every_one(
        plugin_dir, tmp_path, shared_state, anyio_backend):
    # Before: only the accepting process's workers were replaced.
    async with two_processes(plugin_dir, tmp_path, shared_state) as (s, _):
        async with s.get("/api/plugins/tagged") as r:
            old = {w["pid"] for w in (await r.json())["workers"]}
        assert len(old) == 2  # one worker in each process
        async with s.post("/api/plugins/tagged/restart") as r:
            assert r.status == 200, await r.text()
        async with s.get("/api/plugins/tagged") as r:
            workers = (await r.json())["workers"]
        assert {w["process"] for w in workers} == {0, 1}
        assert not old & {w["pid"] for w in workers}, workers
