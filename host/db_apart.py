"""Whether the execute ``db`` tool's database is the host's own state, asked of the servers and
files themselves when the tool first connects. config.py's start-time check reads the two
connection strings; it cannot see that another port (pgbouncer, an ssh tunnel, a published
container port), a DNS name or an interface address of this machine reaches the ``[state]
database`` too, nor that a sqlite file outside ``state_dir`` is a hard link or bind mount of one
in it. Code with ``tools: ["db"]`` there would read every plugin's storage, the sealed configs,
the approvals and the audit log.

PostgreSQL: both servers are asked who they are (``IDENTITY``, readable by any login role: the
database's OID, the postmaster's start time and port, the cluster's ``system_identifier`` when
``pg_control_system()`` may be called, whether it is a standby). The same database is the same
OID in the same cluster: one postmaster (start time to the microsecond and port), or one
system identifier with a standby on either side (a physical replica holds the same data). The
state side is asked on the state store's own connection (plugin storage's PgSession).

sqlite: the file's (st_dev, st_ino) against every file under ``state_dir``.

The verdict is kept for the tool's life: asked once, not per execution. A side that cannot be
asked (down, or the query refused) fails the execution with DbUnavailable and nothing is kept."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from .db_backends import PostgresBackend, SqliteBackend
from .errors import DbError, DbRefused, DbUnavailable, HostError
from .pg_session import PgSession

log = logging.getLogger("host.db")

# Schema-qualified: the execute database's search_path is not the host's to trust. Two statements:
# PostgreSQL checks the right to call pg_control_system() when it plans the call, even in a CASE
# branch not taken, so the first asks whether it may.
IDENTITY = (
    "SELECT d.oid::text AS db, "
    "extract(epoch FROM pg_catalog.pg_postmaster_start_time())::text AS started, "
    "pg_catalog.current_setting('port') AS port, pg_catalog.pg_is_in_recovery() AS standby, "
    "pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS may "
    "FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()")
SYSTEM = "SELECT system_identifier::text AS system FROM pg_catalog.pg_control_system()"
EXECUTE, STATE = "[execute] database", "[state] database"

Run = Callable[[Callable[[], Any]], Awaitable[Any]]  # a blocking function run in a thread within a deadline


def identity(backend: PostgresBackend, conn: Any) -> dict[str, Any]:
    """Who the server behind ``conn`` is (blocking)."""
    rows = backend.run(conn, IDENTITY, [], 1)[0]
    if not rows:
        raise DbError("the server does not list the database it opened in pg_database")
    found = rows[0]
    found["system"] = backend.run(conn, SYSTEM, [], 1)[0][0]["system"] if found.pop("may") else None
    return found


def same_database(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two identities are one database: one OID in one cluster (see the module's docstring)."""
    if a["db"] != b["db"]:
        return False
    known = a["system"] is not None and b["system"] is not None
    if known and a["system"] != b["system"]:
        return False
    one_postmaster = (a["started"], a["port"]) == (b["started"], b["port"])
    return one_postmaster or (known and (a["standby"] or b["standby"]))


def state_files(state_dir: Path) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every file under ``state_dir`` (symbolic links not followed)."""
    out = set()
    for root, _, files in os.walk(state_dir):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name), follow_symlinks=False)
            except OSError:
                continue
            out.add((st.st_dev, st.st_ino))
    return out


class Apart:
    """The verdict for one DbTool: ``check`` before a new connection is used."""

    def __init__(self, backend: SqliteBackend | PostgresBackend, *, state_dir: Path | None,
                 state: PgSession | None) -> None:
        self.backend, self.state_dir, self.state = backend, state_dir, state
        self._apart = isinstance(backend, PostgresBackend) and state is None  # state in files only
        self._refused: str | None = None  # why, once found (a fresh error each time: no traceback grows)
        self._lock = anyio.Lock()

    def refused(self) -> None:
        """Raise the refusal already found (before anything is opened)."""
        if self._refused is not None:
            raise DbRefused(self._refused)

    async def check(self, conn: Any, run: Run, until: float) -> None:
        """Decide once, on ``conn`` (a new connection of the tool; ``run`` runs blocking work
        on it within the deadline); DbRefused when it is the host's own state."""
        if self._apart:
            return
        with anyio.move_on_after(max(until - time.monotonic(), 0)) as waited:
            await self._lock.acquire()  # another connection is asking already
        if waited.cancelled_caught:
            raise DbUnavailable(f"db: still asking whether {EXECUTE} is apart from {STATE} at the deadline")
        try:
            self.refused()
            if self._apart:
                return
            why = await (self._sqlite(run) if isinstance(self.backend, SqliteBackend) else self._postgres(conn, run, until))
            if why is None:
                self._apart = True
                return
            self._refused = why
            log.error("db: %s", why)
            raise DbRefused(why)
        finally:
            self._lock.release()

    async def _sqlite(self, run: Run) -> str | None:
        assert isinstance(self.backend, SqliteBackend)
        if self.state_dir is None:
            return None
        path, state_dir = self.backend.path, self.state_dir

        def look() -> bool:
            st = os.stat(path)
            return (st.st_dev, st.st_ino) in state_files(state_dir)
        if await run(look):
            return (f"{EXECUTE} ({path}) is a file of the host's state directory ({state_dir}) under another "
                    "name (a hard link or a bind mount): /execute code would read the host's own files; "
                    "give it a database outside state_dir")
        return None

    async def _postgres(self, conn: Any, run: Run, until: float) -> str | None:
        assert isinstance(self.backend, PostgresBackend) and self.state is not None
        backend, state = self.backend, self.state
        try:
            theirs = await state.run(lambda c: identity(state.backend, c), until)
        except HostError as exc:
            raise DbUnavailable(f"db: cannot tell whether {EXECUTE} is apart from {STATE} ({state.backend.where}): "
                                f"{exc.message}") from None
        try:
            ours = await run(lambda: identity(backend, conn))
        except DbError as exc:
            raise DbUnavailable(f"db: cannot tell whether {EXECUTE} ({backend.where}) is apart from {STATE}: "
                                f"{exc.message}") from None
        if not same_database(ours, theirs):
            return None
        return (f"{EXECUTE} ({backend.where}) reaches the same database as {STATE} ({state.backend.where}): the "
                "servers say so, whatever the two addresses. /execute code would read the host's own tables "
                "(plugin storage, sealed configs, approvals, audit); give /execute a database of its own")


__all__ = ["IDENTITY", "SYSTEM", "Apart", "identity", "same_database"]
