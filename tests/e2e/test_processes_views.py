"""What an HTTP client and the dashboard see of ``serve --processes 2`` (issue 20: one dashboard):
every request lands on whichever process accepted it, yet a plugin's log read with the
dashboard's cursor and its status page are the view of all the processes, not of the one that
answered. Each request here goes on a connection of its own, so either process may take it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from support.plugins import fresh_state
from support.servers import ServeProcess, serve_process

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120), pytest.mark.parametrize("anyio_backend", ["asyncio"])]

ECHO = """
export const metadata = { id: "echo", name: "Echo", version: "1.0.0", apiVersion: "1.0" };
export function hit(tag) { console.log(`hit ${tag}`); return Deno.ppid; }
export function fail() { throw new Error("no"); }
export function who() { return Deno.ppid; }
"""


@asynccontextmanager
async def two_processes(plugin_dir, tmp_path, shared_state) -> AsyncIterator[tuple[ServeProcess, aiohttp.ClientSession]]:
    """``serve --processes 2`` with both processes serving echo (``who`` called until each has
    answered), and a client opening a connection per request."""
    plugin_dir.add("echo.js", ECHO)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state))]
    with serve_process(tmp_path, *common, "--processes", "2") as srv:
        srv.wait_running("echo")
        async with aiohttp.ClientSession(srv.base, connector=aiohttp.TCPConnector(force_close=True)) as s:
            pids: set[int] = set()
            while len(pids) < 2:  # the pytest-timeout bounds it
                async with s.post("/api/plugins/echo/call/who", json={}) as r:
                    if r.status == 200:
                        pids.add((await r.json())["result"])
            yield srv, s


async def _get(s: aiohttp.ClientSession, path: str) -> Any:
    async with s.get(path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _hits(s: aiohttp.ClientSession, tags: list[str], pids: set[int]) -> None:
    """A call per tag, each on a connection of its own; ``pids``: the processes that answered.
    The kernel hands a new connection to whichever process accepts first, on a busy machine the
    same one many times in a row: tests call on until both answered."""
    for tag in tags:
        async with s.post("/api/plugins/echo/call/hit", json={"args": [tag]}) as r:
            assert r.status == 200, await r.text()
            pids.add((await r.json())["result"])


async def test_the_log_tail_reads_every_process_s_lines_once(plugin_dir, tmp_path, shared_state, anyio_backend):
    # Before: each process numbered its own log from 1 and answered alone, so the dashboard's
    # cursor (`after` = the last `last`) taken from one process skipped the other's newer lines
    # for good, or read its older ones again.
    async with two_processes(plugin_dir, tmp_path, shared_state) as (_, s):
        pids: set[int] = set()
        tags: list[str] = []
        seen: list[str] = []
        processes: set[int] = set()
        after = 0
        round_ = 0
        while round_ < 5 or (len(pids) < 2 and round_ < 250):  # till both took some (see _hits)
            round_ += 1
            batch = [f"{round_}-{i}" for i in range(8)]
            await _hits(s, batch, pids)
            tags += batch
            for _ in range(3):  # as the dashboard tails it
                got = await _get(s, f"/api/plugins/echo/logs?level=info&after={after}&limit=1000")
                console = [e for e in got["entries"] if e["kind"] == "console"]
                seen += [e["message"] for e in console]
                processes |= {e["process"] for e in console}
                after = max(after, got["last"])
        assert len(pids) == 2  # the calls did land on both
        assert sorted(seen) == sorted(f"hit {t}" for t in tags)  # each line once, none lost
        assert processes == {0, 1}  # and said whose worker wrote it


async def test_a_plugin_s_status_counts_every_process_s_workers_and_calls(plugin_dir, tmp_path, shared_state,
                                                                        anyio_backend):
    # Before: /api/plugins answered with the accepting process's part alone: one of the two
    # workers, the calls that process took, its latency and error rate; the dashboard's cards
    # changed at every poll with the process that happened to answer.
    async with two_processes(plugin_dir, tmp_path, shared_state) as (_, s):
        before = (await _get(s, "/api/plugins/echo"))["calls"]  # the warm-up's
        pids: set[int] = set()
        n = 0
        while n < 16 or (len(pids) < 2 and n < 2000):  # till both took some (see _hits)
            await _hits(s, [str(n)], pids)
            n += 1
        for _ in range(n):
            async with s.post("/api/plugins/echo/call/fail", json={}) as r:
                assert r.status >= 400
        assert len(pids) == 2
        for _ in range(6):  # whichever process answers
            for info in (await _get(s, "/api/plugins/echo"), (await _get(s, "/api/plugins"))[0]):
                assert {w["process"] for w in info["workers"]} == {0, 1}, info["workers"]
                assert info["calls"] == before + n  # the successful ones
                assert info["error_rate"] == round(n / (2 * n + before), 4) and info["latency_p50_ms"] > 0
                assert sorted(p["process"] for p in info["processes"]) == [0, 1]
                assert sum(p["calls"] for p in info["processes"]) == before + 16
                assert {p["state"] for p in info["processes"]} == {"running"}
