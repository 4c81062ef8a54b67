"""Egress proxy starvation (security.egress_proxy): one plugin holding hundreds of slow fetches
must not take the whole proxy. A plugin's upstream connections are capped, the rest wait in its
own queue (bounded in length and in time), and freed slots go to the waiting plugin holding the
fewest, so another plugin's fetch goes through at once."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from support.processes import wait_for

from host import PluginSettings, PoolConfig
from host.config import SecurityConfig
from host.security.audit import AuditLog, read_audit
from host.security.egress import EgressProxy
from host.security.permissions import Permissions

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ONE = PoolConfig(min_workers=1, max_workers=1)
FLOOD = 280  # over the old global pool of 256, within one plugin's cap plus its queue (32 + 256)

GREEDY = """
export const metadata = { id: "greedy", name: "greedy", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["127.0.0.1:%(port)d"] } };
export async function flood(url, n) {
  const settled = await Promise.allSettled(Array.from({ length: n }, () => fetch(url).then((r) => r.text())));
  return settled.map((s) => s.status === "fulfilled" ? s.value : `${s.reason.name}: ${s.reason.message}`);
}
"""

POLITE = """
export const metadata = { id: "polite", name: "polite", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["127.0.0.1:%(port)d"] } };
export async function get(url) {
  const r = await fetch(url);
  return [r.status, await r.json()];
}
"""


class SlowServer:
    """An aiohttp server on 127.0.0.1 in a thread of its own: ``/slow/<gate>`` holds each
    request until ``release(gate)``, ``/fast`` answers at once. It records the order requests
    arrived in, and how many /slow ones it holds now and held at most."""

    def __init__(self) -> None:
        self.port = 0
        self.arrivals: list[str] = []
        self.held = 0
        self.peak = 0
        self.loop = asyncio.new_event_loop()
        self._gates: dict[str, asyncio.Event] = {}
        self._all_open = False

    def _gate(self, name: str) -> asyncio.Event:
        gate = self._gates.setdefault(name, asyncio.Event())
        if self._all_open:
            gate.set()
        return gate

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(request.path_qs)
        if request.path == "/fast":
            return web.json_response({"served": "fast"})
        self.held += 1
        self.peak = max(self.peak, self.held)
        try:
            await asyncio.wait_for(self._gate(request.match_info["gate"]).wait(), 60)
        finally:
            self.held -= 1
        return web.Response(text="slow")

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/slow/{gate}", self._handle)
        app.router.add_get("/fast", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    def release(self, gate: str) -> None:
        """Answer the requests held at ``gate``, and any that arrive there later."""
        self.loop.call_soon_threadsafe(lambda: self._gate(gate).set())

    def release_all(self) -> None:
        def open_all() -> None:
            self._all_open = True
            for gate in self._gates.values():
                gate.set()
        self.loop.call_soon_threadsafe(open_all)


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    srv = SlowServer()
    thread = threading.Thread(target=srv.loop.run_forever, name="slow-aiohttp", daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(srv.start(), srv.loop).result(10)
    try:
        yield srv
    finally:
        srv.release_all()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), srv.loop).result(10)
        srv.loop.call_soon_threadsafe(srv.loop.stop)
        thread.join(10)
        srv.loop.close()


def established_to(address: str, port: int) -> int:
    """TCP connections on this machine open to ``address:port``, seen from the client's end
    (the kernel's table: connections still in the listener's backlog count too)."""
    remote = f"{int.from_bytes(socket.inet_aton(address), 'little'):08X}:{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[2] == remote and row[3] == "01")


def egress_lines(tmp_path: Path) -> list[dict]:
    return [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "egress"]


# ---------------------------------------------------------------------------- through Deno


async def test_a_plugin_holding_hundreds_of_slow_fetches_does_not_starve_another(
        plugin_dir, make_host, slow_server, state_dir, tmp_path):
    plugin_dir.add("greedy.js", GREEDY % {"port": slow_server.port})
    plugin_dir.add("polite.js", POLITE % {"port": slow_server.port})
    lan = PluginSettings(allow_private_network=True)  # the targets are on loopback
    security = SecurityConfig(egress_proxy=True, audit_log=str(tmp_path / "audit.jsonl"))
    slow_url = f"http://127.0.0.1:{slow_server.port}/slow/flood"
    flooded: list[str] = []
    # A state dir of the test's own: the plugins' grants name this test's server port.
    async with make_host(pool=ONE, security=security, plugins={"greedy": lan, "polite": lan},
                         state_dir=str(state_dir)) as h:
        proxy = h._egress
        async with anyio.create_task_group() as tg:

            async def flood() -> None:
                flooded.extend(await h.call("greedy", "flood", slow_url, FLOOD, timeout=60))

            tg.start_soon(flood)
            # Every one of greedy's connections is open (accepted, or in the proxy's backlog
            # ahead of polite's) and the slow server holds at least a default cap's worth.
            await wait_for(lambda: established_to(proxy.address, proxy.port) >= FLOOD and
                           slow_server.held >= 32, timeout=30)
            started = time.monotonic()
            got = await h.call("polite", "get", f"http://127.0.0.1:{slow_server.port}/fast", timeout=10)
            took = time.monotonic() - started
            held, cap = slow_server.held, proxy.max_connections_per_plugin
            assert not flooded  # greedy's fetches were all still held meanwhile
            slow_server.release("flood")
    assert got == [200, {"served": "fast"}] and took < 3
    assert held == slow_server.peak == cap == 32  # greedy never held more than its cap upstream
    assert flooded == ["slow"] * FLOOD  # the queued ones went through once slots were freed
    lines = egress_lines(tmp_path)
    assert sorted({(e["plugin"], e["outcome"]) for e in lines}) == [("greedy", "ok"), ("polite", "ok")]
    assert len(lines) == FLOOD + 1


async def test_fetches_past_a_plugins_cap_and_queue_fail_at_once_as_a_resource_limit(
        plugin_dir, make_host, slow_server, state_dir, tmp_path):
    plugin_dir.add("greedy.js", GREEDY % {"port": slow_server.port})
    security = SecurityConfig(egress_proxy=True, audit_log=str(tmp_path / "audit.jsonl"))
    over = 12  # past the default 32 open and 256 waiting
    flooded: list[str] = []
    plugins = {"greedy": PluginSettings(allow_private_network=True)}
    async with make_host(pool=ONE, security=security, plugins=plugins, state_dir=str(state_dir)) as h:
        proxy = h._egress
        async with anyio.create_task_group() as tg:

            async def flood() -> None:
                url = f"http://127.0.0.1:{slow_server.port}/slow/flood"
                flooded.extend(await h.call("greedy", "flood", url, 288 + over, timeout=60))

            tg.start_soon(flood)
            await wait_for(lambda: slow_server.held == 32 and proxy._fair.waiting("greedy") == 256 and
                           sum(e["outcome"] == "refused" for e in egress_lines(tmp_path)) == over, timeout=30)
            slow_server.release("flood")
    refused = [r for r in flooded if r != "slow"]
    assert len(flooded) == 300 and len(refused) == over and slow_server.peak == 32
    assert all(r.startswith("ResourceLimitExceeded: egress proxy: over max_queued_per_plugin (256)")
               for r in refused), refused[0]
    lines = [e for e in egress_lines(tmp_path) if e["outcome"] == "refused"]
    assert {(e["plugin"], e["status"], e["bytes_out"]) for e in lines} == {("greedy", 503, 0)}


# ---------------------------------------------------------------------------- a raw client


def _auth(url: str) -> bytes:
    creds = url.split("//", 1)[1].rsplit("@", 1)[0]
    return b"Proxy-Authorization: Basic " + base64.b64encode(creds.encode())


class Client:
    """One raw connection to the proxy sending one GET for ``path`` on the slow server, as
    ``plugin``; ``answer`` is everything the proxy sent back before closing."""

    def __init__(self, proxy: EgressProxy, plugin: str, target: SlowServer, path: str) -> None:
        self.head = (b"GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     b"Connection: close\r\n%s\r\n\r\n"
                     % (target.port, path.encode(), target.port, _auth(proxy.url_for(plugin))))
        self.proxy = proxy
        self.answer = b""
        self.done = anyio.Event()

    async def run(self) -> None:
        with anyio.fail_after(20):
            async with await anyio.connect_tcp(self.proxy.address, self.proxy.port) as c:
                await c.send(self.head)
                try:
                    while True:
                        self.answer += await c.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        self.done.set()

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1])


def _proxy(tmp_path: Path, **kw) -> EgressProxy:
    perms = Permissions(net=["127.0.0.1"], allow_private_network=True)
    return EgressProxy(audit=AuditLog(tmp_path / "audit.jsonl"), permissions_for=lambda pid: perms,
                       max_response_bytes=1024 * 1024, **kw)


async def test_a_plugin_past_its_cap_and_queue_is_refused_at_once_naming_the_limit(slow_server, tmp_path):
    proxy = _proxy(tmp_path, max_connections_per_plugin=2, max_queued_per_plugin=1)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        held = [Client(proxy, "a", slow_server, "/slow/a") for _ in range(2)]
        for c in held:
            tg.start_soon(c.run)
        await wait_for(lambda: slow_server.held == 2)
        queued = Client(proxy, "a", slow_server, "/slow/a")
        tg.start_soon(queued.run)
        await wait_for(lambda: proxy._fair.waiting("a") == 1)
        over = Client(proxy, "a", slow_server, "/slow/a")
        await over.run()  # answered at once: nothing of a's is released before it returns
        other = Client(proxy, "b", slow_server, "/fast")
        await other.run()  # another plugin is not behind a's queue
        assert slow_server.held == 2 and not queued.done.is_set()
        slow_server.release("a")
        with anyio.fail_after(10):
            for c in (*held, queued):
                await c.done.wait()
        tg.cancel_scope.cancel()
    assert over.status == 503 and b"x-plugin-host-egress: too-large" in over.answer
    assert b"max_queued_per_plugin" in over.answer
    assert other.status == 200 and [c.status for c in (*held, queued)] == [200] * 3
    assert slow_server.peak == 2 and slow_server.arrivals.count("/slow/a") == 3
    [refused] = [e for e in egress_lines(tmp_path) if e["outcome"] == "refused"]
    assert (refused["plugin"], refused["status"], refused["bytes_out"]) == ("a", 503, 0)
    assert "max_queued_per_plugin (1)" in refused["reason"]
    assert (proxy.counters("a").requests, proxy.counters("a").refused) == (4, 1)


async def test_a_queued_connection_is_refused_after_the_queue_timeout(slow_server, tmp_path):
    proxy = _proxy(tmp_path, max_connections_per_plugin=1, queue_timeout=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        held = Client(proxy, "a", slow_server, "/slow/a")
        tg.start_soon(held.run)
        await wait_for(lambda: slow_server.held == 1)
        started = time.monotonic()
        late = Client(proxy, "a", slow_server, "/slow/a")
        await late.run()
        waited = time.monotonic() - started
        assert proxy._fair.waiting("a") == 0 and slow_server.arrivals == ["/slow/a"]
        slow_server.release("a")
        with anyio.fail_after(10):
            await held.done.wait()
        tg.cancel_scope.cancel()
    assert late.status == 503 and b"queue_timeout" in late.answer and 0.3 <= waited < 5
    assert held.status == 200
    [refused] = [e for e in egress_lines(tmp_path) if e["outcome"] == "refused"]
    assert refused["plugin"] == "a" and "queue_timeout (0.3s)" in refused["reason"]


async def test_a_freed_slot_goes_to_the_waiting_plugin_holding_the_fewest(slow_server, tmp_path):
    # The whole proxy has two upstream slots, both a's. a queues first, then b: the slot a
    # frees goes to b (holding none), not to a's earlier waiter (a still holds one).
    proxy = _proxy(tmp_path, max_upstream=2, max_connections_per_plugin=2)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        first, second = (Client(proxy, "a", slow_server, f"/slow/{g}") for g in ("one", "two"))
        tg.start_soon(first.run)
        tg.start_soon(second.run)
        await wait_for(lambda: slow_server.held == 2)
        a_next, b_next = (Client(proxy, p, slow_server, f"/fast?from={p}") for p in ("a", "b"))
        tg.start_soon(a_next.run)
        await wait_for(lambda: proxy._fair.waiting("a") == 1)
        tg.start_soon(b_next.run)
        await wait_for(lambda: proxy._fair.waiting("b") == 1)
        slow_server.release("one")
        with anyio.fail_after(10):
            for c in (first, a_next, b_next):
                await c.done.wait()
        assert not second.done.is_set()
        slow_server.release("two")
        with anyio.fail_after(10):
            await second.done.wait()
        tg.cancel_scope.cancel()
    assert all(c.status == 200 for c in (first, second, a_next, b_next))
    assert slow_server.arrivals[2:] == ["/fast?from=b", "/fast?from=a"]


async def _response(stream, *, until: bytes = b'{"served": "fast"}') -> bytes:
    out = b""
    try:
        while until not in out:
            out += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass
    return out


async def test_only_a_plugins_cap_of_connections_stay_open_between_requests(slow_server, tmp_path):
    proxy = _proxy(tmp_path, max_connections_per_plugin=1)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        request = Client(proxy, "a", slow_server, "/fast").head.replace(b"Connection: close\r\n", b"")
        with anyio.fail_after(10):
            async with (await anyio.connect_tcp(proxy.address, proxy.port) as kept,
                        await anyio.connect_tcp(proxy.address, proxy.port) as other):
                await kept.send(request)
                first = await _response(kept)
                await other.send(request)
                closed = await _response(other, until=b"never")  # read until the proxy closes
                await kept.send(request)
                second = await _response(kept)
        tg.cancel_scope.cancel()
    assert all(r.startswith(b"HTTP/1.1 200 ") for r in (first, closed, second))
    assert b"connection: close" not in first.lower() + second.lower()
    assert b"connection: close" in closed.lower()
    assert slow_server.arrivals == ["/fast"] * 3


async def test_an_unidentified_connection_gives_its_slot_back_after_the_head_timeout(tmp_path):
    proxy = _proxy(tmp_path, max_connections=1, head_timeout=0.3, idle_timeout=60)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        with anyio.fail_after(5):
            async with await anyio.connect_tcp(proxy.address, proxy.port) as silent:
                await silent.send(b"GET http://127.0.0.1:1/ HTTP/1.1\r\n")  # a head never finished
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await silent.receive()
            async with await anyio.connect_tcp(proxy.address, proxy.port) as next_one:
                await next_one.send(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
                answer = await next_one.receive()  # served: the only slot was given back
        tg.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 407 ")
