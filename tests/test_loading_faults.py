"""Probes of background loading (issue 20): a plugin whose load never finishes must not hold up
the others, the host's close, or a caller past its deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import pytest
from support.plugins import CALC

from host import CallTimeout, HostError, InvalidArguments, PoolConfig, WorkerLimits

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HANG = """
export const metadata = { id: "hang", name: "hang", version: "1.0.0", apiVersion: "1.0" };
await new Promise(() => {});  // a top-level await that never resolves
export function add(a, b) { return a + b; }
"""


async def test_a_load_that_never_finishes_holds_up_neither_the_others_nor_close(plugin_dir, make_host):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("hang.js", HANG, auto_metadata=False)
    t0 = time.monotonic()
    async with make_host(load="background", limits=WorkerLimits(handshake_timeout=30)) as h:
        assert time.monotonic() - t0 < 10
        assert await h.call("calc", "add", 1, 2) == 3
        with pytest.raises(CallTimeout):
            await h.call("hang", "add", 1, 2, timeout=0.5)
        assert h.plugin("hang").state == "loading"
        t1 = time.monotonic()
    assert time.monotonic() - t1 < 5  # close does not wait out the hung load's 30 s


async def test_a_load_that_never_finishes_ends_in_error_after_the_handshake_timeout(plugin_dir, make_host):
    plugin_dir.add("hang.js", HANG, auto_metadata=False)
    async with make_host(load="background", limits=WorkerLimits(handshake_timeout=1)) as h:
        with anyio.fail_after(15):
            with pytest.raises(HostError):
                await h.call("hang", "add", 1, 2, timeout=10)
        assert h.plugin("hang").state == "error"
        said = h.plugin("hang").error or ""
    # the worker shook hands; its module never finished: "no handshake within 1s" sent the user to
    # the wire, where the cause is the module's own top level
    assert "did not finish loading within 1s" in said and "top level" in said, said


async def test_a_declared_grant_used_at_the_top_level_says_where_the_code_belongs(plugin_dir, make_host,
                                                                                   monkeypatch):
    # helper-80's finding: the metadata is read with no permissions, and Deno's own advice ("run
    # again with the --allow-env flag") sent the author where nobody can go
    monkeypatch.setenv("TOP_KEY", "zzz")
    plugin_dir.add("envy.ts", """
export const metadata = { id: "envy", name: "n", version: "1.0.0", apiVersion: "1.0", permissions: { env: ["TOP_KEY"] } };
const KEY = Deno.env.get("TOP_KEY");
export function g() { return KEY ?? "none"; }
""", auto_metadata=False)
    plugin_dir.add("later.ts", """
export const metadata = { id: "later", name: "n", version: "1.0.0", apiVersion: "1.0", permissions: { env: ["TOP_KEY"] } };
let key: string | undefined;
export function onStart() { key = Deno.env.get("TOP_KEY"); }
export function g() { return key ?? "none"; }
""", auto_metadata=False)
    async with make_host() as h:
        said = h.plugin("envy").error or ""
        assert await h.call("later", "g") == "zzz"  # the advice works
    assert 'top-level code asked for env access to "TOP_KEY"' in said and "onStart(context)" in said, said
    assert "--allow-env" not in said and "envy.ts:3" in said, said


def slow_start(pid: str, ms: int) -> str:
    """A plugin read at once (in the zero-permission worker) whose own workers take ``ms`` to
    load (they hold the env grant it declares): its pool takes that long to start."""
    return f"""
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",
  permissions: {{ env: ["SLOW_GATE"] }} }};
if (Deno.permissions.querySync({{ name: "env", variable: "SLOW_GATE" }}).state === "granted") {{
  console.log("own worker loading");
  await new Promise((r) => setTimeout(r, {ms}));
}}
export function add(a, b) {{ return a + b; }}
"""


async def test_disabling_a_plugin_while_its_pool_starts_in_the_background_keeps_it_disabled(
        plugin_dir, make_host):
    from support.processes import wait_for

    plugin_dir.add("slow.js", slow_start("slow", 1500), auto_metadata=False)
    async with make_host(load="background") as h:
        loader = h._registry.loader
        # read (a few ms), then its pool starts: its first worker takes 1.5 s to load
        await wait_for(lambda: h.plugin("slow").state != "loading", timeout=10)
        assert loader.busy()  # still starting its pool
        await h.disable("slow")
        assert h.plugin("slow").state == "disabled"
        await wait_for(lambda: not loader.busy(), timeout=10)
        assert h.plugin("slow").state == "disabled" and h.plugin("slow").workers == []


HOSTILE = {
    "quits": "Deno.exit(0);",
    "spins": "for (;;) {}",
    "floods": 'for (let i = 0; i < 200000; i++) console.log("x".repeat(100));',
}


async def test_hostile_loads_in_the_background_end_in_error_and_the_others_serve(plugin_dir, make_host):
    plugin_dir.add("calc.js", CALC)
    for pid, top in HOSTILE.items():
        plugin_dir.add(f"{pid}.js", f"""
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0" }};
{top}
export function add(a, b) {{ return a + b; }}
""", auto_metadata=False)
    async with make_host(load="background", limits=WorkerLimits(handshake_timeout=2)) as h:
        assert await h.call("calc", "add", 1, 2) == 3
        for pid in HOSTILE:
            with anyio.fail_after(20):
                try:
                    got = await h.call(pid, "add", 1, 2, timeout=15)
                except HostError:
                    got = None
            # floods may load (its output is capped); quits and spins never do
            assert (pid, got, h.plugin(pid).state) in {
                ("quits", None, "error"), ("spins", None, "error"), ("floods", 3, "running"),
                ("floods", None, "error")}, (pid, got, h.plugin(pid).state, h.plugin(pid).error)
        assert await h.call("calc", "add", 2, 2) == 4


def test_sigterm_while_a_load_hangs_exits_at_once(plugin_dir, state_dir, tmp_path):
    import signal

    from support.processes import deno_children, process_gone
    from support.servers import serve_process

    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("hang.js", HANG, auto_metadata=False)
    (tmp_path / "host.toml").write_text("[limits]\nhandshake_timeout = 60\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state_dir), "--config", "host.toml"]
    with serve_process(tmp_path, *common, ready=False) as srv:
        def hanging() -> dict | None:
            _, body = srv.request("GET", "/healthz", timeout=2)
            plugins = body.get("plugins") or {}
            return body if plugins.get("hang") == "loading" and plugins.get("calc") == "running" else None
        assert srv.poll(hanging, "hang loading, calc running", 20)["ready"] is False
        workers = deno_children(srv.proc.pid)  # calc's worker and the one reading hang
        assert len(workers) >= 2
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 5
        assert all(process_gone(pid) for pid in workers)


async def test_a_plugin_whose_dependency_runs_is_not_held_up_by_an_unrelated_hung_load(plugin_dir, make_host):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("hang.js", HANG, auto_metadata=False)
    plugin_dir.add("top.js", """
export const metadata = { id: "top", name: "top", version: "1.0.0", apiVersion: "1.0",
  dependencies: { calc: "^1.0.0" } };
export function add(a, b) { return a + b; }
""", auto_metadata=False)
    async with make_host(load="background", limits=WorkerLimits(handshake_timeout=30)) as h:
        assert await h.call("calc", "add", 1, 2) == 3  # its dependency runs
        assert await h.call("top", "add", 1, 2, timeout=5) == 3


async def test_a_plugin_removed_while_its_pool_starts_in_the_background_leaves_no_worker(plugin_dir, make_host):
    from support.processes import deno_children, wait_for

    path = plugin_dir.add("slow.js", slow_start("slow", 1500), auto_metadata=False)
    async with make_host(load="background", reload={"enabled": False}) as h:
        loader = h._registry.loader
        seen: list[str] = []
        h.add_log_listener(lambda plugin, worker, msg: seen.append(msg.message))
        await wait_for(lambda: "own worker loading" in seen, timeout=10)  # its module is read
        assert loader.busy()  # its pool is starting
        path.unlink()
        await h.rescan()  # "removed from disk"
        assert "slow" not in h.states()
        await wait_for(lambda: not loader.busy(), timeout=10)
        await wait_for(lambda: not deno_children(), timeout=5)  # the pool that started meanwhile was stopped


async def test_closing_while_a_dependency_loads_starts_nothing_after(plugin_dir, make_host):
    from support.processes import deno_children, wait_for

    plugin_dir.add("base.js", """
export const metadata = { id: "base", name: "base", version: "1.0.0", apiVersion: "1.0" };
await new Promise((r) => setTimeout(r, 1500));
export function add(a, b) { return a + b; }
""", auto_metadata=False)
    plugin_dir.add("top.js", """
export const metadata = { id: "top", name: "top", version: "1.0.0", apiVersion: "1.0",
  dependencies: { base: "^1.0.0" } };
export function add(a, b) { return a + b; }
""", auto_metadata=False)
    async with make_host(load="background") as h:
        await wait_for(lambda: h.plugin("top").state != "loading", timeout=10)  # read, deferred
        assert h.plugin("base").state == "loading"
    assert h.states().get("top") != "running"
    await wait_for(lambda: not deno_children(), timeout=5)


async def test_a_symlink_loop_in_the_plugins_directory_is_left_out_and_the_others_load(
        plugin_dir, make_host, caplog):
    """``loop.js -> loop2.js -> loop.js``: before, the host's start failed with a traceback
    (``Path.resolve``'s RuntimeError) and a running host's rescans stopped finding changes."""
    plugin_dir.add("calc.js", CALC)
    (plugin_dir.root / "loop.js").symlink_to(plugin_dir.root / "loop2.js")
    (plugin_dir.root / "loop2.js").symlink_to(plugin_dir.root / "loop.js")
    async with make_host() as h:
        assert await h.call("calc", "add", 1, 2) == 3
        plugin_dir.add("more.js", CALC.replace('id: "calc"', 'id: "more"').replace('name: "Calc"', 'name: "More"'))
        await h.rescan()
        await h.rescan()
        assert await h.call("more", "add", 2, 2) == 4
    said = [r.getMessage() for r in caplog.records if "loop" in r.getMessage() and "cannot be read" in r.getMessage()]
    assert len(said) == 2, said  # once for each entry, not at every rescan


async def test_a_plugin_file_that_is_not_a_regular_file_is_named_once_not_left_out_silently(
        plugin_dir, make_host, caplog):
    """A plugin dropped in as a FIFO, a link to nothing, or a directory whose mod.ts is one was
    left out without a word: the operator saw no plugin and no reason (helper-71's finding)."""
    import os

    plugin_dir.add("calc.js", CALC)
    os.mkfifo(plugin_dir.root / "piped.ts")
    (plugin_dir.root / "dangling.js").symlink_to(plugin_dir.root / "nowhere.js")
    (plugin_dir.root / "dirplug").mkdir()
    os.mkfifo(plugin_dir.root / "dirplug" / "mod.ts")
    async with make_host() as h:
        assert await h.call("calc", "add", 1, 2) == 3
        await h.rescan()
        await h.rescan()
        assert [i.id for i in h.plugins()] == ["calc"]
    said = [r.getMessage() for r in caplog.records if "left out of the plugins" in r.getMessage()]
    assert len(said) == 3, said  # once each, not at every rescan
    assert all("not a regular file" in m for m in said), said
    assert {m.split(":")[0].rsplit("/", 1)[-1] for m in said} == {"piped.ts", "dangling.js", "dirplug"}


async def test_a_plugins_directory_gone_as_a_whole_keeps_its_plugins_serving(plugin_dir, make_host, caplog):
    """A deploy that swaps the directory by renames, a lost mount: before, every plugin in it
    stopped ("removed from disk") at the next rescan. A plugin removed from a directory that is
    there still stops."""
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("more.js", CALC.replace('id: "calc"', 'id: "more"'))
    async with make_host() as h:
        away = plugin_dir.root.with_name(plugin_dir.root.name + ".old")
        plugin_dir.root.rename(away)
        await h.rescan()
        await h.rescan()
        assert await h.call("calc", "add", 1, 2) == 3 and h.plugin("more").state == "running"
        away.rename(plugin_dir.root)
        (plugin_dir.root / "more.js").unlink()
        await h.rescan()
        assert [i.id for i in h.plugins()] == ["calc"] and await h.call("calc", "add", 2, 2) == 4
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1 and r"plugins_dir" in gone[0].getMessage()


def test_serve_refuses_a_plugins_directory_that_is_a_file(tmp_path, state_dir):
    """``list`` did, ``serve`` started with no plugin and said nothing."""
    from support.servers import run_cli

    (tmp_path / "plugins").write_text("not a directory")
    out = run_cli("serve", "--plugins", str(tmp_path / "plugins"), "--state-dir", str(state_dir), "--port", "0",
                  cwd=tmp_path)
    assert out.returncode == 2 and "is not a directory" in out.stderr and "plugins_dir" in out.stderr, out


LOST_MOUNT = """
import subprocess, sys, anyio
from pathlib import Path
from host import HostConfig, PluginHost

plugins, state, source = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(plugins)], check=True)
(plugins / "calc.js").write_text(source)

async def main():
    async with PluginHost(HostConfig(plugins_dir=str(plugins), state_dir=state)) as h:
        assert await h.call("calc", "add", 1, 2) == 3
        subprocess.run(["umount", "-l", str(plugins)], check=True)  # what is left: an empty directory
        await h.rescan()
        await h.rescan()
        print("after", [i.id for i in h.plugins()], await h.call("calc", "add", 2, 2))

anyio.run(main)
"""


def test_a_lost_mount_of_the_plugins_directory_keeps_its_plugins_serving(tmp_path, state_dir):
    """A lost mount leaves an empty directory of another file system in its place: before,
    every plugin was unloaded (calls 404) with no warning."""
    from support.full_disk import _unshare_works

    if not _unshare_works():
        pytest.skip("no mount namespaces here (unshare -rm failed)")
    (tmp_path / "plugins").mkdir()
    script = tmp_path / "lost_mount.py"
    script.write_text(LOST_MOUNT)
    out = subprocess.run(["unshare", "-rm", sys.executable, str(script), str(tmp_path / "plugins"), str(state_dir),
                          CALC], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "after ['calc'] 4" in out.stdout, out.stdout
    assert out.stderr.count("is gone (or its file system unmounted)") == 1, out.stderr[-2000:]


async def test_a_plugin_exporting_more_functions_than_the_cap_is_refused_at_load_naming_both(plugin_dir, make_host):
    # Before: the export count was bounded only by the frame size: 100,000 exports cost the
    # host 48 MB and 7 s to load, and every call, list and info carried them.
    MAX_EXPORTS = 1000  # host.protocol.MAX_EXPORTS, as the README states it

    def module(pid: str, count: int) -> str:
        fns = "".join(f"export function f{i}() {{ return {i}; }}\n" for i in range(count))
        return f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0" }};\n{fns}'

    plugin_dir.add("many.js", module("many", MAX_EXPORTS + 1))
    plugin_dir.add("enough.js", module("enough", MAX_EXPORTS))
    async with make_host() as h:
        info = h.plugin("many")
        assert info.state == "error", info
        assert f"exports {MAX_EXPORTS + 1} functions, more than the {MAX_EXPORTS}" in (info.error or ""), info.error
        assert h.plugin("enough").state == "running" and len(h.plugin("enough").exports) == MAX_EXPORTS
        assert await h.call("enough", f"f{MAX_EXPORTS - 1}") == MAX_EXPORTS - 1


async def test_a_plugin_exporting_a_function_with_an_overlong_name_is_refused_at_load(plugin_dir, make_host):
    """`export { f as "<7,000 characters>" }` (an ES2022 string export name), 1,000 times: it
    loaded, and every GET /api/plugins (the dashboard's, each 2 s) was 7 MB (helper-88's
    finding). A function's name is at most 256 characters (host.protocol.MAX_EXPORT_NAME)."""
    head = 'export const metadata = { id: "NAME", name: "NAME", version: "1.0.0", apiVersion: "1.0" };\n'
    plugin_dir.add("names.js", head.replace("NAME", "names") + 'function f() { return 1; }\nexport { f as "'
                   + "n" * 7000 + '" };\nexport const data = { ["' + "d" * 7000 + '"]: 1 };\n')
    plugin_dir.add("edge.js", head.replace("NAME", "edge") + 'function f() { return 2; }\nexport { f as "'
                   + "e" * 256 + '" };\n')
    async with make_host() as h:
        info = h.plugin("names")
        assert info.state == "error", info
        assert 'exports a function named "nnnnnnnnnn' in (info.error or "") and "7000 characters long: at most 256" \
            in (info.error or ""), info.error
        assert h.plugin("edge").state == "running"
        assert await h.call("edge", "e" * 256) == 2


async def test_a_manifest_listing_thousands_of_capabilities_is_refused_at_load(plugin_dir, make_host):
    """helper-110: 5,000 capabilities (each a valid event pattern, no grant asked) loaded at once
    the first time; at every later start or reload each was compared with every approved one on
    the event loop: 29 s a restart at 5,000, not up after 100 s at 10,000, and a reload of 4,000
    blocked the loop 19.5 s (workers killed for silence). The lists of the metadata are bounded."""
    plugin_dir.add("caps.js", 'export const metadata = { id: "caps", name: "caps", version: "1.0.0", '
                   'apiVersion: "1.0", capabilities: Array.from({ length: 5000 }, (_, i) => `evt.*.c${i}`) };\n'
                   "export function onEvent() { return 1; }\n")
    plugin_dir.add("few.js", 'export const metadata = { id: "few", name: "few", version: "1.0.0", apiVersion: "1.0", '
                   'capabilities: Array.from({ length: 100 }, (_, i) => `evt.c${i}`), configSchema: { '
                   'mode: { type: "string", enum: Array.from({ length: 1001 }, (_, i) => `m${i}`) } } };\n'
                   "export function onEvent() { return 1; }\n")
    plugin_dir.add("fat.js", 'export const metadata = { id: "fat", name: "fat", version: "1.0.0", apiVersion: "1.0", '
                   'configSchema: { list: { type: "array", default: Array.from({ length: 100000 }, (_, i) => i) } } };\n'
                   "export function f() { return 1; }\n")
    with anyio.fail_after(20):
        async with make_host() as h:
            assert "capabilities: 5000 entries, more than 100" in (h.plugin("caps").error or ""), h.plugin("caps")
            assert "configSchema.mode.enum: 1001 values, more than 1000" in (h.plugin("few").error or "")
            assert "configSchema.list.default: more than 64 KiB" in (h.plugin("fat").error or ""), h.plugin("fat")


TWO_FACED = """
// the host reads the metadata with no permissions; its serving workers have their grants
const reading = Deno.permissions.querySync({ name: "net", host: "127.0.0.1:9" }).state !== "granted";
const base = { id: "twofaced", name: "twofaced", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["127.0.0.1:9"] }, functions: { add: { params: ["a", "b"] } } };
// what the host read (no permissions) is small; what its serving workers say is not
export const metadata = reading ? base : { ...base, functions: { add: { params: ["a", "b", "c"] } },
  blob: Array.from({ length: 400000 }, (_, i) => "x" + i) };
export function add(a, b) { return a + b; }
export function lots(...xs) { return xs.filter((x) => typeof x === "number").length; }
"""


async def test_what_a_serving_worker_says_of_its_metadata_is_neither_trusted_nor_kept(plugin_dir, make_host):
    """helper-110: a module can tell the host's no-permission read of its metadata from its
    serving workers and give those another one. The host kept each serving worker's as sent
    (1.6 million strings held ~115 MiB of host memory a worker, for its life) and judged calls by
    its functions. Calls are judged by the metadata the host validated, and a signature's
    parameter list past 256 names is not kept (its length judges)."""
    plugin_dir.add("twofaced.js", TWO_FACED)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("twofaced", "add", 1, 2) == 3
        with pytest.raises(InvalidArguments, match=r"takes 2 arguments \(a, b\), 3 given"):
            await h.call("twofaced", "add", 1, 2, 3)  # the forged params would have let it through
        [worker] = h._registry.record("twofaced").pool.workers
        assert worker.metadata == {"functions": {"add": {"params": ["a", "b"]}}}
        assert await h.call("twofaced", "lots", *range(300)) == 300


@pytest.mark.parametrize("load", ["background", "wait"])
async def test_a_link_to_proc_or_a_link_loop_in_a_plugin_stays_with_that_plugin(plugin_dir, make_host, load):
    """helper-104: a link to /proc/self/pagemap in a plugin's directory (a regular file of size 0
    that reads 256 GiB) held the host's start, on its event loop, for minutes, and its stop; a link
    loop failed every later rescan, so no other plugin was reloaded or removed. The links are
    never followed out of the plugin's directory: that plugin is refused, the others serve."""
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n")
    plugin_dir.add("lp/mod.js", "export function f() { return 1; }\n")
    (plugin_dir.root / "lp" / "pagemap.bin").symlink_to("/proc/self/pagemap")
    with anyio.fail_after(30):
        async with make_host(load=load) as h:
            await h.settled(20)
            assert await h.call("calc", "add", 1, 2) == 3
            assert h.plugin("lp").state == "error" and "leads outside the plugin directory" in h.plugin("lp").error
            (plugin_dir.root / "lp" / "loop").symlink_to("loop")  # a loop, added while it serves
            plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n"
                                      "export function mul(a, b) { return a * b; }\n")
            await h.rescan()  # before: OSError Too many levels of symbolic links, for every plugin
            assert await h.call("calc", "mul", 2, 3) == 6


def test_a_missing_plugins_directory_is_warned_of_once(tmp_path, caplog):
    """helper-100: serve said it twice at start (the CLI's check, then the host's)."""
    import logging

    from host.plugins.discovery import check_plugin_dirs

    with caplog.at_level(logging.WARNING, "host"):
        check_plugin_dirs([tmp_path / "nope"])
        check_plugin_dirs([tmp_path / "nope"])
    assert [r.getMessage() for r in caplog.records].count(
        f"plugins directory {tmp_path / 'nope'} does not exist: no plugin is served from it until it is made "
        "(plugins_dir, or --plugins)") == 1


async def test_a_file_whose_name_is_not_utf8_is_left_out_and_every_listing_answers(plugin_dir, make_host, caplog):
    """helper-111: a copy of a plugin named b"x\\xff.js" in the plugins directory made /healthz,
    /metrics and /api/plugins answer 500 (its id and path could not be encoded) and status and
    list fail. It is left out with a warning naming it; a plugins directory named so is refused."""
    import msgspec

    from host import HostConfig, InvalidConfig

    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n")
    bad = plugin_dir.root / os.fsdecode(b"x\xff.js")
    bad.write_text("export function add(a, b) { return a + b; }\n")
    async with make_host() as h:
        assert [p.id for p in h.plugins()] == ["calc"] and await h.call("calc", "add", 1, 2) == 3
        msgspec.json.encode(h.plugins())
    assert any("x\\xff.js: left out of the plugins, its name is not UTF-8 text" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(InvalidConfig, match=r"plugins_dir: .* holds bytes that are not UTF-8 text"):
        HostConfig(plugins_dir=str(plugin_dir.root / os.fsdecode(b"p\xfe")))
    # a link with a good name to a directory named so (helper-116): the same
    elsewhere = plugin_dir.root.parent / os.fsdecode(b"rel\xff")
    elsewhere.mkdir()
    (elsewhere / "mod.js").write_text("export function add(a, b) { return a + b; }\n")
    bad.unlink()
    (plugin_dir.root / "okname").symlink_to(elsewhere)
    async with make_host() as h:
        assert [p.id for p in h.plugins()] == ["calc"]
        msgspec.json.encode(h.plugins())


async def test_a_module_named_as_no_plugin_is_warned_of_not_passed_over(plugin_dir, make_host, caplog):
    """helper-113: a plugin written as weather.mts or widget.tsx was never listed, with no word."""
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n")
    (plugin_dir.root / "weather.mts").write_text("export function f() { return 1; }\n")
    async with make_host() as h:
        assert [p.id for p in h.plugins()] == ["calc"]
    said = [r.getMessage() for r in caplog.records if "weather.mts" in r.getMessage()]
    assert said and "a plugin module is named .ts, .js, .mjs" in said[0], said
