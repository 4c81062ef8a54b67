"""Hostile plugins against the resource caps and the plugin directory's boundary: ten Workers,
a 100 MiB result, a symlink out of the plugin directory. Each gets a typed error and the host
keeps serving."""

from __future__ import annotations

import os

import pytest

from host import InvalidConfig, PayloadTooLarge, PoolConfig, ResourceLimitExceeded, WorkerLimits
from host.plugins.discovery import check_confined, source_for

pytestmark = pytest.mark.anyio

ONE = PoolConfig(min_workers=1, max_workers=1)

WORKERS = """
// Each Worker holds about 40 MB of arrays: ten of them would be ten heaps of their own.
const CODE = `self.onmessage = () => { const keep = [];
  for (let i = 0; i < 50; i++) keep.push(new Array(1e5).fill(i)); self.postMessage(keep.length); };`;
const URL_ = "data:application/javascript;base64," + btoa(CODE);
const started = [];
export async function tenWorkers() {
  for (let i = 0; i < 10; i++) started.push(new Worker(URL_, { type: "module" }));
  return started.length;
}
export function alive() { return started.length; }
export async function nested() {
  const code = `try { new Worker("data:application/javascript,1", { type: "module" }); self.postMessage("made one"); }
    catch (e) { self.postMessage(e.name + ": " + e.message); }`;
  const w = new Worker("data:application/javascript;base64," + btoa(code), { type: "module" });
  try { return await new Promise((res) => { w.onmessage = (e) => res(e.data); }); } finally { w.terminate(); }
}
export async function useTwo() {
  const ws = [0, 1].map(() => new Worker(URL_, { type: "module" }));
  try {
    return await Promise.all(ws.map((w) => new Promise((res) => { w.onmessage = (e) => res(e.data); w.postMessage(0); })));
  } finally { for (const w of ws) w.terminate(); }
}
export function release() { for (const w of started.splice(0)) w.terminate(); return "released"; }
"""


async def test_ten_workers_stop_at_the_cap_and_a_worker_may_not_start_workers(plugin_dir, make_host):
    plugin_dir.add("workers.js", WORKERS)
    async with make_host(pool=ONE, limits=WorkerLimits(max_web_workers=4)) as h:
        with pytest.raises(ResourceLimitExceeded, match=r"at most 4 Workers .*max_web_workers") as e:
            await h.call("workers", "tenWorkers")
        assert e.value.error_type is None and e.value.name == "ResourceLimitExceeded"
        assert await h.call("workers", "alive") == 4  # the fifth was refused before it started
        assert await h.call("workers", "release") == "released"
        assert await h.call("workers", "nested") == "ResourceLimitExceeded: a Worker may not start Workers"
        assert await h.call("workers", "useTwo") == [50, 50]  # terminated Workers free their slots
        assert h.plugin("workers").state == "running" and h.plugin("workers").crashes == 0


BIG = """
export function hundredMiB() { return "x".repeat(100 * 1024 * 1024); }
export function hundredMiBBytes() { return new Uint8Array(100 * 1024 * 1024); }
export function manySmall() { return Array.from({ length: 3_000_000 }, (_, i) => i); }
export function fits(n) { return "y".repeat(n); }
"""


@pytest.mark.parametrize("fn", ["hundredMiB", "hundredMiBBytes", "manySmall"])
async def test_a_100_mib_result_is_refused_with_payload_too_large(plugin_dir, make_host, fn):
    plugin_dir.add("big.js", BIG)
    async with make_host(pool=ONE, limits=WorkerLimits(max_result_bytes=1024 * 1024)) as h:
        pid = h.plugin("big").workers[0].pid
        with pytest.raises(PayloadTooLarge, match=r"result exceeds the 1048576-byte limit"):
            await h.call("big", fn)
        assert len(await h.call("big", "fits", 1000 * 1024)) == 1000 * 1024  # under the cap
        assert h.plugin("big").workers[0].pid == pid  # the same worker: refusing cost nothing


def _escaping_plugin(plugin_dir, tmp_path, kind: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET-OUTSIDE")
    (outside / "mod.js").write_text('export const leaked = "imported-from-outside";\n')
    root = plugin_dir.root / "escape"
    plugin_dir.add("escape/mod.js", """
        export async function readIt() { return await Deno.readTextFile(new URL("./link", import.meta.url)); }
        export async function importIt() { return (await import(new URL("./link", import.meta.url).href)).leaked; }
    """)
    target = {"file": outside / "secret.txt", "module": outside / "mod.js", "dir": outside}[kind]
    os.symlink(target, root / ("link" if kind != "dir" else "sub"))
    return root


@pytest.mark.parametrize("kind", ["file", "module", "dir"])
async def test_a_symlink_escaping_the_plugin_directory_is_refused(plugin_dir, make_host, tmp_path, kind):
    plugin_dir.add("calm.js", "export function ok() { return 'ok'; }")
    root = _escaping_plugin(plugin_dir, tmp_path, kind)
    async with make_host(pool=ONE) as h:
        info = h.plugin("escape")
        assert info.state == "error"
        assert "leads outside the plugin directory" in info.error
        assert ("link" if kind != "dir" else "sub") in info.error
        assert info.workers == []
        assert await h.call("calm", "ok") == "ok"  # the host keeps serving the others
    src = source_for(root)
    assert src is not None
    with pytest.raises(InvalidConfig, match="leads outside"):
        check_confined(src)


def test_a_symlink_that_stays_inside_the_plugin_directory_is_allowed(plugin_dir):
    root = plugin_dir.root / "inside"
    plugin_dir.add("inside/mod.js", "export function ok() { return 1; }")
    (root / "data").mkdir()
    (root / "data" / "a.json").write_text("{}")
    os.symlink(root / "data" / "a.json", root / "alias.json")
    os.symlink("data", root / "data-alias")
    src = source_for(root)
    assert src is not None
    check_confined(src)  # no error
    os.symlink("/etc/passwd", root / "data" / "deep-link")
    with pytest.raises(InvalidConfig, match=r"data/deep-link"):
        check_confined(src)


KILLERS = """
export function spin() { while (true) {} }
export function exitNow(code) { Deno.exit(code); }
export function killSelf() { Deno.kill(Deno.pid, "SIGKILL"); return "still here"; }
export function ok() { return Deno.pid; }
"""


@pytest.mark.parametrize(("fn", "args", "reason", "detail"), [
    ("spin", [], "cpu", "SIGXCPU"),
    ("exitNow", [7], "crash", "exit code 7"),
    ("killSelf", [], "crash", "SIGKILL"),
])
async def test_every_kill_reports_its_reason(plugin_dir, make_host, fn, args, reason, detail):
    from host import WorkerCrashed

    plugin_dir.add("killers.js", KILLERS)
    limits = WorkerLimits(cpu_seconds=1, call_timeout=20)
    async with make_host(pool=ONE, limits=limits) as h:
        first = await h.call("killers", "ok")
        with pytest.raises(WorkerCrashed) as e:
            await h.call("killers", fn, *args)
        assert e.value.reason == reason and detail in str(e.value)
        assert await h.call("killers", "ok") != first  # a restarted worker serves the next call
        assert h.plugin("killers").crashes == 1


async def test_a_kill_that_comes_after_the_process_died_does_not_rename_its_death(calc, make_host):
    """The race CI met once: the heartbeat's write found the socket of a worker that SIGXCPU
    had already ended, and "connection lost" replaced "cpu" as the reason."""
    import signal as signals

    from host import WorkerCrashed

    async with make_host(pool=ONE) as h:
        worker = h.pool("calc").workers[0]
        os.kill(worker.pid, signals.SIGXCPU)
        # No await until the kill: the host cannot reap the process meanwhile.
        while os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            pass
        worker.kill("connection lost")  # what a failed write does
        await worker.exited.wait()
    assert isinstance(worker.exit_error, WorkerCrashed)
    assert worker.exit_reason == "cpu" and "SIGXCPU" in str(worker.exit_error)


INTERNALS = """
// The runtime's own modules are already loaded: a relative URL from the kit's reaches them with no
// read grant. What a plugin can change there must not lift a cap or forge what the host trusts.
export async function reach(name) {
  const mod = await import(new URL(`./${name}`, import.meta.resolve("@plugin-host/kit")).href);
  return Object.keys(mod).sort();
}
export async function liftCapThenStartTen() {
  const wire = await import(new URL("./wire.ts", import.meta.resolve("@plugin-host/kit")).href);
  try { wire.limits.max_web_workers = 1000; } catch (e) { /* frozen: strict-mode modules throw */ }
  return [wire.limits.max_web_workers, await tenWorkers()];
}
""" + WORKERS


async def test_the_runtime_internals_a_plugin_can_import_lift_no_cap(plugin_dir, make_host):
    plugin_dir.add("internals.js", INTERNALS)
    async with make_host(pool=ONE, limits=WorkerLimits(max_web_workers=4)) as h:
        assert "limits" in await h.call("internals", "reach", "wire.ts")  # reachable: the test is real
        with pytest.raises(ResourceLimitExceeded, match=r"at most 4 Workers"):
            await h.call("internals", "liftCapThenStartTen")
        assert await h.call("internals", "alive") == 4
