"""Grants too large for a worker's command line: refused up front (InvalidConfig naming the field
and the limit) for ``/execute`` and manifests alike; a spawn the system still refuses as too long
(E2BIG: an environment variable granted that is huge) is a SpawnFailed saying so, once, with the
plugin in `error`, not a retry loop."""

from __future__ import annotations

import os
import signal
import time

import pytest
from support.processes import wait_for
from support.servers import served

from host import InvalidConfig, PluginUnavailable, PoolConfig
from host.security.permissions import MAX_GRANT_BYTES, MAX_GRANT_ENTRIES, MAX_HOST_CHARS

pytestmark = pytest.mark.anyio

ADMIN = "admin-6a2f0c"
CODE = "export default () => 1"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_execute_refuses_grants_too_large_for_a_command_line_at_once(make_host, anyio_backend):
    # Before: each made ~8 spawn attempts failing with "setpriv: Argument list too long" (or a
    # Deno that refused the host name), then answered 200 "Execution timeout".
    cases = [
        ({"net": ["a" * 100_000]}, "permissions.net", f"{MAX_HOST_CHARS} characters"),
        ({"net": [f"h{i}.example" for i in range(50_000)]}, "permissions.net", f"the {MAX_GRANT_ENTRIES}"),
        ({"read": [f"/tmp/p{i}" for i in range(30_000)]}, "permissions.read", f"the {MAX_GRANT_ENTRIES}"),
        ({"net": [f"{'h' * 60}.{i}.{'x' * 60}.example" for i in range(500)]}, "permissions:", str(MAX_GRANT_BYTES)),
        ({"net": ["ok.example", "a" * 64 + ".example"]}, "permissions.net", "a label 63"),
    ]
    async with make_host(execute={"min_workers": 0}) as h, served(h, enable_execute=True, admin_token=ADMIN) as (_, http):
        auth = {"Authorization": f"Bearer {ADMIN}"}
        for permissions, field, limit in cases:
            t0 = time.monotonic()
            async with http.post("/execute", json={"code": CODE, "permissions": permissions}, headers=auth) as r:
                body = await r.json()
            assert r.status == 400 and body["error"]["type"] == "InvalidConfig", body
            assert field in body["error"]["message"] and limit in body["error"]["message"], body
            assert time.monotonic() - t0 < 2
        async with http.post("/execute", json={"code": CODE, "permissions": {"net": ["api.example.com"]}},
                             headers=auth) as r:
            assert (r.status, (await r.json())["result"]) == (200, 1)


async def test_a_manifest_with_too_many_grants_is_an_error_naming_the_field(plugin_dir, make_host):
    hosts = ", ".join(f'"h{i}.example"' for i in range(MAX_GRANT_ENTRIES + 1))
    plugin_dir.add("greedy.js", f"""
export const metadata = {{ id: "greedy", name: "Greedy", version: "1.0.0", apiVersion: "1.0",
  permissions: {{ net: [{hosts}] }} }};
export function ok() {{ return 1; }}
""")
    plugin_dir.add("calm.js", "export function ok() { return 2; }")
    async with make_host() as h:
        info = h.plugin("greedy")
        assert info.state == "error" and "permissions.net" in info.error and str(MAX_GRANT_ENTRIES) in info.error
        assert await h.call("calm", "ok") == 2


async def test_a_spawn_refused_as_too_long_fails_once_saying_so(plugin_dir, make_host, monkeypatch, caplog):
    # An environment variable the plugin is granted grows to 200 KB while it runs: one argument
    # over Linux's 128 KiB, so every spawn of its worker fails with E2BIG. Before: retried with
    # backoff until the crash-loop breaker, each caller waiting out its deadline meanwhile.
    plugin_dir.add("envy.js", """
export const metadata = { id: "envy", name: "Envy", version: "1.0.0", apiVersion: "1.0",
  permissions: { env: ["PH_TEST_HUGE_VALUE"] } };
export function pid() { return Deno.pid; }
""")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, crash_loop_threshold=20)) as h:
        pid = await h.call("envy", "pid")
        monkeypatch.setenv("PH_TEST_HUGE_VALUE", "x" * 200_000)
        os.kill(pid, signal.SIGKILL)  # the pool starts another: refused
        await wait_for(lambda: h.plugin("envy").state == "error", timeout=5)
        error = h.plugin("envy").error
        assert "Argument list too long" in error and "PH_TEST_HUGE_VALUE" in error, error
        assert "narrow the plugin's permissions or the environment variables it is granted" in error
        t0 = time.monotonic()
        with pytest.raises(PluginUnavailable, match="Argument list too long"):
            await h.call("envy", "pid", timeout=5)
        assert time.monotonic() - t0 < 1
    assert sum("could not start" in r.getMessage() for r in caplog.records if r.name == "host.pool") == 1


def test_the_bounds_hold_for_every_kind_and_name_the_limit():
    from host.security.permissions import Permissions

    with pytest.raises(InvalidConfig, match=r"permissions\.write: entry '/tmp/aaaa.*4096 characters"):
        Permissions.parse({"write": ["/tmp/" + "a" * 5000]})
    assert Permissions.parse({"net": ["[::1]:8080", "a" * 63 + ".example:443"], "read": ["/x"] * 10})
