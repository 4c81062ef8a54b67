"""Plugin storage in PostgreSQL (``[state] database``) shared by two hosts, each with its own
state directory and its own workers, on the real postgres of tests/support/postgres.py: what a
worker of one host stores, a worker of the other reads; the storage cap counts both hosts'
writes; the data outlives both hosts; a database that is gone is a StorageError without the
password (one unreachable at start fails the start: tests/test_shared_config.py). Also two
``serve`` processes sharing it over HTTP."""

from __future__ import annotations

import logging
import os
import signal
import time

import anyio
import psycopg
import pytest
from support.plugins import fresh_state
from support.servers import serve_process

from host import PluginError, PoolConfig, WorkerLimits
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

KEEPER = """
export async function bump(ctx) {
  const n = ((await ctx.storage.get("n")) ?? 0) + 1;
  await ctx.storage.set("n", n);
  return n;
}
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
export async function get(key, ctx) { return (await ctx.storage.get(key)) ?? null; }
export async function del(key, ctx) { return await ctx.storage.delete(key); }
export async function keys(ctx) { return await ctx.storage.keys(); }
export async function attempt(key, value, ctx) {
  try { await ctx.storage.set(key, value); return "stored"; } catch (e) { return e.name; }
}
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.fixture
def keeper(plugin_dir):
    plugin_dir.add("keeper.js", KEEPER)
    return plugin_dir


@pytest.fixture
def two_states(tmp_path, shared_state):
    return str(fresh_state(tmp_path / "a", shared_state)), str(fresh_state(tmp_path / "b", shared_state))


async def test_two_hosts_share_plugin_storage(make_host, keeper, two_states, postgres_url):
    state = StateConfig(database=postgres_url)
    a_dir, b_dir = two_states
    async with make_host(state_dir=a_dir, state=state, pool=ONE) as a, \
            make_host(state_dir=b_dir, state=state, pool=ONE) as b:
        assert await a.call("keeper", "bump") == 1
        assert await b.call("keeper", "bump") == 2  # b's worker read what a's stored
        assert await a.call("keeper", "get", "n") == 2
        assert await b.call("keeper", "put", "profile", {"name": "Ann", "tags": ["x", "y"], "n": 1.5})
        assert await a.call("keeper", "get", "profile") == {"name": "Ann", "tags": ["x", "y"], "n": 1.5}
        assert await a.call("keeper", "keys") == ["n", "profile"]
        assert await a.call("keeper", "del", "profile") is True
        assert await b.call("keeper", "get", "profile") is None
        assert await b.call("keeper", "del", "profile") is False
    # nothing under either state directory: the data is in the database, and outlives both hosts
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT plugin, key FROM plugin_storage").fetchall() == [("keeper", "n")]
    async with make_host(state_dir=a_dir, state=state, pool=ONE) as again:
        assert await again.call("keeper", "get", "n") == 2


async def test_the_storage_cap_counts_every_hosts_writes(make_host, keeper, two_states, postgres_url):
    state = StateConfig(database=postgres_url)
    limits = WorkerLimits(storage_max_bytes=3000)
    a_dir, b_dir = two_states
    async with make_host(state_dir=a_dir, state=state, pool=ONE, limits=limits) as a, \
            make_host(state_dir=b_dir, state=state, pool=ONE, limits=limits) as b:
        assert await a.call("keeper", "attempt", "one", "x" * 1400) == "stored"
        assert await b.call("keeper", "attempt", "two", "x" * 1400) == "stored"
        assert await a.call("keeper", "attempt", "three", "x" * 1400) == "StorageFull"
        assert await b.call("keeper", "attempt", "one", "y" * 1400) == "stored"  # a replacement takes no more
        assert await b.call("keeper", "keys") == ["one", "two"]


async def test_a_state_database_gone_is_a_storage_error_without_the_password(
        make_host, keeper, caplog, postgres_url, postgres_server):
    caplog.set_level(logging.DEBUG)
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE) as h:  # started: the config store read the database
        with postgres_server.admin() as admin:
            admin.execute(f"DROP DATABASE {postgres_url.rsplit('/', 1)[1]} WITH (FORCE)")
        with pytest.raises(PluginError) as e:
            await h.call("keeper", "bump")
    assert e.value.name == "StorageError"
    assert f"127.0.0.1:{postgres_server.port}" in e.value.message
    assert postgres_server.password not in e.value.message and postgres_server.password not in caplog.text


@pytest.mark.timeout(120)
def test_two_serve_processes_share_plugin_storage(tmp_path, shared_state, postgres_url, postgres_server, keeper):
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{postgres_url}"\n')
    common = ("--plugins", str(keeper.root), "--config", "host.toml", "--insecure-no-token")
    with serve_process(tmp_path, *common, "--state-dir", str(fresh_state(tmp_path / "a", shared_state))) as one, \
            serve_process(tmp_path, *common, "--state-dir", str(fresh_state(tmp_path / "b", shared_state))) as two:
        one.wait_running("keeper")
        two.wait_running("keeper")
        status, out = one.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", "from one"]})
        assert status == 200, (out, one.log()[-3000:])
        status, out = two.request("POST", "/api/plugins/keeper/call/get", {"args": ["k"]})
        assert (status, out.get("result")) == (200, "from one"), (out, two.log()[-3000:])
        logs = one.log() + two.log()
    assert postgres_server.password not in logs


def test_state_database_must_be_postgresql(tmp_path):
    from host import InvalidConfig, load_config

    (tmp_path / "host.toml").write_text('[state]\ndatabase = "mysql://app:t0psecret@db:3306/app"\n')
    with pytest.raises(InvalidConfig, match=r"state\.database: a postgresql:// URL") as e:
        load_config(tmp_path / "host.toml")
    assert "t0psecret" not in str(e.value)


async def test_a_table_another_role_created_first_is_refused(make_host, keeper, tmp_path, shared_state,
                                                            postgres_url, postgres_server):
    """Before PostgreSQL 15 every role could create tables in ``public``: one that creates
    ``plugin_storage`` before the host does would read and change every plugin's storage. The
    host refuses a table it does not own, naming it and its owner, and never writes into it."""
    intruder = "intruder_" + postgres_url.rsplit("/", 1)[1]
    database = postgres_url.rsplit("/", 1)[1]
    with postgres_server.admin(database) as db:
        db.execute(f"CREATE ROLE {intruder}")
        db.execute(f"GRANT CREATE ON SCHEMA public TO {intruder}")
        db.execute(f"SET ROLE {intruder}")
        db.execute("CREATE TABLE plugin_storage (plugin TEXT, key TEXT, value BYTEA, size BIGINT)")
        db.execute("RESET ROLE")
    try:
        state = StateConfig(database=postgres_url)
        async with make_host(state_dir=str(fresh_state(tmp_path, shared_state)), state=state, pool=ONE) as h:
            with pytest.raises(PluginError) as e:
                await h.call("keeper", "put", "k", "secret value")
        assert e.value.name == "StorageError"
        assert "public.plugin_storage" in e.value.message and repr(intruder) in e.value.message
        assert postgres_server.password not in e.value.message
        with postgres_server.admin(database) as db:
            assert db.execute("SELECT count(*) FROM plugin_storage").fetchone()[0] == 0
    finally:
        with postgres_server.admin(database) as db:
            db.execute(f"DROP OWNED BY {intruder}")
            db.execute(f"DROP ROLE {intruder}")


async def test_a_hung_state_database_fails_the_storage_call_not_the_worker(make_host, keeper, postgres_url,
                                                                          postgres_server):
    """The database's server processes stop answering (SIGSTOP): each storage call, the ones
    queued behind the hung one too, is a StorageError just before its call's deadline, never a
    call timeout that kills the worker; once the database answers again, storage works."""
    database = postgres_url.rsplit("/", 1)[1]
    async with make_host(state=StateConfig(database=postgres_url), pool=ONE) as h:
        assert await h.call("keeper", "put", "a", 1)
        pid = h.plugin("keeper").workers[0].pid
        with postgres_server.admin() as admin:
            backends = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                    [database]).fetchall()]
        backends.append(postgres_server.proc.pid)  # new connections hang too: a call given the
        for b in backends:                         # connection at its last moment cannot succeed
            os.kill(b, signal.SIGSTOP)
        try:
            failures: list[tuple[float, PluginError]] = []

            async def attempt() -> None:
                t0 = time.monotonic()
                with pytest.raises(PluginError) as e:
                    await h.call("keeper", "get", "a", timeout=2)
                failures.append((time.monotonic() - t0, e.value))
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(attempt)
        finally:
            for b in backends:
                os.kill(b, signal.SIGCONT)
        assert [e.name for _, e in failures] == ["StorageError"] * 3, failures
        assert all(took < 2.0 for took, _ in failures), failures
        assert all(postgres_server.password not in e.message for _, e in failures)
        assert [w.pid for w in h.plugin("keeper").workers] == [pid]  # not killed for a late call
        assert await h.call("keeper", "put", "b", 2) and await h.call("keeper", "get", "b") == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_storage_key_holding_nul_is_refused_the_same_on_both_backends(
        make_host, keeper, tmp_path, shared_state, postgres_url, backend):
    # Before: sqlite stored it, PostgreSQL (TEXT holds no NUL) failed it as a database failure,
    # so a plugin that worked on one state backend broke on the other.
    state = StateConfig(database=postgres_url) if backend == "postgresql" else StateConfig()
    async with make_host(state_dir=str(fresh_state(tmp_path, shared_state)), state=state, pool=ONE) as h:
        with pytest.raises(PluginError) as e:
            await h.call("keeper", "put", "a\u0000b", 1)
        assert "NUL" in e.value.message and "failed" not in e.value.message, e.value.message
        assert await h.call("keeper", "put", "ab", "v\u0000w")  # in a value it is data like any other
        assert await h.call("keeper", "get", "ab") == "v\u0000w"
        assert await h.call("keeper", "keys") == ["ab"]
