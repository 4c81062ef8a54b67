"""The ``db`` tool of ``execute`` (the Isolate engine's db: ``await db.users.select().limit(10)``,
``db.users.insert({...}).returning()``, ``db.users.update({...}).where(eq("id", 1))``,
``db.users.delete().where(...)``, ``db.transaction(async (tx) => ...)``) over the one database
the operator names: ``[execute] database`` (or ``DATABASE_URL``), a sqlite file or PostgreSQL.

The code never sends SQL: the worker sends a structured query (db_query.py); the host checks
every name against the database's own schema, builds the statement with quoted identifiers and
bound values, and runs it in a thread (never on the event loop), at most ``db_max_rows`` rows.
Writes need both the request (``tools: ["db:write"]``) and the operator (``[execute] db_writes``);
everything else runs on connections the database itself keeps read-only. Every statement has a
deadline (``db_timeout``, and the execution's own): past it the statement is interrupted and the
code gets DbUnavailable. A transaction belongs to one execution; one left open is rolled back
when that execution's deadline passes or after ``db_tx_timeout``, whichever comes first (it holds
sqlite's write lock meanwhile). The worker gets neither the file, the URL nor a grant."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .db_apart import Apart
from .db_backends import (
    PostgresBackend,
    SqliteBackend,
    backend_for,
    close_quietly,
    give_up_by,
    in_thread,
)
from .db_query import WRITES, DbQuery, build, decode
from .errors import DbError, DbUnavailable, GrantRefused, HostClosed, InvalidHostCall
from .pg_session import PgSession

log = logging.getLogger("host.db")


class _Tx:
    __slots__ = ("conn", "deadline", "done", "failed", "id", "lock", "owner", "write")

    def __init__(self, owner: Any, conn: Any, write: bool, deadline: float) -> None:
        self.id = secrets.randbelow(1 << 52) + 1  # not guessable by another execution's code
        self.owner, self.conn, self.write, self.deadline = owner, conn, write, deadline
        self.lock = anyio.Lock()  # the statements of one transaction run one at a time
        self.done = anyio.Event()
        self.failed: str | None = None


class DbTool:
    """One database for every execution that asks for the tool: a few idle connections kept
    (read-only and read-write apart), at most ``max_connections`` in use at once. Its first
    connection asks whether the database is the host's own state (``state_dir``, ``state``: a
    session on ``[state] database``); if so the tool refuses it for good (db_apart.py)."""

    def __init__(self, database: str, *, max_rows: int = 1000, timeout: float = 5.0, writes: bool = False,
                 max_connections: int = 8, tx_timeout: float = 5.0, state_dir: Path | None = None,
                 state: PgSession | None = None) -> None:
        self.backend: SqliteBackend | PostgresBackend = backend_for(database, statement_timeout=timeout)
        self.apart = Apart(self.backend, state_dir=state_dir, state=state)
        self.max_rows, self.timeout, self.writes, self.tx_timeout = max_rows, timeout, writes, tx_timeout
        self.max_connections = max_connections
        self._slots = anyio.Semaphore(max_connections)
        self._idle: dict[bool, list[Any]] = {False: [], True: []}
        self._txs: dict[int, _Tx] = {}
        self._expired: dict[int, _Tx] = {}  # rolled back at their deadline, for the error
        self._tg: TaskGroup | None = None
        self._closed = False

    def open(self, tg: TaskGroup) -> None:
        """Transactions' deadlines are watched in ``tg`` (the host's)."""
        self._tg = tg

    # ------------------------------------------------------------------ what the worker asks

    def may_write(self, tools: frozenset[str] | set[str]) -> bool:
        return "db:write" in tools and self.writes

    def _check_write(self, what: str, tools: frozenset[str] | set[str]) -> None:
        if "db:write" not in tools:
            raise GrantRefused(f'{what}: writes need the request to ask for them (tools: ["db:write"])')
        if not self.writes:
            raise GrantRefused(f"{what}: database writes are off; the operator turns them on with "
                               "[execute] db_writes = true in host.toml")

    async def query(self, raw: Any, *, tools: frozenset[str], owner: Any, deadline: float | None) -> Any:
        """Run one query of an execution (``owner``) that asked for ``tools``: select rows, or
        for a write the changed rows (``returning``) or ``{"rowCount": n}``."""
        q = decode(raw)
        if q.op in WRITES:
            self._check_write(f"db.{q.table}.{q.op}", tools)
        until = self._until(deadline)
        if q.tx is not None:
            tx = self._tx(q.tx, owner)
            if tx.failed is not None:
                raise DbError(f"db.transaction: already rolled back: {tx.failed}")
            async with tx.lock:
                try:
                    return await self._in_thread(lambda: self._run(tx.conn, q), tx.conn, min(until, tx.deadline))
                except DbError as exc:
                    await self._abort(tx, exc.message)
                    raise
        write = self.may_write(tools)
        conn = await self._acquire(write, until)
        try:
            out = await self._in_thread(lambda: self._run(conn, q), conn, until)
        except DbError:
            await self._release(write, conn, reuse=False)
            raise
        await self._release(write, conn)
        return out

    def _run(self, conn: Any, q: DbQuery) -> Any:
        b = self.backend
        built = build(q, lambda t: b.columns(conn, t), placeholder=b.placeholder, quote_name=b.quote,
                      max_rows=self.max_rows)
        rows, count = b.run(conn, built.sql, built.args, self.max_rows)
        if q.op == "select" or built.rows:
            return rows
        return {"rowCount": count}

    async def begin(self, *, tools: frozenset[str], owner: Any, deadline: float | None) -> int:
        """Open a transaction for the execution ``owner``; its id. One at a time per execution;
        rolled back when the execution's deadline passes without a commit."""
        if self._tg is None or self._closed:
            raise HostClosed("db: the host is not running")
        if any(t.owner == owner for t in self._txs.values()):
            raise InvalidHostCall("db.transaction: this execution already has one open (no nesting)")
        write = self.may_write(tools)
        until = self._until(deadline)
        conn = await self._acquire(write, until)
        try:
            await self._in_thread(lambda: self.backend.begin(conn, write=write), conn, until)
        except DbError:
            await self._release(write, conn, reuse=False)
            raise
        ends = time.monotonic() + self.tx_timeout  # a lock held no longer than this, whatever the execution's timeout
        tx = _Tx(owner, conn, write, ends if deadline is None else min(deadline, ends))
        self._txs[tx.id] = tx
        self._tg.start_soon(self._expire, tx)
        return tx.id

    async def end(self, tx_id: Any, *, commit: bool, owner: Any, deadline: float | None) -> None:
        """Commit (or roll back) the transaction ``tx_id``; a commit of one that failed earlier
        raises DbError saying it was rolled back, and why."""
        if not isinstance(tx_id, int):
            raise InvalidHostCall("db.transaction: no such transaction")
        tx = self._tx(tx_id, owner)
        async with tx.lock:
            self._txs.pop(tx.id, None)
            tx.done.set()
            if tx.failed is not None:
                if commit:
                    raise DbError(f"db.transaction: rolled back: {tx.failed}")
                return
            conn, tx.conn = tx.conn, None
            step = self.backend.commit if commit else self.backend.rollback
            try:
                await self._in_thread(lambda: step(conn), conn, self._until(deadline))
            except DbError:
                await self._release(tx.write, conn, reuse=False)
                raise
            await self._release(tx.write, conn)

    def _tx(self, tx_id: int, owner: Any) -> _Tx:
        tx = self._txs.get(tx_id)
        if tx is None and (gone := self._expired.get(tx_id)) is not None and gone.owner == owner:
            raise DbError(f"db.transaction: rolled back: {gone.failed}")
        if tx is None or tx.owner != owner:
            raise InvalidHostCall("db.transaction: no such transaction (it has ended, or is another execution's)")
        return tx

    async def _abort(self, tx: _Tx, why: str) -> None:
        """A statement of ``tx`` failed: roll it back now and give its connection up."""
        tx.failed = why
        conn, tx.conn = tx.conn, None
        if conn is not None:
            await self._release(tx.write, conn, reuse=False)  # closing rolls back

    async def _expire(self, tx: _Tx) -> None:
        with anyio.move_on_after(max(tx.deadline - time.monotonic(), 0)):
            await tx.done.wait()
            return
        if self._txs.pop(tx.id, None) is None:
            return
        tx.failed = why = "it was still open at the execution's deadline or after [execute] db_tx_timeout"
        self._expired[tx.id] = tx  # its statements and commit hear why (the last few only)
        while len(self._expired) > 64:
            self._expired.pop(next(iter(self._expired)))
        log.info("db: a transaction left open past its deadline was rolled back")
        if tx.lock.locked() and tx.conn is not None:
            self.backend.interrupt(tx.conn)  # a statement hangs in it: wake its thread
        with anyio.CancelScope(shield=True):  # the host closing must not leave the connection open
            async with tx.lock:
                await self._abort(tx, why)

    # ------------------------------------------------------------------ connections and deadlines

    def _until(self, deadline: float | None) -> float:
        return give_up_by(time.monotonic() + self.timeout, deadline)

    async def _acquire(self, write: bool, until: float) -> Any:
        if self._closed:
            raise HostClosed("db: the host is not running")
        self.apart.refused()
        with anyio.move_on_after(max(until - time.monotonic(), 0)) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise DbUnavailable(f"db: all {self.max_connections} database connections stayed busy "
                                "([execute] db_max_connections)")
        idle = self._idle[write]
        while idle:  # one the server ended while idle (a restart, a failover) is not handed out
            conn = idle.pop()
            if not self.backend.ended(conn):
                return conn
            await anyio.to_thread.run_sync(self._close_quietly, conn, abandon_on_cancel=True)
        opened: list[Any] = []

        def connect() -> None:
            opened.append(self.backend.connect(write=write, timeout=max(until - time.monotonic(), 0.1)))
        try:
            await self._in_thread(connect, None, until, late=opened)
            conn = opened[0]
        except BaseException:
            self._slots.release()
            raise
        try:
            await self.apart.check(conn, lambda fn: self._in_thread(fn, conn, until), until)
        except BaseException:  # refused, or undecided: this connection is not used
            self._slots.release()
            self._close_quietly(conn)
            raise
        return conn

    async def _release(self, write: bool, conn: Any, *, reuse: bool = True) -> None:
        self._slots.release()
        if reuse and not self._closed and self.backend.usable(conn) and len(self._idle[write]) < 2:
            self._idle[write].append(conn)
        else:
            await anyio.to_thread.run_sync(self._close_quietly, conn, abandon_on_cancel=True)

    def _close_quietly(self, conn: Any) -> None:
        close_quietly(self.backend, conn)

    async def _in_thread(self, fn: Callable[[], Any], conn: Any, until: float, *, late: list | None = None) -> Any:
        return await in_thread(self.backend, fn, conn, until, late=late,
                               setting="[execute] db_timeout, or the execution's timeout")

    def close(self) -> None:
        """Roll back what is open and close every idle connection (after the workers are gone)."""
        self._closed = True
        for tx in list(self._txs.values()):
            if tx.conn is not None:
                self._close_quietly(tx.conn)
        self._txs.clear()
        for idle in self._idle.values():
            for conn in idle:
                self._close_quietly(conn)
            idle.clear()


__all__ = ["DbTool"]
