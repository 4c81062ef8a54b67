"""A plugin's errors say where they were thrown wherever they are shown: the plugin's log (the
dashboard's log view) at error level, and the host's own log (what serve prints)."""

from __future__ import annotations

import logging

import pytest
from support.processes import wait_for

from host import PluginError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LATE = """
export function boom() {
  throw new TypeError("kaboom");
}
export function later() {
  setTimeout(() => { throw new Error("thrown late"); }, 0);
  return "returned";
}
"""


async def test_failed_calls_and_uncaught_errors_are_logged_at_error_with_their_place(make_host, plugin_dir, caplog):
    path = plugin_dir.add("late.js", LATE)
    caplog.set_level(logging.INFO)
    async with make_host() as host:
        with pytest.raises(PluginError) as failed:
            await host.call("late", "boom")
        assert failed.value.where == f"{path}:4:9"
        assert await host.call("late", "later") == "returned"
        await wait_for(lambda: any("thrown late" in e.message for e in host.logs("late", level="error")))
        errors = [e.message for e in host.logs("late", level="error")]
        assert any(m.startswith("boom failed: late.boom: kaboom") and m.endswith(f"(at {path}:4:9)") for m in errors)
        assert any("thrown late" in m and f"(at {path}:7:" in m for m in errors), errors
    served = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "host.plugin"]
    assert any("boom failed" in m and f"{path}:4:9" in m for m in served)
    assert any("thrown late" in m and f"{path}:7:" in m for m in served)


def test_the_place_is_read_from_every_stack_shape():
    from host.errors import where_in

    assert where_in("TypeError: x\n    at boom (file:///p/late.js:4:9)\n    at file:///p/other.js:1:2") == \
        "/p/late.js:4:9"
    assert where_in("Error\n    at file:///w/worker_runtime/calls.ts:3:4\n    at /p/a.js:7:1,") == "/p/a.js:7:1"
    assert where_in("f@/p/node_modules/@scope/m.js:5:6\n@file:///p/b.js:1:1") == "/p/node_modules/@scope/m.js:5:6"
    assert where_in("at ext:deno_fetch/26_fetch.js:1:2\n at (/p/x.ts:10:20)") == "/p/x.ts:10:20"
    assert where_in("no frame here: a.js:1:2 or /p/nocol.js:1") is None
    assert where_in(None) is None and where_in("") is None


@pytest.mark.parametrize("text", ["@/" * 32768, "\n@/" * 21000, "(/" * 32768, "/:1" * 21000, "@" * 65536])
def test_reading_the_place_takes_time_in_proportion_to_the_stack(text):
    """A stack the plugin writes (`e.stack = "@/".repeat(32768)`, within the host's 64 KiB cap)
    made the frame pattern try every "@" and scan to the end from each: 7.7 s of the host's
    event loop per failed call or unhandled rejection, on the loop, so every worker of the host
    went unanswered and was killed for silence (helper-88's finding). Read a token at a time."""
    import time

    from host.errors import where_in

    t = time.perf_counter()
    assert where_in(text) is None
    assert time.perf_counter() - t < 0.5  # 7.7 s before, for the first


async def test_a_plugins_crafted_stack_does_not_stall_the_host(make_host, plugin_dir):
    plugin_dir.add("evil.js", """
export function boom() { const e = new Error("y"); e.stack = "@/".repeat(32000); throw e; }
export function reject() { const e = new Error("y"); e.stack = "@/".repeat(32000); Promise.reject(e); return 1; }
""")
    import time

    import anyio

    async with make_host() as host:
        stalls: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)
                now = time.monotonic()
                stalls.append(now - last)
                last = now

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            for _ in range(2):
                with pytest.raises(PluginError):
                    await host.call("evil", "boom")
                assert await host.call("evil", "reject") == 1
            await wait_for(lambda: len(host.logs("evil", level="error")) >= 4)
            seen = len(stalls)
            await wait_for(lambda: len(stalls) > seen)  # a tick after the last of them
            tg.cancel_scope.cancel()
    assert max(stalls) < 1.0, max(stalls)  # 7-10 s a time before


def test_a_load_errors_place_is_put_in_time_in_proportion_to_the_message():
    """A plugin failing to load with a message of 64,000 newlines (its own throw at the top
    level) held the event loop ~6 s while the trailing frame was looked for."""
    import time

    from host.load_advice import located

    assert located("Uncaught Error: x\n    at file:///p/a.js:1:2\n", "/p/a.js:1:2") == "Uncaught Error: x (at /p/a.js:1:2)"
    t = time.perf_counter()
    assert located("\n" * 64000 + "x", "/p/a.js:1:2").startswith(" (at /p/a.js:1:2)\n")
    assert time.perf_counter() - t < 0.5  # ~6 s before
