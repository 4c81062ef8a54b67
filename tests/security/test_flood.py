"""Floods from a worker: what a plugin (or code that writes frames itself) can send the host, and
what it can leave unread. Every cap is enforced by the host on what arrives, and the host's
memory stays flat whatever a worker does (issue 14, items 1, 2 and 13)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import pytest
from support.plugins import CALC, PluginDir
from support.processes import peak_rss

from host import CallTimeout, HostError, PayloadTooLarge, PluginError, PoolConfig, WorkerCrashed, WorkerLimits
from host.worker import LIMIT_HOST_CALLS, LIMIT_WRITE_BUFFER, MAX_ERROR_NAME, MAX_ERROR_TEXT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MIB = 1024 * 1024




async def crash_and_growth(flood: Callable[[], Awaitable[object]],
                           expected: type[HostError] = WorkerCrashed) -> tuple[HostError, int]:
    """Run ``flood``, which must end in ``expected``; also the growth of the host's RSS at its
    highest meanwhile (sampled every few milliseconds), in bytes."""
    async with peak_rss(0.002) as seen:
        with pytest.raises(expected) as e:
            await flood()
    return e.value, seen.growth


# A fake worker runtime (tests/support/hostile.py PRELUDE: the real codec and framing) that serves like
# the real one until a call asks it to flood: every frame here is one that plugin code writing
# to its socket could send, so the host must cap each kind by itself.
FLOOD = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    const id = welcome.plugin_id;
    await write(frame({ type: "ready", metadata: { id, name: id, version: "1.0.0", apiVersion: "1.0" },
                        exports: ["logs", "loose", "bigResult", "bigError", "hostCalls", "pings", "amplify", "ok"] }));
    const big = "x".repeat((1 << 20) - 64);
    for (;;) {
      const msg = await readFrame();
      if (msg === null || msg.type === "shutdown") Deno.exit(0);
      if (msg.type === "ping") { await write(frame({ type: "pong", seq: msg.seq })); continue; }
      if (msg.type === "host_reply") continue;
      if (msg.type !== "call" && msg.type !== "execute") continue;
      const n = (msg.type === "execute" ? msg.input : msg.args?.[0]) ?? 0;
      const out = [];
      if (msg.type === "execute" && typeof n === "object") {  // {stacks: N}: short lines, each with a long stack
        for (let i = 0; i < n.stacks; i++) {
          out.push(frame({ type: "log", level: "error", message: `e${i}`, name: "Error", stack: "s".repeat(60000), id: msg.id }));
        }
        out.push(frame({ type: "result", id: msg.id, value: "done" }));
      } else if (msg.type === "execute" || msg.fn === "logs") {
        for (let i = 0; i < n; i++) out.push(frame({ type: "log", level: "log", message: `line ${i} ` + "y".repeat(1000), id: msg.id }));
        out.push(frame({ type: "result", id: msg.id, value: "done" }));
      } else if (msg.fn === "loose") {
        for (let i = 0; i < n; i++) out.push(frame({ type: "log", level: "log", message: `loose ${i}` }));
        out.push(frame({ type: "result", id: msg.id, value: "done" }));
      } else if (msg.fn === "bigResult") {
        out.push(frame({ type: "result", id: msg.id, value: "r".repeat(n) }));
      } else if (msg.fn === "bigError") {
        const huge = "e".repeat(n);
        out.push(frame({ type: "error", id: msg.id, error: { name: huge, message: huge, stack: huge,
                                                             error_type: huge, details: { blob: huge } } }));
      } else if (msg.fn === "hostCalls") {
        out.push(frame({ type: "host_call", id: 1, op: "cache.set", args: ["big", big], call: msg.id }));
        for (let i = 0; i < n; i++) out.push(frame({ type: "host_call", id: 2 + i, op: "cache.get", args: ["big"], call: msg.id }));
        await write(concat(...out));
        stayAlive();
        await new Promise(() => {});  // never reads again
      } else if (msg.fn === "amplify") {
        // {type: "result", id: <not pending>, value: [[[], ...15], ...]}: n bytes that decode into
        // ~n Python lists (1.2 GB for 16 MiB before the host bounded what it decodes)
        const groups = Math.floor(n / 16);
        const head = concat(new Uint8Array([0x83]), encode("type"), encode("result"), encode("id"), encode(999999),
                            encode("value"), new Uint8Array([0xdd, groups >>> 24, (groups >>> 16) & 255, (groups >>> 8) & 255, groups & 255]));
        const fr = new Uint8Array(4 + head.length + groups * 16);
        new DataView(fr.buffer).setUint32(0, head.length + groups * 16);
        fr.set(head, 4);
        for (let i = 0, at = 4 + head.length; i < groups; i++, at += 16) { fr[at] = 0x9f; fr.fill(0x90, at + 1, at + 16); }
        out.push(fr, frame({ type: "result", id: msg.id, value: "survived" }));
      } else if (msg.fn === "pings") {
        for (let i = 0; i < n; i += 1000) {
          const batch = [];
          for (let j = i; j < Math.min(n, i + 1000); j++) batch.push(frame({ type: "ping", seq: j }));
          await write(concat(...batch));
        }
        stayAlive();
        await new Promise(() => {});  // never reads the pongs
      } else {
        out.push(frame({ type: "result", id: msg.id, value: "ok" }));
      }
      await write(concat(...out));
    }
"""


@pytest.fixture
def flood_entry(hostile, plugin_dir: PluginDir) -> str:
    plugin_dir.add("flood.js", "export function ok() {}\n")
    return str(hostile(FLOOD).entry)


async def test_unread_host_call_replies_kill_the_worker_and_host_memory_stays_flat(plugin_dir, make_host):
    # Zero permissions: cache a 1 MiB value, ask for it 300 times without awaiting, never read.
    plugin_dir.add("amp.js", """
        export async function flood(n, ctx) {
          await ctx.cache.set("big", "x".repeat((1 << 20) - 64));
          const refused = [];
          for (let i = 0; i < n; i++) ctx.cache.get("big").catch((e) => refused.push(e.name));
          await new Promise((r) => setTimeout(r, 20));  // the requests go out; the replies start
          const until = Date.now() + 20000;
          while (Date.now() < until) {}
          return refused.length;
        }
        export function ok() { return "ok"; }
    """)
    # heartbeat_timeout: how long replies may wait unread before the worker is killed
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), limits=WorkerLimits(heartbeat_timeout=2)) as h:
        assert await h.call("amp", "ok") == "ok"
        crash, growth = await crash_and_growth(lambda: h.call("amp", "flood", 300, timeout=30))
        assert crash.reason == LIMIT_WRITE_BUFFER
        assert growth < 20 * MIB, f"host RSS grew {growth / MIB:.1f} MiB"
        assert await h.call("amp", "ok") == "ok"  # a new worker serves
        assert h.plugin("amp").worker_exits == {LIMIT_WRITE_BUFFER: 1}


async def test_the_runtime_refuses_host_calls_past_its_cap_with_a_typed_error(plugin_dir, make_host):
    plugin_dir.add("many.js", """
        export async function many(n, ctx) {
          const all = await Promise.allSettled(Array.from({ length: n }, (_, i) => ctx.cache.get("k" + i)));
          const refused = all.filter((r) => r.status === "rejected");
          return [refused.length, refused[0]?.reason?.name, String(refused[0]?.reason?.message)];
        }
    """)
    async with make_host(limits=WorkerLimits(max_host_calls=8)) as h:
        refused, name, message = await h.call("many", "many", 20)
        assert (refused, name) == (12, "ResourceLimitExceeded")
        assert "at most 8 host calls" in message and "limits.max_host_calls" in message
        assert await h.call("many", "many", 8) == [0, None, "undefined"]  # the worker lives on


async def test_raw_host_call_frames_past_the_cap_kill_the_worker_and_memory_stays_flat(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry, pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("flood", "ok") == "ok"
        crash, growth = await crash_and_growth(lambda: h.call("flood", "hostCalls", 1000, timeout=20))
        assert crash.reason == LIMIT_HOST_CALLS
        assert growth < 20 * MIB, f"host RSS grew {growth / MIB:.1f} MiB"
        assert await h.call("flood", "ok") == "ok"


async def test_a_frame_that_would_decode_into_millions_of_objects_is_refused_unread(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry, pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("flood", "ok") == "ok"
        t0 = anyio.current_time()
        crash, growth = await crash_and_growth(lambda: h.call("flood", "amplify", 16 * MIB - 64, timeout=20),
                                               expected=HostError)
        assert "would take more than 128 MiB of host memory or hold more than" in crash.message
        assert growth < 100 * MIB, f"host RSS grew {growth / MIB:.1f} MiB"  # 1,172 MiB before
        assert anyio.current_time() - t0 < 5
        assert await h.call("flood", "ok") == "ok"  # a new worker serves


async def test_raw_log_frames_are_capped_by_the_host_per_call(flood_entry, make_host):
    limits = WorkerLimits(max_log_entries=100)
    async with make_host(runtime_entry=flood_entry, limits=limits) as h:
        seen: list[str] = []
        h.add_log_listener(lambda pid, w, msg: seen.append(msg.message))
        assert await h.call("flood", "logs", 5000) == "done"
        assert len(seen) == 102  # the cap, the runtime's own marker, the host's marker
        assert seen[-1].startswith("log output truncated by the host")
        assert len(h.logs("flood", limit=1000)) <= 110  # the dashboard's log got no more either


async def test_raw_log_frames_outside_calls_are_capped_per_second(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry, limits=WorkerLimits(max_log_entries=50)) as h:
        seen: list[str] = []
        h.add_log_listener(lambda pid, w, msg: seen.append(msg.message))
        assert await h.call("flood", "loose", 3000) == "done"
        assert len(seen) <= 53
        assert "outside a call" in seen[-1]


async def test_raw_execute_logs_are_capped_by_the_host(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry, limits=WorkerLimits(max_log_entries=1000)) as h:
        out = await h.execute("export default () => 1", 5000)
        assert out.ok and out.result == "done"
        assert len(out.logs) == 1002
        assert sum(len(entry.message) for entry in out.logs) < 1.1 * MIB
        assert out.logs[-1].message.startswith("log output truncated by the host")


async def test_the_stacks_of_raw_log_frames_count_against_the_log_budget(flood_entry, make_host):
    """helper-110: a log entry's stack (up to 64 KiB each) was not counted, only its message: 1,000
    entries of a call could carry ~64 MiB of stacks, which an execution's answer holds."""
    async with make_host(runtime_entry=flood_entry) as h:
        out = await h.execute("export default () => 1", {"stacks": 1000})
        assert out.ok and out.result == "done"
        carried = sum(len(entry.message) + len(entry.stack or "") for entry in out.logs)
        assert carried < 1.1 * MIB, f"{carried / MIB:.1f} MiB of logs"
        assert out.logs[-1].message.startswith("log output truncated by the host")


async def test_a_raw_result_over_max_result_bytes_is_payload_too_large(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry, limits=WorkerLimits(max_result_bytes=MIB)) as h:
        with pytest.raises(PayloadTooLarge, match=r"limits\.max_result_bytes"):
            await h.call("flood", "bigResult", 2 * MIB)
        assert await h.call("flood", "bigResult", 1000) == "r" * 1000


async def test_every_part_of_a_raw_error_is_capped(flood_entry, make_host):
    async with make_host(runtime_entry=flood_entry) as h:
        with pytest.raises(PluginError) as e:
            await h.call("flood", "bigError", 3 * MIB)
        err = e.value
        assert len(err.name) < MAX_ERROR_NAME + 64 and len(err.error_type or "") < MAX_ERROR_NAME + 64
        assert len(err.message) < MAX_ERROR_TEXT + 64 and len(err.stack or "") < MAX_ERROR_TEXT + 64
        assert err.details is None  # over the cap: dropped


async def test_a_ping_flood_gets_no_pong_per_ping_and_memory_stays_flat(flood_entry, make_host):
    # the plugin's own deadline, not the caller's: a caller giving up leaves the worker busy until
    # that (30 s by default), and the last call would wait for it
    async with make_host(runtime_entry=flood_entry, pool=PoolConfig(min_workers=1, max_workers=1),
                         limits=WorkerLimits(call_timeout=2)) as h:
        assert await h.call("flood", "ok") == "ok"
        # the fake never answers the call, never reads a pong: the call's deadline ends it
        _, growth = await crash_and_growth(lambda: h.call("flood", "pings", 200_000), CallTimeout)
        assert growth < 20 * MIB, f"host RSS grew {growth / MIB:.1f} MiB"
        assert await h.call("flood", "ok") == "ok"


async def test_a_huge_error_name_is_an_error_not_a_timeout(plugin_dir, make_host):
    plugin_dir.add("named.js", """
        export function boom() { const e = new Error("bad"); e.name = "N".repeat(20 * 1024 * 1024); throw e; }
    """)
    async with make_host() as h:
        with anyio.fail_after(10), pytest.raises(PluginError) as e:
            await h.call("named", "boom", timeout=8)
        assert e.value.message == "bad" and len(e.value.name) < MAX_ERROR_NAME + 64


async def test_plugin_code_cannot_reach_deno_internals_or_its_bootstrap(plugin_dir, make_host):
    plugin_dir.add("peek.js", """
        export function peek() {
          return { internal: typeof Deno[Deno.internal], args: Deno.args };
        }
    """)
    async with make_host() as h:
        assert await h.call("peek", "peek") == {"internal": "undefined", "args": []}


async def test_the_native_worker_constructor_is_out_of_reach(plugin_dir, make_host):
    plugin_dir.add("w.js", """
        const url = "data:application/javascript,setInterval(() => {}, 1000)";
        export function escape() {
          const out = [];
          const tries = [
            () => new (Object.getPrototypeOf(Worker))(url, { type: "module" }),
            () => new (Object.getPrototypeOf(Worker.prototype).constructor)(url, { type: "module" }),
            () => new Worker.prototype.constructor(url, { type: "module" }),
          ];
          const made = [];
          for (const t of tries) {
            try { made.push(t()); out.push("made"); } catch (e) { out.push(e.name); }
          }
          for (const w of made) w.terminate();
          return out;
        }
    """)
    async with make_host(limits=WorkerLimits(max_web_workers=0)) as h:
        assert await h.call("w", "escape") == ["TypeError", "ResourceLimitExceeded", "ResourceLimitExceeded"]


@pytest.mark.one_backend
async def test_output_without_a_newline_neither_stalls_the_host_nor_grows_it(make_host):
    """A worker's stdout and stderr go to the host, which keeps a tail and forwards lines: the
    line being read grew by every chunk, and was copied whole at each (quadratic), so 64 MiB
    written with no newline (Deno.stderr, which execute code has) held the host's event loop
    for a minute and its memory by as much. A line is now cut at the tail's size."""
    from host import ExecuteConfig

    flood = """
    export default () => {
      const chunk = new TextEncoder().encode("y".repeat(65536));
      for (let i = 0; i < 1024; i++) Deno.stderr.writeSync(chunk);
      return "flooded";
    };"""
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h:
        await h.execute("export default () => 0")  # the worker is started
        async with peak_rss(0.002) as seen:
            out = await h.execute(flood, timeout=30)
    assert out.ok and out.result == "flooded", out.logs
    assert out.duration < 5000, out.duration  # before: 60 s and more
    assert seen.growth < 48 * MIB, seen.mib()


STDOUT_FLOOD = """
export function start() {
  const lines = new TextEncoder().encode("a\\n".repeat(32768));  // 64 KiB of two-byte lines, no permission needed
  (async () => { for (;;) { try { await Deno.stdout.write(lines); } catch { return; } } })();
  return "started";
}"""


@pytest.mark.one_backend
@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
async def test_a_flood_of_short_output_lines_neither_freezes_the_host_nor_its_other_plugins(
        plugin_dir, make_host, caplog, debug):
    """A plugin writing "a\\n" to its stdout without end (left running after its call answered)
    made the host split, redact and log every line: ~500,000 a second, the host's whole core,
    another plugin's call 0.1 ms -> p50 519 ms. Lines are forwarded within a budget per second
    (the rest counted and said once), redacted only when worker output is logged, and output
    is read within a budget of bytes per second (flat out, reading alone took ~85 % of a core)."""
    plugin_dir.add("flood.js", STDOUT_FLOOD)
    plugin_dir.add("calc.js", CALC)
    if debug:  # what serve --debug shows: every worker's output
        caplog.set_level(logging.DEBUG, logger="host.worker")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("flood", "start") == "started"
        cpu, start = time.process_time(), time.monotonic()
        await anyio.sleep(2)  # a window of wall time, the host doing nothing else
        share = (time.process_time() - cpu) / (time.monotonic() - start)
        took = []
        for _ in range(200):
            t = time.perf_counter()
            assert await h.call("calc", "add", 1, 2) == 3
            took.append(time.perf_counter() - t)
        assert h.plugin("flood").state == "running"
    assert statistics.median(took) < 0.05, f"p50 {statistics.median(took) * 1000:.1f} ms"  # before: ~500 ms
    assert share < 0.4, f"the host used {share:.0%} of a core reading a plugin's output"
    if debug:
        lines = [r.getMessage() for r in caplog.records if "[plugin:flood" in r.getMessage()]
        assert any("left out" in line for line in lines), [line for line in lines if "] a" not in line][-5:]
        assert len(lines) < 20_000, len(lines)
