"""The approved plugin grants in the ``[state] database``: one row per plugin in
``plugin_approvals`` (pg_documents.py), so a version approved through one host (its API, or the
CLI beside it) starts on every host sharing the database at its next rescan, and a plugin seen
for the first time is approved once for all of them. An approval merges with what the row holds
under the table's lock in the database, so two hosts approving at once lose neither."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidConfig
from ..pg_documents import PgDocuments
from ..pg_session import STATE_TIMEOUT, PgSession
from .approvals_core import Approvals, Asked, first_refusal, merge_approval
from .audit import AuditLog
from .permissions import Permissions

TABLE = "plugin_approvals"


class PostgresApprovals(Approvals):
    """Approved grants by plugin id in ``plugin_approvals``, read at the first use and then by
    each rescan (``refresh``: only when another host wrote)."""

    def __init__(self, url: str, audit: AuditLog | None = None, timeout: float = STATE_TIMEOUT) -> None:
        super().__init__(audit)
        self.db = PgSession(url, timeout, PgDocuments.schema(TABLE), what="the approvals ([state] database)")
        self.docs = PgDocuments(self.db, TABLE)
        self._mark: tuple[int, int] | None = None  # as last read; None: read at the next refresh
        self._loaded = False

    async def _load(self) -> None:
        if not self._loaded:  # once: later, only ``refresh`` (the rescan) reads the table
            await self.refresh()

    async def refresh(self) -> bool:
        if self._mark is not None and await self.db.run(self.docs.mark) == self._mark:
            return False
        approved, _, mark, damaged = await self.db.run(self.docs.read)
        for plugin_id, entry in list(approved.items()):
            try:
                Permissions.parse(entry.get("permissions"))
            except InvalidConfig as exc:
                damaged[plugin_id] = (f"[state] database, table {TABLE}: the approval of {plugin_id!r} is unreadable "
                                      f"({exc.message}); delete that row to approve the plugin as it is now")
                del approved[plugin_id]
        self._approved, self._damaged, self._mark, self._loaded = approved, damaged, mark, True
        return True

    async def _store(self, plugin_id: str, asked: Asked, version: str | None, by: str, *,
                     first: bool = False) -> tuple[bool, list[str]]:
        await self._load()

        def merge(conn: Any) -> tuple[bool, dict[str, Any], list[str]]:
            # a damaged row this host knows of: the operator's approval replaces it; one damaged
            # since the last read raises (never taken for a plugin seen for the first time)
            held = None if plugin_id in self._damaged else self.docs.get(conn, plugin_id)
            if first and (refused := first_refusal(held, asked)) is not None:  # another host approved it since
                return False, held, refused
            entry, added = merge_approval(held, asked, version=version, by=by)
            self.docs.put(conn, plugin_id, entry)
            return True, entry, added
        (written, entry, added), before, after = await self.db.run(
            lambda c: self.docs.write(c, lambda: merge(c)))
        self._approved[plugin_id] = entry
        # this host's own write is no change "from outside", unless another host's came before it
        self._mark = after if written and before == self._mark else None
        return written, added

    def close(self) -> None:
        self.db.close()


__all__ = ["PostgresApprovals"]
