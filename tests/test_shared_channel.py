"""Channel delivery between hosts (``[state] channel_storage = "redis://..."``) on a real
redis-server: an emit on one host reaches the same plugin's subscribers on the other, once,
and never another plugin's; two ``serve`` processes likewise; with Redis refused or hanging
local delivery goes on, emits return at once, and a warning names the Redis without its
password."""

from __future__ import annotations

import logging
import socket
import time

import anyio
import pytest
from support.processes import free_port
from support.servers import two_hosts, two_serve_processes

from host import PoolConfig
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

CHAT = """
export const metadata = { id: "ID", name: "Chat", version: "1.0.0", apiVersion: "1.0" };
const got = [];
export async function listen(ctx) { await ctx.channel.on("msg", (d) => { got.push(d); }); return true; }
export function heard() { return got; }
export async function say(x, ctx) { return await ctx.channel.emit("msg", x); }

// Two workers of one host: one waits until it heard, the other emits until someone did.
export async function waitHeard(ctx) {
  let heard; const arrived = new Promise((r) => { heard = r; });
  await ctx.channel.on("local", (d) => heard(d));
  return await arrived;
}
export async function shout(x, ctx) {
  for (const start = Date.now(); Date.now() - start < 10000;) {
    const t0 = Date.now();
    const n = await ctx.channel.emit("local", x);
    const took = Date.now() - t0;
    if (n > 0) return { n, took };
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("nobody listened");
}
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.fixture
def chats(plugin_dir):
    for pid in ("chat", "other"):
        plugin_dir.add(f"{pid}.js", CHAT.replace('"ID"', f'"{pid}"'))
    return plugin_dir


async def heard(h, plugin: str, until: list, deadline: float = 10.0) -> list:
    with anyio.move_on_after(deadline):
        while (got := await h.call(plugin, "heard")) != until:
            await anyio.sleep(0.02)
    return got


async def test_an_emit_on_one_host_reaches_the_same_plugin_on_the_other(
        make_host, chats, tmp_path, shared_state, redis_url):
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(channel_storage=redis_url),
                         pool=ONE) as (a, b):
        for h in (a, b):
            with anyio.fail_after(10):
                await h._services.relay.subscribed.wait()
        await b.call("chat", "listen")
        await b.call("other", "listen")  # same event name, another plugin
        await a.call("chat", "listen")  # the sender's own host: its worker is the sender
        assert await a.call("chat", "say", {"n": 1}) == 0  # no other worker on a
        assert await a.call("chat", "say", {"n": 2}) == 0
        assert await heard(b, "chat", [{"n": 1}, {"n": 2}]) == [{"n": 1}, {"n": 2}]  # in order, once each
        assert await b.call("chat", "say", "back") == 0
        assert await heard(a, "chat", ["back"]) == ["back"]
        await anyio.sleep(0.3)  # what else would arrive (a duplicate, another plugin's) arrives by now
        assert await b.call("chat", "heard") == [{"n": 1}, {"n": 2}]
        assert await b.call("other", "heard") == []
        assert (a._services.relay.received, b._services.relay.received) == (1, 2)


def refusing_redis(password: str = "") -> str:
    return f"redis://:{password}@127.0.0.1:{free_port()}/0" if password else f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("kind", ["refused", "hanging"])
async def test_with_redis_down_or_hanging_local_delivery_goes_on_and_emits_never_wait(
        make_host, chats, redis_url, kind, caplog):
    caplog.set_level(logging.WARNING, "host.channel")
    listener = None
    if kind == "refused":
        url = refusing_redis("t0psecret")
    else:  # a listening socket nobody accepts from: connects, then never answers
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"redis://:t0psecret@127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        async with make_host(state=StateConfig(channel_storage=url),
                             pool=PoolConfig(min_workers=2, max_workers=2, max_inflight=1)) as h:
            results: dict = {}

            async def run(fn: str, *args: object) -> None:
                results[fn] = await h.call("chat", fn, *args, timeout=20)

            start = time.monotonic()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:  # both in flight: one on each worker
                    tg.start_soon(run, "waitHeard")
                    tg.start_soon(run, "shout", "hi")
            assert results["waitHeard"] == "hi" and results["shout"]["n"] == 1
            assert results["shout"]["took"] < 500  # ms: the emit waited for no redis
            for n in range(20):  # each returns at once, whatever the outbox holds
                assert await h.call("chat", "say", n, timeout=1.0) == 0
            elapsed = time.monotonic() - start
            with anyio.fail_after(10):  # hanging: once the client's 2 s socket timeout passed
                while "channel delivery between hosts" not in caplog.text:
                    await anyio.sleep(0.05)
    finally:
        if listener is not None:
            listener.close()
    assert elapsed < 15
    assert "t0psecret" not in caplog.text and "redis://***@127.0.0.1" in caplog.text


@pytest.mark.timeout(120)
def test_two_serve_processes_deliver_channel_events_to_each_other(tmp_path, shared_state, redis_url, chats):
    (tmp_path / "host.toml").write_text(f'[state]\nchannel_storage = "{redis_url}"\n')
    with two_serve_processes(tmp_path, shared_state, chats.root, running="chat") as (one, two):
        for srv in (one, two):
            srv.wait_logged("channel delivery between hosts: subscribed")
        assert two.request("POST", "/api/plugins/chat/call/listen", {"args": []})[0] == 200
        status, out = one.request("POST", "/api/plugins/chat/call/say", {"args": ["over HTTP"]})
        assert (status, out["result"]) == (200, 0), out

        def arrived():
            _, out = two.request("POST", "/api/plugins/chat/call/heard", {"args": []})
            return out["result"] or None
        assert two.poll(arrived, "the event on the other host", timeout=10) == ["over HTTP"]


def test_a_channel_storage_that_is_not_a_storage_uri_names_the_setting():
    from host import HostConfig, InvalidConfig

    with pytest.raises(InvalidConfig, match=r"state.channel_storage: 'http://\*\*\*@x/0' is not a storage URI"):
        HostConfig(state=StateConfig(channel_storage="http://u:pw@x/0"))
