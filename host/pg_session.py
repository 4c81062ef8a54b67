"""One host's connection to the ``[state] database`` for one kind of state (plugin storage, the
config store, balance history): psycopg's blocking calls in a thread, one statement at a time,
each within a deadline; the tables created once (under an advisory lock, so that hosts starting
at once do not race); a broken connection dropped and opened again at the next use. Every
failure is the ``error`` class given (a HostError) naming the database with its password hidden."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

from .db_backends import MissingTable, PostgresBackend, close_quietly, give_up_by, in_thread
from .errors import DbError, DbUnavailable, HostError, StateError, StateUnavailable
from .outage import Outage

T = TypeVar("T")
log = logging.getLogger("host.state")

SCHEMA_LOCK = 7_305_561_042  # pg_advisory_xact_lock key: hosts starting at once create the tables once
OWNED = re.compile(r"CREATE (?:TABLE|SEQUENCE) IF NOT EXISTS (\w+)", re.I)
OWNER_SQL = ("SELECT n.nspname AS schema, o.rolname AS owner, current_user AS me, "
             "(c.relowner = u.oid OR EXISTS (SELECT 1 FROM pg_auth_members m "
             "WHERE m.roleid = c.relowner AND m.member = u.oid)) AS mine "
             "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles o ON o.oid = c.relowner "
             "JOIN pg_roles u ON u.rolname = current_user WHERE c.oid = to_regclass(%s)")
STATE_TIMEOUT = 10.0  # seconds a statement on the state database may take (but plugin storage's)
LOCK_SHARE = 0.7  # of that, the longest a statement waits for another session's lock


class _Watchdog:
    """Shuts ``conn``'s socket down at ``until`` (monotonic) unless stopped first, so that a
    thread blocked reading it wakes with an error."""

    def __init__(self, backend: PostgresBackend, conn: Any, until: float) -> None:
        self._lock = threading.Lock()
        self._fired = self._stopped = False
        self._timer = threading.Timer(max(until - time.monotonic(), 0), self._fire, [backend, conn])
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, backend: PostgresBackend, conn: Any) -> None:
        with self._lock:
            if not self._stopped:
                self._fired = True
                backend.interrupt(conn)

    def stop(self) -> bool:
        """Whether it fired."""
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            return self._fired


class PgSession:
    def __init__(self, url: str, timeout: float, schema: Sequence[str], *, what: str,
                 setting: str = "[state] database", error: type[HostError] = StateError) -> None:
        # A transaction of the host's quiet for as long as a statement may take is one whose host
        # stopped mid-way (frozen, paused, cut off; it sends a transaction's statements back to
        # back): the server ends it, and the table locks it held go to the other hosts at once
        # rather than when TCP keepalive notices, hours later.
        # A lock another session holds is the server's to say, before the host's deadline would
        # call a healthy server silent (helper-100: 10 s, then "did not answer" for 10 s more).
        self.backend = PostgresBackend(url, statement_timeout=timeout, quiet_tx_timeout=timeout,
                                       lock_timeout=timeout * LOCK_SHARE)
        self.timeout = timeout
        self._schema, self._what, self._setting, self._error = schema, what, setting, error
        self._lock = anyio.Lock()
        self._thread_lock = threading.Lock()  # run_blocking's (a session is used one way or the other)
        self._conn: Any = None
        self._ready = False
        self._outage = Outage()  # the server did not answer: failed at once for a while (outage.py)
        # the server down, refusing or not answering: worth asking again later (a serve process
        # that cannot start for it is started again by its parent, multiproc.py)
        self._gone: type[HostError] = StateUnavailable if error is StateError else error

    async def run(self, fn: Callable[[Any], T], deadline: float | None = None) -> T:
        """``fn(connection)`` in a thread, one at a time, within the session's timeout and just
        before ``deadline`` (monotonic: a plugin call's), waiting for the earlier ones included."""
        self._skip()
        entered = time.monotonic()
        own = entered + self.timeout
        until = give_up_by(own, deadline)
        with anyio.move_on_after(max(until - time.monotonic(), 0)) as waited:
            await self._lock.acquire()
        if waited.cancelled_caught:
            raise self._error(f"{self._what}: {self.backend.where} was still busy with an earlier statement "
                              f"just before the deadline ({self._setting})")
        got = time.monotonic()
        try:
            # the statement before this one found the server not answering while this one queued:
            # fail now, not after a wait of its own (helper-79: 20 switch writes took 10 s each)
            if self._outage.failed_since(entered):
                raise self._gone(f"{self._what}: {self.backend.where} did not answer the statement before "
                                 f"this one ({self._setting})")
            out = await self._run(fn, until)
        except HostError:
            # its own timeout passed (not a call's deadline), with time enough on the connection
            if until == own and time.monotonic() >= until and self._had_time(got, until):
                self._outage.failed()
            raise
        finally:
            self._lock.release()
        self._outage.answered()
        return out

    def _had_time(self, got: float, until: float) -> bool:
        """Whether a statement that got the connection at ``got`` and no answer by ``until`` says
        the server stopped answering: it had half the session's timeout or more. One that queued
        behind the others for most of it and got the rest says nothing (a healthy server, busy)."""
        return until - got >= self.timeout / 2

    def _skip(self) -> None:
        """The server did not answer a moment ago: fail at once (host/outage.py)."""
        if self._outage.skip():
            raise self._gone(f"{self._what}: {self.backend.where} did not answer a moment ago (asked again "
                              f"within {self._outage.pause:g} s; {self._setting})")

    async def _run(self, fn: Callable[[Any], T], until: float) -> T:
        try:
            return await self._attempt(fn, until)
        except DbError as exc:  # the connection may be mid-transaction or broken: start afresh
            self._drop()
            if self._recreate(exc):
                try:
                    return await self._attempt(fn, until)
                except DbError as again:
                    self._drop()
                    exc = again
            error = self._gone if isinstance(exc, DbUnavailable) else self._error
            raise error(f"{self._what} failed ({self.backend.where}): {exc.message}") from None

    async def _attempt(self, fn: Callable[[Any], T], until: float) -> T:
        self._drop_ended()
        if self._conn is None:
            opened: list[Any] = []

            def connect() -> None:
                opened.append(self.backend.connect(write=True, timeout=self.timeout))
            await in_thread(self.backend, connect, None, until, late=opened, setting=self._setting)
            self._conn = opened[0]
        conn = self._conn
        if not self._ready:
            await in_thread(self.backend, lambda: self._create(conn), conn, until, setting=self._setting)
            self._ready = True
        return await in_thread(self.backend, lambda: fn(conn), conn, until, setting=self._setting)

    def _recreate(self, exc: DbError) -> bool:
        """A table of ours is gone though it was made (dropped by hand, a restore of an older
        dump): made again, and the statement tried once more, rather than failing every use of
        that state until a restart."""
        if not isinstance(exc, MissingTable) or not self._ready:
            return False
        self._ready = False
        log.warning("%s: %s (%s); creating the tables again", self._what, exc.message, self.backend.where)
        return True

    def run_blocking(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in the calling thread, for callers already off the event loop (the
        balance history's run in worker threads), one at a time, all within the session's timeout:
        ``statement_timeout`` is the server's, so a server that stops answering (SIGSTOP, a
        partition) is bounded here, by shutting the connection's socket down when it passes."""
        self._skip()
        until = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise self._error(f"{self._what}: {self.backend.where} was still busy with an earlier statement "
                              f"for {self.timeout:g} s ({self._setting})")
        try:
            return self._blocking(fn, until)
        finally:
            self._thread_lock.release()

    def _blocking(self, fn: Callable[[Any], T], until: float) -> T:
        again = True
        while True:
            try:
                return self._blocking_once(fn, until)
            except MissingTable as exc:
                if not (again and self._recreate(exc)):
                    raise self._error(f"{self._what} failed ({self.backend.where}): {exc.message}") from None
                again = False

    def _blocking_once(self, fn: Callable[[Any], T], until: float) -> T:
        got, fired = time.monotonic(), False
        try:
            self._drop_ended()
            if self._conn is None:
                self._conn = self.backend.connect(write=True, timeout=max(until - time.monotonic(), 0))
            watchdog = _Watchdog(self.backend, self._conn, until)
            try:
                if not self._ready:
                    self._create(self._conn)
                    self._ready = True
                out = fn(self._conn)
            finally:
                if fired := watchdog.stop():  # its socket is shut down: of no more use
                    self._drop()
                    if self._had_time(got, until):
                        self._outage.failed()
            self._outage.answered()
            return out
        except DbError as exc:
            self._drop()
            if isinstance(exc, MissingTable) and not fired:
                raise
            why = f"no answer from {self.backend.where} within the deadline ({self._setting})" if fired else exc.message
            error = self._gone if fired or isinstance(exc, DbUnavailable) else self._error
            raise error(f"{self._what} failed ({self.backend.where}): {why}") from None

    def _create(self, conn: Any) -> None:
        """Create the tables (once per session), unless the database takes no writes (a standby
        after a failover, ``default_transaction_read_only``): then the tables some host created
        before are read as they are, and only writes fail, with the server's reason."""
        def body() -> None:
            self.backend.run(conn, "SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK], 1)
            if not self._read_only(conn):
                for statement in self._schema:
                    self.backend.run(conn, statement, [], 0)
            self._check_owners(conn)
        self.tx(conn, body)

    def _read_only(self, conn: Any) -> bool:
        """Whether the database takes no writes; with a table missing that is a StateError, as
        nothing can be read either."""
        row = self.one(conn, "SELECT current_setting('transaction_read_only') = 'on' AS ro", [])
        if row is None or not row["ro"]:
            return False
        missing = [n for n in self._owned() if self.one(conn, "SELECT to_regclass(%s) IS NULL AS gone", [n])["gone"]]  # type: ignore[index]
        if missing:
            raise self._error(f"{self._what}: {self.backend.where} is read-only and has no table "
                              f"{', '.join(missing)} yet: point the host at the primary once to create "
                              f"them ({self._setting})")
        return True

    def _owned(self) -> list[str]:
        """The tables and sequences the schema creates."""
        return [m.group(1) for statement in self._schema if (m := OWNED.match(statement))]

    def _check_owners(self, conn: Any) -> None:
        """Every table and sequence the host uses, as its search_path finds it, belongs to the
        host's own role (or one it is a member of): one another role created first under the
        same name (PostgreSQL before 15 let every role create in ``public``) would let that role
        read and change the host's state, approvals included. StateError names it."""
        for name in self._owned():
            row = self.one(conn, OWNER_SQL, [name])
            if row is not None and not row["mine"]:
                raise self._error(
                    f"{self._what}: the table {row['schema']}.{name} ({self.backend.where}) belongs to the role "
                    f"{row['owner']!r}, not to this host's {row['me']!r}: that role could read and change the "
                    f"host's state. Drop it, or give the host a database or schema only its role can create in "
                    f"({self._setting})")

    def tx(self, conn: Any, body: Callable[[], T]) -> T:
        """``body()`` in one transaction (rolled back if it raises)."""
        b = self.backend
        b.run(conn, "BEGIN", [], 0)
        try:
            out = body()
        except BaseException:
            b.rollback(conn)
            raise
        b.run(conn, "COMMIT", [], 0)
        return out

    def one(self, conn: Any, sql: str, args: list[Any]) -> dict | None:
        """The first row ``sql`` returns (None: no row)."""
        rows = self.backend.run(conn, sql, args, 1)[0]
        return rows[0] if rows else None

    def rows(self, conn: Any, sql: str, args: list[Any]) -> list[dict]:
        return self.backend.run(conn, sql, args, 10_000_000)[0]

    def _drop_ended(self) -> None:
        """A connection the server ended while it was idle (a restart, a failover) is opened
        again before the statement, rather than failing the first one of each kind of state."""
        if self._conn is not None and self.backend.ended(self._conn):
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            close_quietly(self.backend, conn)

    def close(self) -> None:
        self._drop()


__all__ = ["STATE_TIMEOUT", "PgSession"]
