"""The approval gate a plugin version passes before it starts: what it declares beyond the
grants the operator approved for its id holds it aside (a running version keeps serving;
otherwise the plugin waits in `pending`) until ``approve``. A plugin seen for the first time is
approved as it declares itself (the operator installed it)."""

from __future__ import annotations

from ..security.approvals import Approvals, declared
from .lifecycle import SERVING, Plugin
from .manifest import Manifest


async def held_for_approval(approvals: Approvals, record: Plugin, manifest: Manifest, exports: list[str]) -> bool:
    """True when ``manifest`` asks for more than the approved grants: it is kept aside on
    ``record`` (``record.pending`` says what) until the operator approves."""
    asked = declared(manifest)
    added = await approvals.held(record.id, asked, manifest.version)
    if added is None:
        await approvals.approve(record.id, asked, version=manifest.version, by="first load")
        return False
    if not added:
        return False
    record.hold(manifest, exports, added)
    if record.state not in SERVING:
        record.set_state("pending", f"asks for {', '.join(added)} beyond its approved grants; "
                                    f"approve with `python -m host approve {record.id}`")
    return True


__all__ = ["held_for_approval"]
