"""Leftovers of a host killed with SIGKILL: its private socket directory
(``plugin-host-<pid>-...``) is swept at the next start once that process is dead, a process
that died but was not reaped yet (a zombie: its parent, or a container's PID 1 that reaps
nothing, has not waited for it) included. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from host.runtime import sweep_stale_run_dirs

pytestmark = pytest.mark.timeout(30)

MAKE_DIR = "import os, sys; os.mkdir(os.path.join(sys.argv[1], f'plugin-host-{os.getpid()}-x'))"


def state(pid: int) -> str:
    """The process's state letter in /proc (R, S, Z, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_the_socket_directory_of_a_dead_host_not_reaped_yet_is_swept(tmp_path):
    # Before: a zombie counted as alive (kill(pid, 0) succeeds on one), so the directory of a
    # serve process killed under a parent that had not reaped it stayed at the next start.
    dead = subprocess.Popen([sys.executable, "-c", MAKE_DIR, str(tmp_path)])
    left = tmp_path / f"plugin-host-{dead.pid}-x"
    live_dir = tmp_path / f"plugin-host-{os.getpid()}-y"  # this process's: alive
    live_dir.mkdir()
    try:
        deadline = time.monotonic() + 10
        while state(dead.pid) != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)  # polled: it exits by itself, and is left unreaped on purpose
        assert left.is_dir()
        assert sweep_stale_run_dirs(str(tmp_path)) == 1
        assert not left.exists() and live_dir.is_dir()
    finally:
        dead.wait()
