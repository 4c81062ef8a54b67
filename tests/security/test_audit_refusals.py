"""Every refusal and resource-limit kill is in the audit log, with the plugin, the kind and what
was refused: a sandbox refusal, a runtime cap, a log flood, a held approval, a call past its
deadline, a lifecycle hook past its deadline."""

from __future__ import annotations

import time

import pytest
from support.processes import wait_for

from host import CallTimeout, PayloadTooLarge, PermissionDenied, WorkerLimits
from host.config import ReloadConfig
from host.security.audit import AuditLog, read_audit
from host.security.refusals import PER_SECOND, record_refusal

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PLUGIN = """
export const metadata = { id: "nosy", name: "nosy", version: "1.0.0", apiVersion: "1.0" };
export async function peek() { return await Deno.readTextFile("/etc/hostname"); }
export function spin() { while (true) {} }
export function chatty(n) { for (let i = 0; i < n; i++) console.log("line", i); return n; }
export function big(n) { return "x".repeat(n); }
"""


def audit_of(h, event: str) -> list[dict]:
    return [e for e in read_audit(h.config.state_path / "audit.jsonl") if e["event"] == event]


async def test_a_sandbox_refusal_is_audited_as_a_permission_refusal(plugin_dir, make_host):
    plugin_dir.add("nosy.js", PLUGIN)
    async with make_host() as h:
        with pytest.raises(PermissionDenied):
            await h.call("nosy", "peek")
        (entry,) = audit_of(h, "refusal")
    assert (entry["plugin"], entry["kind"], entry["function"]) == ("nosy", "permission", "peek")
    assert 'read access to "/etc/hostname"' in entry["what"]


async def test_a_call_past_its_deadline_is_audited_as_a_limit_kill(plugin_dir, make_host):
    plugin_dir.add("nosy.js", PLUGIN)
    async with make_host(limits=WorkerLimits(call_timeout=0.3)) as h:
        pid = h.plugin("nosy").workers[0].pid
        with pytest.raises(CallTimeout):
            await h.call("nosy", "spin")
        await wait_for(lambda: audit_of(h, "limit_kill"))  # the caller hears before the process is reaped
        kills = audit_of(h, "limit_kill")
    assert [(k["plugin"], k["pid"], k["reason"]) for k in kills] == [("nosy", pid, "timeout")]
    assert "limits.call_timeout" in kills[0]["what"]


async def test_runtime_caps_are_audited_as_limit_refusals(plugin_dir, make_host):
    plugin_dir.add("nosy.js", PLUGIN)
    limits = WorkerLimits(max_log_entries=5, max_result_bytes=1000)
    async with make_host(limits=limits) as h:
        assert await h.call("nosy", "chatty", 50) == 50
        with pytest.raises(PayloadTooLarge):
            await h.call("nosy", "big", 5000)
        refusals = audit_of(h, "refusal")
    kinds = {(r["kind"], r["function"], r["what"].split(":")[0]) for r in refusals}
    assert ("limit", "chatty", "log flood") in kinds
    assert ("limit", "big", "PayloadTooLarge") in kinds
    assert not audit_of(h, "limit_kill")  # refused, not killed


async def test_a_version_held_for_approval_is_audited(plugin_dir, make_host):
    path = plugin_dir.add("nosy.js", PLUGIN)
    async with make_host(reload=ReloadConfig(enabled=False)) as h:
        path.write_text(PLUGIN.replace('apiVersion: "1.0"', 'apiVersion: "1.0", permissions: { net: ["api.example.com"] }')
                        .replace('"1.0.0"', '"1.1.0"'))
        assert await h.reload("nosy") is False
        (entry,) = audit_of(h, "refusal")
    assert (entry["plugin"], entry["kind"], entry["version"]) == ("nosy", "approval", "1.1.0")
    assert "api.example.com" in entry["what"]


async def test_a_hook_past_its_deadline_is_audited_as_a_limit_kill(plugin_dir, make_host):
    plugin_dir.add("nosy.js", PLUGIN + "export function onStop() { while (true) {} }\n")
    async with make_host(limits=WorkerLimits(hook_timeout=0.3)) as h:
        pid = h.plugin("nosy").workers[0].pid
    kills = audit_of(h, "limit_kill")
    assert [(k["plugin"], k["pid"], k["reason"]) for k in kills] == [("nosy", pid, "hook")]


def test_a_plugin_cannot_flood_the_audit_log_with_refusals(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    for i in range(50):
        record_refusal(audit, "noisy", "permission", f"refusal {i}")
    record_refusal(audit, "quiet", "permission", "one")
    lines = read_audit(tmp_path / "audit.jsonl")
    assert [e["plugin"] for e in lines].count("noisy") == PER_SECOND
    assert [e["what"] for e in lines if e["plugin"] == "quiet"] == ["one"]  # others keep theirs
    time.sleep(1.05)  # the budget is per second: the next second's first line says what was left out
    record_refusal(audit, "noisy", "permission", "later")
    last = read_audit(tmp_path / "audit.jsonl")[-1]
    assert (last["what"], last["suppressed"]) == ("later", 50 - PER_SECOND)
