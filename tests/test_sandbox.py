"""The sandbox: a plugin gets exactly what its metadata declares, and every refusal reaches the
Python caller as a typed PermissionDenied without costing the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from host import PermissionDenied, PluginError, PluginUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.one_backend]


NOCAPS = """
export const metadata = { id: "nocaps", name: "No capabilities", version: "1.0.0", apiVersion: "1.0" };
export async function readFile(path) { return await Deno.readTextFile(path); }
export async function writeFile(path) { await Deno.writeTextFile(path, "pwned"); return "written"; }
export function envGet(name) { return Deno.env.get(name) ?? null; }
export function envAll() { return Deno.env.toObject(); }
export async function run(cmd) { return (await new Deno.Command(cmd).output()).code; }
export async function fetchUrl(url) { const r = await fetch(url); return await r.text(); }
export async function connect(port) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port }); c.close(); return "connected";
}
export function dlopen(lib) { Deno.dlopen(lib, {}); return "opened"; }
export function hostname() { return Deno.hostname(); }
export function add(a, b) { return a + b; }
export function pid() { return Deno.pid; }
"""


def _attempts(tmp_path: Path, port: int) -> list[tuple[str, list, str]]:
    """(function, args, text the refusal must name) for each thing a plugin may not do."""
    return [
        ("readFile", ["/etc/passwd"], "/etc/passwd"),
        ("writeFile", [str(tmp_path / "written-by-plugin.txt")], "written-by-plugin.txt"),
        ("envGet", ["HOME"], "HOME"),
        ("envAll", [], "env"),
        ("run", ["true"], '"true"'),
        ("fetchUrl", [f"http://127.0.0.1:{port}/leak"], f"127.0.0.1:{port}"),
        ("connect", [port], f"127.0.0.1:{port}"),
        ("dlopen", ["libc.so.6"], "libc.so.6"),
        ("hostname", [], "hostname"),
    ]


async def test_plugin_without_permissions_is_refused_everything_with_typed_errors(
    plugin_dir, make_host, local_server, tmp_path
):
    plugin_dir.add("nocaps.js", NOCAPS)
    async with make_host() as h:
        info = h.plugin("nocaps")
        assert info.state == "running"
        pid = info.workers[0].pid
        assert await h.call("nocaps", "pid") == pid
        for fn, args, resource in _attempts(tmp_path, local_server.port):
            with pytest.raises(PermissionDenied) as e:
                await h.call("nocaps", fn, *args)
            err = e.value
            assert isinstance(err, PluginError), fn
            assert err.name == "NotCapable", (fn, err.name)
            assert resource in err.message, (fn, err.message)
            assert err.plugin == "nocaps" and err.function == fn
        # nothing left the sandbox
        assert not (tmp_path / "written-by-plugin.txt").exists()
        assert local_server.connections == 0 and local_server.requests == []
        # refusals are ordinary errors: the same worker is still serving
        assert await h.call("nocaps", "add", 2, 3) == 5
        assert await h.call("nocaps", "pid") == pid
        info = h.plugin("nocaps")
        assert info.state == "running" and info.crashes == 0
        assert [w.pid for w in info.workers] == [pid]


async def test_worker_env_is_scrubbed_even_with_full_env_grant(plugin_dir, make_host, monkeypatch):
    monkeypatch.setenv("PH_TEST_SECRET", "xyz-secret-value")
    plugin_dir.add("envall.js", """
        export const metadata = { id: "envall", name: "envall", version: "1.0.0", apiVersion: "1.0", permissions: { env: true } };
        export function envAll() { return Deno.env.toObject(); }
        export function envGet(name) { return Deno.env.get(name) ?? null; }
    """)
    async with make_host() as h:
        assert h.plugin("envall").state == "running"
        env = await h.call("envall", "envAll")
        assert isinstance(env, dict) and env  # the grant works: toObject() is not refused
        assert "PH_TEST_SECRET" not in env
        assert "xyz-secret-value" not in env.values()
        assert await h.call("envall", "envGet", "PH_TEST_SECRET") is None


async def test_env_grant_by_name_passes_that_variable_only(plugin_dir, make_host, monkeypatch):
    monkeypatch.setenv("PH_TEST_VISIBLE", "visible-value")
    monkeypatch.setenv("PH_TEST_SECRET", "xyz-secret-value")
    plugin_dir.add("envone.js", """
        export const metadata = {
          id: "envone", name: "envone", version: "1.0.0", apiVersion: "1.0", permissions: { env: ["PH_TEST_VISIBLE"] },
        };
        export function envGet(name) { return Deno.env.get(name) ?? null; }
        export function envAll() { return Deno.env.toObject(); }
    """)
    async with make_host() as h:
        assert h.plugin("envone").state == "running"
        assert await h.call("envone", "envGet", "PH_TEST_VISIBLE") == "visible-value"
        with pytest.raises(PermissionDenied) as e:
            await h.call("envone", "envGet", "PH_TEST_SECRET")
        assert e.value.name == "NotCapable" and "PH_TEST_SECRET" in e.value.message
        with pytest.raises(PermissionDenied) as e:
            await h.call("envone", "envAll")
        assert "env" in e.value.message


async def test_a_plugin_reads_its_own_files_and_relative_grants_resolve_in_its_data_directory(
        plugin_dir, make_host, state_dir):
    plugin_dir.add("reader/mod.js", """
        export const metadata = { id: "reader", name: "reader", version: "1.0.0", apiVersion: "1.0",
          permissions: { read: ["notes"], write: ["notes"] } };
        export async function readData(name) {
          return await Deno.readTextFile(new URL(`./data/${name}`, import.meta.url));
        }
        export async function note(text) {
          await Deno.mkdir("notes", { recursive: true });
          await Deno.writeTextFile("notes/a.txt", text);
          return [Deno.cwd(), await Deno.readTextFile("notes/a.txt")];
        }
        export async function readPath(path) { return await Deno.readTextFile(path); }
    """)
    plugin_dir.add("reader/data/x.txt", "hello from data\n")
    async with make_host(state_dir=str(state_dir)) as h:
        info = h.plugin("reader")
        assert info.state == "running" and info.workers and info.workers[0].pid
        assert await h.call("reader", "readData", "x.txt") == "hello from data\n"  # its own code: readable
        cwd, text = await h.call("reader", "note", "kept")
        assert text == "kept" and cwd == str(state_dir / "data" / "reader")
        assert (state_dir / "data" / "reader" / "notes" / "a.txt").read_text() == "kept"
        with pytest.raises(PermissionDenied) as e:
            await h.call("reader", "readPath", "/etc/passwd")
        assert e.value.name == "NotCapable" and "/etc/passwd" in e.value.message
        assert h.plugin("reader").state == "running"


@pytest.mark.parametrize(
    ("permissions", "named"),
    [
        ('{ nett: ["x"] }', ["nett"]),
        ('{ net: ["inherit"] }', ["net", "inherit"]),
        ('{ read: "everything" }', ["read"]),
    ],
    ids=["unknown-field", "inherit", "wrong-type"],
)
async def test_invalid_permissions_put_the_plugin_in_error_while_others_serve(
    calc, make_host, permissions, named
):
    calc.add("broken.js", f"""
        export const metadata = {{ id: "broken", name: "broken", version: "1.0.0", apiVersion: "1.0", permissions: {permissions} }};
        export function hello() {{ return "should never run"; }}
    """)
    async with make_host() as h:
        info = h.plugin("broken")
        assert info.state == "error"
        assert info.error is not None
        for word in named:
            assert word in info.error, (word, info.error)
        assert info.workers == []
        with pytest.raises(PluginUnavailable):
            await h.call("broken", "hello")
        assert h.plugin("calc").state == "running"
        assert await h.call("calc", "add", 1, 2) == 3
