"""What every approvals store shares: the approved grants as last read, how an approval merges
with the one before, and the audit of each refusal and approval (approvals.py keeps them in
approvals.json, approvals_pg.py in the ``[state] database``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import StateError
from .audit import AuditLog
from .permissions import Permissions, beyond


def merge_approval(before: dict[str, Any] | None, asked: Permissions, *, version: str | None,
                   by: str) -> tuple[dict[str, Any], list[str]]:
    """The approval entry recording ``asked`` joined with what ``before`` approved, and what it adds."""
    old = Permissions.parse(before.get("permissions")) if before else Permissions()
    added = beyond(asked, old) if before else [f"{k}: {v}" for k, v in msgspec.to_builtins(asked).items()]
    merged = Permissions.merge(old, asked) if before else asked
    return ({"permissions": msgspec.to_builtins(merged), "version": version,
             "approved_at": round(time.time(), 3), "by": by}, added)


class Approvals:
    """Approved grants by plugin id, as last read (``_approved``), with the audit of each
    refusal and approval; where they are kept is the subclass's (``_load``, ``_store``,
    ``refresh``). Async: the PostgreSQL store (approvals_pg.py) goes to the database."""

    def __init__(self, audit: AuditLog | None) -> None:
        self._audit = audit or AuditLog(None)
        self._approved: dict[str, dict[str, Any]] = {}
        # unreadable rows, why by plugin: that plugin is in error (never taken for one seen for the
        # first time, which would approve what it asks now); an approval replaces the row
        self._damaged: dict[str, str] = {}

    async def refresh(self) -> bool:
        """Read the approvals again if another process changed them; True when it did."""
        raise NotImplementedError

    async def _load(self) -> None:
        """Read them once before the first use."""

    async def _store(self, plugin_id: str, asked: Permissions, version: str | None, by: str, *,
                     first: bool = False) -> tuple[bool, list[str]]:
        """Record the merged approval (merge_approval) under a lock: (True, what it added). With
        ``first``, only if the store holds no approval of the plugin by then; if it does,
        nothing is written: (False, what ``asked`` adds to that one)."""
        raise NotImplementedError

    async def beyond(self, plugin_id: str, asked: Permissions) -> list[str] | None:
        """What ``asked`` adds to the plugin's approved grants (empty: nothing); None when the
        plugin has never been approved (seen for the first time)."""
        await self._load()
        if plugin_id in self._damaged:
            raise StateError(self._damaged[plugin_id])
        entry = self._approved.get(plugin_id)
        if entry is None:
            return None
        return beyond(asked, Permissions.parse(entry.get("permissions")))

    async def held(self, plugin_id: str, asked: Permissions, version: str | None) -> list[str] | None:
        """``beyond``, for a version about to start: what it adds is refused until approved,
        and that refusal is audited (security/refusals.py)."""
        added = await self.beyond(plugin_id, asked)
        if added:
            self._audit.record("refusal", plugin=plugin_id, kind="approval", version=version,
                               what="grants beyond the approved ones, held until approved: " + "; ".join(added))
        return added

    async def first_seen(self, plugin_id: str, asked: Permissions, version: str | None) -> list[str]:
        """Approve ``asked`` for a plugin this process has seen no approval of (``beyond`` was
        None). First sight is decided by the store under its lock, not on this process's copy:
        when another process (a ``serve`` sibling, a host on the same database) approved the
        plugin since this one read, nothing is written and what ``asked`` adds to that
        approval is returned, to be held (audited) as for any later version."""
        written, added = await self._store(plugin_id, asked, version, "first load", first=True)
        if written:
            self._audit_approval(plugin_id, version, "first load", added)
            return []
        if added:
            self._audit.record("refusal", plugin=plugin_id, kind="approval", version=version,
                               what="grants beyond the approved ones, held until approved: " + "; ".join(added))
        return added

    async def approve(self, plugin_id: str, asked: Permissions, *, version: str | None, by: str) -> list[str]:
        """Record ``asked`` (joined with what was approved before) as the plugin's approved
        grants; audited. Returns what this approval added."""
        _, added = await self._store(plugin_id, asked, version, by)
        self._audit_approval(plugin_id, version, by, added)
        return added

    def _audit_approval(self, plugin_id: str, version: str | None, by: str, added: list[str]) -> None:
        self._damaged.pop(plugin_id, None)
        self._audit.record("approve", plugin=plugin_id, version=version, by=by, added=added,
                           permissions=self._approved[plugin_id]["permissions"])

    def close(self) -> None:
        """Give back what the store holds open (a database connection)."""


__all__ = ["Approvals", "merge_approval"]
