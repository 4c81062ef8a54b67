"""Grants no plugin may have, whatever it declares and whatever the strict mode: file grants that
reach the host's state, its sockets, the plugin directories or /proc, the host's secrets in the
environment, private networks it grants itself, the host's own listening addresses and the
machine's own interface addresses (issue 14, items 3, 4, 8 and 9)."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.plugins import vault_plugin

from host import InvalidConfig, PermissionDenied, Permissions, PoolConfig, SecurityConfig
from host.security.permissions import local_addresses

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]

ONE = PoolConfig(min_workers=1, max_workers=1)

SNOOP = """
export const metadata = {{ id: "snoop", name: "snoop", version: "1.0.0", apiVersion: "1.0",
  permissions: {perms} }};
export async function read(path) {{ return await Deno.readTextFile(path); }}
export function env() {{ return Deno.env.toObject(); }}
"""


@pytest.mark.parametrize("strict", ["warn", "refuse", "off"])
@pytest.mark.parametrize(("perms", "named"), [
    ('{ read: ["/"] }', "permissions.read: '/' covers the host's state directory"),
    ('{ read: ["../../../../../../.."] }', "permissions.read: '../../../../../../..' leads out of the plugin's data directory"),
    ('{ read: ["/proc"] }', "permissions.read: '/proc' is /proc"),
    ('{ read: ["/proc/self/environ"] }', "permissions.read: '/proc/self/environ' lies inside /proc"),
    ('{ read: true }', "permissions.read: true would cover the host's state directory"),
    ('{ write: true }', "permissions.write: true would cover"),
    ('{ write: ["/tmp"] }', "permissions.write: '/tmp' "),  # covers the sockets (and here the rest)
    # a worker's cgroup (process_cgroup.py): its files would let it move out or kill other workers
    ('{ write: ["/sys/fs/cgroup"] }', "permissions.write: '/sys/fs/cgroup' lies inside /sys"),
    ('{ read: ["/sys/fs/cgroup/unified/cgroup.procs"] }', "permissions.read: '/sys/fs/cgroup/unified/cgroup.procs' lies inside /sys"),
    ('{ env: ["PLUGIN_HOST_SECRET_KEY"] }', "permissions.env: 'PLUGIN_HOST_SECRET_KEY' is one of the host's own settings"),
    ('{ env: ["PLUGIN_HOST_ADMIN_TOKEN"] }', "permissions.env: 'PLUGIN_HOST_ADMIN_TOKEN' is one of the host's own settings"),
    ('{ env: ["DENO_PERMISSION_BROKER_PATH"] }', "permissions.env: 'DENO_PERMISSION_BROKER_PATH' is one of the host's own settings"),
    # systemd's notification socket: a plugin could tell systemd the host is ready, or alive
    ('{ env: ["NOTIFY_SOCKET"] }', "permissions.env: 'NOTIFY_SOCKET' is one of the host's own settings"),
])
async def test_grants_reaching_the_host_are_refused_in_every_mode(plugin_dir, make_host, strict, perms, named):
    plugin_dir.add("snoop.js", SNOOP.format(perms=perms))
    plugin_dir.add("calm.js", "export function ok() { return 'ok'; }\n")
    async with make_host(pool=ONE, security=SecurityConfig(strict=strict)) as h:
        info = h.plugin("snoop")
        assert info.state == "error" and info.workers == []
        assert "snoop.js: metadata." + named in info.error
        assert await h.call("calm", "ok") == "ok"


async def test_grants_of_the_state_directory_other_plugins_and_the_sockets_are_refused(
        plugin_dir, make_host, state_dir):
    plugin_dir.add("other/mod.js", "export function ok() { return 'ok'; }\n")
    cases = {
        str(state_dir): "is the host's state directory",
        str(state_dir / "config.json"): "lies inside the host's state directory",
        str(state_dir / "data"): "lies inside the host's state directory",  # every plugin's data
        str(plugin_dir.root / "other"): "lies inside a plugins directory",
        str(plugin_dir.root): "is a plugins directory",
        "/tmp": "covers",  # the socket directory's parent (and here the rest)
    }
    for i, path in enumerate(cases):
        plugin_dir.add(f"snoop{i}.js", SNOOP.replace('id: "snoop"', f'id: "snoop{i}"').format(
            perms=f'{{ read: ["{path}"] }}'))
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        for i, named in enumerate(cases.values()):
            info = h.plugin(f"snoop{i}")
            assert info.state == "error" and named in info.error, (i, info.error)
        assert await h.call("other", "ok") == "ok"
        runtime = h._runtime
        with pytest.raises(InvalidConfig, match="is the host's worker socket directory"):
            runtime.sandbox(runtime.data_dir("x")).resolve(Permissions(write=[str(runtime.run_dir)]))


async def test_a_host_secret_never_reaches_a_worker_whatever_it_is_granted(plugin_dir, make_host, monkeypatch):
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", "must-not-leak-1")
    monkeypatch.setenv("DENO_PERMISSION_BROKER_PATH", "/must/not/leak")
    monkeypatch.setenv("PH_TEST_FINE", "fine")
    plugin_dir.add("snoop.js", SNOOP.format(perms="{ env: true }"))
    async with make_host(pool=ONE) as h:
        env = await h.call("snoop", "env")
    assert "must-not-leak-1" not in str(env) and "/must/not/leak" not in str(env)
    assert not [k for k in env if k.startswith(("PLUGIN_HOST_", "DENO_PERMISSION"))]


async def test_with_a_stolen_grant_refused_a_plugin_cannot_read_another_plugins_secret(
        plugin_dir, make_host, state_dir):
    # The attack: read: ["/"] plus the key let a plugin decrypt another plugin's stored API key.
    plugin_dir.add("vault.js", vault_plugin("export function ok(ctx) { return ctx.config.apiKey.length; }"))
    plugin_dir.add("thief.js", """
        export const metadata = { id: "thief", name: "thief", version: "1.0.0", apiVersion: "1.0",
          permissions: { read: ["/"], env: ["PLUGIN_HOST_SECRET_KEY"] } };
        export async function steal(path) { return await Deno.readTextFile(path); }
    """)
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        await h.set_config("vault", {"apiKey": "sk-live-must-stay-secret"})
        assert await h.call("vault", "ok") == len("sk-live-must-stay-secret")
        assert h.plugin("thief").state == "error"


# ------------------------------------------------------------------ item 4: file grants of a plugin


async def test_dot_in_a_single_file_plugin_is_its_data_directory_not_the_plugins_directory(
        plugin_dir, make_host, state_dir):
    plugin_dir.add("victim.js", "export function who() { return 'victim'; }\n")
    plugin_dir.add("dot.js", """
        export const metadata = { id: "dot", name: "dot", version: "1.0.0", apiVersion: "1.0",
          permissions: { read: ["."], write: ["."] } };
        export async function overwrite(path, text) { await Deno.writeTextFile(path, text); return "written"; }
        export async function list() { const out = []; for await (const e of Deno.readDir(".")) out.push(e.name); return out; }
    """)
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        assert await h.call("dot", "overwrite", "mine.txt", "ok") == "written"
        assert (state_dir / "data" / "dot" / "mine.txt").read_text() == "ok"
        assert await h.call("dot", "list") == ["mine.txt"]
        victim = plugin_dir.root / "victim.js"
        before = victim.read_text()
        for path in (str(victim), "../../plugins/victim.js", str(plugin_dir.root / "evil.js")):
            with pytest.raises(PermissionDenied):
                await h.call("dot", "overwrite", path, "export function who() { return 'pwned'; }")
        assert victim.read_text() == before and not (plugin_dir.root / "evil.js").exists()
        assert await h.call("victim", "who") == "victim"


async def test_a_directory_plugin_cannot_write_its_own_code(plugin_dir, make_host, state_dir):
    plugin_dir.add("selfish/mod.js", """
        export const metadata = { id: "selfish", name: "selfish", version: "1.0.0", apiVersion: "1.0",
          permissions: { write: ["."] } };
        export async function rewrite(path) {
          await Deno.writeTextFile(path, "export const metadata = {};");
          return "rewritten";
        }
    """)
    mod = plugin_dir.root / "selfish" / "mod.js"
    before = mod.read_text()
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        with pytest.raises(PermissionDenied):
            await h.call("selfish", "rewrite", str(mod))
        assert mod.read_text() == before
        assert await h.call("selfish", "rewrite", "scratch.js") == "rewritten"  # its data directory


async def test_a_write_grant_naming_its_own_code_is_refused(plugin_dir, make_host):
    own = plugin_dir.root / "selfish"
    plugin_dir.add("selfish/mod.js", f"""
        export const metadata = {{ id: "selfish", name: "selfish", version: "1.0.0", apiVersion: "1.0",
          permissions: {{ write: ["{own}"] }} }};
        export function ok() {{ return "ok"; }}
    """)
    async with make_host(pool=ONE) as h:
        info = h.plugin("selfish")
    assert info.state == "error" and "permissions.write" in info.error and str(own) in info.error


# ------------------------------------------------------------- items 8 and 9: networks it may reach


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def wildcard_server():
    """A service bound to every interface (0.0.0.0), like a careless admin panel."""
    srv = ThreadingHTTPServer(("0.0.0.0", 0), _Hello)
    srv.connections = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


FETCHER = """
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",
  permissions: {perms} }};
export async function get(url) {{ const r = await fetch(url); return [r.status, await r.text()]; }}
export function listen(hostname) {{ const l = Deno.listen({{ hostname, port: 0 }}); l.close(); return "listened"; }}
export async function connect(hostname, port) {{ const c = await Deno.connect({{ hostname, port }}); c.close(); return "connected"; }}
"""


def own_addresses() -> list[str]:
    return [str(ip) for ip in local_addresses() if not ip.is_loopback and ip.version == 4]


async def test_a_plugin_cannot_allow_itself_the_private_network(plugin_dir, make_host, wildcard_server):
    port = wildcard_server.server_address[1]
    plugin_dir.add("asker.js", FETCHER.format(
        pid="asker", perms=f'{{ net: ["127.0.0.1:{port}"], allowPrivateNetwork: true }}'))
    async with make_host(pool=ONE) as h:
        with pytest.raises(PermissionDenied, match=f'Requires net access to "127.0.0.1:{port}"'):
            await h.call("asker", "get", f"http://127.0.0.1:{port}/")
        info = h.plugin("asker")
        assert info.permissions.get("allowPrivateNetwork") is not True
        assert any("only the operator allows it" in f and "[plugins.asker] allow_private_network" in f
                   for f in info.permission_findings)
    async with make_host(pool=ONE, security=SecurityConfig(strict="refuse")) as h:
        assert h.plugin("asker").state == "error"  # the ask is a finding
    async with make_host(pool=ONE, plugins={"asker": {"allow_private_network": True}}) as h:
        assert await h.call("asker", "get", f"http://127.0.0.1:{port}/") == [200, "hello"]


async def test_the_hosts_own_listening_address_is_refused_even_with_private_networks_allowed(
        plugin_dir, make_host, wildcard_server):
    api_port = wildcard_server.server_address[1]  # stands for the host's own HTTP API
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        plugin_dir.add("lan.js", FETCHER.format(pid="lan", perms='{ net: ["127.0.0.1", "localhost"] }'))
        async with make_host(pool=ONE, plugins={"lan": {"allow_private_network": True}}) as h:
            h.reserve_address("0.0.0.0", api_port)
            await h.restart("lan")
            for url in (f"http://127.0.0.1:{api_port}/", f"http://localhost:{api_port}/"):
                with pytest.raises(PermissionDenied):
                    await h.call("lan", "get", url)
            assert await h.call("lan", "get", f"http://127.0.0.1:{other.server_address[1]}/") == [200, "hello"]
    finally:
        other.shutdown()
        other.server_close()


@pytest.mark.skipif(not own_addresses(), reason="this machine has no non-loopback IPv4 address")
async def test_the_machines_own_interface_addresses_are_internal(plugin_dir, make_host, wildcard_server):
    port = wildcard_server.server_address[1]
    plugin_dir.add("wide.js", FETCHER.format(pid="wide", perms="{ net: true }"))
    async with make_host(pool=ONE, security={"strict": "off"}) as h:
        for addr in own_addresses():
            with pytest.raises(PermissionDenied):
                await h.call("wide", "get", f"http://{addr}:{port}/")
            with pytest.raises(PermissionDenied):
                await h.call("wide", "connect", addr, port)
            with pytest.raises(PermissionDenied):
                await h.call("wide", "listen", addr)
        for ip in local_addresses():
            if ip.version == 6 and not ip.is_loopback:
                with pytest.raises(PermissionDenied):
                    await h.call("wide", "connect", str(ip), port)


def test_local_addresses_include_every_interface_address():
    found = {str(ip) for ip in local_addresses()}
    assert "127.0.0.1" in found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing interface
            mine = s.getsockname()[0]
        except OSError:
            mine = "127.0.0.1"
    assert mine in found
    if Path("/proc/net/if_inet6").exists() and os.path.getsize("/proc/net/if_inet6") > 0:
        assert "::1" in found or any(":" in a for a in found)
