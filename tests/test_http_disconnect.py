"""A client that hangs up cancels its work: ``POST /api/plugins/ID/call/FN`` and ``POST /execute``
on the server ``serve`` runs (``http_guard.Runner``), with real workers and a raw socket client
that closes its connection while the call runs. Before, aiohttp's handler cancellation being off,
the call ran on to its deadline: a client that timed out and retried piled up workers and slots."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from support.processes import wait_for

from host import ExecuteConfig, PluginHost, PoolConfig, WorkerLimits
from host.http_guard import Runner
from host.security.audit import read_audit
from host.server import HANDLING, create_app

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60),
              pytest.mark.parametrize("anyio_backend", ["asyncio"])]  # aiohttp

SLOW = """
export const metadata = { id: "slow", name: "slow", version: "1.0.0", apiVersion: "1.0" };
let aborted = 0;
export function abortedCount() { return aborted; }
export async function block(ctx) {
  return await new Promise((resolve) => {
    ctx.signal.addEventListener("abort", () => { aborted++; resolve("released"); });
  });
}
export async function stubborn() { await new Promise((r) => setTimeout(r, 60000)); }
export function pid() { return Deno.pid; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@asynccontextmanager
async def serving(h: PluginHost, **kw) -> AsyncIterator[int]:
    """``create_app(h)`` behind the Runner ``serve`` uses, on a free loopback port."""
    runner = Runner(create_app(h, **kw), header_timeout=10)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def hang_up_after(port: int, path: str, body: dict, started) -> None:
    """Send ``POST path`` with ``body``, wait until ``started()`` holds (the work is running),
    then close the connection without reading an answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    await writer.drain()
    try:
        await wait_for(started, timeout=15)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_client_hanging_up_cancels_its_call(plugin_dir, make_host):
    plugin_dir.add("slow.js", SLOW)
    async with make_host(pool=ONE, limits=WorkerLimits(cancel_grace=0.5)) as h, serving(h) as port:
        def running() -> bool:
            return h.plugin("slow").running == 1

        # a plugin that watches its signal: the call is cancelled, the worker kept
        pid = await h.call("slow", "pid")
        await hang_up_after(port, "/api/plugins/slow/call/block", {"timeout": 30}, running)
        await wait_for(lambda: h.plugin("slow").running == 0)  # before: held for its 30 s
        assert await h.call("slow", "abortedCount") == 1
        assert await h.call("slow", "pid") == pid

        # one that ignores it: its worker is killed after cancel_grace and replaced, no crash counted
        await hang_up_after(port, "/api/plugins/slow/call/stubborn", {}, running)
        await wait_for(lambda: h.plugin("slow").restarts == 1)
        assert await h.call("slow", "pid", timeout=10) != pid
        info = h.plugin("slow")
        assert (info.state, info.crashes, info.timeouts, info.running) == ("running", 0, 0, 0)


async def test_a_client_hanging_up_cancels_its_execution(make_host, tmp_path):
    xc = ExecuteConfig(min_workers=1, max_workers=1)
    async with make_host(execute=xc, limits=WorkerLimits(cancel_grace=0.3)) as h, \
            serving(h, enable_execute=True) as port:
        audit = h.config.state_path / "audit.jsonl"

        def executions() -> list[dict]:
            return [x for x in read_audit(audit) if x["event"] == "execute"] if audit.exists() else []

        def spinning() -> bool:
            return any(w.load for p in h._exec.pools() for w in p.workers)

        await hang_up_after(port, "/execute", {"code": "export default () => { for (;;) {} }", "timeout": 30_000},
                            spinning)
        await wait_for(lambda: len(executions()) == 1)  # before: no line until its 30 s passed
        assert executions()[0]["outcome"] == "cancelled"
        # the only worker was freed (killed after cancel_grace, replaced): the next one runs now
        out = await h.execute("export default () => 21 * 2", timeout=10)
        assert (out.ok, out.result) == (True, 42), out.logs


async def test_bodies_left_unfinished_are_freed_when_their_connections_close(calc, make_host):
    """helper-99: clients that announce a body and never finish it, cut off by body_timeout, left
    their partly read bodies alive (a cycle: the body stream keeps the exception it raised, whose
    traceback held the handler's frames) until a full garbage collection: 150 such clients of
    2 MiB grew serve 250 MB each round, for good. Freed as their handlers end now."""
    import gc
    import socket
    import tracemalloc

    from support.servers import served

    size = 1 << 20
    async with make_host() as h, served(h, body_timeout=0.3) as (app, http):
        port = int(str(http._base_url).rsplit(":", 1)[1].rstrip("/"))
        gc.collect()
        gc.disable()  # no collection frees a cycle meanwhile: what stays alive, stays
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            socks = []
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", port))
                s.setblocking(False)
                head = (f"POST /api/plugins/calc/call/add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode()
                await asyncio.get_running_loop().sock_sendall(s, head + b"[" + b"1," * (size // 2 - 1))
                socks.append(s)
            await wait_for(lambda: len(app[HANDLING]) == 20, timeout=10)  # each reading its body
            await wait_for(lambda: not app[HANDLING], timeout=10)  # then every one cut off
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
            gc.enable()
            for s in socks:
                s.close()
    assert held < 5 * size, f"{held / size:.1f} MiB still held"  # before: ~20 MiB, one per client
