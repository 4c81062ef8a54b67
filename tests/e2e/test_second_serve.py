"""A second ``serve`` started by mistake beside a running one: on the same Unix socket it is a
one-line error and the first keeps its socket; on the same state directory (another port) it
serves, but the control socket stays the first one's, also after the second stops, and the
second takes it over once the first stops. Real ``serve`` subprocesses."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
from support.plugins import fresh_state
from support.servers import run_cli, serve_process

pytestmark = pytest.mark.timeout(120)

WHO = """
export const metadata = { id: "who", name: "Who", version: "1.0.0", apiVersion: "1.0",
  configSchema: { tag: { type: "string", default: "first" } } };
export function who(ctx) { return [Deno.pid, ctx.config.tag]; }
"""


def live(path: str) -> bool:
    """Whether a server answers ``GET /healthz/live`` on the Unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"GET /healthz/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_a_second_serve_on_a_unix_socket_in_use_is_a_one_line_error_and_takes_nothing(
        tmp_path, shared_state, plugin_dir, run_root):
    # Before: the second serve removed the live socket file (asyncio replaces any socket there)
    # and served on its own; once it stopped, the first was running with no socket at all.
    plugin_dir.add("who.js", WHO)
    path = str(run_root / "serve.sock")
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path / "a", shared_state)))
    with serve_process(tmp_path, *common, "--unix", path, ready=False) as first:
        first.poll(lambda: live(path) or None, "the first serving on its socket")
        inode = os.stat(path).st_ino
        second = run_cli("serve", "--plugins", str(plugin_dir.root), "--unix", path,
                         "--state-dir", str(fresh_state(tmp_path / "b", shared_state)), cwd=tmp_path)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert lines[0] == f"error: cannot listen on unix:{path}: Address already in use", lines
        assert os.stat(path).st_ino == inode and live(path)


def test_a_second_serve_on_the_same_state_directory_leaves_the_first_its_control_socket(
        tmp_path, shared_state, plugin_dir):
    # Before: the second took over <state_dir>/control.sock and removed it when it stopped, so
    # the CLI no longer reached the first server (still running) through it.
    plugin_dir.add("who.js", WHO)
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state)))
    control = os.path.join(common[-1], "control.sock")
    with serve_process(tmp_path, *common) as first:
        first.wait_running("who")
        inode = os.stat(control).st_ino
        with serve_process(tmp_path, *common) as second:
            second.wait_running("who")
            assert "control socket" in second.log() and "another server" in second.log()
            assert os.stat(control).st_ino == inode
        assert os.stat(control).st_ino == inode and live(control)
        out = run_cli("config", "set", "who", "tag=second", *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        status, body = first.request("POST", "/api/plugins/who/call/who", {"args": []})
        assert status == 200 and body["result"][1] == "second", body  # applied by the server at once


def test_a_second_serve_takes_the_control_socket_over_once_the_first_stops(tmp_path, shared_state, plugin_dir):
    """Before: the second kept serving with no control socket after the first stopped, so
    ``status`` said no server was serving and ``config set`` wrote the file behind it."""
    plugin_dir.add("who.js", WHO)
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state)))
    control = os.path.join(common[-1], "control.sock")
    with contextlib.ExitStack() as outlives_the_first:
        with serve_process(tmp_path, *common) as first:
            first.wait_running("who")
            srv = outlives_the_first.enter_context(serve_process(tmp_path, *common))
            srv.wait_running("who")
        # the first stopped: the second takes the socket within its retry interval (0.5 s; it was
        # 5 s, and `status` said no server served meanwhile)
        srv.poll(lambda: live(control) or None, "the second serving the control socket", timeout=2)
        out = run_cli("config", "set", "who", "tag=taken", *common, cwd=tmp_path)
        assert out.returncode == 0, out
        status, body = srv.request("POST", "/api/plugins/who/call/who", {"args": []})
        assert status == 200 and body["result"][1] == "taken", body  # applied by the server at once
        assert "served by this server now" in srv.log()


def test_a_state_directory_deeper_than_a_unix_socket_path_still_has_its_control_socket(
        tmp_path, shared_state, plugin_dir):
    """A state directory whose control.sock path is longer than an AF_UNIX address (108 bytes):
    serve warned 'control.sock: not served (AF_UNIX path too long): is another server using
    this state directory?', retried every 5 s, and the CLI said no server was serving and wrote
    the state files behind the server (helper-71's finding). The socket is now bound and reached
    through /proc/self/fd of its directory."""
    plugin_dir.add("who.js", WHO)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    state = fresh_state(deep, shared_state)
    control = state / "control.sock"
    assert len(os.fsencode(str(control))) > 108
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(state))
    with serve_process(tmp_path, *common) as srv:
        srv.wait_running("who")
        assert control.is_socket() and "not served" not in srv.log(), srv.log()
        status = run_cli("status", *common, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr  # before: 3, "no server is serving"
        out = run_cli("config", "set", "who", "tag=deep", *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        code, body = srv.request("POST", "/api/plugins/who/call/who", {"args": []})
        assert code == 200 and body["result"][1] == "deep", body  # applied by the server at once
    assert not control.exists()  # removed as it stops


def test_status_of_a_stopped_server_names_the_process_to_look_at(tmp_path, shared_state, plugin_dir):
    """helper-100: with the process owning the control socket stopped, `status` said a server did
    not answer, naming no process (with --processes, which one?); it names the pid now."""
    import signal

    plugin_dir.add("who.js", WHO)
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state)))
    with serve_process(tmp_path, *common) as srv:
        srv.wait_running("who")
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            out = run_cli("status", *common, cwd=tmp_path)
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
    assert out.returncode != 0 and "did not answer" in out.stderr
    assert f"(pid {srv.proc.pid})" in out.stderr, out.stderr
