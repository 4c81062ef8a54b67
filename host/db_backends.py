"""The databases the execute ``db`` tool can open: a sqlite file, or PostgreSQL through psycopg 3.
Each backend's calls are blocking and run in a thread (psycopg's async API is asyncio-only and
the host also runs on trio); ``interrupt`` unblocks a statement stuck in another thread.

Read-only connections are read-only in the database itself (sqlite ``mode=ro``, PostgreSQL
``default_transaction_read_only``), so a read can never write whatever its statement says.
The URL's password never appears in an error: ``redact_uri`` and ``scrub`` hide it."""

from __future__ import annotations

import datetime
import decimal
import math
import os
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .errors import DbError, DbUnavailable, InvalidConfig
from .policy.config import redact_uri, uri_secrets

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class MissingTable(DbError):
    """A statement named a table the database does not have (SQLSTATE 42P01): one the host's
    state sessions use dropped under them makes them create their tables again (pg_session.py)."""


def plain(value: Any) -> Any:
    """A column value as the worker can take it (JSON-like): exact numbers as strings, as
    PostgreSQL drivers for JavaScript give them; dates as ISO text."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class SqliteBackend:
    kind = "sqlite"
    placeholder = "?"

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.where = str(self.path)

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def connect(self, *, write: bool, timeout: float) -> sqlite3.Connection:
        mode = "rw" if write else "ro"  # ro: sqlite itself refuses every write
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, timeout=timeout,
                                 isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DbUnavailable(f"db: cannot open the sqlite database {self.where}: {exc}") from None
        db.row_factory = sqlite3.Row
        return db

    def columns(self, conn: sqlite3.Connection, table: str) -> list[str] | None:
        # through run(), as PostgreSQL's: a locked or failing schema read is a typed error too
        found, _ = self.run(conn, "SELECT 1 AS found FROM sqlite_master WHERE type IN ('table', 'view') "
                                  "AND name = ?", [table], 1)
        if not found:
            return None
        return [r["name"] for r in self.run(conn, f"PRAGMA table_info({self.quote(table)})", [], 10_000)[0]]

    def run(self, conn: sqlite3.Connection, sql: str, args: list[Any], max_rows: int) -> tuple[list[dict], int]:
        try:
            cur = conn.execute(sql, args)
            rows = [dict(r) for r in cur.fetchmany(max_rows)] if cur.description else []
            if cur.description:
                cur.fetchall()  # a RETURNING statement finishes only when read to the end
            return rows, cur.rowcount
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc) or "locked" in str(exc):  # past the deadline, or busy past it
                raise DbUnavailable(f"db: {self.where}: {exc} (past the deadline: [execute] db_timeout, "
                                    "or the execution's timeout)") from None
            raise DbError(f"db: {exc}") from None
        except (sqlite3.Error, OverflowError) as exc:
            raise DbError(f"db: {exc}") from None

    def begin(self, conn: sqlite3.Connection, *, write: bool) -> None:
        self.run(conn, "BEGIN IMMEDIATE" if write else "BEGIN", [], 0)

    def commit(self, conn: sqlite3.Connection) -> None:
        self.run(conn, "COMMIT", [], 0)

    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            self.run(conn, "ROLLBACK", [], 0)

    def time_left(self, conn: sqlite3.Connection, seconds: float) -> None:
        """How long the next statement may wait for another writer's lock (interrupt() does not
        stop that wait)."""
        self.run(conn, f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}", [], 0)

    def interrupt(self, conn: sqlite3.Connection) -> None:
        conn.interrupt()

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def usable(self, conn: sqlite3.Connection) -> bool:
        return not conn.in_transaction

    def ended(self, conn: sqlite3.Connection) -> bool:
        """A file's connection is never ended by a server."""
        return False


class PostgresBackend:
    """PostgreSQL via psycopg 3 (sync, in a thread). A connection that was interrupted, or whose
    statement failed inside a transaction, is closed rather than reused."""

    kind = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str, *, statement_timeout: float, quiet_tx_timeout: float | None = None,
                 lock_timeout: float | None = None) -> None:
        """``quiet_tx_timeout``: the server ends a transaction whose client sent nothing for that
        long (``idle_in_transaction_session_timeout``; None: never). ``lock_timeout``: a statement
        waiting that long for a lock another session holds is cancelled by the server, which says
        so (None: only statement_timeout ends it)."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise InvalidConfig("execute.database: a postgresql:// database needs psycopg: "
                                "pip install 'plugin-host[postgres]'") from None
        self.url = url
        self.where = redact_uri(url)
        self._secrets = uri_secrets(url)  # in the user-info or the query (?password=...)
        self.statement_timeout = statement_timeout
        self.quiet_tx_timeout = quiet_tx_timeout
        self.lock_timeout = lock_timeout
        self._fd_lock = threading.Lock()  # interrupt() never shuts down a descriptor close() just gave back

    def scrub(self, text: str) -> str:
        text = text.replace(self.url, self.where)  # libpq quotes a URL it cannot read whole
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""').replace("%", "%%") + '"'  # %: psycopg's placeholder mark

    def connect(self, *, write: bool, timeout: float) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        options = f"-c statement_timeout={max(1, int(self.statement_timeout * 1000))}"
        if self.quiet_tx_timeout is not None:
            options += f" -c idle_in_transaction_session_timeout={max(1, int(self.quiet_tx_timeout * 1000))}"
        if self.lock_timeout is not None:
            options += f" -c lock_timeout={max(1, int(self.lock_timeout * 1000))}"
        if not write:
            options += " -c default_transaction_read_only=on"  # the server refuses every write
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, options=options,
                                   connect_timeout=max(2, math.ceil(timeout)), application_name="plugin-host-db")
        except psycopg.Error as exc:
            why = " ".join(line.strip() for line in self.scrub(str(exc)).splitlines() if line.strip())  # libpq adds hints
            raise DbUnavailable(f"db: cannot connect to {self.where}: {why}") from None

    def columns(self, conn: Any, table: str) -> list[str] | None:
        rows = self.run(conn, "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                              "current_schema() AND table_name = %s ORDER BY ordinal_position", [table], 10_000)[0]
        return [r["column_name"] for r in rows] or None

    def run(self, conn: Any, sql: str, args: list[Any], max_rows: int) -> tuple[list[dict], int]:
        import psycopg

        try:
            cur = conn.execute(sql, args)
            rows = [{k: plain(v) for k, v in r.items()} for r in cur.fetchmany(max_rows)] if cur.description else []
            return rows, cur.rowcount
        except psycopg.errors.LockNotAvailable as exc:  # the server answered: a session holds a lock
            held = f" for {self.lock_timeout:g} s" if self.lock_timeout else ""
            raise DbError(f"db: {self._message(exc)}: another session held a lock on what it needed{held} "
                          "(pg_stat_activity and pg_locks show which)") from None
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise DbUnavailable(f"db: lost the connection to {self.where}: {self._message(exc)}") from None
            raise DbError(f"db: {self._message(exc)}") from None
        except psycopg.errors.UndefinedTable as exc:
            raise MissingTable(f"db: {self._message(exc)}") from None
        except (psycopg.Error, OverflowError) as exc:
            raise DbError(f"db: {self._message(exc)}") from None

    def _message(self, exc: BaseException) -> str:
        return self.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def begin(self, conn: Any, *, write: bool) -> None:
        self.run(conn, "BEGIN" if write else "BEGIN READ ONLY", [], 0)

    def commit(self, conn: Any) -> None:
        self.run(conn, "COMMIT", [], 0)

    def rollback(self, conn: Any) -> None:
        self.run(conn, "ROLLBACK", [], 0)

    def time_left(self, conn: Any, seconds: float) -> None:
        """Nothing per statement: statement_timeout is set per connection, and interrupt() wakes
        a thread that waits longer."""

    def interrupt(self, conn: Any) -> None:
        """Shut the connection's socket down: a thread blocked reading it wakes with an error
        (closing the descriptor would not wake it)."""
        with self._fd_lock:
            try:
                fd = conn.pgconn.socket
                with socket.socket(fileno=os.dup(fd)) as s:
                    s.shutdown(socket.SHUT_RDWR)
            except Exception:  # already closed: nothing is blocked on it
                pass

    def close(self, conn: Any) -> None:
        """Close ``conn``. libpq frees a connection as it closes it: one a thread is still inside
        (a statement given up past its deadline, blocked reading or just starting) is woken and
        closed when that thread lets go of it, never freed under it (that crashed the process)."""
        if conn.lock.acquire(blocking=False):  # psycopg holds it for each statement
            try:
                with self._fd_lock:
                    conn.close()
            finally:
                conn.lock.release()
            return
        self.interrupt(conn)
        threading.Thread(target=self._close_when_free, args=(conn,), name="pg-close", daemon=True).start()

    def _close_when_free(self, conn: Any) -> None:
        with conn.lock, self._fd_lock:
            conn.close()

    def usable(self, conn: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE

    def ended(self, conn: Any) -> bool:
        """Whether the server has ended this idle connection (restarted, failed over, the
        session terminated): it said so (an error then EOF), so its socket is readable while the
        host sent nothing. One poll, no round trip; a statement sent on it would surely fail, and
        one never sent is safe to send on a new connection instead."""
        if conn.closed or conn.broken:
            return True
        try:
            poller = select.poll()  # not select(): a host with many workers has descriptors past 1024
            poller.register(conn.pgconn.socket, select.POLLIN)
            return bool(poller.poll(0))
        except Exception:  # no socket any more
            return True


def close_quietly(backend: SqliteBackend | PostgresBackend, conn: Any) -> None:
    try:
        backend.close(conn)
    except Exception:  # already broken or closed: nothing more to give back
        pass


DEADLINE_MARGIN = 0.05  # seconds before a call's deadline a database operation gives up at least
MARGIN_SHARE, MARGIN_MAX = 0.2, 1.0  # of the time left, and at most (seconds)


def give_up_by(own: float, deadline: float | None) -> float:
    """When a database operation that would wait until ``own`` (monotonic) gives up, so that the
    plugin code hears why before its call's ``deadline``: its error still has to reach the worker,
    be caught and answered, on a host that may be busy; a fifth of the time left is kept for that
    (at least DEADLINE_MARGIN, at most MARGIN_MAX seconds)."""
    if deadline is None:
        return own
    margin = min(MARGIN_MAX, max(DEADLINE_MARGIN, (deadline - time.monotonic()) * MARGIN_SHARE))
    return min(own, deadline - margin)


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread of its own. For a connect, which nothing interrupts: to a
    server that accepts and never answers it lasts until libpq's connect_timeout, and in one of
    the (non-daemon) worker threads it would hold the process's exit that long after the wait
    was given up (a stop signal during the host's start)."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the waiting task
            outcome.append((False, exc))
        try:
            anyio.from_thread.run_sync(done.set, token=token)
        except Exception:  # the event loop is gone: nobody waits any more
            pass

    threading.Thread(target=run, name="plugin-host db connect", daemon=True).start()
    await done.wait()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


async def in_thread(backend: SqliteBackend | PostgresBackend, fn: Callable[[], Any], conn: Any, until: float, *,
                    late: list | None = None, setting: str) -> Any:
    """``fn()`` (using ``conn``, or connecting into ``late``) in a thread, within ``until``
    (monotonic): past it the statement is interrupted, its thread closes the connection when it
    wakes, and DbUnavailable names ``setting``, the deadline's knob."""
    gave_up = False

    def guarded() -> Any:
        try:
            if conn is not None:
                backend.time_left(conn, until - time.monotonic())
            return fn()
        finally:
            if gave_up:  # nobody waits for this thread any more: close what it holds
                for c in ([conn] if conn is not None else []) + (late or []):
                    close_quietly(backend, c)
    with anyio.move_on_after(max(until - time.monotonic(), 0)):
        if conn is None:  # a connect: nothing can interrupt it
            return await _in_daemon_thread(guarded)
        return await anyio.to_thread.run_sync(guarded, abandon_on_cancel=True)
    gave_up = True
    for c in late or []:  # connected just as the deadline passed: nobody will use it
        close_quietly(backend, c)
    if conn is not None:
        backend.interrupt(conn)
    raise DbUnavailable(f"no answer from {backend.where} within the deadline ({setting})")


def backend_for(database: str, *, statement_timeout: float) -> SqliteBackend | PostgresBackend:
    """The backend of ``[execute] database``: ``postgresql://...`` (or ``postgres://``), or a
    sqlite file (a path or ``sqlite:///path``)."""
    if database.startswith(POSTGRES_SCHEMES):
        return PostgresBackend(database, statement_timeout=statement_timeout)
    if database.startswith("sqlite:///"):
        return SqliteBackend(database.removeprefix("sqlite://"))
    if "://" in database or not database.strip():
        raise InvalidConfig(f"execute.database: a sqlite file (a path or sqlite:///path) or a postgresql:// URL, "
                            f"got {redact_uri(database)}")
    return SqliteBackend(database)


__all__ = ["DEADLINE_MARGIN", "POSTGRES_SCHEMES", "PostgresBackend", "SqliteBackend", "backend_for", "close_quietly", "give_up_by", "in_thread",
           "plain"]
