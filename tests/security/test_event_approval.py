"""A new version that takes events its approved versions did not, or raises its priority (the
highest answers first in a ``stop_at_first`` emit), waits for approval like one asking for new
grants: the approved version keeps serving meanwhile, and the refusal is audited."""

from __future__ import annotations

import json

import pytest

from host.config import ReloadConfig
from host.security.audit import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def hook(version: str, caps: str, priority: int) -> str:
    return (f'export const metadata = {{ id: "hook", name: "hook", version: "{version}", apiVersion: "1.0", '
            f"capabilities: {caps}, priority: {priority} }};\n"
            f'export function onEvent(event) {{ return "hook {version} " + event; }}\n')


RIVAL = ('export const metadata = { id: "rival", name: "rival", version: "1.0.0", apiVersion: "1.0", '
         'capabilities: ["message.incoming"], priority: 5 };\n'
         'export function onEvent(event) { return "rival"; }\n')


async def test_new_events_or_a_raised_priority_wait_for_approval(plugin_dir, make_host, state_dir):
    path = plugin_dir.add("hook.js", hook("1.0.0", '["message.incoming"]', 1))
    plugin_dir.add("rival.js", RIVAL)
    async with make_host(state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        first = await h.emit("message.incoming", stop_at_first=True)
        assert [r.value for r in first] == ["rival"]
        path.write_text(hook("2.0.0", '["message.incoming", "user.*"]', 10))
        assert await h.reload("hook") is False  # held: before, v2 served at once and answered first
        info = h.plugin("hook")
        assert info.state == "running" and info.version == "1.0.0"
        assert info.pending_approval == ["events: user.*", "priority: 10 (approved: 1)"]
        assert [r.value for r in await h.emit("message.incoming", stop_at_first=True)] == ["rival"]
        assert await h.emit("user.online") == []
        assert await h.approve("hook", by="test") is True
        assert [r.value for r in await h.emit("message.incoming", stop_at_first=True)] == [
            "hook 2.0.0 message.incoming"]
        assert [r.value for r in await h.emit("user.online")] == ["hook 2.0.0 user.online"]
        # What was approved before needs no approval again: a lower priority, fewer events, an
        # event an approved pattern covers.
        path.write_text(hook("3.0.0", '["user.online"]', 3))
        assert await h.reload("hook") is True
        path.write_text(hook("4.0.0", '["message.incoming", "user.online", "user.offline"]', 10))
        assert await h.reload("hook") is True
        assert h.plugin("hook").pending_approval == []
    audit = read_audit(state_dir / "audit.jsonl")
    refusals = [e for e in audit if e["event"] == "refusal" and e.get("kind") == "approval"]
    assert len(refusals) == 1 and "events: user.*" in refusals[0]["what"] and "priority: 10" in refusals[0]["what"]
    approvals = [(e["by"], e["added"]) for e in audit if e["event"] == "approve" and e["plugin"] == "hook"]
    assert approvals == [("first load", ["events: message.incoming", "priority: 1"]),
                         ("test", ["events: user.*", "priority: 10 (approved: 1)"])]


async def test_an_approval_recorded_before_events_were_compared_records_them_at_the_next_load(
        plugin_dir, make_host, state_dir):
    """An approvals.json written before events and priority were compared holds grants only: the
    version loaded next is approved as it declares them (as at a first load, audited), and from
    then on a widened set waits as for any approval."""
    path = plugin_dir.add("hook.js", hook("1.0.0", '["message.incoming"]', 1))
    async with make_host(state_dir=str(state_dir), reload=ReloadConfig(enabled=False)):
        pass
    approvals = state_dir / "approvals.json"
    stored = json.loads(approvals.read_text())
    stored["hook"] = {k: v for k, v in stored["hook"].items() if k not in ("events", "priority")}
    approvals.write_text(json.dumps(stored))
    path.write_text(hook("2.0.0", '["message.incoming", "user.online"]', 2))
    async with make_host(state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        assert h.plugin("hook").version == "2.0.0" and h.plugin("hook").state == "running"
        path.write_text(hook("3.0.0", '["message.incoming", "user.online", "user.offline"]', 2))
        assert await h.reload("hook") is False
        assert h.plugin("hook").pending_approval == ["events: user.offline"]
    stored = json.loads(approvals.read_text())["hook"]
    assert (stored["events"], stored["priority"]) == (["message.incoming", "user.online"], 2)


def test_approving_a_lower_priority_keeps_the_highest_approved():
    """A version asking a lower priority (and a new grant) was approved with the lower priority
    recorded when the approved one was 0 (falsy: ``old or asked``), so the next version back at
    0 was held as 'priority: 0 (approved: -1)'."""
    from host.security.approvals_core import Asked, added_by, merge_approval
    from host.security.permissions import Permissions

    before, _ = merge_approval(None, Asked(Permissions(), ("tick",), 0), version="1.0.0", by="first load")
    after, added = merge_approval(before, Asked(Permissions(net=["api.example.com"]), ("tick",), -1),
                                  version="1.1.0", by="operator")
    assert after["priority"] == 0 and added == ["net: api.example.com"], (after, added)
    assert added_by(Asked(Permissions(net=["api.example.com"]), ("tick",), 0), after) == []
