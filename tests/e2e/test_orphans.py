"""No orphans: when the host dies by SIGKILL its workers die with it, its socket directory is
swept by the next host, and a worker whose host connection ends exits by itself."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from host import HostConfig, Permissions, PluginHost, WorkerLimits
from host import protocol as p
from host.runtime import Runtime, find_deno, find_runtime_entry

# A host in its own process: two workers for each plugin, one of them given a call that spins,
# then it reports its workers (once that call is in flight) and waits to be killed.
HOST_SCRIPT = """
import functools, json, sys
import anyio
from host import HostConfig, PluginHost, PoolConfig

async def main(plugins, state):
    cfg = HostConfig(plugins_dir=plugins, state_dir=state, pool=PoolConfig(min_workers=2))
    async with PluginHost(cfg) as h:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(h.call, "busy", "spin", timeout=600))
            with anyio.fail_after(20):
                while not any(w.inflight for w in h.plugin("busy").workers):
                    await anyio.sleep(0.01)
            report = {
                "workers": [w.pid for info in h.plugins() for w in info.workers],
                "busy": [w.pid for w in h.plugin("busy").workers if w.inflight],
            }
            print(json.dumps(report), flush=True)
            await anyio.sleep_forever()

anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[3])
"""

BUSY = """
export function spin() { while (true) {} }
"""
IDLE = "export function ping() { return 'pong'; }\n"


def proc_state(pid: int) -> str | None:
    """The /proc state letter (R, S, Z, ...), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def gone(pid: int) -> bool:
    """Exited: no /proc entry, or a zombie (a dead orphan waiting for init to reap it)."""
    return proc_state(pid) in (None, "Z")


def is_deno(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "deno"
    except OSError:
        return False


def wait_until(pred, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return pred()
        time.sleep(interval)
    return True


@pytest.fixture
def runtime_parent() -> Iterator[Path]:
    """A private $XDG_RUNTIME_DIR, so the run directories of these hosts are ours alone."""
    d = Path(tempfile.mkdtemp(prefix="ph-xdg-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class HostProcess:
    def __init__(self, proc: subprocess.Popen, report: dict) -> None:
        self.proc = proc
        self.workers: list[int] = report["workers"]
        self.busy: list[int] = report["busy"]


@contextmanager
def host_process(plugin_dir, shared_state: Path, xdg: Path, backend: str, tmp_path: Path) -> Iterator[HostProcess]:
    script = tmp_path / "host_main.py"
    script.write_text(HOST_SCRIPT)
    errlog = open(tmp_path / "host_stderr.txt", "w+b")  # noqa: SIM115 - closed below
    env = {**os.environ, "XDG_RUNTIME_DIR": str(xdg)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(plugin_dir.root), str(shared_state), backend],
        stdout=subprocess.PIPE, stderr=errlog, env=env, cwd=tmp_path,
    )
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            proc.wait()
            errlog.seek(0)
            pytest.fail(f"host did not report its workers; stderr:\n{errlog.read().decode()[-3000:]}")
        hp = HostProcess(proc, json.loads(line))
        workers = hp.workers
        yield hp
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        errlog.close()
        # Whatever the outcome, leave no worker of ours behind (by pid, and only deno).
        for pid in workers:
            if not gone(pid) and is_deno(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(45)
def test_no_worker_survives_2s_after_the_host_is_sigkilled(
    plugin_dir, shared_state, runtime_parent, anyio_backend, tmp_path
):
    plugin_dir.add("busy.js", BUSY)
    plugin_dir.add("idle.js", IDLE)
    with host_process(plugin_dir, shared_state, runtime_parent, anyio_backend, tmp_path) as hp:
        assert len(hp.workers) == 4 and len(set(hp.workers)) == 4
        assert len(hp.busy) == 1 and hp.busy[0] in hp.workers
        assert all(is_deno(pid) for pid in hp.workers)
        # The busy worker really is spinning: its main thread is running, not sleeping.
        assert wait_until(lambda: proc_state(hp.busy[0]) == "R", timeout=5)

        t_kill = time.monotonic()
        os.kill(hp.proc.pid, signal.SIGKILL)
        hp.proc.wait(timeout=5)
        survived = not wait_until(lambda: all(gone(pid) for pid in hp.workers), timeout=2.0)
        elapsed = time.monotonic() - t_kill
        assert not survived, f"alive {elapsed:.1f}s after the host died: " + str(
            {pid: proc_state(pid) for pid in hp.workers if not gone(pid)})


SPAWNER_HOST = """
import json, sys
import anyio
from host import HostConfig, PluginHost, PoolConfig

async def main(plugins, state):
    cfg = HostConfig(plugins_dir=plugins, state_dir=state, pool=PoolConfig(min_workers=1, max_workers=1))
    async with PluginHost(cfg) as h:
        child = await h.call("spawner", "start")
        print(json.dumps({"child": child, "workers": [w.pid for w in h.plugin("spawner").workers]}), flush=True)
        await anyio.sleep_forever()

anyio.run(main, sys.argv[1], sys.argv[2])
"""

SPAWNER = """
export const metadata = { id: "spawner", name: "spawner", version: "1.0.0", apiVersion: "1.0",
  permissions: { run: ["sleep"] } };
export function start() { return new Deno.Command("sleep", { args: ["300"] }).spawn().pid; }
"""


@pytest.mark.timeout(45)
def test_what_a_plugin_started_dies_with_a_sigkilled_host(plugin_dir, tmp_path, runtime_parent, shared_state):
    # Deno does not pass SIGKILL on to the processes it started: before, `sleep` was re-parented
    # to PID 1 and lived on. The host's reaper kills the worker's whole process group.
    plugin_dir.add("spawner.js", SPAWNER)
    script = tmp_path / "spawner_host.py"
    script.write_text(SPAWNER_HOST)
    proc = subprocess.Popen([sys.executable, str(script), str(plugin_dir.root), str(shared_state)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_parent)})
    child = None
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready:
            pytest.fail("no report from the host")
        report = json.loads(proc.stdout.readline())
        child = report["child"]
        def comm() -> str:
            with open(f"/proc/{child}/comm") as f:
                return f.read().strip()
        # under load the child may not have exec'd yet (its name is still deno's)
        assert wait_until(lambda: comm() == "sleep", timeout=5), comm()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        assert wait_until(lambda: gone(child), timeout=3), f"the plugin's child {child} outlived the host"
        # the workers die with it too (killed by the reaper, then reaped by init: not instantly)
        assert wait_until(lambda: all(gone(pid) for pid in report["workers"]), timeout=5), report["workers"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child is not None and not gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(45)
@pytest.mark.anyio
async def test_run_dir_of_a_sigkilled_host_is_swept_when_the_next_host_starts(
    plugin_dir, shared_state, runtime_parent, anyio_backend, tmp_path, monkeypatch
):
    plugin_dir.add("busy.js", BUSY)
    plugin_dir.add("idle.js", IDLE)
    # A directory of a host that is still alive (this process) must survive the sweep.
    alive = runtime_parent / f"plugin-host-{os.getpid()}-alive"
    alive.mkdir(mode=0o700)
    with host_process(plugin_dir, shared_state, runtime_parent, anyio_backend, tmp_path) as hp:
        host_pid = hp.proc.pid
        os.kill(host_pid, signal.SIGKILL)
        hp.proc.wait(timeout=5)  # reaped: a zombie would still look alive to kill(pid, 0)
        assert wait_until(lambda: all(gone(pid) for pid in hp.workers), timeout=2.0)
    stale = list(runtime_parent.glob(f"plugin-host-{host_pid}-*"))
    assert len(stale) == 1 and stale[0].is_dir()

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_parent))
    cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(shared_state))
    async with PluginHost(cfg) as h:
        assert not stale[0].exists()
        assert alive.is_dir()
        mine = list(runtime_parent.glob(f"plugin-host-{os.getpid()}-*"))
        assert len(mine) == 2  # the live one we made, and this host's own
        assert await h.call("idle", "ping") == "pong"
    assert [d.name for d in runtime_parent.iterdir()] == [alive.name]


# ---------------------------------------------------------------------------- the worker's side


@contextmanager
def connected_worker(calc, shared_state: Path, limits: p.Limits) -> Iterator[tuple[subprocess.Popen, socket.socket]]:
    """The real worker runtime, started with the host's own command line, connected to this
    test as its host; handshaken (welcome carries ``limits``) and proven to serve a call."""
    run_dir = Path(tempfile.mkdtemp(prefix="ph-eof-", dir="/tmp"))
    deno_dir = shared_state / "deno"
    deno_dir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(deno=find_deno(), entry=find_runtime_entry(), deno_dir=deno_dir, run_dir=run_dir)
    sock_path, token = runtime.socket_path(), "one-time-token"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    listener.settimeout(10)
    argv = runtime.argv(plugin_id="calc", permissions=Permissions(), base_dir=calc.root,
                        read_paths=[str(calc.root)], limits=WorkerLimits(), socket_path=sock_path)
    proc = subprocess.Popen(argv, env=runtime.env(Permissions()), cwd=run_dir, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(runtime.bootstrap(sock_path, token))
    proc.stdin.close()
    conn = None
    try:
        conn, _ = listener.accept()
        listener.close()
        conn.settimeout(10)
        frames = p.FrameBuffer()
        backlog: list[p.Message] = []

        def receive() -> p.Message:
            while not backlog:
                data = conn.recv(65536)
                assert data, "worker closed the connection"
                backlog.extend(frames.feed(data))
            return backlog.pop(0)

        hello = receive()
        assert isinstance(hello, p.Hello) and hello.token == token and hello.pid == proc.pid
        conn.sendall(p.encode(p.Welcome(plugin_id="calc", module=str(calc.root / "calc.js"), limits=limits)))
        ready = receive()
        assert isinstance(ready, p.Ready) and ready.error is None and "add" in ready.exports
        conn.sendall(p.encode(p.Call(id=1, fn="add", args=[2, 3])))
        assert receive() == p.Result(id=1, value=5)
        yield proc, conn
    finally:
        if conn is not None:
            conn.close()
        listener.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(20)
def test_worker_exits_by_itself_when_its_socket_reaches_eof(calc, shared_state):
    # Heartbeat watch far away and the parent (this process) alive: only EOF can end it.
    with connected_worker(calc, shared_state, p.Limits(heartbeat_timeout_ms=60_000)) as (proc, conn):
        t0 = time.monotonic()
        conn.close()
        assert proc.wait(timeout=2) == 0  # exit code 0: the host went away
        assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(20)
def test_worker_exits_by_itself_when_the_host_goes_silent(calc, shared_state):
    # The connection stays open but nothing arrives (a frozen host): exit code 4.
    with connected_worker(calc, shared_state, p.Limits(heartbeat_timeout_ms=300)) as (proc, conn):
        t0 = time.monotonic()
        assert proc.wait(timeout=3) == 4
        assert 0.2 <= time.monotonic() - t0 < 2.0
        assert conn.recv(1) == b""  # and it closed its end on the way out
