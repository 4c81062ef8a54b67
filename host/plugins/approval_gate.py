"""The approval gate a plugin version passes before it starts: what it declares beyond the
grants, events and priority the operator approved for its id (security/approvals.py) holds it
aside (a running version keeps serving; otherwise the plugin waits in `pending`) until
``approve``. A plugin seen for the first time is approved as it declares itself (the operator
installed it)."""

from __future__ import annotations

import logging
import shlex

from ..config import HostConfig
from ..errors import ApprovalChanged, InvalidConfig
from ..security.approvals import Approvals, declared
from .lifecycle import SERVING, Plugin
from .manifest import Manifest

log = logging.getLogger("host")


def approve_command(config: HostConfig, plugin_id: str) -> str:
    """The command that approves ``plugin_id`` on this host's plugins and state (helper-113: a
    plain `approve ID`, run where serve was started with --plugins and --state-dir, answered
    "no plugin 'ID' in ./plugins")."""
    dirs = " ".join(f"--plugins {shlex.quote(str(d))}" for d in config.plugin_dirs)
    return f"python -m host approve {plugin_id} {dirs} --state-dir {shlex.quote(str(config.state_path))}"


async def held_for_approval(approvals: Approvals, record: Plugin, manifest: Manifest, exports: list[str],
                            config: HostConfig) -> bool:
    """True when ``manifest`` asks for more than was approved: it is kept aside on
    ``record`` (``record.pending`` says what) until the operator approves."""
    asked = declared(manifest)
    added = await approvals.held(record.id, asked, manifest.version)
    if added is None:  # first sight, unless another process approved it meanwhile
        added = await approvals.first_seen(record.id, asked, manifest.version)
    if not added:
        return False
    how = approve_command(config, record.id)
    record.hold(manifest, exports, added, how)
    if record.pool is not None:  # a refusal in the version serving names the one waiting (helper-113)
        spec, waits = record.pool.spec, f"version {manifest.version} asks for {', '.join(added)} and waits for approval"
        spec.pending_advice = {kind: (f"add {{entry}} to metadata.permissions.{kind} in {record.source.module} if it is "
                                      f"not there: {waits} (`{how}`); version {record.version} serves meanwhile")
                               for kind in {a.split(":", 1)[0] for a in added}}  # the newest waiting version's
    if record.state not in SERVING:
        record.set_state("pending", f"asks for {', '.join(added)} beyond its approved grants, events and priority; "
                                    f"approve with `{how}`")
    return True


async def approve_pending(approvals: Approvals, record: Plugin, grants: list[str] | None, by: str) -> None:
    """Approve the grants ``record``'s pending version asks for (audited). ``grants``: the ones
    the operator was shown; if what waits differs now, ApprovalChanged and nothing is approved.
    InvalidConfig when nothing waits for approval."""
    if record.pending_manifest is None:
        raise InvalidConfig("nothing to approve: the plugin asks for no grant beyond its approved ones",
                            plugin=record.id)
    if grants is not None and sorted(grants) != sorted(record.pending):
        raise ApprovalChanged(f"the waiting version now asks for {', '.join(record.pending)}, not "
                              f"{', '.join(grants) or 'nothing'}: look again before approving", plugin=record.id)
    manifest = record.pending_manifest
    await approvals.approve(record.id, declared(manifest), version=manifest.version, by=by)
    log.warning("plugin %s: grants approved (%s): %s", record.id, by, ", ".join(record.pending))


__all__ = ["approve_pending", "held_for_approval"]
