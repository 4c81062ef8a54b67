"""A gallery of hostile plugins, one attack each. Every attack must end in a typed error (the
exact class and, for a plugin's error, its name or a crash's reason) and leave the host serving:
the attacker's own worker when a refusal cost nothing, a fresh worker when the attack killed
it, and a bystander plugin in the same host all along."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from support.hostile import on_demand_runtime, runtime_for
from support.processes import gone, live_processes, process_gone, wait_for

from host import (
    BreakerConfig,
    CallTimeout,
    PermissionDenied,
    PluginError,
    PluginHost,
    PolicyConfig,
    PoolConfig,
    ProtocolError,
    WorkerCrashed,
    WorkerLimits,
)
from host import protocol as p
from host.runtime import find_runtime_entry
from host.worker import Worker, WorkerSpec

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30), pytest.mark.one_backend]

ONE = PoolConfig(min_workers=1, max_workers=1)

# ---------------------------------------------------------------------------- the attackers

# Appended to every attacker: the test shows with it that the same worker (or its successor)
# still answers after the attack.
ALIVE = "export function alive() { return Deno.pid; }\n"

# A plugin that attacks nothing, loaded beside each attacker.
BYSTANDER = """
export function add(a, b) { return a + b; }
export function pid() { return Deno.pid; }
"""

READ_PASSWD = """
export async function readTextFile() { return await Deno.readTextFile("/etc/passwd"); }
export async function open() { (await Deno.open("/etc/passwd")).close(); }
export async function fetchFileUrl() { return await (await fetch("file:///etc/passwd")).text(); }
export async function nodeFs() { const fs = await import("node:fs"); return fs.readFileSync("/etc/passwd", "utf8"); }
"""

WRITE_FILE = """
export async function writeTextFile(path) { await Deno.writeTextFile(path, "pwned"); }
export async function openCreate(path) { (await Deno.open(path, { write: true, create: true })).close(); }
export async function mkdir(path) { await Deno.mkdir(path); }
export async function nodeFs(path) { const fs = await import("node:fs"); fs.writeFileSync(path, "pwned"); }
export async function remove(path) { await Deno.remove(path); }
"""

READ_ENV = """
export function get() { return Deno.env.get("HOME") ?? null; }
export function toObject() { return Deno.env.toObject(); }
export async function nodeProcess() { const { default: process } = await import("node:process"); return process.env.HOME ?? null; }
"""

RUN_SHELL = """
export async function command() { return (await new Deno.Command("sh", { args: ["-c", "id"] }).output()).code; }
export async function absolutePath() { return (await new Deno.Command("/bin/sh", { args: ["-c", "id"] }).output()).code; }
export async function nodeChildProcess() { const cp = await import("node:child_process"); return String(cp.execSync("id")); }
"""

DLOPEN_LIBC = """
export function dlopen() { Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }); return "opened"; }
"""

OPEN_KV = """
export async function openKv() { const kv = await Deno.openKv(); return typeof kv; }
"""

# Two plugins of one host, each with its own origin: what A stores, B must not see.
STORAGE = """
export function setItem(key, value) { localStorage.setItem(key, value); return localStorage.getItem(key); }
export function getItem(key) { return localStorage.getItem(key); }
export async function cachePut(url, body) {
  const cache = await caches.open("gallery");
  await cache.put(url, new Response(body));
  return await (await cache.match(url)).text();
}
export async function cacheGet(url) {
  const hit = await (await caches.open("gallery")).match(url);
  return hit ? await hit.text() : null;
}
"""

FETCH = """
export async function get(url) { const r = await fetch(url); return [r.status, await r.text()]; }
"""

REMOTE_IMPORT = """
export async function load(specifier) { await import(specifier); return "loaded"; }
// The path is built at run time, so no static analysis sees it coming.
export async function loadOutside(dir) { await import(["file://" + dir, "outside", "secret.js"].join("/")); return "loaded"; }
"""

HEAP_BOMB = """
export function bomb() { const keep = []; for (;;) keep.push({ n: Math.random(), list: [1, 2, 3] }); }
"""

ARRAY_BUFFER_BOMB = """
export function bomb() { const keep = []; for (;;) keep.push(new Uint8Array(16 * 1024 * 1024).fill(1)); }
export async function bombYielding() {
  const keep = [];
  for (;;) {
    keep.push(new Uint8Array(16 * 1024 * 1024).fill(1));
    console.log(`allocated ${keep.length * 16} MiB`);
    await new Promise((r) => setTimeout(r, 0));
  }
}
"""

SIGTERM_IMMUNE_SPIN = """
export function spin() {
  Deno.addSignalListener("SIGTERM", () => {});
  Deno.addSignalListener("SIGINT", () => {});
  while (true) {}
}
"""

LOG_FLOOD = """
export function flood(n, size) {
  const line = "x".repeat(size);
  for (let i = 0; i < n; i++) console.log(i, line);
  return "done";
}
export function floodLater(n) {  // after the call has returned: no call to charge it to
  setTimeout(() => { for (let i = 0; i < n; i++) console.log("later", i); }, 0);
  return "scheduled";
}
"""


def declaring(plugin_id: str, permissions: str, source: str) -> str:
    """``source`` with a metadata export that declares ``permissions`` (a JS object literal)."""
    return (f'export const metadata = {{ id: "{plugin_id}", name: "{plugin_id}", version: "1.0.0", '
            f'apiVersion: "1.0", permissions: {permissions} }};\n{source}')


def install(plugin_dir, **modules: str) -> None:
    """Write each attacker (id = keyword) with ALIVE, and the bystander."""
    for pid, source in modules.items():
        plugin_dir.add(f"{pid}.js", source + ALIVE)
    plugin_dir.add("bystander.js", BYSTANDER)


def rlimit_data_mib(pid: int) -> int:
    """The soft RLIMIT_DATA of a process in MiB, as /proc shows it (the host sets it with
    prlimit after the spawn)."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max data size"))
    soft = line.split()[3]
    assert soft != "unlimited", f"worker {pid} runs without RLIMIT_DATA"
    return int(soft) // (1024 * 1024)


async def assert_unharmed(h: PluginHost, plugin: str, pid: int) -> None:
    """The refusal cost nothing: the same worker answers, the plugin is running with no crash,
    and the bystander answers too."""
    assert await h.call(plugin, "alive") == pid
    info = h.plugin(plugin)
    assert info.state == "running" and info.crashes == 0, (info.state, info.error)
    assert [w.pid for w in info.workers] == [pid]
    assert await h.call("bystander", "add", 2, 3) == 5
    assert h.plugin("bystander").state == "running"


async def assert_refused(h: PluginHost, plugin: str, fn: str, *args: object, named: str) -> PermissionDenied:
    """``plugin.fn(*args)`` is refused by the sandbox (a PermissionDenied naming ``named``) and
    the refusal costs nothing (assert_unharmed). Returns the error."""
    pid = await h.call(plugin, "alive")
    with pytest.raises(PermissionDenied) as e:
        await h.call(plugin, fn, *args)
    assert e.value.name == "NotCapable"
    assert named in e.value.message
    await assert_unharmed(h, plugin, pid)
    return e.value


async def assert_replaced(h: PluginHost, plugin: str, old_pid: int, bystander_pid: int) -> int:
    """The attacker's worker is gone and a new one serves; the bystander's worker was never
    touched. Returns the new worker's pid."""
    await wait_for(lambda: process_gone(old_pid), timeout=2)
    new_pid = await h.call(plugin, "alive")
    assert new_pid != old_pid
    info = h.plugin(plugin)
    assert info.state == "running", (info.state, info.error)
    assert info.crashes + info.timeouts == 1
    assert await h.call("bystander", "pid") == bystander_pid
    assert h.plugin("bystander").crashes == 0
    return new_pid


# ---------------------------------------------------------------------------- 1-5: file, env, run, ffi


@pytest.mark.parametrize("fn", ["readTextFile", "open", "fetchFileUrl", "nodeFs"])
async def test_reading_etc_passwd_is_permission_denied(plugin_dir, make_host, fn):
    install(plugin_dir, read_passwd=READ_PASSWD)
    async with make_host(pool=ONE) as h:
        err = await assert_refused(h, "read_passwd", fn, named='Requires read access to "/etc/passwd"')
        assert "root:" not in str(err)


@pytest.mark.parametrize("fn", ["writeTextFile", "openCreate", "mkdir", "nodeFs", "remove"])
async def test_writing_a_file_is_permission_denied_and_nothing_changes(plugin_dir, make_host, tmp_path, fn):
    install(plugin_dir, write_file=WRITE_FILE)
    target = tmp_path / "target"
    if fn == "remove":
        target.write_text("original")
    async with make_host(pool=ONE) as h:
        await assert_refused(h, "write_file", fn, str(target), named=f'Requires write access to "{target}"')
    if fn == "remove":
        assert target.read_text() == "original"
    else:
        assert not target.exists()


@pytest.mark.parametrize(("fn", "named"), [
    ("get", 'Requires env access to "HOME"'),
    ("toObject", "Requires env access, run again with the --allow-env flag"),
    ("nodeProcess", 'Requires env access to "HOME"'),
])
async def test_reading_the_environment_is_permission_denied(plugin_dir, make_host, fn, named):
    install(plugin_dir, read_env=READ_ENV)
    async with make_host(pool=ONE) as h:
        err = await assert_refused(h, "read_env", fn, named=named)
        assert os.environ.get("HOME", "/root") not in err.message


@pytest.mark.parametrize(("fn", "named"), [
    ("command", 'Requires run access to "sh"'),
    ("absolutePath", 'Requires run access to "/bin/sh"'),
    # node:child_process reads the environment before it spawns: that is the first refusal.
    ("nodeChildProcess", "Requires env access"),
])
async def test_starting_a_shell_is_permission_denied(plugin_dir, make_host, fn, named):
    install(plugin_dir, run_shell=RUN_SHELL)
    async with make_host(pool=ONE) as h:
        await assert_refused(h, "run_shell", fn, named=named)


async def test_dlopen_of_libc_is_permission_denied(plugin_dir, make_host):
    install(plugin_dir, dlopen_libc=DLOPEN_LIBC)
    async with make_host(pool=ONE) as h:
        await assert_refused(h, "dlopen_libc", "dlopen", named='Requires ffi access to "libc.so.6"')


# ---------------------------------------------------------------------------- 6: storage


async def test_open_kv_does_not_exist_in_a_worker(plugin_dir, make_host):
    install(plugin_dir, open_kv=OPEN_KV)
    async with make_host(pool=ONE) as h:
        pid = await h.call("open_kv", "alive")
        with pytest.raises(PluginError) as e:
            await h.call("open_kv", "openKv")
        assert type(e.value) is PluginError and e.value.name == "TypeError"
        assert e.value.message == "Deno.openKv is not a function"
        await assert_unharmed(h, "open_kv", pid)


async def test_local_storage_and_cache_api_do_not_leak_between_plugins(plugin_dir, make_host):
    # Both plugins run the same worker_runtime/worker.ts, the key Deno would share storage by
    # (Deno 2.9 keys it by --location, else by the main module): only the host's per-plugin --location keeps them apart.
    install(plugin_dir, storage_a=STORAGE, storage_b=STORAGE)
    secret = f"secret-{os.getpid()}-{time.monotonic_ns()}"
    url = "https://gallery.invalid/secret"
    async with make_host(pool=ONE) as h:
        # A sees what it stored (so a null from B below means something)...
        assert await h.call("storage_a", "setItem", "gallery-key", secret) == secret
        assert await h.call("storage_a", "cachePut", url, secret) == secret
        assert await h.call("storage_a", "getItem", "gallery-key") == secret
        # ...and B, in the same host, sees none of it.
        assert await h.call("storage_b", "getItem", "gallery-key") is None
        assert await h.call("storage_b", "cacheGet", url) is None
        assert await h.call("storage_a", "cacheGet", url) == secret
        for plugin in ("storage_a", "storage_b"):
            await assert_unharmed(h, plugin, h.plugin(plugin).workers[0].pid)


async def test_an_id_made_to_collide_with_a_plugins_origin_does_not_share_its_storage(plugin_dir, make_host):
    """The per-plugin --location was a slug (lower case, runs of other characters folded to "-",
    trimmed) and 32 bits of the id's sha256: "vault..-._...._-.__-.--__." (a valid id, found by
    brute force in 12 minutes on one core) got vault's origin and read its localStorage
    (helper-76's finding). 128 bits of the exact id's hash now."""
    twin = "vault..-._...._-.__-.--__."
    plugin_dir.add("vault.js", declaring("vault", "{}", STORAGE))
    plugin_dir.add(f"{twin}.js", declaring(twin, "{}", STORAGE))
    async with make_host(pool=ONE) as h:
        assert await h.call("vault", "setItem", "token", "VAULT-SESSION-TOKEN") == "VAULT-SESSION-TOKEN"
        assert await h.call(twin, "getItem", "token") is None  # before: "VAULT-SESSION-TOKEN"


async def test_what_a_plugin_kept_under_its_origin_of_before_is_still_its_own(plugin_dir, make_host, state_dir):
    """The origin changed (32 -> 128 bits of the id's hash): localStorage and Cache API files
    kept under the old one move to the new one at the plugin's next start."""
    from host.runtime import web_storage_dirs

    # an id no other test uses: these files stay in the session's DENO_DIR (a "keeper" of another
    # test with a 3,000-byte storage cap found this one's Cache API files and was killed for them)
    plugin_dir.add("mover.js", declaring("mover", "{}", STORAGE))
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        assert await h.call("mover", "setItem", "k", "kept") == "kept"
        assert await h.call("mover", "cachePut", "https://x.invalid/1", "cached") == "cached"
    old = hashlib.sha256(f"http://mover-{hashlib.sha256(b'mover').hexdigest()[:8]}.plugin.invalid".encode()
                         ).hexdigest()
    for now, before in zip(web_storage_dirs(state_dir / "deno", "mover"),
                           (state_dir / "deno" / "location_data" / old,
                            state_dir / "deno" / "location_data" / "web_cache" / old), strict=True):
        now.rename(before)  # as a host of before left them
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        assert await h.call("mover", "getItem", "k") == "kept"
        assert await h.call("mover", "cacheGet", "https://x.invalid/1") == "cached"


# ---------------------------------------------------------------------------- 7-9: network


@pytest.mark.parametrize("url", [
    "http://other.example.org/",
    "https://other.example.org/",
    "http://api.example.com@other.example.org/",    # userinfo, not the host
    "http://api.example.com.other.example.org/",    # a suffix, not the host
    "http://other.example.org/?api.example.com",
])
async def test_fetch_to_an_undeclared_host_is_permission_denied(plugin_dir, make_host, url):
    # Refused on the allow list, before any name resolution: no DNS is needed (or reachable).
    install(plugin_dir, fetch_undeclared=declaring("fetch_undeclared", '{ net: ["api.example.com"] }', FETCH))
    port = 443 if url.startswith("https") else 80
    host = urllib.parse.urlsplit(url).hostname
    async with make_host(pool=ONE) as h:
        await assert_refused(h, "fetch_undeclared", "get", url, named=f'Requires net access to "{host}:{port}"')


# Runs inside a private mount namespace where /etc/hosts maps the names below to internal
# addresses; prints one JSON line per fetch, typed as the host raised it.
NAMESPACE_DRIVER = """
import json, sys
import anyio
from host import HostConfig, HostError, PluginHost, PoolConfig

async def main() -> None:
    plugins, state, *urls = sys.argv[1:]
    config = HostConfig(plugins_dir=plugins, state_dir=state, pool=PoolConfig(min_workers=1, max_workers=1))
    async with PluginHost(config) as h:
        pid = await h.call("fetch_rebound", "alive")
        print(json.dumps({"pid": pid}), flush=True)
        for url in urls:
            try:
                out = {"url": url, "value": await h.call("fetch_rebound", "get", url, timeout=5)}
            except HostError as exc:
                out = {"url": url, "type": type(exc).__name__, "name": getattr(exc, "name", None),
                       "message": exc.message}
            print(json.dumps(out), flush=True)
        print(json.dumps({"pid_after": await h.call("fetch_rebound", "alive"),
                          "state": h.plugin("fetch_rebound").state}), flush=True)

anyio.run(main)
"""


def deno_processes_mentioning(text: str) -> list[int]:
    """Live deno processes (anywhere on the machine) whose command line contains ``text``."""
    return live_processes(lambda argv: bool(argv) and os.path.basename(argv[0]) == b"deno"
                          and text.encode() in b" ".join(argv))


@pytest.mark.timeout(90)
def test_allowed_names_that_resolve_to_internal_addresses_are_refused(plugin_dir, local_server, tmp_path):
    # DNS rebinding without a DNS server: a host process in its own mount namespace, whose
    # /etc/hosts points allowed names at loopback, 0.0.0.0 and the cloud metadata address.
    # The plugin's net grant names them (no allowPrivateNetwork), so only the deny list the
    # host adds, checked by Deno against the resolved address, stands in the way.
    port = local_server.port
    plugin_dir.add("fetch_rebound.js", declaring(
        "fetch_rebound", f'{{ net: ["loop.test:{port}", "zero.test:{port}", "meta.test"] }}', FETCH + ALIVE))
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 loop.test\n0.0.0.0 zero.test\n169.254.169.254 meta.test\n")
    driver = tmp_path / "driver.py"
    driver.write_text(NAMESPACE_DRIVER)
    urls = {f"http://loop.test:{port}/": f"127.0.0.1:{port}", f"http://zero.test:{port}/": f"0.0.0.0:{port}",
            "http://meta.test/latest/meta-data/": "169.254.169.254:80"}
    unshare = "/usr/bin/unshare"
    assert os.access(unshare, os.X_OK), "this test needs util-linux `unshare` (and root) for a private /etc/hosts"
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    proc = subprocess.run(
        [unshare, "--mount", "sh", "-c", script, "sh", str(hosts), sys.executable, str(driver),
         str(plugin_dir.root), str(tmp_path / "state"), *urls],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    first, *results, last = lines
    assert [r["url"] for r in results] == list(urls)
    for r in results:
        assert (r.get("type"), r.get("name")) == ("PermissionDenied", "NotCapable"), r
        # the name was allowed and resolved; the resolved address was refused
        assert r["url"] in r["message"] and f'Requires net access to "{urls[r["url"]]}"' in r["message"], r
    assert last == {"pid_after": first["pid"], "state": "running"}
    assert local_server.connections == 0 and local_server.requests == []
    assert process_gone(first["pid"])
    assert deno_processes_mentioning(str(tmp_path)) == []


class Redirector:
    """An HTTP server on 127.0.0.1 that answers every GET with a 302 to the URL in its query
    string (``/?to=URL``), and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                to = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["to"][0]
                self.send_response(302)
                self.send_header("Location", to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def redirector() -> Iterator[Redirector]:
    r = Redirector()
    thread = threading.Thread(target=r.server.serve_forever, args=(0.05,), name="redirector", daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        thread.join(5)


@pytest.mark.parametrize(("target", "refused"), [
    ("http://127.0.0.1:{other}/internal", "127.0.0.1:{other}"),
    ("http://localhost:{other}/internal", "localhost:{other}"),  # the allowed name, another port
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
])
async def test_redirect_to_an_internal_address_is_permission_denied(
    plugin_dir, make_host, redirector, local_server, target, refused
):
    # The plugin may reach the redirector (a local fake of an allowed API, hence the operator's
    # allow_private_network), whose 302 points at the internal server: Deno checks each hop.
    other = local_server.port
    install(plugin_dir, fetch_redirected=declaring(
        "fetch_redirected", f'{{ net: ["localhost:{redirector.port}"] }}', FETCH))
    target = target.format(other=other)
    url = f"http://localhost:{redirector.port}/?to={urllib.parse.quote(target, safe='')}"
    async with make_host(pool=ONE, plugins={"fetch_redirected": {"allow_private_network": True}}) as h:
        await assert_refused(h, "fetch_redirected", "get", url,
                             named=f'Requires net access to "{refused.format(other=other)}"')
    assert len(redirector.requests) == 1  # the first hop happened...
    assert local_server.connections == 0 and local_server.requests == []  # ...the second did not


# ---------------------------------------------------------------------------- 10: imports


@pytest.mark.parametrize(("specifier", "named"), [
    ("https://deno.land/std/x.ts", 'A remote specifier was requested: "https://deno.land/std/x.ts", '
                                   "but --no-remote is specified"),
    ("npm:left-pad", "npm specifiers were requested; but --no-npm is specified"),
    ("jsr:@std/path", "but --no-remote is specified"),
])
async def test_remote_npm_and_jsr_imports_are_refused_without_a_download(plugin_dir, make_host, specifier, named):
    install(plugin_dir, remote_import=REMOTE_IMPORT)
    async with make_host(pool=ONE) as h:  # Deno's TypeError, named as the refusal it is
        await assert_refused(h, "remote_import", "load", specifier, named=named)


async def test_import_of_a_file_outside_the_plugin_directory_is_refused(plugin_dir, make_host, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.js").write_text('export const secret = "outside";\n')
    install(plugin_dir, remote_import=REMOTE_IMPORT)
    # Deno reports a refused module read as a TypeError (measured with Deno 2.9); the runtime names it.
    async with make_host(pool=ONE) as h:
        await assert_refused(h, "remote_import", "loadOutside", str(tmp_path),
                             named=f'Requires read access to "{outside / "secret.js"}"')


# ---------------------------------------------------------------------------- 11-14: resources


async def test_heap_bomb_crashes_its_worker_with_reason_memory_and_a_new_one_serves(plugin_dir, make_host):
    install(plugin_dir, heap_bomb=HEAP_BOMB)
    async with make_host(pool=ONE, limits=WorkerLimits(heap_mb=64)) as h:
        pid = await h.call("heap_bomb", "alive")
        bystander = await h.call("bystander", "pid")
        with pytest.raises(WorkerCrashed) as e:
            await h.call("heap_bomb", "bomb", timeout=20)
        assert e.value.reason == "memory" and e.value.signal == signal.SIGTRAP
        assert f"(pid {pid}) ran out of memory" in e.value.message
        assert "Fatal JavaScript out of memory" in e.value.stderr_tail
        await assert_replaced(h, "heap_bomb", pid, bystander)


async def test_array_buffer_bomb_in_one_go_is_stopped_by_the_data_limit(plugin_dir, make_host):
    # ArrayBuffers live outside the V8 heap, so heap_mb does not bound them (measured with Deno 2.9);
    # RLIMIT_DATA does. A loop that never yields, on a fresh worker, ends in one of two ways:
    # V8 itself cannot get memory any more (a fatal out-of-memory: the worker is replaced), or
    # the allocation of a backing store fails (a RangeError: the worker lives on, unless V8
    # runs out before the buffers are collected: then it is replaced after all). Which one
    # depends on the limit and on timing: under an RLIMIT_DATA of exactly 1024 MiB, measured
    # alone, always the first, on a loaded machine often the second.
    install(plugin_dir, array_buffer_bomb=ARRAY_BUFFER_BOMB)
    async with make_host(pool=ONE, limits=WorkerLimits(data_limit_mb=1024)) as h:
        pid = await h.call("array_buffer_bomb", "alive")
        bystander = await h.call("bystander", "pid")
        assert rlimit_data_mib(pid) >= 1024
        with pytest.raises((WorkerCrashed, PluginError)) as e:
            await h.call("array_buffer_bomb", "bomb", timeout=20)
        if isinstance(e.value, WorkerCrashed):
            assert e.value.reason == "memory" and e.value.signal == signal.SIGTRAP
            assert f"(pid {pid}) ran out of memory" in e.value.message
            assert "Fatal JavaScript out of memory" in e.value.stderr_tail
            await assert_replaced(h, "array_buffer_bomb", pid, bystander)
        else:
            assert type(e.value) is PluginError and e.value.name == "RangeError"
            assert e.value.message == "Array buffer allocation failed"
            try:
                same = await h.call("array_buffer_bomb", "alive")
            except WorkerCrashed as late:
                # The bomb's buffers were still held when V8 next needed memory (seen once in CI
                # on a loaded machine): a fatal out-of-memory after all, and a replacement.
                assert late.reason == "memory" and late.signal == signal.SIGTRAP, late
                await assert_replaced(h, "array_buffer_bomb", pid, bystander)
            else:
                assert same == pid
                await assert_unharmed(h, "array_buffer_bomb", pid)


async def test_array_buffer_bomb_that_yields_gets_a_range_error_and_its_worker_survives(plugin_dir, make_host):
    # The same bomb, yielding to the event loop between buffers: then it is always the
    # allocation of a backing store that fails, a catchable RangeError; the worker lives on.
    install(plugin_dir, array_buffer_bomb=ARRAY_BUFFER_BOMB)
    async with make_host(pool=ONE, limits=WorkerLimits(data_limit_mb=1024)) as h:
        allocated: list[int] = []
        h.add_log_listener(lambda plugin, worker, msg: allocated.append(int(msg.message.split()[1]))
                           if plugin == "array_buffer_bomb" else None)
        pid = await h.call("array_buffer_bomb", "alive")
        limit = rlimit_data_mib(pid)
        with pytest.raises(PluginError) as e:
            await h.call("array_buffer_bomb", "bombYielding", timeout=20)
        assert type(e.value) is PluginError and e.value.name == "RangeError"
        assert e.value.message == "Array buffer allocation failed"
        assert allocated and 16 <= max(allocated) < limit  # stopped by the data limit
        await assert_unharmed(h, "array_buffer_bomb", pid)


async def test_sigterm_immune_busy_loop_times_out_and_its_worker_is_killed(plugin_dir, make_host):
    install(plugin_dir, sigterm_immune_spin=SIGTERM_IMMUNE_SPIN)
    async with make_host(pool=ONE, limits=WorkerLimits(call_timeout=1)) as h:
        pid = await h.call("sigterm_immune_spin", "alive")
        bystander = await h.call("bystander", "pid")
        t0 = time.monotonic()
        with pytest.raises(CallTimeout) as e:
            await h.call("sigterm_immune_spin", "spin")
        assert time.monotonic() - t0 < 2.0
        assert 0.9 < e.value.timeout <= 1 and "did not finish within" in e.value.message
        assert e.value.message.endswith("s; worker killed")
        await wait_for(lambda: process_gone(pid), timeout=1)
        await assert_replaced(h, "sigterm_immune_spin", pid, bystander)
        assert h.plugin("sigterm_immune_spin").timeouts == 1


@pytest.mark.parametrize(("lines", "size", "limits", "cap"), [
    pytest.param(100_000, 8, WorkerLimits(), 1000, id="100k-lines-over-max_log_entries"),
    pytest.param(100_000, 1024, WorkerLimits(max_log_bytes=64 * 1024), 63, id="100k-KiB-lines-over-max_log_bytes"),
])
async def test_log_flood_is_truncated_with_a_marker_and_the_call_returns(
    plugin_dir, make_host, lines, size, limits, cap
):
    install(plugin_dir, log_flood=LOG_FLOOD)
    async with make_host(pool=ONE, limits=limits) as h:
        got: list[p.Log] = []
        h.add_log_listener(lambda plugin, worker, msg: got.append(msg) if plugin == "log_flood" else None)
        pid = await h.call("log_flood", "alive")
        assert await h.call("log_flood", "flood", lines, size, timeout=20) == "done"
        assert len(got) <= cap + 1  # delivered: at most the cap, then the marker
        assert got[-1].message.startswith("log output truncated: the call's logs reached limits.max_log_entries (")
        assert got[-1].level == "warn" and f"limits.max_log_bytes ({limits.max_log_bytes})" in got[-1].message
        assert len(got) >= cap  # the cap, not something smaller, is what stopped it
        assert {m.id for m in got} == {got[0].id} and got[0].id is not None  # all charged to the call
        assert all(m.message.startswith(f"{i} ") for i, m in enumerate(got[:-1]))
        await assert_unharmed(h, "log_flood", pid)


async def test_one_log_line_larger_than_the_calls_budget_arrives_cut_not_dropped(plugin_dir, make_host):
    # helper-80's finding: a 2 MB line in a call (a response dumped) was dropped whole behind the marker
    plugin_dir.add("dump.js", """
export const metadata = { id: "dump", name: "d", version: "1.0.0", apiVersion: "1.0" };
export function dump(n) { console.log("HEAD" + "x".repeat(n)); console.log("after"); return 1; }
""")
    async with make_host(pool=ONE, limits=WorkerLimits(max_log_bytes=64 * 1024)) as h:
        got: list[p.Log] = []
        h.add_log_listener(lambda plugin, worker, msg: got.append(msg) if plugin == "dump" else None)
        assert await h.call("dump", "dump", 2_000_000) == 1
    assert got[0].message.startswith("HEADxxx") and "more characters)" in got[0].message, got[0].message[:80]
    assert len(got[0].message.encode()) <= 64 * 1024
    assert [m.message for m in got[1:]] == ["after"]  # what is left of the budget still serves the call


async def test_log_flood_outside_any_call_is_capped_per_second(plugin_dir, make_host):
    install(plugin_dir, log_flood=LOG_FLOOD)
    async with make_host(pool=ONE, limits=WorkerLimits(max_log_entries=200)) as h:
        got: list[p.Log] = []
        h.add_log_listener(lambda plugin, worker, msg: got.append(msg) if plugin == "log_flood" else None)
        pid = await h.call("log_flood", "alive")
        assert await h.call("log_flood", "floodLater", 100_000) == "scheduled"
        await wait_for(lambda: any("truncated" in m.message for m in got), timeout=5)
        later = [m for m in got if m.message.startswith("later")]
        assert len(later) == 200 and all(m.id is None for m in later)
        marker = [m for m in got if "truncated" in m.message]
        assert len(marker) == 1 and marker[0].level == "warn" and "outside a call" in marker[0].message
        await assert_unharmed(h, "log_flood", pid)
        assert len([m for m in got if m.message.startswith("later")]) == 200  # nothing after the marker


# ---------------------------------------------------------------------------- 15-16: the wire


@pytest.mark.parametrize(("data", "end", "error", "match"), [
    pytest.param("00000100" + "aa" * 10, "close", WorkerCrashed, "crashed (signal SIGKILL)",
                 id="length-beyond-the-data-then-eof"),
    pytest.param("00000100" + "aa" * 10, "exit", WorkerCrashed, "crashed (exit code 0)",
                 id="length-beyond-the-data-then-exit"),
    pytest.param("01000001", "", ProtocolError, "frame header announces 16777217 bytes, over the "
                                                "16777216-byte maximum", id="length-over-max-frame"),
    pytest.param("00000000", "", ProtocolError, "bad frame: Input data was truncated", id="zero-length"),
])
async def test_frames_with_lying_lengths_fail_the_call_typed_and_the_plugin_recovers(
    plugin_dir, make_host, hostile, data, end, error, match
):
    # Every plugin of this host is served by a fake worker runtime that speaks the protocol
    # correctly until a call tells it which bytes to send instead of an answer.
    entry = on_demand_runtime(hostile, plugin_dir, "liar", "bystander")
    async with make_host(runtime_entry=entry, pool=ONE) as h:
        pid = await h.call("liar", "pid")
        bystander = await h.call("bystander", "pid")
        with pytest.raises(error) as e:
            await h.call("liar", "f", data, end, timeout=5)
        assert type(e.value) is error and match in e.value.message
        if error is WorkerCrashed:
            # the data announced was never complete, so the valid result after it was never read
            assert e.value.reason == {"close": "eof", "exit": "crash"}[end]
        await wait_for(lambda: process_gone(pid), timeout=2)
        assert await h.call("liar", "f", "ok") == "ok"
        assert await h.call("liar", "pid") != pid
        assert h.plugin("liar").state == "running"
        assert await h.call("bystander", "pid") == bystander
        assert h.plugin("bystander").crashes == 0


async def test_a_worker_that_drops_its_connection_is_sent_no_further_call(plugin_dir, make_host, hostile):
    async with make_host(runtime_entry=on_demand_runtime(hostile, plugin_dir, "liar"), pool=ONE) as h:
        pid = await h.call("liar", "pid")
        assert await h.call("liar", "f", "", "close") == "after"  # answers, then hangs up but lives
        # The next call goes to a new worker, not to the one whose connection is gone. Only a
        # call written before the worker's close landed may be lost with it (delivered=True).
        try:
            fresh = await h.call("liar", "pid")
        except WorkerCrashed as exc:
            assert exc.delivered  # written before the close: lost with the worker, reported
            fresh = await h.call("liar", "pid")
        assert fresh != pid
        await wait_for(lambda: process_gone(pid), timeout=2)
        assert h.plugin("liar").state == "running"


async def test_protocol_violations_count_as_crashes_towards_the_crash_loop_state(plugin_dir, make_host, hostile):
    entry = on_demand_runtime(hostile, plugin_dir, "liar")
    async with make_host(runtime_entry=entry, policy=PolicyConfig(breaker=BreakerConfig(enabled=False)),
                         pool=PoolConfig(min_workers=1, max_workers=1, crash_loop_threshold=3)) as h:
        for _ in range(3):
            with pytest.raises(ProtocolError):
                await h.call("liar", "f", "01000001", "", timeout=5)
        info = h.plugin("liar")
        assert (info.crashes, info.state) == (3, "error")


async def test_socket_is_unlinked_after_accept_so_the_token_cannot_be_replayed(calc, run_root, shared_state):
    runtime = runtime_for(find_runtime_entry(), run_root, shared_state)
    spec_ = WorkerSpec(plugin_id="calc", module=calc.root / "calc.js", base_dir=calc.root,
                       read_paths=[str(calc.root)])
    async with anyio.create_task_group() as tg:
        worker: Worker = await tg.start(Worker(spec_, runtime).run)
        # The socket path is in the worker's net grant (the token is not on its command line:
        # test_hardening checks that); a replay with any token must find no socket.
        with open(f"/proc/{worker.pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        sock_path = next(a for a in argv if a.startswith("--allow-net=unix:"))[len("--allow-net=unix:"):]
        token = "a-guessed-token"
        assert Path(sock_path).parent == runtime.run_dir
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        intruder.settimeout(2)
        try:
            connected = False
            try:
                intruder.connect(sock_path)
                connected = True
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if connected:  # show what a replay gets: it must not be a welcome
                hello = p.Hello(cookie=p.MAGIC_COOKIE, protocol=p.PROTOCOL_VERSION, token=token)
                intruder.sendall(p.encode(hello))
                try:
                    reply = intruder.recv(65536)
                except TimeoutError:
                    reply = b"<no answer>"
                assert b"welcome" not in reply
            assert not connected, f"a second client could connect to {sock_path} after the handshake"
            assert not os.path.exists(sock_path)
        finally:
            intruder.close()
            # the legitimate worker is unaffected and still serves
            assert await worker.call("add", [1, 2], timeout=5) == 3
            await worker.shutdown()
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []
