"""The state database's outage memory (host/outage.py in pg_session.py) against a server that
answers: a statement that timed out because it queued behind others on the session's one
connection is no sign the server stopped answering. Real postgres."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import anyio
import pytest

from host import StateError
from host.db_backends import PostgresBackend, close_quietly
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


ABANDON = r'''
import sys, anyio
from host import HostError
from host.db_backends import PostgresBackend, close_quietly
from host.pg_session import PgSession

async def main(url):
    db = PgSession(url, 0.3, [], what="storage")
    for _ in range(3):  # each: a statement past the deadline, its thread abandoned mid-read
        try:
            await db.run(lambda c: db.backend.run(c, "SELECT pg_sleep(1)", [], 1))
        except HostError as exc:
            print("refused:", exc.message, flush=True)
    await anyio.sleep(1.5)  # the abandoned threads wake and let go of their connections
    db.close()
    print("survived", flush=True)

anyio.run(main, sys.argv[1])
'''


def test_a_connection_whose_statement_was_abandoned_is_not_freed_under_its_thread(postgres_url, tmp_path):
    # CI crashed with a segfault in psycopg here: past the deadline the session dropped the
    # connection (conn.close(), libpq frees it) while the abandoned thread was still inside a
    # statement on it, and that thread woke into freed memory. Own process: a crash is a failure.
    script = tmp_path / "abandon.py"
    script.write_text(ABANDON)
    done = subprocess.run([sys.executable, str(script), postgres_url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stdout.count("refused:") == 3 and "within the deadline" in done.stdout, done.stdout
    assert "survived" in done.stdout


def test_a_connection_a_thread_is_inside_is_closed_when_it_lets_go(postgres_url):
    # The mechanism under the crash above: psycopg holds conn.lock through each statement, and
    # close() took no lock, so libpq freed the connection under the statement's thread.
    backend = PostgresBackend(postgres_url, statement_timeout=5)
    conn = backend.connect(write=True, timeout=5)
    with conn.lock:  # as a thread inside a statement does
        close_quietly(backend, conn)
        assert not conn.closed  # not freed under the holder
    deadline = time.monotonic() + 10
    while not conn.closed and time.monotonic() < deadline:
        time.sleep(0.01)  # closed by its own thread once the holder let go (no event to wait on)
    assert conn.closed
    idle = backend.connect(write=True, timeout=5)
    close_quietly(backend, idle)  # one nobody is inside: closed at once
    assert idle.closed


@pytest.mark.anyio
async def test_a_lock_another_session_holds_is_said_as_such_not_as_an_outage(postgres_url, anyio_backend):
    """helper-100: with another session holding `LOCK plugin_config IN ACCESS EXCLUSIVE MODE`, a
    config write waited the whole 10 s and was then called an outage ("did not answer the statement
    before this one", then "did not answer a moment ago" for 10 s more, writes failed at once). The
    server now cancels the wait first (lock_timeout) and says why; the next write asks again."""
    import psycopg

    from host.plugins.config_store import PostgresConfigs

    store = PostgresConfigs(postgres_url, None, 2.0, table="lock_probe")
    try:
        await store.verify()  # the table made
        with psycopg.connect(postgres_url) as holder:
            holder.execute("LOCK lock_probe IN ACCESS EXCLUSIVE MODE")  # held until this block ends
            for _ in range(2):  # the server's cancel (before the host's deadline would call it silent)
                with pytest.raises(StateError) as err:
                    await store.set("p", {"a": 1})
                assert "lock timeout" in err.value.message and "another session held a lock" in err.value.message
                assert "did not answer" not in err.value.message
        await store.set("p", {"a": 1})  # released: it writes
        assert store.get("p") == {"a": 1}
    finally:
        store.close()
