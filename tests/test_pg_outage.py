"""The state database's outage memory (host/outage.py in pg_session.py) against a server that
answers: a statement that timed out because it queued behind others on the session's one
connection is no sign the server stopped answering. Real postgres."""

from __future__ import annotations

import threading

import anyio
import pytest

from host import StateError
from host.pg_session import PgSession

pytestmark = pytest.mark.timeout(60)


def sleeper(db: PgSession, seconds: float, started: threading.Event | None = None):
    def fn(conn):
        if started is not None:
            started.set()
        return db.backend.run(conn, "SELECT pg_sleep(%s)", [seconds], 1)
    return fn


@pytest.mark.anyio
async def test_a_statement_that_queued_behind_others_past_its_timeout_is_not_an_outage(postgres_url):
    # Before: the second statement got the connection with 0.2 s of its 1 s left, timed out
    # there, and that was taken for a server that did not answer: every storage call of every
    # plugin then failed at once for 10 s, with the server answering in milliseconds.
    db = PgSession(postgres_url, 1.0, [], what="storage")
    try:
        await db.run(lambda c: db.one(c, "SELECT 1 AS one", []))
        started = threading.Event()
        outcomes: list[BaseException | None] = []

        async def second() -> None:
            await anyio.to_thread.run_sync(started.wait)
            try:
                await db.run(sleeper(db, 0.4))
                outcomes.append(None)
            except StateError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await db.run(sleeper(db, 0.8, started))
        assert isinstance(outcomes[0], StateError) and "within the deadline" in outcomes[0].message, outcomes
        assert (await db.run(lambda c: db.one(c, "SELECT 1 AS one", [])))["one"] == 1
    finally:
        db.close()


def test_a_blocking_statement_that_queued_behind_others_past_its_timeout_is_not_an_outage(postgres_url):
    # run_blocking (balance history, in worker threads): the same, with its socket watchdog.
    db = PgSession(postgres_url, 1.0, [], what="balance history")
    try:
        db.run_blocking(lambda c: db.one(c, "SELECT 1 AS one", []))
        started = threading.Event()
        outcomes: list[BaseException | None] = []

        def second() -> None:
            started.wait(10)  # the first holds the connection: this one queues behind it
            try:
                db.run_blocking(sleeper(db, 0.4))
                outcomes.append(None)
            except StateError as exc:
                outcomes.append(exc)

        t = threading.Thread(target=second, daemon=True)
        t.start()
        db.run_blocking(sleeper(db, 0.8, started))
        t.join(10)
        assert isinstance(outcomes[0], StateError) and "within the deadline" in outcomes[0].message, outcomes
        assert db.run_blocking(lambda c: db.one(c, "SELECT 1 AS one", []))["one"] == 1
    finally:
        db.close()
