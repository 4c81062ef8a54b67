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


def _in_a_pid_namespace(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python of a PID namespace of its own (``unshare -pf --mount-proc``: what
    docs/security.md advises where no cgroup may be written), where this process's pid is no one's."""
    return subprocess.run(["unshare", "-pf", "--mount-proc", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=20, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-pf", "--mount-proc", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_unshare(), reason="unshare -p is not allowed here")
def test_a_host_in_another_pid_namespace_never_sweeps_a_live_hosts_leftovers(tmp_path, monkeypatch):
    """Both sweeps judge a directory by the pid in its name: a host started in a PID namespace of
    its own found none of the other hosts' pids in its /proc and, at its start, removed their socket
    directories and killed every worker of theirs (``cgroup.kill`` of each ``plugin-host-<pid>-*``
    subtree in a cgroup they share, such as the root one). Now a name carries the PID namespace it
    was made in, and only those of the sweeper's own are judged."""
    from host import process_cgroup
    from host.runtime import private_run_dir

    runs = tmp_path / "run"
    runs.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runs))
    run_dir = private_run_dir("")  # this live host's, named as a host names it
    own = tmp_path / "cgroup"  # a stand-in for the cgroup the hosts share
    own.mkdir()
    (own / "cgroup.procs").write_text("")
    monkeypatch.setattr(process_cgroup, "own_cgroup_dir", lambda: str(own))
    groups = process_cgroup.Cgroups.create()
    assert groups is not None
    out = _in_a_pid_namespace(f"from host.runtime import sweep_stale_run_dirs; "
                              f"from host.process_cgroup import sweep_stale; "
                              f"sweep_stale({str(own)!r}); print(sweep_stale_run_dirs({str(runs)!r}))")
    assert out.returncode == 0, out.stderr
    assert os.path.isdir(run_dir) and out.stdout.strip() == "0"
    assert not os.path.exists(os.path.join(groups.base, "cgroup.kill"))  # no kill written
    assert os.path.isdir(groups.base)
