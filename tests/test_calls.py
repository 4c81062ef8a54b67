"""Calls through the whole path: host → pool → worker → Deno → plugin, and back."""

from __future__ import annotations

import time

import anyio
import pytest

from host import CallTimeout, FunctionNotFound, PluginError, PluginNotFound, PoolConfig, WorkerLimits

pytestmark = pytest.mark.anyio


async def test_add_through_the_whole_path(calc, make_host):
    async with make_host() as h:
        assert await h.call("calc", "add", 1, 2) == 3
        assert await h.call("calc", "addLater", 20, 22) == 42


async def test_large_unicode_and_binary_payloads_round_trip_exactly(calc, make_host):
    big = ("héllo wörld ✓ 你好 🎉 " * 60000)[: 1024 * 1024]
    blob = bytes(range(256)) * 4096 + b"\x00\xff"
    nested = {"a": [1, -1, 2**53 - 1, -(2**40), 1.5, None, True, False], "ü": {"k": "v"}, "": []}
    async with make_host() as h:
        assert await h.call("calc", "echo", big) == big
        out = await h.call("calc", "echo", blob)
        assert isinstance(out, bytes) and out == blob
        assert await h.call("calc", "echo", nested) == nested


async def test_uint8array_result_arrives_as_bytes(plugin_dir, make_host):
    plugin_dir.add("bin.ts", """
        export function bytes(n: number): Uint8Array {
          const a = new Uint8Array(n); for (let i = 0; i < n; i++) a[i] = (i * 7) % 256; return a;
        }
        export function length(b: Uint8Array): number { return b instanceof Uint8Array ? b.length : -1; }
    """)
    async with make_host() as h:
        assert await h.call("bin", "bytes", 1000) == bytes((i * 7) % 256 for i in range(1000))
        assert await h.call("bin", "length", b"\x01\x02\x03") == 3


async def test_thrown_values_become_typed_plugin_errors(plugin_dir, make_host):
    plugin_dir.add("bad.js", """
        class QuotaError extends Error {}
        export function typeErr() { return null.foo; }
        export function custom() { throw new QuotaError("over quota"); }
        export function number() { throw 404; }
        export function object() { throw { code: 7 }; }
        export async function rejected() { await null; throw new RangeError("late"); }
        export function plugin() { throw new PluginError(ErrorTypes.AUTH_ERROR, "bad key", { status: 401 }); }
    """)
    async with make_host() as h:
        with pytest.raises(PluginError) as e:
            await h.call("bad", "typeErr")
        assert e.value.name == "TypeError" and "null" in e.value.message and e.value.stack
        with pytest.raises(PluginError) as e:
            await h.call("bad", "custom")
        assert e.value.name == "QuotaError" and e.value.message == "over quota"
        with pytest.raises(PluginError) as e:
            await h.call("bad", "number")
        assert (e.value.name, e.value.message, e.value.details) == ("Exception", "404", 404)
        with pytest.raises(PluginError) as e:
            await h.call("bad", "object")
        assert e.value.name == "Exception" and e.value.details == {"code": 7}
        with pytest.raises(PluginError) as e:
            await h.call("bad", "rejected")
        assert e.value.name == "RangeError"
        with pytest.raises(PluginError) as e:
            await h.call("bad", "plugin")
        assert e.value.error_type == "AUTH_ERROR" and e.value.details == {"status": 401}
        assert e.value.plugin == "bad" and e.value.function == "plugin"
        with pytest.raises(FunctionNotFound):
            await h.call("bad", "missing")
        with pytest.raises(PluginNotFound):
            await h.call("nope", "x")
        # errors never cost the worker: one process served all of them
        assert h.plugin("bad").crashes == 0


async def test_unhandled_rejection_fails_the_call_without_killing_the_worker(plugin_dir, make_host):
    plugin_dir.add("rej.js", """
        export async function fire() {
          Promise.reject(new Error("nobody caught me"));
          await new Promise((r) => setTimeout(r, 50));
          return "finished";
        }
        export function ok() { return "ok"; }
    """)
    async with make_host() as h:
        pid = h.plugin("rej").workers[0].pid
        with pytest.raises(PluginError, match="nobody caught me"):
            await h.call("rej", "fire")
        assert await h.call("rej", "ok") == "ok"
        assert h.plugin("rej").workers[0].pid == pid


async def test_console_output_becomes_log_frames_tagged_with_the_call(calc, make_host):
    async with make_host() as h:
        got = []
        h.add_log_listener(lambda plugin, worker, msg: got.append((plugin, msg.level, msg.message, msg.id)))
        assert await h.call("calc", "say", {"x": [1, 2]}) == {"x": [1, 2]}
        assert got[0][:3] == ("calc", "log", 'said: {"x":[1,2]}')
        assert got[1][:3] == ("calc", "warn", "warned")
        assert got[0][3] is not None and got[0][3] == got[1][3]


async def test_concurrent_calls_on_one_worker_tag_their_console_output_each_with_its_own_call(
        plugin_dir, make_host):
    plugin_dir.add("talk.js", """
export async function talk(name) {
  console.log("before", name);
  await new Promise((r) => setTimeout(r, 50));
  console.log("after", name);
  return name;
}
""")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, max_inflight=4)) as h:
        got: list[tuple[str, int | None]] = []
        h.add_log_listener(lambda plugin, worker, msg: got.append((msg.message, msg.id)))
        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(h.call, "talk", "talk", name)
    assert len(got) == 6  # all lines arrive while three calls overlap on one worker
    for name in "abc":
        ids = {i for m, i in got if m.endswith(f" {name}")}
        assert len(ids) == 1 and None not in ids  # both lines of a call carry its id
    assert len({i for _, i in got}) == 3


async def test_infinite_loop_times_out_in_time_and_next_call_gets_a_fresh_worker(calc, make_host):
    async with make_host(limits=WorkerLimits(call_timeout=0.5)) as h:
        old = await h.call("calc", "pid")
        t0 = time.monotonic()
        with pytest.raises(CallTimeout):
            await h.call("calc", "spin")
        assert time.monotonic() - t0 < 0.7
        assert await h.call("calc", "add", 2, 2) == 4
        assert await h.call("calc", "pid") != old
        assert h.plugin("calc").timeouts == 1


async def test_calls_run_concurrently_up_to_max_inflight(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, max_inflight=8)) as h:
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(h.call, "calc", "sleep", 300)
        assert time.monotonic() - t0 < 1.2  # 8 × 300 ms overlapped on one worker
        assert len(h.plugin("calc").workers) == 1


async def test_cancelling_the_caller_aborts_the_signal_in_the_plugin(plugin_dir, make_host):
    plugin_dir.add("ab.js", """
        let aborted = null;
        export async function wait(ctx) {
          return await new Promise((resolve) => {
            ctx.signal.addEventListener("abort", () => { aborted = String(ctx.signal.reason?.name ?? ctx.signal.reason); resolve("stopped"); });
          });
        }
        export function wasAborted() { return aborted; }
    """)
    async with make_host() as h:
        with anyio.move_on_after(0.3):
            await h.call("ab", "wait")
        with anyio.fail_after(5):
            while await h.call("ab", "wasAborted") is None:
                await anyio.sleep(0.01)
        assert await h.call("ab", "wasAborted") == "AbortError"
        assert h.plugin("ab").crashes == 0


async def test_a_failed_call_says_where_it_threw_and_shows_in_the_plugins_log(plugin_dir, make_host):
    path = plugin_dir.add("thrower.js", """
export function boom() {
  const x = null;
  return x.field;
}
""")
    async with make_host() as h:
        with pytest.raises(PluginError) as e:
            await h.call("thrower", "boom")
        logged = [entry.message for entry in h.logs("thrower", level="error")]
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "x.field" in text)
    assert e.value.where == f"{path}:{line}:12"  # the plugin's own line, not the runtime's
    assert e.value.to_dict()["where"] == e.value.where
    assert logged and logged[-1].startswith("boom failed: ") and logged[-1].endswith(f"(at {path}:{line}:12)")
