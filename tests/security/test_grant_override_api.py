"""The operator's grant override through the API (issue 18): read, set and remove a plugin's
narrowing (``GET``/``PUT``/``DELETE /api/plugins/ID/permissions``, ``grant_overrides``), kept
across restarts and audited; it narrows on top of host.toml's, never widens; a grant it revokes
is refused with a message naming it."""

from __future__ import annotations

import json

import pytest
from support.servers import serve_process

from host import HostConfig, InvalidConfig, PermissionDenied, PluginHost, PluginSettings, PoolConfig
from host.security.audit import read_audit

pytestmark = pytest.mark.timeout(90)

ONE = PoolConfig(min_workers=1, max_workers=1)
TOKEN = "adm-9e1f4c2b7a3d"
ENVY = """
export const metadata = { id: "envy", name: "Envy", version: "1.0.0", apiVersion: "1.0",
  permissions: { env: ["PH_TEST_A", "PH_TEST_B"] } };
export function read(name) { return Deno.env.get(name) ?? null; }
"""
NAMED = "grant override set through the API (env; python -m host grants envy, or /api/plugins/envy/permissions)"


@pytest.fixture
def envy(plugin_dir, monkeypatch):
    monkeypatch.setenv("PH_TEST_A", "alpha")
    monkeypatch.setenv("PH_TEST_B", "beta")
    plugin_dir.add("envy.js", ENVY)
    return plugin_dir


@pytest.mark.anyio
async def test_an_override_set_through_the_api_narrows_persists_and_is_audited(envy, state_dir):
    config = HostConfig(plugins_dir=str(envy.root), state_dir=str(state_dir), pool=ONE)
    async with PluginHost(config) as h:
        assert await h.call("envy", "read", "PH_TEST_B") == "beta"
        got = await h.grant_overrides.set("envy", {"env": ["PH_TEST_A"]}, by="test")
        assert (got["api"], got["by"], got["host_toml"]) == ({"env": ["PH_TEST_A"]}, "test", None)
        assert got["permissions"]["env"] == ["PH_TEST_A"]
        with pytest.raises(PermissionDenied) as e:
            await h.call("envy", "read", "PH_TEST_B")
        assert f"refused by the operator's {NAMED}" in e.value.message
        with pytest.raises(InvalidConfig, match=r"permissions\.bogus: not a permission kind"):
            await h.grant_overrides.set("envy", {"bogus": True})
    async with PluginHost(config) as h:  # kept across restarts
        assert h.grant_overrides.get("envy")["api"] == {"env": ["PH_TEST_A"]}
        assert await h.call("envy", "read", "PH_TEST_A") == "alpha"
        with pytest.raises(PermissionDenied):
            await h.call("envy", "read", "PH_TEST_B")
        got = await h.grant_overrides.set("envy", None)
        assert got["api"] is None and got["permissions"]["env"] == ["PH_TEST_A", "PH_TEST_B"]
        assert await h.call("envy", "read", "PH_TEST_B") == "beta"
    audited = [(e["plugin"], e["override"], e["by"]) for e in read_audit(state_dir / "audit.jsonl")
               if e["event"] == "grant_override"]
    assert audited == [("envy", {"env": ["PH_TEST_A"]}, "test"), ("envy", None, "python")]


@pytest.mark.anyio
async def test_the_api_cannot_widen_what_host_toml_narrowed(envy, state_dir):
    config = HostConfig(plugins_dir=str(envy.root), state_dir=str(state_dir), pool=ONE,
                        plugins={"envy": PluginSettings(permissions={"env": ["PH_TEST_A"]})})
    async with PluginHost(config) as h:
        await h.grant_overrides.set("envy", {"env": True})
        with pytest.raises(PermissionDenied) as e:
            await h.call("envy", "read", "PH_TEST_B")
        assert "[plugins.envy.permissions] env in host.toml" in e.value.message
        await h.grant_overrides.set("envy", {"env": False})
        with pytest.raises(PermissionDenied) as e:
            await h.call("envy", "read", "PH_TEST_A")
        assert f"[plugins.envy.permissions] env in host.toml and its {NAMED}" in e.value.message


@pytest.mark.anyio
async def test_an_override_of_a_disabled_plugin_does_not_start_it(envy, state_dir):
    config = HostConfig(plugins_dir=str(envy.root), state_dir=str(state_dir), pool=ONE)
    async with PluginHost(config) as h:
        await h.disable("envy")
        await h.grant_overrides.set("envy", {"env": ["PH_TEST_A"]})
        assert h.plugin("envy").state == "disabled"
        await h.enable("envy")
        assert h.grant_overrides.get("envy")["permissions"]["env"] == ["PH_TEST_A"]


def test_grant_overrides_over_http(envy, state_dir, tmp_path):
    with serve_process(tmp_path, "--plugins", str(envy.root), "--state-dir", str(state_dir),
                       env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN}) as srv:
        status, got = srv.request("GET", "/api/plugins/envy/permissions", token=TOKEN)
        assert status == 200 and (got["plugin"], got["api"]) == ("envy", None)
        assert got["permissions"]["env"] == ["PH_TEST_A", "PH_TEST_B"]
        status, _ = srv.request("PUT", "/api/plugins/envy/permissions", {"env": ["PH_TEST_A"]})
        assert status == 401  # changing it needs the admin token
        status, got = srv.request("PUT", "/api/plugins/envy/permissions", {"env": ["PH_TEST_A"]}, token=TOKEN)
        assert status == 200 and got["api"] == {"env": ["PH_TEST_A"]} and got["by"] == "http"
        status, err = srv.request("POST", "/api/plugins/envy/call/read", {"args": ["PH_TEST_B"]}, token=TOKEN)
        assert status == 502 and err["error"]["type"] == "PermissionDenied"  # a call that failed in the plugin
        assert NAMED in err["error"]["message"]
        status, err = srv.request("PUT", "/api/plugins/envy/permissions", {"net": ["*"]}, token=TOKEN)
        assert status == 400 and err["error"]["type"] == "InvalidConfig" and "permissions.net" in err["error"]["message"]
        status, err = srv.request("PUT", "/api/plugins/envy/permissions", [1], token=TOKEN)
        assert status == 400
        status, got = srv.request("DELETE", "/api/plugins/envy/permissions", token=TOKEN)
        assert status == 200 and got["api"] is None
        status, out = srv.request("POST", "/api/plugins/envy/call/read", {"args": ["PH_TEST_B"]}, token=TOKEN)
        assert (status, out["result"]) == (200, "beta")
    audited = [e["override"] for e in read_audit(state_dir / "audit.jsonl") if e["event"] == "grant_override"]
    assert audited == [{"env": ["PH_TEST_A"]}, None]


@pytest.mark.anyio
async def test_an_unreadable_stored_override_fails_closed(envy, state_dir):
    config = HostConfig(plugins_dir=str(envy.root), state_dir=str(state_dir), pool=ONE)
    (state_dir / "plugin_switches.json").write_text(json.dumps({"envy": {"permissions": {"env": 5}}}))
    async with PluginHost(config) as h:
        info = h.plugin("envy")
        assert info.state == "error"
        assert "plugin_switches.json: the grant override of envy is unreadable" in info.error
        await h.grant_overrides.set("envy", None)  # removing it repairs it
        await h.enable("envy")
        assert await h.call("envy", "read", "PH_TEST_B") == "beta"
