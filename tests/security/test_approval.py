"""A plugin version that asks for more than was approved does not run until the operator approves
it: the running version keeps serving and the plugin shows what waits (issue 14, item 4)."""

from __future__ import annotations

import json

import pytest
from support.plugins import fresh_state
from support.processes import wait_for
from support.servers import run_cli, serve_process

from host import (
    ApprovalChanged,
    InvalidConfig,
    PermissionDenied,
    PluginUnavailable,
    PoolConfig,
    WorkerCrashed,
)
from host.config import ReloadConfig
from host.security.audit import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)


def version(n: int, perms: str) -> str:
    return f"""
export const metadata = {{ id: "grower", name: "grower", version: "1.0.{n}", apiVersion: "1.0",
  permissions: {perms} }};
export function which() {{ return {n}; }}
"""


async def test_a_reload_asking_for_more_waits_for_approval_while_the_old_version_serves(
        plugin_dir, make_host, state_dir):
    path = plugin_dir.add("grower/mod.js", version(1, '{ net: ["api.example.com"] }'))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(interval=0.1)) as h:
        assert await h.call("grower", "which") == 1
        path.write_text(version(2, '{ net: ["api.example.com", "exfil.example.net"], env: ["HOME"] }'))
        await wait_for(lambda: h.plugin("grower").pending_approval, timeout=10)
        info = h.plugin("grower")
        assert info.state == "running" and info.version == "1.0.1"
        assert info.pending_approval == ["net: exfil.example.net", "env: HOME"]
        assert await h.call("grower", "which") == 1  # the approved version keeps serving
        assert any("waits for approval" in e.message for e in h.logs("grower"))
        assert await h.approve("grower", by="test") is True
        assert await h.call("grower", "which") == 2
        info = h.plugin("grower")
        assert info.pending_approval == [] and info.version == "1.0.2"
        assert info.permissions == {"net": ["api.example.com", "exfil.example.net"], "env": ["HOME"]}
        with pytest.raises(InvalidConfig, match="nothing to approve"):
            await h.approve("grower")
        # Asking for less, or for what was approved before, needs no approval.
        path.write_text(version(3, '{ net: ["api.example.com"] }'))
        await wait_for(lambda: h.plugin("grower").version == "1.0.3", timeout=10)
        assert await h.call("grower", "which") == 3
    approvals = [e for e in read_audit(state_dir / "audit.jsonl") if e["event"] == "approve"]
    assert [(e["by"], e["added"]) for e in approvals] == [
        ("first load", ["net: ['api.example.com']"]), ("test", ["net: exfil.example.net", "env: HOME"])]
    stored = json.loads((state_dir / "approvals.json").read_text())
    assert stored["grower"]["permissions"]["net"] == ["api.example.com", "exfil.example.net"]
    assert oct((state_dir / "approvals.json").stat().st_mode & 0o777) == "0o600"


async def test_a_new_worker_of_the_old_version_never_runs_the_waiting_versions_code(plugin_dir, make_host, state_dir):
    """helper-114: while a new version waits for approval, the old pool kept serving, but a new
    worker of it (after a crash, a scale-up, a recycle) loaded the module as it is on disk now:
    the waiting version's code ran under the old version's name (which('v2') from "1.0.1"),
    and a plugin can crash its own worker whenever it likes. No new worker starts from files
    that are not those the version was read from: its live workers serve on, and once none is
    left its callers are told why; approving the new version serves it."""
    def upd(n: int, perms: str) -> str:
        return version(n, perms) + "export function die() { Deno.exit(1); }\n"

    path = plugin_dir.add("grower/mod.js", upd(1, '{ env: ["HOME"] }'))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        assert await h.call("grower", "which") == 1
        path.write_text(upd(2, '{ env: ["HOME", "PATH"] }'))
        assert await h.reload("grower") is False and h.plugin("grower").pending_approval == ["env: PATH"]
        assert await h.call("grower", "which") == 1  # its live worker serves on
        with pytest.raises(WorkerCrashed):
            await h.call("grower", "die")
        with pytest.raises(PluginUnavailable, match=r"no longer what version 1\.0\.1 was loaded from"):
            await h.call("grower", "which")  # before: 2, the waiting version's code
        assert await h.approve("grower", by="test") is True
        assert await h.call("grower", "which") == 2


async def test_only_a_change_of_its_code_stops_new_workers_and_putting_it_back_starts_them(
        plugin_dir, make_host, state_dir):
    """helper-116: the check above took any file for the code (a README edited with reload off
    put the plugin in error at its next spawn, for good), held a moment the files could not be
    read for a change, and never let a pool start again once its code was back."""
    from support.processes import wait_for

    def upd(n: int) -> str:
        return version(n, "{}") + "export function die() { Deno.exit(1); }\n"

    path = plugin_dir.add("grower/mod.js", upd(1))
    (plugin_dir.root / "grower" / "README.md").write_text("v1\n")
    two = PoolConfig(min_workers=2, max_workers=2)
    async with make_host(pool=two, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        (plugin_dir.root / "grower" / "README.md").write_text("edited\n")  # no code
        with pytest.raises(WorkerCrashed):
            await h.call("grower", "die")
        await wait_for(lambda: len(h.plugin("grower").workers) == 2, timeout=10)  # replaced
        path.write_text(upd(2))  # its code changed: the dead worker is not replaced ...
        with pytest.raises(WorkerCrashed):
            await h.call("grower", "die")
        pool = h._registry.record("grower").pool
        await wait_for(lambda: pool.stale is not None, timeout=10)
        assert await h.call("grower", "which") == 1 and len(h.plugin("grower").workers) == 1  # ... the other serves
        path.write_text(upd(1))  # put back: replaced again
        await wait_for(lambda: len(h.plugin("grower").workers) == 2 and h.plugin("grower").state == "running",
                       timeout=10)
        assert await h.call("grower", "which") == 1 and h.plugin("grower").crashes == 2


async def test_a_refusal_while_a_version_waits_for_approval_says_so_and_how_to_approve(
        plugin_dir, make_host, state_dir, caplog):
    """helper-113: under serve --dev, adding env: ["HOME"] to a plugin refused HOME left it at its
    old code, and each call said 'add "HOME" to metadata.permissions.env' (done already); the
    approve command the log gave lacked the --plugins and --state-dir serve was given."""
    reads = 'export function home() { return Deno.env.get("HOME"); }\n'
    path = plugin_dir.add("grower/mod.js", version(1, "{}") + reads)
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        path.write_text(version(2, '{ env: ["HOME"] }') + reads)
        assert await h.reload("grower") is False
        with pytest.raises(PermissionDenied) as refused:
            await h.call("grower", "home")
    how = f"python -m host approve grower --plugins {plugin_dir.root} --state-dir {state_dir}"
    assert "version 1.0.2 asks for env: HOME and waits for approval" in refused.value.message, refused.value.message
    assert how in refused.value.message
    assert any(how in r.getMessage() for r in caplog.records if "waits for approval" in r.getMessage())


async def test_a_version_asking_for_more_at_start_waits_in_pending(plugin_dir, make_host, state_dir):
    path = plugin_dir.add("grower/mod.js", version(1, "{}"))
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        assert await h.call("grower", "which") == 1
    path.write_text(version(2, '{ read: ["cache"] }'))  # edited while the host was down
    async with make_host(pool=ONE, state_dir=str(state_dir)) as h:
        info = h.plugin("grower")
        assert info.state == "pending" and info.pending_approval == ["read: cache"]
        assert "approve grower" in info.error and info.workers == []
        with pytest.raises(PluginUnavailable, match="pending"):
            await h.call("grower", "which")
        assert await h.approve("grower") is True
        assert await h.call("grower", "which") == 2 and h.plugin("grower").state == "running"


async def test_a_plugin_that_can_write_cannot_widen_its_own_grants(plugin_dir, make_host, state_dir):
    # The attack: write: ["."] rewrote the plugin's own manifest to add the host's secret key.
    plugin_dir.add("climber/mod.js", """
        export const metadata = { id: "climber", name: "climber", version: "1.0.0", apiVersion: "1.0",
          permissions: { write: ["."] } };
        export async function climb(path) {
          const text = await Deno.readTextFile(path);
          await Deno.writeTextFile(path, text.replace('write: ["."]', 'write: ["."], env: ["HOME"]'));
          return "climbed";
        }
    """)
    mod = plugin_dir.root / "climber" / "mod.js"
    before = mod.read_text()
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(interval=0.1)) as h:
        with pytest.raises(PermissionDenied, match="Requires write access"):
            await h.call("climber", "climb", str(mod))
        assert mod.read_text() == before
        assert h.plugin("climber").pending_approval == []


def test_the_cli_and_the_http_api_approve_what_a_running_server_holds(plugin_dir, tmp_path, shared_state):
    token = "adm-approve-7c1d"
    path = plugin_dir.add("grower/mod.js", version(1, "{}"))
    state = fresh_state(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir", str(state),
                       env={"PLUGIN_HOST_ADMIN_TOKEN": token}) as srv:
        def which() -> int:
            status, out = srv.request("POST", "/api/plugins/grower/call/which", {"args": []}, token=token)
            assert status == 200, out
            return out["result"]

        def info() -> dict:
            return srv.request("GET", "/api/plugins/grower", token=token)[1]

        assert which() == 1
        path.write_text(version(2, '{ net: ["a.example.com"] }'))
        status, body = srv.request("POST", "/api/plugins/grower/reload", token=token)
        assert status == 409 and body["error"]["type"] == "ApprovalPending"
        assert "net: a.example.com" in body["error"]["message"]
        assert info()["pending_approval"] == ["net: a.example.com"] and which() == 1
        # the CLI, beside the running server: the server applies it at its next rescan
        out = run_cli("--plugins", str(plugin_dir.root), "--state-dir", str(state), "approve", "grower",
                      cwd=tmp_path)
        assert out.returncode == 0 and "approved net: a.example.com" in out.stdout, out.stderr
        srv.poll(lambda: True if info()["version"] == "1.0.2" else None, "the approved version serving")
        assert which() == 2 and info()["pending_approval"] == []
        # the HTTP API
        path.write_text(version(3, '{ net: ["a.example.com", "b.example.com"] }'))
        srv.poll(lambda: True if info()["pending_approval"] == ["net: b.example.com"] else None, "pending")
        status, body = srv.request("POST", "/api/plugins/grower/approve", token=token)
        assert status == 200 and body["version"] == "1.0.3" and body["pending_approval"] == []
        assert srv.request("POST", "/api/plugins/grower/approve")[0] == 401  # the admin token is needed
    approvals = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "approve"]
    assert [e["by"] for e in approvals] == ["first load", "cli", "http"]


async def test_an_approval_naming_other_grants_than_what_waits_now_approves_nothing(
        plugin_dir, make_host, state_dir):
    path = plugin_dir.add("grower/mod.js", version(1, "{}"))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(interval=0.1)) as h:
        path.write_text(version(2, '{ net: ["a.example.com"] }'))
        await wait_for(lambda: h.plugin("grower").pending_approval == ["net: a.example.com"], timeout=10)
        path.write_text(version(3, '{ net: ["a.example.com", "b.example.com"] }'))  # after the operator looked
        await wait_for(lambda: len(h.plugin("grower").pending_approval) == 2, timeout=10)
        with pytest.raises(ApprovalChanged, match=r"now asks for net: a\.example\.com, net: b\.example\.com"):
            await h.approve("grower", grants=["net: a.example.com"])
        assert h.plugin("grower").version == "1.0.1" and await h.call("grower", "which") == 1
        assert await h.approve("grower", grants=["net: b.example.com", "net: a.example.com"]) is True
        assert await h.call("grower", "which") == 3
