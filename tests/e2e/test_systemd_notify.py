"""``serve`` under systemd (``Type=notify``, host/serve_notify.py), against a notification socket
the test binds as systemd would (SO_PASSCRED: each datagram names its sender): READY=1 only once
/healthz/ready says 200, STOPPING=1 when the drain begins, WATCHDOG=1 pings from the event loop,
the parent alone speaking for ``--processes N``, and nothing below it seeing the variables."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.notify import environ_of, notify_socket
from support.plugins import fresh_state
from support.processes import deno_children, free_port, process_gone
from support.servers import serve_children, serve_process

pytestmark = pytest.mark.timeout(120)

SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

LAZY = """
await new Promise((resolve) => setTimeout(resolve, 1500));  // a module slow to load: 1.5 s per worker
export const metadata = { id: "lazy", name: "Lazy", version: "1.0.0", apiVersion: "1.0" };
export async function nap(ms) { console.warn("napping"); await new Promise((r) => setTimeout(r, ms)); return ms; }
"""

SHOUT = """
export const metadata = { id: "shout", name: "Shout", version: "1.0.0", apiVersion: "1.0" };
export function shout(n) { const line = "x".repeat(1000); for (let i = 0; i < n; i++) console.warn(line); return n; }
"""


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path holds at most 107 bytes."""
    path = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _no_systemd_env(pids: list[int]) -> None:
    for pid in pids:
        try:
            env = environ_of(pid)
        except OSError:  # gone meanwhile
            continue
        assert not [k for k in env if k in SYSTEMD_ENV], f"process {pid} inherited {sorted(env)}"


def test_ready_comes_after_healthz_ready_says_200_and_stopping_when_the_drain_begins(
        plugin_dir, tmp_path, shared_state, short_dir):
    plugin_dir.add("lazy.js", LAZY)
    plugin_dir.add("broken.js", "export const metadata = {;\n")
    with notify_socket(str(short_dir / "notify")) as systemd:
        # a watchdog for another process of the service: serve sends it no ping
        env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
        with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                           str(fresh_state(tmp_path, shared_state)), env=env, ready=False) as srv:
            before: list[tuple[int, float]] = []  # what /healthz/ready said until READY=1 came, and when

            def ready_said() -> object:
                if (note := systemd.wait_for("READY", 0)) is not None:
                    return note
                before.append((srv.request("GET", "/healthz/ready", timeout=2)[0], time.monotonic()))
                return None

            note = srv.poll(ready_said, "READY=1", timeout=60)
            assert srv.request("GET", "/healthz/ready")[0] == 200  # true when READY=1 came
            said = [status for status, _ in before]
            assert said[0] == 503  # listening, not ready: READY=1 did not come at the start
            # not before /healthz/ready said 200, and soon after (serve looks every READY_POLL)
            first_ok = said.index(200) if 200 in said else len(said)
            assert set(said[:first_ok]) == {503} and set(said[first_ok:]) <= {200}, said
            if first_ok < len(said):
                assert note.at - before[first_ok][1] < 1.0, (note.at, before[first_ok])
            assert note.pid == srv.proc.pid and note.fields["READY"] == "1"
            assert re.fullmatch(rf"serving on {re.escape(srv.base)}; plugins: 1 error, 1 running",
                                note.fields["STATUS"]), note.fields
            _no_systemd_env(deno_children(srv.proc.pid))  # the Deno workers never get them

            # SIGTERM with a call in flight: STOPPING=1 comes as the drain begins, before the call
            # is answered and serve exits 0
            answer: list[int] = []
            call = threading.Thread(target=lambda: answer.append(
                srv.request("POST", "/api/plugins/lazy/call/nap", {"args": [2000]})[0]))
            call.start()
            srv.wait_logged("napping")
            srv.proc.send_signal(signal.SIGTERM)
            stopping = systemd.wait_for("STOPPING", 30)
            assert stopping is not None and stopping.pid == srv.proc.pid
            assert call.is_alive()  # the call in flight is still being served
            assert int(stopping.fields["EXTEND_TIMEOUT_USEC"]) >= 10_000_000  # at least shutdown_grace
            call.join(30)
            assert answer == [200]
            assert srv.proc.wait(30) == 0
        assert not systemd.with_field("WATCHDOG")
        assert len(systemd.with_field("READY")) == 1
        assert {n.pid for n in systemd.received} == {srv.proc.pid}


PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000


@contextlib.contextmanager
def main_thread_held(pid: int) -> Iterator[None]:
    """Hold the main thread of ``pid`` (the one running serve's event loop) and it alone, as a
    loop wedged in a call that never returns would be: ptrace stops one thread (serve is this
    test's child, which YAMA's default scope lets it trace); the process's other threads run on."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace(PTRACE_SEIZE) of serve's main thread")
    try:
        if libc.ptrace(PTRACE_INTERRUPT, pid, None, None) != 0:
            raise OSError(ctypes.get_errno(), "ptrace(PTRACE_INTERRUPT)")
        os.waitpid(pid, WALL)  # it has stopped
        yield
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def _thread_states(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[int(task.name)] = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return out


def test_watchdog_pings_come_from_the_event_loop_and_stop_while_it_is_blocked(plugin_dir, tmp_path, shared_state):
    # The loop is held for real, not the process stopped: serve's main thread alone is stopped
    # (ptrace), while its other threads run on. A ping sent by a thread or a timer of its own would
    # go on meanwhile. (Before the log writer had a thread of its own, a full output pipe did this.)
    plugin_dir.add("shout.js", SHOUT)
    port = free_port()
    with notify_socket(f"@plugin-host-test-{uuid.uuid4().hex}") as systemd:
        env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen(  # WATCHDOG_PID names serve itself: sh execs it in its own pid
            ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", sys.executable, "-m", "host", "serve", "--host",
             "127.0.0.1", "--port", str(port), "--plugins", str(plugin_dir.root), "--state-dir",
             str(fresh_state(tmp_path, shared_state))],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output: list[bytes] = []

        def drain() -> None:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):
                output.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        base = f"http://127.0.0.1:{port}"
        try:
            ready = systemd.wait_for("READY", 60)
            assert ready is not None, b"".join(output).decode()
            pings = [systemd.wait_for("WATCHDOG", 5) for _ in range(5)]
            assert all(p is not None and p.pid == proc.pid for p in pings), pings
            gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]  # type: ignore[union-attr]
            assert 0.35 <= statistics.median(gaps) <= 0.75, gaps  # half of WATCHDOG_USEC

            assert _get(f"{base}/api/plugins/shout/call/shout", b'{"args": [300]}', 30) == 200  # 300 KB of log
            with main_thread_held(proc.pid):
                held = time.monotonic()
                states = _thread_states(proc.pid)
                assert states.pop(proc.pid) == "t" and states and set(states.values()) - {"t", "T"}  # others run
                assert _get(f"{base}/healthz/live", None, 1) is None  # the loop answers nothing
                # four intervals: no ping (one sent just before it was held may be read a little late)
                late = systemd.wait_for("WATCHDOG", 2.0)
                assert late is None or late.at < held + 0.2, late
                assert systemd.wait_for("WATCHDOG", 0.2) is None
            # the loop runs on, and pings again
            assert systemd.wait_for("WATCHDOG", 10) is not None
            assert _get(f"{base}/healthz/live", None, 10) == 200
            proc.send_signal(signal.SIGTERM)
            assert systemd.wait_for("STOPPING", 30) is not None
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
        assert {n.pid for n in systemd.received} == {proc.pid}


def _get(url: str, data: bytes | None, timeout: float) -> int | None:
    """The status of one request (POST with ``data``), or None when it got no answer in time."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


def test_processes_one_ready_from_the_parent_once_every_child_is_and_pings_while_one_answers(
        plugin_dir, tmp_path, shared_state, short_dir):
    plugin_dir.add("lazy.js", LAZY)
    with notify_socket(str(short_dir / "notify")) as systemd:
        env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "2000000"}
        with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                           str(fresh_state(tmp_path, shared_state)), "--processes", "2", env=env) as srv:
            parent = srv.proc.pid
            note = systemd.wait_for("READY", 60)
            assert note is not None and note.pid == parent
            log = srv.log()  # each child had its plugin running before the parent said READY=1
            for k in (0, 1):
                assert re.search(rf"\[process {k}\] \[plugin:lazy@1\.0\.0\] \S+ -> running", log), log
            assert note.fields["STATUS"] == "2 serve processes serving; plugins: 1 running"
            children = serve_children(parent)
            assert len(children) == 2
            _no_systemd_env(children + deno_children(parent))  # neither children nor workers get them

            assert systemd.wait_for("WATCHDOG", 5) is not None
            # one child that answers nothing is the parent's to start again while the other
            # serves: the pings go on (a restart of the service would stop the healthy one too)
            os.kill(children[1], signal.SIGSTOP)
            try:
                stopped = time.monotonic()
                pings = [systemd.wait_for("WATCHDOG", 3.0) for _ in range(3)]
                assert all(p is not None and p.at > stopped for p in pings), pings
                os.kill(children[0], signal.SIGSTOP)  # none answers: no ping
                stopped = time.monotonic()
                late = systemd.wait_for("WATCHDOG", 3.0)
                assert late is None or late.at < stopped + 0.5, late
                assert systemd.wait_for("WATCHDOG", 1.0) is None
            finally:
                for child in children:
                    os.kill(child, signal.SIGCONT)
            assert systemd.wait_for("WATCHDOG", 5) is not None  # they answer again: pings again

            srv.proc.send_signal(signal.SIGTERM)
            stopping = systemd.wait_for("STOPPING", 30)
            assert stopping is not None and stopping.pid == parent
            assert srv.proc.wait(60) == 0
        assert len(systemd.with_field("READY")) == 1
        assert {n.pid for n in systemd.received} == {parent}  # NotifyAccess=main: the parent alone
        assert all(process_gone(pid) for pid in children)


@pytest.mark.parametrize(("make", "why"), [
    (lambda d: str(d / "missing"), "cannot be reached: No such file or directory"),
    (lambda d: (d / "plain").write_text("") or str(d / "plain"), "cannot be reached: Connection refused"),
    (lambda d: str(d / ("x" * 200)), "bytes long: a Unix socket address holds at most 107"),
    (lambda d: "run/notify", "is neither an absolute path nor an @abstract socket name"),
])
def test_a_bad_notify_socket_is_one_warning_and_serve_serves(plugin_dir, tmp_path, shared_state, short_dir, make, why):
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n")
    env = {"NOTIFY_SOCKET": make(short_dir), "WATCHDOG_USEC": "1000000"}
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                       str(fresh_state(tmp_path, shared_state)), env=env) as srv:
        srv.wait_running("calc")
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}) == (200, {"ok": True, "result": 3})
        warnings = [line for line in srv.log().splitlines() if "NOTIFY_SOCKET" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0] and why in warnings[0], srv.log()
        assert "serving without telling systemd" in warnings[0]
