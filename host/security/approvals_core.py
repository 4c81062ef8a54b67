"""What every approvals store shares: the approved grants, events and priority as last read, how
an approval merges with the one before, and the audit of each refusal and approval (approvals.py
keeps them in approvals.json, approvals_pg.py in the ``[state] database``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import StateError
from ..plugins.manifest import covers
from .audit import AuditLog
from .permissions import Permissions, beyond


class Asked(msgspec.Struct, frozen=True):
    """What a plugin version declares that approvals compare: its grants, the events it takes
    (its event capabilities, patterns included) and its ``priority``, which orders it among the
    plugins taking an event (the highest answers first in a ``stop_at_first`` emit)."""

    grants: Permissions
    events: tuple[str, ...] = ()
    priority: int = 0


def _events(entry: dict[str, Any]) -> list[str] | None:
    """The events an approval entry approved; None: it records none (written before they were)."""
    events = entry.get("events")
    return events if isinstance(events, list) and all(isinstance(e, str) for e in events) else None


def _priority(entry: dict[str, Any]) -> int | None:
    value = entry.get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def recorded(entry: dict[str, Any]) -> bool:
    """Whether the entry records approved events and priority (one written before they were
    compared does not: the version seen next is approved as it declares them, as at a first load)."""
    return _events(entry) is not None and _priority(entry) is not None


def added_by(asked: Asked, entry: dict[str, Any]) -> list[str]:
    """What ``asked`` declares beyond the approval ``entry``: grants (``beyond``), events no
    approved one covers (as written, or by an approved pattern: ``message.*`` covers
    ``message.incoming``), a priority above the highest approved."""
    out = beyond(asked.grants, Permissions.parse(entry.get("permissions")))
    if (events := _events(entry)) is not None:
        exact, patterns = set(events), [old for old in events if "*" in old]  # most are exact names
        out += [f"events: {e}" for e in asked.events
                if e not in exact and not any(covers(old, e) for old in patterns)]
    if (priority := _priority(entry)) is not None and asked.priority > priority:
        out.append(f"priority: {asked.priority} (approved: {priority})")
    return out


def first_refusal(held: dict[str, Any] | None, asked: Asked) -> list[str] | None:
    """For a version this process saw as the plugin's first: None when it may be approved as it
    declares itself (the store holds no approval of the plugin, or one written before events and
    priority were compared that ``asked`` stays within, which it then completes); else what
    ``asked`` adds to the approval another process recorded meanwhile (to be held)."""
    if held is None:
        return None
    added = added_by(asked, held)
    return added if added or recorded(held) else None


def merge_approval(before: dict[str, Any] | None, asked: Asked, *, version: str | None,
                   by: str) -> tuple[dict[str, Any], list[str]]:
    """The approval entry recording ``asked`` joined with what ``before`` approved, and what it adds."""
    if before:
        added = added_by(asked, before)
        grants = Permissions.merge(Permissions.parse(before.get("permissions")), asked.grants)
        events = list(dict.fromkeys([*(_events(before) or []), *asked.events]))
        old = _priority(before)
        priority = asked.priority if old is None else max(asked.priority, old)
    else:
        added = [f"{k}: {v}" for k, v in msgspec.to_builtins(asked.grants).items()]
        added += [f"events: {e}" for e in asked.events] + ([f"priority: {asked.priority}"] if asked.priority else [])
        grants, events, priority = asked.grants, list(asked.events), asked.priority
    return ({"permissions": msgspec.to_builtins(grants), "events": events, "priority": priority,
             "version": version, "approved_at": round(time.time(), 3), "by": by}, added)


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

    async def _store(self, plugin_id: str, asked: Asked, version: str | None, by: str, *,
                     first: bool = False) -> tuple[bool, list[str]]:
        """Record the merged approval (merge_approval) under a lock: (True, what it added). With
        ``first``, only where ``first_refusal`` of what the store holds by then is None; else
        nothing is written: (False, what ``asked`` adds to that one)."""
        raise NotImplementedError

    async def beyond(self, plugin_id: str, asked: Asked) -> list[str] | None:
        """What ``asked`` adds to the plugin's approved grants, events and priority (empty:
        nothing); None when the plugin has never been approved (seen for the first time), or
        its approval records no events and priority yet (``recorded``)."""
        await self._load()
        if plugin_id in self._damaged:
            raise StateError(self._damaged[plugin_id])
        return first_refusal(self._approved.get(plugin_id), asked)

    async def held(self, plugin_id: str, asked: Asked, version: str | None) -> list[str] | None:
        """``beyond``, for a version about to start: what it adds is refused until approved,
        and that refusal is audited (security/refusals.py)."""
        added = await self.beyond(plugin_id, asked)
        if added:
            self._audit_refusal(plugin_id, version, added)
        return added

    async def first_seen(self, plugin_id: str, asked: Asked, version: str | None) -> list[str]:
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
            self._audit_refusal(plugin_id, version, added)
        return added

    async def approve(self, plugin_id: str, asked: Asked, *, version: str | None, by: str) -> list[str]:
        """Record ``asked`` (joined with what was approved before) as the plugin's approved
        grants, events and priority; audited. Returns what this approval added."""
        _, added = await self._store(plugin_id, asked, version, by)
        self._audit_approval(plugin_id, version, by, added)
        return added

    def _audit_refusal(self, plugin_id: str, version: str | None, added: list[str]) -> None:
        self._audit.record("refusal", plugin=plugin_id, kind="approval", version=version,
                           what="grants, events or priority beyond the approved ones, held until approved: "
                                + "; ".join(added))

    def _audit_approval(self, plugin_id: str, version: str | None, by: str, added: list[str]) -> None:
        self._damaged.pop(plugin_id, None)
        entry = self._approved[plugin_id]
        self._audit.record("approve", plugin=plugin_id, version=version, by=by, added=added,
                           permissions=entry["permissions"], events=entry["events"], priority=entry["priority"])

    def close(self) -> None:
        """Give back what the store holds open (a database connection)."""


__all__ = ["Approvals", "Asked", "added_by", "first_refusal", "merge_approval", "recorded"]
