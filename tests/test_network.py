"""Network deny list: a worker with network access never reaches loopback, private,
link-local or metadata addresses, even through an allowed host name, unless its permissions
say allowPrivateNetwork."""

from __future__ import annotations

from pathlib import Path

import pytest

from host import PermissionDenied, Permissions, PoolConfig
from host.security.permissions import PRIVATE_NETWORKS, local_addresses

pytestmark = pytest.mark.anyio

FETCHER = """
export const metadata = {{ id: "fetcher", name: "fetcher", version: "1.0.0", apiVersion: "1.0",
  permissions: {perms} }};
export async function get(url) {{ const r = await fetch(url); return [r.status, await r.text()]; }}
export async function connect(hostname, port) {{
  const c = await Deno.connect({{ hostname, port }}); c.close(); return "connected";
}}
"""

ONE = PoolConfig(min_workers=1, max_workers=1)


async def test_an_allowed_name_resolving_to_loopback_is_refused(plugin_dir, make_host, local_server):
    port = local_server.port
    plugin_dir.add("fetcher.js", FETCHER.format(perms=f'{{ net: ["localhost:{port}"] }}'))
    async with make_host(pool=ONE) as h:
        with pytest.raises(PermissionDenied, match=f'Requires net access to "127.0.0.1:{port}"'):
            await h.call("fetcher", "get", f"http://localhost:{port}/x")
        with pytest.raises(PermissionDenied):
            await h.call("fetcher", "connect", "localhost", port)
        assert h.plugin("fetcher").state == "running"  # the host keeps serving
    assert local_server.connections == 0 and local_server.requests == []


@pytest.mark.parametrize("url", [
    "http://0.0.0.0:{port}/", "http://127.0.0.2:{port}/", "http://[::ffff:127.0.0.1]:{port}/",
    "http://2130706433:{port}/", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/",
    "http://192.168.0.1/", "http://172.16.0.1/", "http://100.64.0.1/", "http://[::1]:{port}/",
])
async def test_private_and_metadata_addresses_are_refused_even_with_all_network(
        plugin_dir, make_host, local_server, url):
    plugin_dir.add("fetcher.js", FETCHER.format(perms="{ net: true }"))
    async with make_host(pool=ONE) as h:
        with pytest.raises(PermissionDenied, match="Requires net access"):
            await h.call("fetcher", "get", url.format(port=local_server.port), timeout=5)
    assert local_server.connections == 0


async def test_allow_private_network_lifts_the_deny_list(plugin_dir, make_host, local_server):
    port = local_server.port
    plugin_dir.add("fetcher.js", FETCHER.format(
        perms=f'{{ net: ["localhost:{port}"] }}'))
    async with make_host(pool=ONE, plugins={"fetcher": {"allow_private_network": True}}) as h:
        status, body = await h.call("fetcher", "get", f"http://localhost:{port}/ok")
    assert status == 200 and '"served": "local"' in body
    assert local_server.requests == ["/ok"]


def test_the_deny_list_is_added_only_with_network_access():
    flags = Permissions.parse({"net": ["api.example.com"]}).deno_flags(
        base_dir=Path("/p"), socket_path="/s", read_extra=[])
    deny = [f for f in flags if f.startswith("--deny-net=")]
    assert len(deny) == 1 and deny[0].startswith("--deny-net=" + ",".join(PRIVATE_NETWORKS))
    own = deny[0].removeprefix("--deny-net=").split(",")[len(PRIVATE_NETWORKS):]
    assert set(own) == {f"[{ip}]" if ip.version == 6 else str(ip) for ip in local_addresses()
                        if not ip.is_loopback and not ip.is_unspecified}
    assert "169.254.0.0/16" in deny[0] and "0.0.0.0/8" in deny[0]
    none = Permissions().deno_flags(base_dir=Path("/p"), socket_path="/s", read_extra=[])
    assert not any(f.startswith("--deny-net") for f in none)
    lifted = Permissions.parse({"net": True, "allowPrivateNetwork": True}).deno_flags(
        base_dir=Path("/p"), socket_path="/s", read_extra=[])
    assert "--allow-net" in lifted and not any(f.startswith("--deny-net") for f in lifted)
    assert Permissions.parse({"net": True}).key() != Permissions.parse(
        {"net": True, "allowPrivateNetwork": True}).key()
