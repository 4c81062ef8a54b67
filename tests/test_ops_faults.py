"""What the operator meets at 3 a.m. with issue 20's shared state and processes: a state
database that stops answering, Redis that hangs, a sibling process that is stuck. Each is a
bounded, typed failure, and the host serves again once the service is back. Real postgres,
real redis-server, real ``serve`` subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from support.plugins import PluginDir, fresh_state
from support.postgres import Postgres
from support.processes import descendants, free_port, process_gone
from support.servers import ServeProcess, run_cli, running_redis, serve_children, serve_process

from host import PolicyStorageError, PoolConfig, StateError
from host.balances.history_pg import PostgresHistory
from host.balances.result import BalanceResult
from host.runtime import find_deno
from host.state_config import StateConfig

pytestmark = pytest.mark.timeout(90)


@contextmanager
def frozen_backends(server: Postgres, url: str, *, whole: bool = False) -> Iterator[None]:
    """The server processes of ``url``'s database stop answering (SIGSTOP) as on a network
    partition: connections stay open, nothing comes back; ``whole``: new connections too (the
    postmaster as well); SIGCONT at the end."""
    database = url.rsplit("/", 1)[1]
    with server.admin() as admin:
        backends = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                [database]).fetchall()]
    assert backends
    backends += [server.proc.pid] if whole else []
    for pid in backends:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in backends:
            os.kill(pid, signal.SIGCONT)


def point(balance: float) -> BalanceResult:
    return BalanceResult(provider="alpha", provider_name="Alpha", status="success", balance=balance,
                         currency="USD", last_updated=dt.datetime.now(dt.UTC))


def test_a_hung_state_database_fails_balance_history_within_its_timeout(postgres_server, postgres_url):
    # Before: history calls (GET /api/balances, its history, the alerts) waited on the
    # server forever, and every later one queued behind them on the session's lock.
    history = PostgresHistory(postgres_url, timeout=1.5)
    try:
        history.append([point(5.0)])
        outcomes: list[tuple[float, BaseException | None]] = [(0.0, None), (0.0, None)]  # by call, in start order

        def attempt(k: int, call) -> None:
            t0 = time.monotonic()
            try:
                call()
                outcomes[k] = (time.monotonic() - t0, None)
            except BaseException as exc:
                outcomes[k] = (time.monotonic() - t0, exc)

        with frozen_backends(postgres_server, postgres_url):
            threads = [threading.Thread(target=attempt, args=(k, call), daemon=True)
                       for k, call in enumerate((history.read, lambda: history.append([point(4.0)])))]
            threads[0].start()
            until = time.monotonic() + 5
            while not history.db._thread_lock.locked() and time.monotonic() < until:
                time.sleep(0.005)  # polled: the first holds the session's connection
            threads[1].start()  # so the second waits behind it
            for t in threads:
                t.join(10)
            assert not any(t.is_alive() for t in threads), "a history call is still waiting on the database"
        first = outcomes[0][1]
        assert isinstance(first, StateError), outcomes
        assert "within the deadline" in first.message and postgres_server.password not in first.message
        assert all(took < 1.5 * 2 for took, _ in outcomes), outcomes
        assert all(exc is None or isinstance(exc, StateError) for _, exc in outcomes), outcomes
        # answering again: the next test
    finally:
        history.close()


@pytest.mark.anyio
@pytest.mark.one_backend  # most of its 12 s is the window before the store is asked again
async def test_a_hung_state_database_costs_one_wait_then_fails_at_once_until_it_answers(postgres_server,
                                                                                       postgres_url):
    # Before: every storage call and every history read or write waited the whole timeout
    # (a balance refresh 10 s each) for as long as the database hung, each in a worker thread.
    from host import StorageError
    from host.plugin_storage_pg import PostgresStorage

    storage, history = PostgresStorage(postgres_url, 1.5), PostgresHistory(postgres_url, timeout=1.5)
    try:
        await storage.put("p", "k", b"v", 1 << 20, "storage")
        await anyio.to_thread.run_sync(history.append, [point(5.0)])
        with frozen_backends(postgres_server, postgres_url, whole=True):
            with pytest.raises(StorageError, match="within the deadline"):
                await storage.get("p", "k")
            with pytest.raises(StateError, match="within the deadline"):
                await anyio.to_thread.run_sync(history.read)
            t0 = time.monotonic()
            for _ in range(3):
                with pytest.raises(StorageError, match="did not answer a moment ago"):
                    await storage.get("p", "k")
                with pytest.raises(StateError, match="did not answer a moment ago"):
                    await anyio.to_thread.run_sync(history.read)
            assert time.monotonic() - t0 < 1.0
        with anyio.fail_after(30):  # asked again after a while: it answers
            while True:
                try:
                    assert await storage.get("p", "k") == b"v"
                    assert [p.balance for p in await anyio.to_thread.run_sync(history.read)] == [5.0]
                    break
                except (StorageError, StateError):
                    await anyio.sleep(0.5)
    finally:
        storage.close()
        history.close()


@pytest.mark.anyio
@pytest.mark.one_backend
async def test_writes_queued_on_a_hung_state_database_end_with_the_first_wait(postgres_server, postgres_url):
    # helper-79's finding: with PostgreSQL stopped, 20 plugin switch writes in 10 s each took the
    # whole 10 s: each queued behind the one before it and then waited its own timeout
    from host.plugins.config_store import PostgresConfigs

    store = PostgresConfigs(postgres_url, None, 1.5, table="plugin_switches_queue")
    try:
        await store.set("p", {"enabled": True})
        took: list[float] = []
        with frozen_backends(postgres_server, postgres_url, whole=True):
            t0 = time.monotonic()

            async def write(k: int) -> None:
                with pytest.raises(StateError):
                    await store.set(f"p{k}", {"enabled": False})
                took.append(time.monotonic() - t0)

            async with anyio.create_task_group() as tg:
                for k in range(5):  # one every 0.35 s, all while the first waits its 1.5 s
                    tg.start_soon(write, k)
                    await anyio.sleep(0.35)
        # each ends with the first's wait (before: each at its own 1.5 s, the last at 2.9 s)
        assert len(took) == 5 and max(took) < 1.5 + 0.6, took
    finally:
        store.close()


def test_doctor_says_whether_the_state_database_answers(postgres_server, postgres_url, tmp_path):
    # helper-79's finding: with PostgreSQL hung, doctor printed every line "ok" and exited 0
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{postgres_url}"\n')
    (tmp_path / "plugins").mkdir()
    args = ("--config", str(tmp_path / "host.toml"), "doctor", "--json")
    out = run_cli(*args, cwd=tmp_path)
    found = {c["check"]: c for c in json.loads(out.stdout)}
    assert found["state.database"]["status"] == "ok" and "answers (PostgreSQL" in found["state.database"]["detail"]
    import psycopg

    with psycopg.connect(postgres_url), frozen_backends(postgres_server, postgres_url, whole=True):
        t0 = time.monotonic()
        out = run_cli(*args, cwd=tmp_path)
        took = time.monotonic() - t0
    found = {c["check"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 1 and found["state.database"]["status"] == "fail", found
    said = found["state.database"]["detail"]
    assert ("did not answer within 5 s" in said or "connection timeout expired" in said) and took < 15, (said, took)
    assert postgres_server.password not in out.stdout + out.stderr


def test_doctor_says_a_state_table_serve_could_not_use(postgres_url, tmp_path):
    """helper-100: with a column of plugin_switches dropped (a table of another version, a hand
    edit), doctor said the database answered, exit 0, and serve then failed: column "version"
    does not exist."""
    import psycopg

    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{postgres_url}"\n')
    (tmp_path / "plugins").mkdir()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE plugin_switches (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    out = run_cli("--config", str(tmp_path / "host.toml"), "doctor", "--json", cwd=tmp_path)
    found = {c["check"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 1 and found["state.database"]["status"] == "fail", found
    assert "table plugin_switches lacks column version" in found["state.database"]["detail"]


SLOW = """
export async function slow(ms) {
  console.log("slow call started");
  await new Promise((r) => setTimeout(r, ms));
  return ms;
}
"""


def slowpoke(tmp_path: Path, shared_state: Path) -> tuple[str, str]:
    """A plugin directory with the slowpoke plugin, and a state directory: serve's --plugins and --state-dir."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("slowpoke.js", SLOW)
    return str(plugins.root), str(fresh_state(tmp_path, shared_state))


@contextmanager
def slow_call_in_flight(srv: ServeProcess, ms: int) -> Iterator[None]:
    """A call of slowpoke.slow(ms) in flight in ``srv`` while the block runs (it stops serve);
    then the call was answered, serve exited 0, and none of its processes is left."""
    srv.wait_running("slowpoke")
    answers: list[tuple[int, object]] = []
    caller = threading.Thread(target=lambda: answers.append(
        srv.request("POST", "/api/plugins/slowpoke/call/slow", {"args": [ms]})), daemon=True)
    caller.start()
    srv.wait_logged("slow call started")
    family = descendants(lambda name: True, srv.proc.pid)
    yield
    caller.join(30)
    assert answers == [(200, {"ok": True, "result": ms})], srv.log()
    assert srv.proc.wait(30) == 0, srv.log()
    # each child's reaper (process.py) ends when it reads its host's end, a moment later
    left, deadline = family, time.monotonic() + 10
    while (left := [pid for pid in left if not process_gone(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, srv.log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_signal_to_serve_processes_still_drains_the_calls_in_flight(tmp_path, shared_state, sig):
    # Ctrl-C twice, or a second SIGTERM, during the drain. Before: the parent's signal handler was
    # gone after the first, so the second SIGINT killed every child mid-call (the client got no
    # answer, exit 130) and a second SIGTERM killed the parent alone (-15), its children orphaned.
    plugins, state = slowpoke(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state, "--processes", "2",
                       "--debug") as srv, slow_call_in_flight(srv, 1500):
        srv.proc.send_signal(sig)
        srv.wait_logged("draining and stopping 2 serve processes")
        srv.proc.send_signal(sig)


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]])
def test_a_hangup_drains_the_calls_in_flight(tmp_path, shared_state, processes):
    # The terminal that started serve closes: SIGHUP to its whole process group. Before: each
    # serve process died at once (the default action), the call in flight lost.
    plugins, state = slowpoke(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state, *processes,
                       "--debug", preexec=os.setpgrp) as srv:
        with slow_call_in_flight(srv, 1000):
            os.killpg(srv.proc.pid, signal.SIGHUP)
        assert "received SIGHUP: draining" in srv.log()


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]])
def test_sigusr1_from_a_log_rotation_is_said_and_ignored(tmp_path, shared_state, processes):
    # logrotate's habit, `postrotate kill -USR1`, to serve (helper-89): each process died at once,
    # the call in flight cut (curl: 000) and no line said why. Now said and ignored; SIGTERM stops.
    plugins, state = slowpoke(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state, *processes,
                       "--debug", preexec=os.setpgrp) as srv:
        with slow_call_in_flight(srv, 1500):
            os.killpg(srv.proc.pid, signal.SIGUSR1)
            os.killpg(srv.proc.pid, signal.SIGUSR2)
            srv.wait_logged("received SIGUSR2: ignored")
            assert srv.request("GET", "/healthz/live")[0] == 200
            srv.proc.send_signal(signal.SIGTERM)
        assert "received SIGUSR1: ignored" in srv.log()


@pytest.mark.parametrize("inspect", ["--inspect", "--inspect-brk"])
def test_the_inspector_with_several_serve_processes_is_a_usage_error(tmp_path, shared_state, inspect):
    # Before: every process started the plugin's worker on the one inspector port, so all but
    # one crashed in a loop on "Address already in use" until the plugin was in error.
    plugins, state = slowpoke(tmp_path, shared_state)
    done = run_cli("serve", "--plugins", plugins, "--state-dir", state, "--port", "0",
                   "--processes", "2", inspect, "slowpoke", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--processes" in done.stderr and inspect in done.stderr


def test_every_line_of_a_serve_process_says_which_process_wrote_it(tmp_path, shared_state):
    # Before: the lines written while the plugins started (before the process joined its
    # siblings) had no [process K], so two processes' starts read as one plugin started twice.
    plugins, state = slowpoke(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state,
                       "--processes", "2") as srv:
        srv.wait_running("slowpoke")
        srv.wait_logged("[process 0] serving on")
        srv.wait_logged("[process 1] serving on")
        lines = [line for line in srv.log().splitlines() if "[plugin:slowpoke" in line]
    assert len(lines) >= 4 and all("[process " in line for line in lines), lines


def test_a_serve_process_that_cannot_be_started_again_leaves_the_others_serving(tmp_path, shared_state):
    # A child dies and the new one cannot be started (here the interpreter is gone, as after a
    # deploy replaced it; also a pid or memory limit refusing the fork). Before: the parent
    # raised a traceback and killed the healthy child with it: the port went dark.
    venv = tmp_path / "venv"  # the parent runs from an interpreter path the test can take away
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_bytes((Path(sys.prefix) / "pyvenv.cfg").read_bytes())
    (venv / "lib").symlink_to(Path(sys.prefix) / "lib")
    python = venv / "bin" / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    (plugins, state), port = slowpoke(tmp_path, shared_state), free_port()
    env = {**os.environ, "PLUGIN_HOST_DENO": find_deno()}
    with open(tmp_path / "serve.log", "w") as out:
        proc = subprocess.Popen([str(python), "-m", "host", "serve", "--port", str(port), "--plugins",
                                 plugins, "--state-dir", state, "--processes", "2"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    srv = ServeProcess(proc, f"http://127.0.0.1:{port}", tmp_path / "serve.log")
    try:
        srv.wait_logged("[process 0] serving on")
        srv.wait_logged("[process 1] serving on")
        children = serve_children(proc.pid)
        assert len(children) == 2
        python.unlink()
        os.kill(children[0], signal.SIGKILL)
        srv.wait_logged("could not be started")
        for _ in range(4):  # the other one serves every call
            assert srv.request("GET", "/healthz/live", timeout=5)[0] == 200
        assert proc.poll() is None and os.path.exists(f"/proc/{children[1]}")
        assert "Traceback" not in srv.log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, srv.log()
        assert not os.path.exists(f"/proc/{children[1]}")  # reaped by the parent before it exits
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stuck_serve_process_is_killed_and_started_again(tmp_path, shared_state):
    # A child whose event loop stopped (here SIGSTOP; a loop that never yields, a deadlock) holds
    # its connections and their requests forever. Before: the parent never noticed.
    plugins, state = slowpoke(tmp_path, shared_state)
    (tmp_path / "host.toml").write_text("[server]\nprocess_timeout = 2\n")
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state,
                       "--config", "host.toml", "--processes", "2") as srv:
        stuck = max(serve_children(srv.proc.pid))
        srv.wait_logged(f"(pid {stuck}) is up: watched from now on")
        os.kill(stuck, signal.SIGSTOP)
        srv.wait_logged(f"(pid {stuck}) has not answered for 2 s: killing it")
        srv.poll(lambda: srv.log().count("serving on http") >= 3 or None, "the stuck process started again")
        assert not os.path.exists(f"/proc/{stuck}")
        assert srv.request("GET", "/healthz/live", timeout=5)[0] == 200


def test_a_serve_process_stuck_before_it_ever_answered_is_killed_and_started_again(tmp_path, shared_state):
    # A child stopped (or stuck on a lock) during its start never answers a probe. Before: the
    # parent watched a child from its first answer only, so this one held its slot forever.
    plugins, state = slowpoke(tmp_path, shared_state)
    (tmp_path / "host.toml").write_text("[server]\nprocess_start_timeout = 3\n")
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state, "--config", "host.toml",
                       "--processes", "2", ready=False) as srv:
        children = srv.poll(lambda: pids if len(pids := serve_children(srv.proc.pid)) == 2 else None,
                            "both serve processes started")
        stuck = max(children)
        os.kill(stuck, signal.SIGSTOP)  # long before its first answer: python is still importing
        srv.wait_logged(f"(pid {stuck}) has not answered in the 3 s since it started: killing it")
        srv.poll(lambda: srv.log().count("serving on http") >= 2 or None, "the stuck process started again")
        assert not os.path.exists(f"/proc/{stuck}")
        srv.wait_ready()
        assert srv.request("GET", "/healthz/live", timeout=5)[0] == 200
        assert srv.log().count("killing it") == 1  # the one that answered was left alone


QUIET_HOST = """
import sys
from host.pg_session import PgSession

session = PgSession(sys.argv[1], 1.0, [], what="storage")  # a host's connection, as it opens them
conn = session.backend.connect(write=True, timeout=5)
session.backend.run(conn, "BEGIN", [], 0)
session.backend.run(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", ["plugin_storage:keeper"], 1)  # as put does
print("locked", flush=True)
sys.stdin.readline()  # frozen mid-transaction (SIGSTOP, a VM paused, a partition): no more statements
"""
STORED = """
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
"""


@pytest.mark.anyio
async def test_a_host_gone_quiet_mid_transaction_does_not_hold_the_others_writes(make_host, plugin_dir,
                                                                                 postgres_url):
    # A host stops between two statements of a storage write, holding the plugin's lock. Before:
    # the server kept its transaction open until TCP keepalive noticed (hours), and every other
    # host's writes for that plugin failed (StorageError) meanwhile. Now each host's connection
    # says idle_in_transaction_session_timeout, so the server ends such a transaction.
    plugin_dir.add("keeper.js", STORED)
    async with make_host(state=StateConfig(database=postgres_url), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("keeper", "put", "a", 1)
        quiet = subprocess.Popen([sys.executable, "-c", QUIET_HOST, postgres_url], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert quiet.stdout.readline() == "locked\n"
            t0 = time.monotonic()
            assert await h.call("keeper", "put", "b", 2, timeout=8)
            assert time.monotonic() - t0 < 4.0
        finally:
            quiet.kill()
            quiet.wait()


COUNTED = """
let n = 0;
export function add(a, b) { n++; return a + b; }
export function count() { return n; }
"""


@pytest.mark.anyio
@pytest.mark.one_backend  # most of its 12 s is the window before the store is asked again
async def test_a_hung_result_cache_costs_one_wait_then_calls_go_straight_to_the_plugin(plugin_dir, make_host,
                                                                                       tmp_path):
    # Redis stops answering. Before: every cached call waited for it twice (the lookup, then the
    # store: ~4 s each with one call in flight, ~16 s each with 200) although "the cache only
    # ever saves work". Now one failure makes the next calls skip it for a while.
    plugin_dir.add("counted.js", COUNTED)
    cached = {"counted": {"cache": {"enabled": True, "functions": ["add"]}}}
    with running_redis(tmp_path) as (redis_proc, url):
        async with make_host(policy={"cache_storage": url}, plugins=cached,
                             pool=PoolConfig(min_workers=1, max_workers=1)) as h:
            assert await h.call("counted", "add", 1, 2) == 3
            redis_proc.send_signal(signal.SIGSTOP)
            try:
                assert await h.call("counted", "add", 2, 2, timeout=10) == 4  # finds it hung
                t0 = time.monotonic()
                for i in range(5):
                    assert await h.call("counted", "add", i, 10, timeout=10) == i + 10
                assert time.monotonic() - t0 < 1.0
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            before = await h.call("counted", "count")
            with anyio.fail_after(30):  # asked again after a while: cached results again
                while True:
                    await h.call("counted", "add", 7, 7)
                    await h.call("counted", "add", 7, 7)
                    if await h.call("counted", "count") - before < 2:
                        break
                    before = await h.call("counted", "count")
                    await anyio.sleep(0.5)


@pytest.mark.anyio
async def test_a_hung_rate_limit_redis_refuses_at_once_and_holds_no_other_plugins_storage(plugin_dir, make_host,
                                                                                         tmp_path):
    # Before: each rate-limited call waited for the hung redis (2 s, its socket timeout) in a
    # worker thread before its PolicyStorageError; under load they took every worker thread, so
    # another plugin's storage (sqlite, in those threads) waited too: 9.6 s for one put with
    # 200 such calls in flight. Now, after the first, they are refused at once (still closed).
    plugin_dir.add("counted.js", COUNTED)
    plugin_dir.add("stored.js", STORED)
    limited = {"counted": {"rate_limit": {"limit": "100000/second"}}}
    with running_redis(tmp_path) as (redis_proc, url):
        async with make_host(policy={"storage": url}, plugins=limited) as h:
            assert await h.call("counted", "add", 1, 2) == 3
            redis_proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(PolicyStorageError):
                    await h.call("counted", "add", 1, 2, timeout=10)  # finds it hung
                refused: list[float] = []

                async def limited_call() -> None:
                    t0 = time.monotonic()
                    with pytest.raises(PolicyStorageError, match="did not answer a moment ago"):
                        await h.call("counted", "add", 1, 2, timeout=10)
                    refused.append(time.monotonic() - t0)

                async with anyio.create_task_group() as tg:
                    for _ in range(100):
                        tg.start_soon(limited_call)
                    t0 = time.monotonic()
                    assert await h.call("stored", "put", "k", 1, timeout=10)
                    stored_in = time.monotonic() - t0
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            assert len(refused) == 100 and max(refused) < 1.0, max(refused)
            assert stored_in < 1.0


def test_a_state_database_that_refuses_fails_the_start_in_one_line_without_the_password(tmp_path, shared_state):
    # Before: libpq's hint ("\tIs the server running on that host ...") made it two lines.
    port = free_port()  # nothing listens there
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "postgresql://app:t0psecret@127.0.0.1:{port}/app"\n')
    done = run_cli("serve", "--port", "0", "--plugins", str(tmp_path), "--state-dir",
                   str(fresh_state(tmp_path, shared_state)), "--config", "host.toml", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "[state] database" in lines[0] and f"127.0.0.1:{port}" in lines[0], lines
    assert "Connection refused" in lines[0] and "t0psecret" not in done.stderr


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]])
def test_a_runtime_dir_that_is_not_there_falls_back_to_the_temp_dir(tmp_path, shared_state, processes):
    # XDG_RUNTIME_DIR left from another user (sudo, su) or a unit without RuntimeDirectory.
    # Before: serve died with a FileNotFoundError traceback.
    plugins, state = slowpoke(tmp_path, shared_state)
    gone = tmp_path / "run-user-1000"
    with serve_process(tmp_path, "--plugins", plugins, "--state-dir", state,
                       *processes, env={"XDG_RUNTIME_DIR": str(gone)}) as srv:
        srv.wait_running("slowpoke")
        assert srv.request("POST", "/api/plugins/slowpoke/call/slow", {"args": [1]}) == (200, {"ok": True, "result": 1})
    assert not gone.exists() and "Traceback" not in srv.log()


@pytest.mark.anyio
async def test_a_call_while_a_disabled_plugin_drains_is_told_it_is_disabled(plugin_dir, make_host):
    # Disabled (here, or by another host through the state database) while a call is in flight:
    # the pool drains that call. Before: calls meanwhile got 503 "calc: plugin is running".
    from host import PluginUnavailable

    plugin_dir.add("slowpoke.js", SLOW)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h, anyio.create_task_group() as tg:
        tg.start_soon(h.call, "slowpoke", "slow", 1000)
        with anyio.fail_after(10):
            while not any(w.inflight for w in h.plugin("slowpoke").workers):
                await anyio.sleep(0.01)
        tg.start_soon(h.disable, "slowpoke")
        with anyio.fail_after(10):
            while True:
                try:
                    await h.call("slowpoke", "slow", 1)
                except PluginUnavailable as exc:
                    refused = exc
                    break
                await anyio.sleep(0.01)
        assert "disabled" in refused.message, refused.message


def test_a_cli_command_against_a_stopped_server_says_so_within_seconds(calc, tmp_path, shared_state):
    """``kill -STOP`` of serve: before, ``status``, ``config set`` and ``disable`` each hung ~122 s
    (the control probe had the 120 s request timeout), then ``status`` said no server runs and
    ``config set`` wrote the config file behind the server's back."""
    state = fresh_state(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(state)) as srv:
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            for args in (("status",), ("config", "set", "calc", "x=1")):
                started = time.monotonic()
                out = run_cli(*args, "--plugins", str(calc.root), "--state-dir", str(state), cwd=tmp_path)
                assert time.monotonic() - started < 15, args
                assert out.returncode == 1 and "did not answer" in out.stderr and "SIGSTOP" in out.stderr, out
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        assert run_cli("status", "--plugins", str(calc.root), "--state-dir", str(state), cwd=tmp_path).returncode == 0
    assert not (state / "config.json").exists() or "x" not in (state / "config.json").read_text()


BROKEN_PEER = r'''
import asyncio, sys
from aiohttp import web

async def live(request):
    return web.json_response({"live": True})

async def cut(request):  # a server dying mid-answer, or one of another version answering no JSON
    if request.method == "POST":
        request.transport.close()
        await asyncio.sleep(1)
    return web.Response(text="<html>not json</html>", content_type="text/html")

async def main(path):
    app = web.Application()
    app.router.add_get("/healthz/live", live)
    app.router.add_route("*", "/{tail:.*}", cut)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    print("up", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(sys.argv[1]))
'''


def test_a_server_that_cuts_its_answer_or_answers_no_json_is_a_one_line_cli_error(calc, tmp_path, shared_state):
    # Before: aiohttp's ClientError or the JSON decoder's ValueError left the CLI as a traceback.
    from host.control import socket_path

    state = fresh_state(tmp_path, shared_state)
    peer = subprocess.Popen([sys.executable, "-c", BROKEN_PEER, str(socket_path(state))], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == "up"
        for args in (("status",), ("list",), ("disable", "calc")):
            out = run_cli(*args, "--plugins", str(calc.root), "--state-dir", str(state), cwd=tmp_path)
            assert out.returncode == 1 and "Traceback" not in out.stderr, out
            assert out.stderr.startswith("error: ") and "control" in out.stderr, out.stderr
    finally:
        peer.kill()
        peer.wait()


@pytest.mark.anyio
async def test_a_control_socket_whose_queue_is_full_is_a_live_unresponsive_server(tmp_path):
    """helper-111: each probe of a wedged server left its connection in the control socket's
    accept queue; once full (~65 probes of a monitor), connecting failed with EAGAIN, taken for a
    server that died: status said no server served, and enable wrote the state files behind it."""
    import socket as _socket

    from host.control import ServerUnresponsive, control_client, socket_path

    state = tmp_path / "state"
    state.mkdir()
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(str(socket_path(state)))
    listener.listen(0)  # accepts nothing, as a stopped server
    queued = []
    try:
        for _ in range(64):  # fill its queue
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(socket_path(state)))
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
        with pytest.raises(ServerUnresponsive, match="accepts no connection"):
            async with control_client(state):
                pass
    finally:
        for s in queued:
            s.close()
        listener.close()
