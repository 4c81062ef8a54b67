"""The operator narrows what a plugin declares (issue 18): `[plugins.ID.permissions]` keeps, for
each kind it names, only what both allow; it never adds; a refusal it causes names it."""

from __future__ import annotations

import pytest

from host import HostConfig, InvalidConfig, PermissionDenied, PluginSettings, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)
ENVY = """
export const metadata = { id: "envy", name: "Envy", version: "1.0.0", apiVersion: "1.0",
  permissions: { env: ["PH_TEST_A", "PH_TEST_B"], net: ["a.example", "b.example:8443"] } };
export function read(name) { return Deno.env.get(name) ?? null; }
"""


async def test_a_narrowed_grant_is_refused_naming_the_override(plugin_dir, make_host, monkeypatch):
    monkeypatch.setenv("PH_TEST_A", "alpha")
    monkeypatch.setenv("PH_TEST_B", "beta")
    plugin_dir.add("envy.js", ENVY)
    override = {"env": ["PH_TEST_A", "PH_TEST_C"], "net": ["a.example"], "run": False}
    async with make_host(pool=ONE, plugins={"envy": PluginSettings(permissions=override)}) as h:
        assert await h.call("envy", "read", "PH_TEST_A") == "alpha"
        with pytest.raises(PermissionDenied) as e:
            await h.call("envy", "read", "PH_TEST_B")
        grants = h._registry.grants(h._registry.record("envy"))
    assert "refused by the operator's [plugins.envy.permissions] env in host.toml" in e.value.message
    assert grants is not None
    assert (grants.env, grants.net, grants.run) == (["PH_TEST_A"], ["a.example"], [])  # nothing added


def test_an_override_names_only_known_kinds_and_valid_entries():
    with pytest.raises(InvalidConfig, match=r"plugins\.x\.permissions\.bogus: not a permission kind"):
        HostConfig(plugins={"x": PluginSettings(permissions={"bogus": True})})
    with pytest.raises(InvalidConfig, match=r"plugins\.x\.permissions.*'\*' is not allowed"):
        HostConfig(plugins={"x": PluginSettings(permissions={"net": ["*"]})})


@pytest.mark.parametrize(("declared", "override", "left"), [
    (["api.example.com"], ["api.example.com"], ["api.example.com"]),
    (["api.example.com:443", "api.example.com:8443"], ["api.example.com"], ["api.example.com:443", "api.example.com:8443"]),
    (["api.example.com:8443"], ["api.example.com:443"], []),
    (True, ["api.example.com"], ["api.example.com"]),
    (["a.example", "b.example"], False, []),
    (["a.example"], True, ["a.example"]),
])
def test_narrowing_keeps_what_both_allow(declared, override, left):
    from host.security.permissions import Permissions

    assert Permissions(net=declared).narrowed({"net": override}).net == left


@pytest.mark.parametrize(("declared", "override", "left"), [
    (["/tmp/a/../secret.txt"], ["/tmp/a"], []),
    (["/tmp/a/./../b"], ["/tmp/a"], []),
    (["/tmp/a/b/../c"], ["/tmp/a"], ["/tmp/a/b/../c"]),
])
def test_narrowing_reads_paths_as_the_sandbox_does(declared, override, left):
    from host.security.permissions import Permissions

    assert Permissions(read=declared).narrowed({"read": override}).read == left


PORT_ONLY = """
export const metadata = { id: "portonly", name: "Port only", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: [":80"], allowPrivateNetwork: true } };
export function f() { return 1; }
"""


async def test_a_net_entry_with_a_port_and_no_host_is_refused_saying_what_deno_would_grant(plugin_dir, make_host):
    # Measured (deno 2.9.8): --allow-net=:80 lets a worker connect to 127.0.0.1, localhost and
    # 0.0.0.0 on port 80 and listen on 0.0.0.0:80. Before: an operator's override (host.toml's
    # [plugins.ID.permissions], or the API's) took it as written, and a manifest's was refused only
    # as "not a host name", saying nothing of what it grants.
    with pytest.raises(InvalidConfig, match=r"plugins\.x\.permissions\.net: ':80' names no host: .*listening"):
        HostConfig(plugins={"x": PluginSettings(permissions={"net": [":80"]})})
    plugin_dir.add("portonly.js", PORT_ONLY)
    async with make_host(pool=ONE) as h:
        info = h.plugin("portonly")
    assert info.state == "error" and "':80'" in (info.error or "") and "names no host" in (info.error or ""), info
