"""The grants the operator approved for each plugin (``<state_dir>/approvals.json``, 0600).

A plugin seen for the first time is approved as it declares itself (the operator installed it);
from then on a version that declares more than was approved (a new host in ``net``, also one a
``{config.KEY}`` entry resolves to with a new configSchema default, any new path, variable or
kind; an event capability no approved one covers, or a ``priority`` above the highest approved,
since a plugin taking an event sees its payloads and the highest answers first in a
``stop_at_first`` emit) is not loaded until the operator approves it: a plugin that can write
somewhere cannot widen its own grants, and neither can a change to its code that nobody looked
at. Approvals are written under a lock, so the CLI and a running server can both record them;
the server notices the file change at its next rescan. With ``[state] database`` they are kept in
the database instead (approvals_pg.py), shared by every host."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ..errors import InvalidConfig, StateFileDamaged
from ..plugins.manifest import Manifest, defaults, resolve_net
from .approvals_core import Approvals, Asked, first_refusal, merge_approval
from .approvals_pg import PostgresApprovals
from .audit import AuditLog
from .permissions import Permissions
from .private_files import locked, os_failure, write_private

log = logging.getLogger("host.approvals")

FILE = "approvals.json"


def declared(manifest: Manifest) -> Asked:
    """What a manifest declares, as approvals compare it (``Asked``): its event capabilities,
    its priority, and its grants as the plugin's author controls them. ``{config.KEY}`` net
    entries are kept as written (a value the operator sets is the operator's choice) and joined
    by the hosts they resolve to with the configSchema's defaults
    (a new default is a new grant, since the workers get it whenever the operator sets no
    value); ``allowPrivateNetwork`` is left out (only the operator's host.toml grants it)."""
    raw = manifest.permissions
    perms = Permissions.parse(raw)
    net = raw.get("net") if isinstance(raw, dict) else None
    if isinstance(net, list) and isinstance(perms.net, list):
        perms = msgspec.structs.replace(perms, net=list(dict.fromkeys(
            [*perms.net, *resolve_net(net, defaults(manifest.config_schema))])))
    return Asked(msgspec.structs.replace(perms, allow_private_network=False), tuple(manifest.events()),
                 manifest.priority)


def open_approvals(state_dir: Path, database: str | None, audit: AuditLog | None) -> Approvals:
    """The approvals ``[state]`` names: the table in ``database`` (approvals_pg.py), else approvals.json."""
    return PostgresApprovals(database, audit) if database else ApprovalStore(state_dir, audit)


class ApprovalStore(Approvals):
    """Approved grants by plugin id, kept in ``<state_dir>/approvals.json``."""

    def __init__(self, state_dir: Path, audit: AuditLog | None = None) -> None:
        super().__init__(audit)
        self.path = Path(state_dir) / FILE
        self._stamp: tuple[int, int] | None = None
        self._writing: anyio.Lock | None = None  # made in the event loop, at the first use
        self._reread()

    def _turn(self) -> anyio.Lock:
        """Held by a store (in its thread) and by a refresh: a refresh landing between a store's
        read and its assignment would put back what the file held before it."""
        if self._writing is None:
            self._writing = anyio.Lock()
        return self._writing

    async def refresh(self) -> bool:
        async with self._turn():
            return self._reread()

    def _reread(self) -> bool:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._approved = self._read()
        self._stamp = stamp
        return True

    async def _store(self, plugin_id: str, asked: Asked, version: str | None, by: str, *,
                     first: bool = False) -> tuple[bool, list[str]]:
        """``_store_now`` in a worker thread: waiting for the file's lock (another process
        writing it) holds no request but this one."""
        async with self._turn():
            return await anyio.to_thread.run_sync(lambda: self._store_now(plugin_id, asked, version, by, first=first))

    def _store_now(self, plugin_id: str, asked: Asked, version: str | None, by: str, *,
                   first: bool = False) -> tuple[bool, list[str]]:
        try:
            with locked(self.path):
                self._approved = self._read()
                held = self._approved.get(plugin_id)
                if first and (refused := first_refusal(held, asked)) is not None:  # approved elsewhere since
                    self._stamp = None  # the rescan reads the file again
                    return False, refused
                self._approved[plugin_id], added = merge_approval(held, asked, version=version, by=by)
                write_private(self.path, json.dumps(self._approved, indent=2, sort_keys=True).encode())
                self._stamp = self._file_stamp()
        except OSError as exc:  # full, read-only, removed: a StateError naming the file
            raise os_failure(self.path, exc, "write") from None
        return True, added

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InvalidConfig(f"{self.path}: cannot read the approved plugin grants: {exc.strerror or exc}") from None
        try:  # bytes that are not UTF-8 are unreadable too (before: a UnicodeDecodeError traceback)
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ValueError("not an object of {plugin id: approval}")
            for entry in data.values():
                Permissions.parse(entry.get("permissions"))
        except (ValueError, InvalidConfig) as exc:
            raise StateFileDamaged(f"{self.path}: the approved plugin grants are unreadable ({exc}); "
                                f"restore it from a backup, or remove it to approve every plugin "
                                f"as it is now at the next start") from None
        return data

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)


__all__ = ["ApprovalStore", "Approvals", "Asked", "declared", "open_approvals"]
