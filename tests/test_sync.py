"""SyncPluginHost: the blocking facade, used from plain (non-async) code."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.plugins import fresh_state

from host import (
    CallTimeout,
    ExecuteResult,
    FunctionNotFound,
    HostClosed,
    HostConfig,
    PermissionDenied,
    PluginError,
    PluginInfo,
    PluginNotFound,
    PoolConfig,
    SyncPluginHost,
)


def config(plugins: Path, state: Path, **kw) -> HostConfig:
    return HostConfig(plugins_dir=str(plugins), state_dir=str(state), **kw)


def process_gone(pid: int) -> bool:
    """True once the process no longer exists (not even as an unreaped zombie)."""
    return not os.path.exists(f"/proc/{pid}")


def test_call_returns_the_plugins_result(calc, shared_state, anyio_backend):
    with SyncPluginHost(config(calc.root, shared_state), backend=anyio_backend) as h:
        assert h.call("calc", "add", 1, 2) == 3
        assert h.call("calc", "addLater", 20, 22) == 42
        assert h.call("calc", "echo", {"a": [1, None, "ü"]}) == {"a": [1, None, "ü"]}


def test_errors_propagate_with_their_own_types(plugin_dir, shared_state):
    plugin_dir.add("bad.js", """
        export function auth() { throw new PluginError(ErrorTypes.AUTH_ERROR, "bad key", { status: 401 }); }
        export function range() { throw new RangeError("out of range"); }
        export async function secret() { return await Deno.readTextFile("/etc/passwd"); }
        export function spin() { while (true) {} }
        export function ok() { return "ok"; }
    """)
    with SyncPluginHost(config(plugin_dir.root, shared_state)) as h:
        with pytest.raises(PluginError) as e:
            h.call("bad", "auth")
        assert type(e.value) is PluginError
        assert (e.value.error_type, e.value.message, e.value.details) == ("AUTH_ERROR", "bad key", {"status": 401})
        assert (e.value.plugin, e.value.function) == ("bad", "auth")
        with pytest.raises(PluginError) as e:
            h.call("bad", "range")
        assert (e.value.name, e.value.message) == ("RangeError", "out of range")
        with pytest.raises(PermissionDenied) as e:
            h.call("bad", "secret")
        assert e.value.name == "NotCapable" and "/etc/passwd" in e.value.message
        with pytest.raises(FunctionNotFound):
            h.call("bad", "missing")
        with pytest.raises(PluginNotFound):
            h.call("nope", "x")
        t0 = time.monotonic()
        with pytest.raises(CallTimeout):
            h.call("bad", "spin", timeout=0.3)
        assert time.monotonic() - t0 < 2
        assert h.call("bad", "ok") == "ok"


def test_execute_returns_an_execute_result(calc, shared_state):
    with SyncPluginHost(config(calc.root, shared_state)) as h:
        out = h.execute("export default (x) => x * 2", 21)
        named = h.execute("export function solution(x) { return x + 1; }", input=1, entry="solution")
        failed = h.execute('export default () => { throw new Error("Input is required"); }')
    assert isinstance(out, ExecuteResult)
    assert out.ok is True and out.result == 42
    assert named.ok is True and named.result == 2
    assert failed.ok is False
    assert [(e.level, e.name, e.message) for e in failed.logs] == [("exception", "Error", "Input is required")]


def test_plugins_snapshot_and_no_worker_survives_the_with_block(calc, shared_state, anyio_backend):
    with SyncPluginHost(config(calc.root, shared_state), backend=anyio_backend) as h:
        snap = h.plugins()
        assert [type(p) for p in snap] == [PluginInfo]
        info = snap[0]
        assert (info.id, info.state, info.version) == ("calc", "running", "1.2.3")
        assert "add" in info.exports
        assert len(info.workers) == 1
        pid = info.workers[0].pid
        assert pid is not None and not process_gone(pid)
        assert h.call("calc", "pid") == pid
        assert h.plugins()[0].calls >= 1
    assert process_gone(pid)


def test_workers_are_stopped_when_the_block_raises(calc, shared_state):
    with pytest.raises(ValueError, match="boom"), SyncPluginHost(config(calc.root, shared_state)) as h:
        pid = h.call("calc", "pid")
        raise ValueError("boom")
    assert process_gone(pid)


def test_calls_from_many_threads_share_the_host(calc, shared_state):
    cfg = config(calc.root, shared_state, pool=PoolConfig(min_workers=1, max_workers=1, max_inflight=8))
    with SyncPluginHost(cfg) as h, ThreadPoolExecutor(8) as ex:
        t0 = time.monotonic()
        results = list(ex.map(lambda i: h.call("calc", "addLater", i, 100), range(8)))
        assert results == [i + 100 for i in range(8)]
        slept = list(ex.map(lambda _: h.call("calc", "sleep", 300), range(8)))
        assert slept == [300] * 8
        assert time.monotonic() - t0 < 2.0  # 8 x 300 ms overlapped on one worker
        assert len(h.plugins()[0].workers) == 1


def test_call_after_the_block_raises_host_closed(calc, shared_state):
    with SyncPluginHost(config(calc.root, shared_state)) as h:
        assert h.call("calc", "add", 1, 1) == 2
    with pytest.raises(HostClosed):
        h.call("calc", "add", 1, 2)


def test_call_before_entering_raises_host_closed(calc, shared_state):
    h = SyncPluginHost(config(calc.root, shared_state))
    with pytest.raises(HostClosed):
        h.call("calc", "add", 1, 2)


def test_sync_facade_manages_plugins_too(calc, shared_state):
    from host import HostConfig, SyncPluginHost

    with SyncPluginHost(HostConfig(plugins_dir=str(calc.root), state_dir=str(shared_state))) as h:
        h.disable("calc")
        assert h.plugins()[0].state == "disabled"
        h.enable("calc")
        assert h.call("calc", "add", 2, 2) == 4
        assert h.reload("calc") is True
        assert h.emit("nothing.listens") == []
        assert h.get_config("calc") == {}


@pytest.mark.timeout(60)
def test_a_host_never_closed_lets_the_program_end_and_stops_its_workers(calc, shared_state, tmp_path):
    # helper-86: entered without `with` (a notebook's, an app's global) and never closed, its event
    # loop thread kept the interpreter from ending (killed by `timeout` after 20 s)
    import subprocess
    import sys

    script = tmp_path / "app.py"
    script.write_text(
        "import sys\n"
        "from host import HostConfig, PoolConfig, SyncPluginHost\n"
        f"h = SyncPluginHost(HostConfig(plugins_dir={str(calc.root)!r}, state_dir={str(tmp_path / 'state')!r},\n"
        "                               pool=PoolConfig(min_workers=1, max_workers=1)))\n"
        "h.__enter__()\n"
        "print(h.call('calc', 'add', 1, 2), h.host.plugin('calc').workers[0].pid, flush=True)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=40,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    answer, pid = out.stdout.split()
    assert answer == "3" and process_gone(int(pid))
    h = SyncPluginHost(config(calc.root, fresh_state(tmp_path / "b", shared_state)))
    h.__enter__()
    assert h.call("calc", "add", 2, 2) == 4
    h.close()
    h.close()  # twice is once
    with pytest.raises(HostClosed):
        h.call("calc", "add", 1, 1)


def test_the_sync_facade_has_the_plugin_views_and_listeners_too(calc, shared_state, tmp_path):
    # helper-86: plugin, states, logs, restart, unload, settled, subscribe, ... were async-only
    seen: list[str] = []
    with SyncPluginHost(config(calc.root, fresh_state(tmp_path, shared_state),
                               pool=PoolConfig(min_workers=1, max_workers=1))) as h:
        remove = h.subscribe(lambda ev: seen.append(ev.state))
        assert h.plugin("calc").state == "running" and h.states() == {"calc": "running"}
        assert h.settled(5) is True and h.restart("calc") is True
        h.unload("calc")
        assert h.plugin("calc").state == "stopped"
        assert any(e.kind == "lifecycle" for e in h.logs("calc", level="info"))
        remove()
    assert "stopped" in seen


def _run_script(tmp_path: Path, name: str, body: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """``body`` run as a script in a session of its own: on a timeout the whole session is killed
    (a child it forked that hangs, as before the fork guard, is not left behind)."""
    import signal

    script = tmp_path / name
    script.write_text(body)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left, a forked child that hangs
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _alive_with(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own directory)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(pid))
            except OSError:
                continue
    return out


def test_a_forked_child_is_told_the_host_is_the_parents_and_never_hangs(calc, shared_state, tmp_path):
    """helper-91: a child of os.fork() (multiprocessing's default start on Linux) that called an
    open SyncPluginHost, or only exited, waited forever on an event loop thread it does not have.
    In the child every method is HostClosed saying why, close() and the exit return at once, and
    the parent's host and workers are untouched."""
    out = _run_script(tmp_path, "forks.py", (
        "import os, sys, time\n"
        "from host import HostClosed, HostConfig, PoolConfig, SyncPluginHost\n"
        f"h = SyncPluginHost(HostConfig(plugins_dir={str(calc.root)!r}, state_dir={str(tmp_path / 'state')!r},\n"
        "                               pool=PoolConfig(min_workers=1, max_workers=1)))\n"
        "h.__enter__()\n"
        "assert h.call('calc', 'add', 1, 2) == 3\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        h.call('calc', 'add', 1, 2, timeout=2)\n"
        "        print('child: answered', flush=True)\n"
        "    except HostClosed as exc:\n"
        "        print('child:', 'forked child' in exc.message, flush=True)\n"
        "    h.close()\n"
        "    sys.exit(0)  # the interpreter's exit closes open hosts: not the parent's\n"
        "t = time.monotonic()\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('parent:', os.waitstatus_to_exitcode(status), time.monotonic() - t < 10, h.call('calc', 'add', 2, 2),\n"
        "      flush=True)\n"
        "h.close()\n"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["child: True", "parent: 0 True 4"], out.stdout


def test_ctrl_c_while_a_sync_host_starts_stops_it_and_its_workers(calc, tmp_path):
    """helper-91: Ctrl-C during SyncPluginHost.__enter__ (a SIGINT 20-150 ms in) hung forever, its
    deno workers running: the portal waited on the task that had entered the host."""
    out = _run_script(tmp_path, "interrupt.py", (
        "import os, signal, threading, time\n"
        "from host import HostConfig, PoolConfig, SyncPluginHost\n"
        "for i, delay in enumerate((0.02, 0.08, 0.15, 0.3)):\n"
        f"    h = SyncPluginHost(HostConfig(plugins_dir={str(calc.root)!r}, state_dir={str(tmp_path)!r} + f'/s{{i}}',\n"
        "                                   pool=PoolConfig(min_workers=2, max_workers=2)))\n"
        "    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    try:\n"
        "        h.__enter__()\n"
        "        time.sleep(1)  # the signal comes while it serves: the program stops as usual\n"
        "        print('started', flush=True)\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted', flush=True)\n"
        "    h.close()\n"), timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.split()) == 4 and set(out.stdout.split()) <= {"interrupted", "started"}, out.stdout
    assert "interrupted" in out.stdout
    assert _alive_with(str(calc.root)) == []  # no worker of any of them left


def test_a_sync_method_from_a_listener_or_a_bad_backend_is_a_host_error(calc, shared_state, tmp_path):
    """helper-91: a SyncPluginHost method called from a subscriber (the host's own loop thread,
    where it would wait on itself) raised anyio's RuntimeError; a backend that is not one raised
    LookupError or NoEventLoopError."""
    from host import InvalidArguments, WrongThread

    seen: list[BaseException] = []
    with SyncPluginHost(config(calc.root, fresh_state(tmp_path, shared_state),
                               pool=PoolConfig(min_workers=1, max_workers=1))) as h:
        def on_event(_event: object) -> None:
            try:
                h.plugins()
            except BaseException as exc:
                seen.append(exc)

        h.subscribe(on_event)
        h.restart("calc")
        assert h.call("calc", "add", 1, 2) == 3
    assert seen and all(isinstance(e, WrongThread) for e in seen), seen
    for backend in ("nope", None):
        with pytest.raises(InvalidArguments):
            SyncPluginHost(config(calc.root, tmp_path / "x"), backend=backend)  # type: ignore[arg-type]
