"""Host services over host calls: cache, storage, channel and log, through real workers."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import msgspec
import pytest

from host import PoolConfig
from host import protocol as p
from host.errors import UnknownHostCall
from host.services import HostServices, ServiceLimits, storage_name

pytestmark = pytest.mark.anyio

SVC = """
export const metadata = { id: "ID", name: "Services", version: "1.0.0", apiVersion: "1.0" };
export async function cacheGet(k, ctx) { return await ctx.cache.get(k); }
export async function cacheSet(k, v, ttl, ctx) { await ctx.cache.set(k, v, ttl ?? undefined); return true; }
export async function cacheDelete(k, ctx) { return await ctx.cache.delete(k); }
export async function fill(n, ctx) { for (let i = 0; i < n; i++) await ctx.cache.set("k" + i, i); return n; }
export async function get(k, ctx) { return await ctx.storage.get(k); }
export async function set(k, v, ctx) { await ctx.storage.set(k, v); return true; }
export async function del(k, ctx) { return await ctx.storage.delete(k); }
export async function keys(ctx) { return await ctx.storage.keys(); }
export async function attempt(area, fn, args, ctx) {
  try { return { ok: await ctx[area][fn](...args) }; }
  catch (e) { return { name: e.name, message: e.message }; }
}
export async function setBig(bytes, ctx) {
  try { await ctx.storage.set("big", "x".repeat(bytes)); return { ok: true }; }
  catch (e) { return { name: e.name, message: e.message }; }
}
export function logWarn(ctx) { ctx.log("warn", "x"); return ctx.callId; }
"""

CHAN = """
export const metadata = { id: "chan", name: "Channel", version: "1.0.0", apiVersion: "1.0" };
const got = [];
const deadline = (ms) => new Promise((_, reject) => setTimeout(() => reject(new Error("no ping")), ms));

// Subscribes, then holds its worker until a ping arrives (or 10 s pass).
export async function listen(ctx) {
  let heard;
  const arrived = new Promise((r) => { heard = r; });
  // All registered before the first reply: a ping may come as soon as the host knows of one.
  await Promise.all([
    ctx.channel.on("ping", () => { throw new Error("sync boom"); }),
    ctx.channel.on("ping", async () => { await null; throw new Error("async boom"); }),
    ctx.channel.on("ping", (d) => { got.push(d); heard(); }),
  ]);
  await Promise.race([arrived, deadline(10000)]);
  return { pid: Deno.pid, got };
}

// Subscribes too (a sender must not hear itself), then emits until another worker heard it.
export async function shout(data, ctx) {
  await ctx.channel.on("ping", (d) => { got.push(d); });
  const start = Date.now();
  for (;;) {
    const n = await ctx.channel.emit("ping", data);
    if (n > 0) return { pid: Deno.pid, n, got: [...got] };
    if (Date.now() - start > 10000) throw new Error("nobody listened");
    await new Promise((r) => setTimeout(r, 10));
  }
}
"""


@pytest.fixture
def state_dir(tmp_path: Path, shared_state: Path) -> str:
    """A state directory of this test's own (so storage starts empty) that shares the session's
    DENO_DIR (so the worker runtime is not compiled again)."""
    state = tmp_path / "state"
    state.mkdir()
    (shared_state / "deno").mkdir(exist_ok=True)
    os.symlink(shared_state / "deno", state / "deno")
    return str(state)


def add_svc(plugin_dir, pid: str = "svc") -> None:
    plugin_dir.add(f"{pid}.js", SVC.replace('"ID"', f'"{pid}"'))


# ---------------------------------------------------------------------------- cache


async def test_cache_set_get_delete_and_ttl_expiry(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    async with make_host(state_dir=state_dir) as h:
        assert await h.call("svc", "cacheGet", "a") is None
        assert await h.call("svc", "cacheSet", "a", {"n": [1, b"\x00"]}, None) is True
        assert await h.call("svc", "cacheGet", "a") == {"n": [1, b"\x00"]}
        assert await h.call("svc", "cacheSet", "short", "v", 0.2) is True
        assert await h.call("svc", "cacheGet", "short") == "v"
        with anyio.fail_after(5):
            while await h.call("svc", "cacheGet", "short") is not None:
                await anyio.sleep(0.02)
        assert await h.call("svc", "cacheGet", "a") == {"n": [1, b"\x00"]}  # no ttl: kept
        assert await h.call("svc", "cacheDelete", "a") is True
        assert await h.call("svc", "cacheDelete", "a") is False
        assert await h.call("svc", "cacheGet", "a") is None
        bad = await h.call("svc", "attempt", "cache", "set", ["k", 1, -1])
        assert bad["name"] == "InvalidHostCall" and "ttl" in bad["message"]
        bad = await h.call("svc", "attempt", "cache", "get", [42])
        assert bad["name"] == "InvalidHostCall" and "string" in bad["message"]


async def test_cache_evicts_the_least_recently_used_past_its_bound(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    bound = ServiceLimits().cache_max_entries
    async with make_host(state_dir=state_dir) as h:
        assert await h.call("svc", "fill", bound) == bound
        assert await h.call("svc", "cacheGet", "k0") == 0  # now the most recently used
        assert await h.call("svc", "cacheSet", "new", "v", None) is True
        assert await h.call("svc", "cacheGet", "k1") is None  # the least recently used went
        assert await h.call("svc", "cacheGet", "k0") == 0
        assert await h.call("svc", "cacheGet", "k2") == 2
        assert await h.call("svc", "cacheGet", "new") == "v"


async def test_cache_byte_bound_evicts_oldest(make_host, calc, state_dir):
    # A small bound on a HostServices of the test's own, driven with a real worker.
    services = HostServices(state_dir, ServiceLimits(cache_max_entries=100, cache_max_bytes=300))
    async with make_host(state_dir=state_dir) as h:
        worker = h.pool("calc").workers[0]
        for i in range(3):
            await services.handle(worker, p.HostCall(id=i, op="cache.set", args=[f"k{i}", "x" * 100]))
        got = [await services.handle(worker, p.HostCall(id=9, op="cache.get", args=[f"k{i}"])) for i in range(3)]
        # values come back as stored (msgpack, sent to the worker without being decoded)
        assert [v if v is None else msgspec.msgpack.decode(v) for v in got] == [None, "x" * 100, "x" * 100]


async def test_cache_and_storage_are_private_to_each_plugin(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir, "alpha")
    add_svc(plugin_dir, "beta")
    async with make_host(state_dir=state_dir) as h:
        await h.call("alpha", "cacheSet", "k", "alpha's", None)
        await h.call("alpha", "set", "k", "alpha's")
        assert await h.call("beta", "cacheGet", "k") is None
        assert await h.call("beta", "get", "k") is None
        assert await h.call("beta", "keys") == []
        await h.call("beta", "set", "k", "beta's")
        assert await h.call("alpha", "get", "k") == "alpha's"
        assert await h.call("beta", "get", "k") == "beta's"
        assert await h.call("alpha", "cacheGet", "k") == "alpha's"
    files = sorted(f.name for f in (Path(state_dir) / "storage").glob("*.sqlite3"))
    assert files == ["alpha.sqlite3", "beta.sqlite3"]


# ---------------------------------------------------------------------------- storage


async def test_storage_survives_a_host_restart(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    async with make_host(state_dir=state_dir) as h:
        assert await h.call("svc", "set", "token", "kept") is True
        assert await h.call("svc", "set", "gone", 1) is True
        assert await h.call("svc", "del", "gone") is True
        assert await h.call("svc", "del", "gone") is False
    async with make_host(state_dir=state_dir) as h:
        assert await h.call("svc", "get", "token") == "kept"
        assert await h.call("svc", "get", "gone") is None
        assert await h.call("svc", "keys") == ["token"]
    mode = (Path(state_dir) / "storage" / "svc.sqlite3").stat().st_mode & 0o777
    assert mode == 0o600


async def test_storage_round_trips_bytes_and_nested_values(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    value = {"blob": bytes(range(256)), "list": [1, -2.5, None, True, "ü", {"deep": [b"\x00", []]}],
             "big": 2**53 + 1}
    async with make_host(state_dir=state_dir) as h:
        await h.call("svc", "set", "v", value)
        out = await h.call("svc", "get", "v")
    assert out == value and isinstance(out["blob"], bytes)


async def test_storage_limits_and_bad_arguments_are_typed_errors_in_the_plugin(
        plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    limits = ServiceLimits()
    async with make_host(state_dir=state_dir) as h:
        big = await h.call("svc", "setBig", limits.max_value_bytes + 1)
        assert big["name"] == "PayloadTooLarge" and "exceeds" in big["message"]
        assert await h.call("svc", "get", "big") is None  # nothing was written
        fits = await h.call("svc", "setBig", limits.max_value_bytes - 16)
        assert fits == {"ok": True}
        long_key = await h.call("svc", "attempt", "storage", "set", ["k" * (limits.max_key_bytes + 1), 1])
        assert long_key["name"] == "PayloadTooLarge" and "key" in long_key["message"]
        not_str = await h.call("svc", "attempt", "storage", "get", [{"a": 1}])
        assert not_str["name"] == "InvalidHostCall" and "object" in not_str["message"]
        # the worker that got the errors is still serving
        assert await h.call("svc", "get", "big") == "x" * (limits.max_value_bytes - 16)


async def test_execute_code_has_no_storage(make_host, state_dir):
    # Its context has neither storage nor cache; the host refuses those host calls from execute
    # workers all the same (tests/security/test_execute_escape.py sends them as raw frames).
    code = "export default async (_, ctx) => [typeof ctx.storage, typeof ctx.cache]"
    async with make_host(state_dir=state_dir) as h:
        out = await h.execute(code)
    assert out.ok and out.result == ["undefined", "undefined"]
    assert not list((Path(state_dir) / "storage").glob("*execute*"))


def test_storage_file_names_are_safe_and_distinct():
    assert storage_name("balance_deepseek") == "balance_deepseek"
    odd = [storage_name(i) for i in ("../x", "a/b", ".hidden", "a b", "a_b", "ü")]
    assert all("/" not in n and not n.startswith(".") for n in odd)
    assert len(set(odd)) == len(odd)


# ---------------------------------------------------------------------------- channel


async def test_channel_delivers_to_other_workers_never_to_the_sender(plugin_dir, make_host, state_dir):
    plugin_dir.add("chan.js", CHAN)
    logs: list[p.Log] = []
    results: dict[str, dict] = {}
    async with make_host(state_dir=state_dir,
                         pool=PoolConfig(min_workers=2, max_workers=2, max_inflight=1)) as h:
        h.add_log_listener(lambda plugin, worker, msg: logs.append(msg))

        async def run(name: str, *args: object) -> None:
            results[name] = await h.call("chan", name, *args, timeout=20)

        # Both calls stay in flight until the ping went across, so they run on the two workers.
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "listen")
                tg.start_soon(run, "shout", {"hello": [1, 2]})
        listener, sender = results["listen"], results["shout"]
        assert listener["pid"] != sender["pid"]
        assert listener["got"] == [{"hello": [1, 2]}]
        assert sender["n"] == 1 and sender["got"] == []
        # throwing handlers were logged, and neither failed the call nor hurt the worker
        booms = sorted(m.message for m in logs if m.level == "exception")
        assert [b.split(" (at ")[0] for b in booms] == ["async boom", "sync boom"]
        assert all(f"(at {plugin_dir.root / 'chan.js'}:" in b for b in booms)  # where each was thrown
        assert h.plugin("chan").crashes == 0


PAIR = """
export default async () => {
  let heard; const met = new Promise((r) => { heard = r; });
  await channel.on("meet", () => heard());
  const start = Date.now();
  while ((await channel.emit("meet", 1)) === 0) {
    if (Date.now() - start > 10000) return "timeout";
    await new Promise((r) => setTimeout(r, 10));
  }
  await met;
  return await channel.emit("ping", 1);
}
"""


async def test_execute_channel_reaches_other_executes_while_they_run(make_host, state_dir):
    listen = ("export default async () => { let heard; const got = new Promise((r) => { heard = r; });"
              " await channel.on('ping', (d) => heard(d));"
              " return await Promise.race([got, new Promise((r) => setTimeout(() => r('timeout'), 10000))]); }")
    shout = ("export default async (data) => { const start = Date.now(); for (;;) {"
             " const n = await channel.emit('ping', data); if (n > 0) return n;"
             " if (Date.now() - start > 10000) return 0; await new Promise((r) => setTimeout(r, 10)); } }")
    out: dict[str, object] = {}
    async with make_host(state_dir=state_dir) as h:

        async def run(name: str, code: str, data: object = None) -> None:
            out[name] = await h.execute(code, input=data, tools=["channel"], timeout=20)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "listen", listen)
                tg.start_soon(run, "shout", shout, "hi")
        assert out["listen"].ok and out["listen"].result == "hi", out["listen"].logs
        assert out["shout"].ok and out["shout"].result == 1, out["shout"].logs
        # The listener's handler went with its execute: two executes that meet over another
        # event (so they run on both workers at once) each emit "ping", and nobody hears it.
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "a", PAIR)
                tg.start_soon(run, "b", PAIR)
    assert [out[k].result for k in "ab"] == [0, 0], (out["a"].logs, out["b"].logs)


async def test_exited_worker_leaves_every_subscription(make_host, calc, state_dir):
    services = HostServices(state_dir)
    async with make_host(state_dir=state_dir) as h:
        worker = h.pool("calc").workers[0]
        await services.handle(worker, p.HostCall(id=1, op="channel.on", args=["ping"]))
        assert services._subs[("plugin", "calc")] == {"ping": {worker}}
        worker.kill("test")
        with anyio.fail_after(5):
            await worker.exited.wait()
        assert services._subs[("plugin", "calc")] == {}


# ---------------------------------------------------------------------------- log and unknown ops


async def test_context_log_reaches_listeners_with_the_call_id(plugin_dir, make_host, state_dir):
    add_svc(plugin_dir)
    seen: list[tuple[str, p.Log]] = []
    async with make_host(state_dir=state_dir) as h:
        h.add_log_listener(lambda plugin, worker, msg: seen.append((plugin, msg)))
        call_id = await h.call("svc", "logWarn")
    assert [(pl, m.level, m.message, m.id) for pl, m in seen] == [("svc", "warn", "x", call_id)]


async def test_log_host_call_goes_where_worker_logs_go(make_host, calc, state_dir):
    services = HostServices(state_dir)
    seen: list[tuple[str, p.Log]] = []
    async with make_host(state_dir=state_dir) as h:
        h.add_log_listener(lambda plugin, worker, msg: seen.append((plugin, msg)))
        worker = h.pool("calc").workers[0]
        await services.handle(worker, p.HostCall(id=1, op="log", args=["warn", "from host op"], call=7))
        await services.handle(worker, p.HostCall(id=2, op="log", args=["shout", "odd level"], call=8))
        with pytest.raises(UnknownHostCall, match="'nope'"):
            await services.handle(worker, p.HostCall(id=3, op="nope"))
    assert [(pl, m.level, m.message, m.id) for pl, m in seen] == [
        ("calc", "warn", "from host op", 7), ("calc", "log", "odd level", 8)]
