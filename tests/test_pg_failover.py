"""The ``[state] database`` restarted, stopped or turned read-only (a failover to a standby)
under a running host: calls meanwhile get typed errors at once, and every kind of state answers
again by itself, from its first call. A real postgres of this module's own, since restarting it
would end the other tests' sessions."""

from __future__ import annotations

import datetime as dt
import time

import anyio
import pytest
from support.postgres import set_read_only

from host import StateError, StorageError
from host.balances.history_pg import PostgresHistory
from host.balances.result import BalanceResult
from host.plugin_storage_pg import PostgresStorage
from host.plugins.config_store import PostgresConfigs
from host.security.approvals_pg import PostgresApprovals
from host.security.audit_pg import AuditTable

pytestmark = [pytest.mark.timeout(120), pytest.mark.anyio]


@pytest.fixture
def url(own_postgres_url: str) -> str:
    return own_postgres_url


def point(balance: float) -> BalanceResult:
    return BalanceResult(provider="alpha", provider_name="Alpha", status="success", balance=balance,
                         currency="USD", last_updated=dt.datetime.now(dt.UTC))


class States:
    """One host's sessions on ``url``, one per kind of state, each used once already."""

    def __init__(self, url: str) -> None:
        self.storage, self.history = PostgresStorage(url, 3.0), PostgresHistory(url, timeout=3.0)
        self.configs, self.approvals = PostgresConfigs(url, None, 3.0), PostgresApprovals(url, timeout=3.0)
        self.audit = AuditTable(url, timeout=3.0)

    async def write(self) -> None:
        await self.storage.put("p", "k", b"v", 1 << 20, "storage")
        await anyio.to_thread.run_sync(self.history.append, [point(5.0)])
        assert await self.configs.insert("p", {"region": "eu"})
        await self.approvals.refresh()  # creates its table, as a host's start does
        self.audit.put(time.time(), "test", '{"n": 1}')
        assert self.audit.flush(10)

    async def read(self) -> None:
        """Each kind of state's first call: it raises if one fails."""
        assert await self.storage.get("p", "k") == b"v"
        assert [p.balance for p in await anyio.to_thread.run_sync(self.history.read)] == [5.0]
        await self.configs.refresh()
        assert self.configs.get("p") == {"region": "eu"}
        await self.approvals.refresh()

    def close(self) -> None:
        for s in (self.storage, self.history, self.configs, self.approvals):
            s.close()
        self.audit.close()


async def test_after_a_database_restart_every_kind_of_state_answers_its_first_call(own_postgres, url, anyio_backend):
    # Before: the server had ended each session's idle connection, and the first statement of
    # each kind of state after the restart failed on it ("terminating connection due to
    # administrator command"): up to seven failed calls per host process, an audit line lost.
    states = States(url)
    try:
        await states.write()
        own_postgres.restart()
        await states.read()
        states.audit.put(time.time(), "test", '{"n": 2}')
        assert states.audit.flush(10)
        assert states.audit.failures == 0
    finally:
        states.close()


async def test_calls_while_the_database_is_stopped_fail_at_once_then_it_serves_again(own_postgres, url, anyio_backend):
    states = States(url)
    try:
        await states.write()
        own_postgres.stop()
        try:
            t0 = time.monotonic()
            with pytest.raises(StorageError, match="cannot connect") as storage_error:
                await states.storage.get("p", "k")
            with pytest.raises(StateError, match="cannot connect"):
                await anyio.to_thread.run_sync(states.history.read)
            with pytest.raises(StateError, match="cannot connect"):
                await states.configs.insert("q", {"region": "us"})
            assert time.monotonic() - t0 < 3.0  # refused, not waited for
            assert own_postgres.password not in storage_error.value.message
        finally:
            own_postgres.start()
        await states.read()
    finally:
        states.close()


async def test_a_read_only_database_fails_writes_naming_it_and_reads_go_on_in_new_hosts_too(own_postgres, url,
                                                                                             anyio_backend):
    # Before: a host (re)started while the database was read-only failed every read too, as
    # creating its tables ("CREATE TABLE IF NOT EXISTS") came first and the server refused it;
    # a serve process the parent restarted then failed its start.
    states = States(url)
    await states.write()
    states.close()
    set_read_only(own_postgres, url, True)
    running, restarted = States(url), States(url)  # one that had its connections, one new
    try:
        await running.read()
        await restarted.read()
        with pytest.raises(StorageError, match="read-only transaction") as refused:
            await restarted.storage.put("p", "k", b"w", 1 << 20, "storage")
        assert own_postgres.password not in refused.value.message
        with pytest.raises(StateError, match="read-only transaction"):
            await running.configs.insert("q", {"region": "us"})
        with pytest.raises(StateError, match="read-only transaction"):
            await anyio.to_thread.run_sync(restarted.history.append, [point(4.0)])
        set_read_only(own_postgres, url, False)  # promoted: writes go through again
        await restarted.storage.put("p", "k", b"w", 1 << 20, "storage")
        assert await running.storage.get("p", "k") == b"w"
    finally:
        running.close()
        restarted.close()


async def test_a_read_only_database_without_the_tables_is_a_state_error_saying_so(own_postgres, url, anyio_backend):
    set_read_only(own_postgres, url, True)
    history = PostgresHistory(url, timeout=3.0)
    try:
        with pytest.raises(StateError, match="is read-only and has no table balance_points") as refused:
            await anyio.to_thread.run_sync(history.read)
        assert own_postgres.password not in refused.value.message
    finally:
        history.close()


async def test_a_server_made_read_only_by_a_reload_refuses_writes_and_takes_them_again(own_postgres, url,
                                                                                       anyio_backend):
    # ALTER SYSTEM + reload: the sessions stay open and become read-only under the host.
    states = States(url)
    try:
        await states.write()
        with own_postgres.admin() as admin:
            admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            admin.execute("SELECT pg_reload_conf()")
        try:
            fresh = States(url)  # a host started now
            try:
                await fresh.read()
            finally:
                fresh.close()
            with anyio.fail_after(10):  # the reload reaches each session at its next statement
                while True:
                    try:
                        await states.storage.put("p", "k", b"w", 1 << 20, "storage")
                    except StorageError as exc:
                        assert "read-only transaction" in exc.message
                        break
                    await anyio.sleep(0.05)
            await states.read()
        finally:
            with own_postgres.admin() as admin:
                admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
                admin.execute("SELECT pg_reload_conf()")
        with anyio.fail_after(10):
            while True:
                try:
                    await states.storage.put("p", "k", b"w", 1 << 20, "storage")
                    break
                except StorageError:
                    await anyio.sleep(0.05)
        assert await states.storage.get("p", "k") == b"w"
    finally:
        states.close()


async def test_the_execute_db_tool_answers_its_first_query_after_a_database_restart(own_postgres, url, make_host,
                                                                                   anyio_backend):
    # Before: the tool's idle pooled connection, ended by the restart, failed the first query
    # of the next execution ("terminating connection due to administrator command").
    import psycopg

    from host import ExecuteConfig

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.execute("INSERT INTO users VALUES (1, 'Alice')")
    code = "export default async () => (await db.users.select())[0].name;"
    async with make_host(execute=ExecuteConfig(database=url)) as h:
        assert (await h.execute(code, tools=["db"])).result == "Alice"  # its connection kept idle
        own_postgres.restart()
        again = await h.execute(code, tools=["db"])
        assert (again.ok, again.result) == (True, "Alice"), again.logs
