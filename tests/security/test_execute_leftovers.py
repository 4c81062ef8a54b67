"""Pooled /execute against what one execution leaves running in its warm worker after it
answered (attacker review, round 5): the next caller on that worker must get its own answer,
not a timeout or a crash it did not cause."""

from __future__ import annotations

import pytest

from host import ExecuteConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]

ONE_WORKER = ExecuteConfig(min_workers=1, max_workers=1)

# Each answers at once and leaves its worker's event loop turning in microtasks for ever: no
# timer of the worker's (heartbeat, deadline) can run there again.
SPINNERS = {
    "then": 'export default () => { const f = () => Promise.resolve().then(f); f(); return "left"; }',
    "await": 'export default () => { (async () => { for (;;) await null; })(); return "left"; }',
}


@pytest.mark.parametrize("how", sorted(SPINNERS))
async def test_a_worker_left_spinning_in_microtasks_does_not_take_the_next_execution(make_host, how):
    async with make_host(execute=ONE_WORKER) as h:
        left = await h.execute(SPINNERS[how])
        victim = await h.execute("export default (x) => x + 1", 41, timeout=5)
        again = await h.execute("export default (x) => x * 2", 21, timeout=5)
    assert left.ok and left.result == "left"
    assert victim.ok, victim.logs  # before: TimeoutError after its whole 5 s on the spinning worker
    assert victim.result == 42 and victim.duration < 4000
    assert again.ok and again.result == 42



async def test_code_left_behind_cannot_end_the_worker_under_the_next_execution(make_host):
    """Code left behind runs after its execution settled, during the next one (a listener on a
    lent AbortSignal did; Atomics.waitAsync's callback still does): ending the worker's process there (Deno.exit, a signal to its own pid or group) failed
    the next caller with WorkerCrashed. An execution may still end its worker while it runs
    (reported as WorkerCrashed to itself, test_execute.py)."""
    leaver = """
    export default (how) => {
      // a timer the listener guard does not cover (test_listeners_...): a context promise V8 resolves
      Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150).value.then({
        exit: () => Deno.exit(3),
        kill: () => Deno.kill(Deno.pid, "SIGKILL"),
        group: () => Deno.kill(-Deno.pid, "SIGKILL"),
        zero: () => Deno.kill(0, "SIGKILL"),
      }[how]);
      return how;
    };"""
    victim = "export default async (x) => { await new Promise((r) => setTimeout(r, 1500)); return x; }"
    async with make_host(execute=ONE_WORKER) as h:
        for how in ("exit", "kill", "group", "zero"):
            a = await h.execute(leaver, how)
            b = await h.execute(victim, how, timeout=5)
            assert a.ok and a.result == how, a
            assert b.ok and b.result == how, b.logs  # before: WorkerCrashed "the worker crashed (exit code 3)"


async def test_errors_of_lent_functions_that_code_left_behind_are_not_logged_to_the_next_execution(make_host):
    """Code left behind makes the main realm's own functions throw and reject with text it
    chose (structuredClone of a function quotes its source; Response.json quotes the body): an
    error of no execution's context. The runtime did not fail the running execution for them,
    but logged them as `exception` entries of it: forged failures in another caller's logs."""
    leaver = """
    export default () => {
      Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150).value.then(() => {
        new Response("INJECTED-by-A").json();                  // a main-realm rejection
        structuredClone(() => "INJECTED-by-A, thrown");        // a main-realm throw
      });
      return "left";
    };"""
    victim = """
    export default async () => {
      console.log("victim line");
      await new Promise((r) => setTimeout(r, 1000));
      return "genuine";
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim, timeout=5)
    assert a.ok and a.result == "left"
    assert b.ok and b.result == "genuine", b.logs
    assert [(e.level, e.message) for e in b.logs] == [("log", "victim line")]  # before: + 2 exceptions


@pytest.mark.parametrize("kind", ["heap", "buffers"])
async def test_memory_code_left_behind_holds_is_not_taken_from_the_next_execution(make_host, kind):
    """An execution keeps what it allocated alive after it settled (a listener on a lent
    AbortSignal.timeout(1e9) closes over it), so the next caller on that warm worker got
    only what was left of the heap cap or of RLIMIT_DATA: a 40 MiB array ran out of memory (the
    worker crashed under it), a 1 GiB buffer failed with RangeError. A worker whose data grew
    by more than [execute] retire_growth_mb over an execution takes no other."""
    hold = {
        "heap": "const keep = []; for (let i = 0; i < 90; i++) keep.push(new Array(1 << 17).fill(i));",
        "buffers": "const keep = [new ArrayBuffer(1800 << 20)];",  # reserved, never touched
    }[kind]
    need = {
        "heap": "const a = []; for (let i = 0; i < 40; i++) a.push(new Array(1 << 17).fill(i)); return a.length;",
        "buffers": "return new Uint8Array(1 << 30).length >> 20;",
    }[kind]
    leaver = f"""
    export default () => {{
      {hold}
      AbortSignal.timeout(1e9).addEventListener("abort", () => keep.length);
      return "held";
    }};"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver, timeout=10)
        b = await h.execute(f"export default () => {{ {need} }}", timeout=10)
    assert a.ok and a.result == "held", a.logs
    assert b.ok, b.logs  # before: WorkerCrashed (out of memory) / RangeError: Array buffer allocation failed
    assert b.result == {"heap": 40, "buffers": 1024}[kind]


LISTENERS = {
    "listener": 'AbortSignal.timeout(150).addEventListener("abort", spin);',
    "handleEvent": 'AbortSignal.timeout(150).addEventListener("abort", { handleEvent: spin });',
    "onabort": "AbortSignal.timeout(150).onabort = spin;",
    # a proxy whose prototype chain names no context (or the main realm's)
    "proxy": 'AbortSignal.timeout(150).addEventListener("abort", new Proxy(spin, { getPrototypeOf: () => null }));',
    "proxyMain": """AbortSignal.timeout(150).addEventListener("abort", new Proxy(spin, {
                    getPrototypeOf: () => Object.getPrototypeOf(fetch) }));""",
    # a main-realm function bound to it (the main realm's Function.prototype.call), and a
    # main-realm object (structuredClone's) given a handleEvent
    "bound": """const call = Object.getPrototypeOf(fetch).call;
                AbortSignal.timeout(150).addEventListener("abort", call.bind(spin));""",
    "mainObject": """const o = structuredClone({}); o.handleEvent = spin;
                     AbortSignal.timeout(150).addEventListener("abort", o);""",
    "port": """const { port1, port2 } = new MessageChannel();
               let n = 0;
               port1.onmessage = () => (++n > 3000 ? spin() : port2.postMessage(n));
               port2.onmessage = (e) => port1.postMessage(e.data);
               port1.postMessage(0);""",
}


@pytest.mark.parametrize("how", sorted(LISTENERS))
async def test_listeners_an_execution_left_on_lent_event_targets_do_not_run_after_it(make_host, how):
    """A listener (a function, a handleEvent object, an on* handler) that an execution left on
    a lent AbortSignal.timeout or MessagePort ran once it had settled, during the next caller's
    execution on that worker, and spun: that execution timed out. Listeners of an execution's
    context are now called only while it runs."""
    leaver = f"""
    export default () => {{
      const spin = () => {{ for (;;) {{}} }};
      {LISTENERS[how]}
      return "left";
    }};"""
    victim = "export default async (x) => { await new Promise((r) => setTimeout(r, 1500)); return x; }"
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim, how, timeout=5)
        own = await h.execute("""
        export default async () => {
          const seen = [];
          const t = new EventTarget();
          const f = (e) => seen.push(e.type);
          t.addEventListener("x", f);
          t.addEventListener("x", f);            // the same listener once
          t.dispatchEvent(new Event("x"));
          t.removeEventListener("x", f);
          t.dispatchEvent(new Event("x"));
          const s = AbortSignal.timeout(20);
          s.onabort = () => seen.push("abort");
          await new Promise((r) => s.addEventListener("abort", r, { once: true }));
          return [seen, typeof s.onabort];
        };""")
    assert a.ok and a.result == "left"
    assert b.ok and b.result == how, b.logs  # before: TimeoutError, the worker spinning in A's listener
    assert own.ok and own.result == [["x", "abort"], "function"], own  # a running execution's listeners work


async def test_a_caller_out_of_time_before_the_probe_ends_kills_no_worker(make_host):
    """The reuse probe waits at most what is left of the caller's time: a caller with less left
    than ``reuse_probe`` whose probe saw no pong yet had the worker killed as 'left busy', though
    only the caller's time had run out (under a queue, a cascade of warm workers killed and
    spawned again). Now that caller times out and the worker stays, judged by the next probe
    that has its whole ``reuse_probe``."""
    async with make_host(execute=ONE_WORKER) as h:
        # answers, then keeps its loop busy in microtasks for 0.5 s: past the short caller's time,
        # within the whole 0.5 s probe of the caller after it: the loop turns again in time
        left = await h.execute('export default () => { const end = Date.now() + 500; '
                               'const f = () => { if (Date.now() < end) Promise.resolve().then(f); }; f(); '
                               'return Deno.pid; }')
        short = await h.execute("export default () => Deno.pid", timeout=0.2)
        later = await h.execute("export default () => Deno.pid", timeout=5)
    assert left.ok, left.logs
    assert not short.ok and short.logs[-1].name == "TimeoutError", short.logs
    assert later.ok and later.result == left.result, (later.result, left.result)  # the same worker


async def test_web_locks_an_execution_holds_are_neither_seen_nor_waited_for_by_the_next_one(make_host):
    """navigator.locks was the worker's one LockManager, lent to every execution: one caller took
    "refresh-token" and never let go, and the next caller's ordinary
    navigator.locks.request("refresh-token", ...) waited out its whole timeout; a later caller's
    locks.query() read the lock names earlier callers chose (a victim's "session:<its input>"),
    and {steal: true} took another caller's lock (helper-73's finding). Execute workers have no
    Web Locks: navigator.locks is undefined there, and navigator is otherwise as it was."""
    hoard = """
    export default async () => {
      navigator.locks?.request("refresh-token", () => new Promise(() => {}));
      return [typeof navigator.locks, "locks" in navigator, typeof navigator.userAgent];
    };"""
    victim = """
    export default async (secret) => navigator.locks
      ? await navigator.locks.request("refresh-token", async () => `got it (${secret})`) : "no locks";"""
    peek = """
    export default async () => navigator.locks ? JSON.stringify(await navigator.locks.query()) : "no locks";"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(hoard)
        b = await h.execute(victim, "session:VICTIM-42", timeout=3)
        c = await h.execute(peek)
    assert a.ok and a.result == ["undefined", False, "string"], a
    assert b.ok and b.result == "no locks", b  # before: TimeoutError after its 3 s
    assert c.ok and c.result == "no locks", c  # before: the held lock's name
