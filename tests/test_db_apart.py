"""The execute db tool asks the servers themselves whether ``[execute] database`` is the host's
own ``[state] database`` (host/db_apart.py), where the start-time check on the connection strings
(host/db_identity.py) cannot tell: the state store's database reached through another port of
this machine (a forwarder, as pgbouncer, an ssh tunnel or a published container port would be) is
refused with DbRefused, another database on the same server is served, and the servers are asked
once, not per execution. A sqlite file that is a hard link of one in the state directory is
refused too. On the real postgres of tests/support/postgres.py."""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import closing
from urllib.parse import urlsplit

import pytest
from support.forward import forwarded
from support.postgres import Postgres, fresh_database

from host import ExecuteConfig, ExecuteResult, HostConfig, LogEntry
from host.db_apart import same_database
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

MARK = "pg_postmaster_start_time"  # in the identity query, and in no statement of the test's own


def exception_of(out: ExecuteResult) -> LogEntry:
    assert out.ok is False, out
    (found,) = [e for e in out.logs if e.level == "exception"]
    return found


def through(url: str, port: int) -> str:
    """``url`` with its port replaced by ``port`` (the forwarder's)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}").geturl()


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_the_state_database_through_another_port_is_refused(make_host, postgres_url, postgres_server):
    with forwarded(port_of(postgres_url)) as port:
        execute_db = through(postgres_url, port)
        HostConfig(execute={"database": execute_db}, state={"database": postgres_url})  # the strings differ
        async with make_host(state=StateConfig(database=postgres_url),
                             execute=ExecuteConfig(database=execute_db)) as h:
            out = await h.execute("export default async () => await db.audit_log.select().limit(5)", tools=["db"])
            again = await h.execute("export default async () => await db.audit_log.select()", tools=["db"])
    err = exception_of(out)
    assert err.name == "DbRefused", err
    assert "[execute] database" in err.message and "[state] database" in err.message
    assert f"127.0.0.1:{port}" in err.message and postgres_server.password not in err.message
    assert exception_of(again).name == "DbRefused"  # the verdict stands



async def test_a_role_that_may_not_read_the_system_identifier_is_refused_too(make_host, postgres_url, postgres_server):
    """pg_control_system() revoked and a plain login role on the execute side: the postmaster's
    start time and port still say it is one server."""
    role = "lowly_" + secrets.token_hex(4)
    with postgres_server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'lowly-pw'")
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        with forwarded(port_of(postgres_url)) as port:
            execute_db = f"postgresql://{role}:lowly-pw@127.0.0.1:{port}{urlsplit(postgres_url).path}"
            async with make_host(state=StateConfig(database=postgres_url),
                                 execute=ExecuteConfig(database=execute_db)) as h:
                out = await h.execute("export default async () => await db.audit_log.select()", tools=["db"])
    finally:
        with postgres_server.admin() as conn:
            conn.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
            conn.execute(f"DROP ROLE {role}")
    err = exception_of(out)
    assert err.name == "DbRefused" and "lowly-pw" not in err.message, err

async def test_another_database_on_the_same_server_is_served(make_host, postgres_url, postgres_server: Postgres):
    with fresh_database(postgres_server) as other, forwarded(port_of(other)) as port:
        with postgres_server.admin(urlsplit(other).path.lstrip("/")) as conn:
            conn.execute("CREATE TABLE users (name TEXT)")
            conn.execute("INSERT INTO users VALUES ('Alice')")
        async with make_host(state=StateConfig(database=postgres_url),
                             execute=ExecuteConfig(database=through(other, port))) as h:
            out = await h.execute("export default async () => (await db.users.select())[0].name", tools=["db"])
    assert out.ok and out.result == "Alice", out.logs


async def test_the_servers_are_asked_once_not_per_execution(make_host, postgres_url, postgres_server: Postgres):
    """Counted in the server's own statement log: one identity query on each side, however many
    executions (and connections: a write connection is opened apart from the read ones)."""
    log = postgres_server.root / "postgres.log"
    with fresh_database(postgres_server) as other:
        for url in (postgres_url, other):
            with postgres_server.admin() as conn:
                conn.execute(f"ALTER DATABASE {urlsplit(url).path.lstrip('/')} SET log_statement = 'all'")
        with postgres_server.admin(urlsplit(other).path.lstrip("/")) as conn:
            conn.execute("CREATE TABLE users (name TEXT)")
            conn.execute("INSERT INTO users VALUES ('Alice')")
        start = log.stat().st_size
        async with make_host(state=StateConfig(database=postgres_url),
                             execute=ExecuteConfig(database=other, db_writes=True)) as h:
            for tools in (["db"], ["db"], ["db:write"], ["db"]):
                out = await h.execute("export default async () => (await db.users.select())[0].name", tools=tools)
                assert out.ok and out.result == "Alice", out.logs
        with log.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    selects = [line for line in text.splitlines() if 'SELECT * FROM "users"' in line]
    assert len(selects) == 4  # every execution's statement is logged
    assert len({line.split("[")[1].split("]")[0] for line in selects}) == 2  # on two connections (read, write)
    assert text.count(MARK) == 2  # and the identity query once per server side


async def test_a_hard_link_of_a_state_file_is_refused(make_host, tmp_path, shared_state):
    from support.plugins import fresh_state

    state = fresh_state(tmp_path / "h", shared_state)
    inside = state / "kept.sqlite"
    with closing(sqlite3.connect(inside)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    outside = tmp_path / "app.sqlite"
    os.link(inside, outside)  # not in state_dir by its path: the start-time check lets it be
    async with make_host(state_dir=str(state), execute=ExecuteConfig(database=str(outside))) as h:
        out = await h.execute("export default async () => await db.users.select()", tools=["db"])
    err = exception_of(out)
    assert err.name == "DbRefused" and "state directory" in err.message, err



ONE = {"db": "16384", "started": "1796526556.825428", "port": "5432", "standby": False, "system": "7716"}


@pytest.mark.parametrize(("other", "same"), [
    ({}, True),
    ({"system": None}, True),  # the identifier unreadable on one side: the postmaster decides
    ({"db": "16385"}, False),  # another database of the same server
    ({"started": "1796526999.1", "standby": True}, True),  # a standby of the state's cluster: the same data
    ({"started": "1796526999.1"}, False),  # two primaries with one identifier: clusters cloned from one image
    ({"system": "9999"}, False),  # the same start and port by chance: another cluster
    ({"started": "1796526999.1", "system": None, "standby": True}, False),  # not recognised (documented)
])
def test_what_counts_as_the_same_database(other, same):
    assert same_database(ONE, {**ONE, **other}) is same
    assert same_database({**ONE, **other}, ONE) is same
