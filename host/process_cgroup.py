"""A cgroup (v2) per worker, so that what a plugin granted `run` starts dies with its worker and
with the host even when it leaves the worker's process group: ``setsid``, a daemon's double fork.
A process group is the plugin's to leave; a cgroup is not (moving a process out needs write access
to the cgroup files, which no grant reaches: ``/sys`` is refused to every plugin).

The host makes ``plugin-host-<pid>-ns<pid namespace>-<random>`` under its own cgroup, where its user may write
(root, or a systemd unit with ``Delegate=yes``), and one ``w<pid>`` in it for each worker, moved
there by the host right after the spawn: no plugin code runs before the handshake, so nothing
it starts can be outside. Killing one is ``cgroup.kill`` (Linux 5.14), else SIGKILL to each
process it lists until none is left. The reaper (process.py) kills the whole subtree when the
host is gone. Without a cgroup v2 hierarchy the host may write in (a container's read-only
``/sys/fs/cgroup``) only the process group is killed, as before (docs/security.md). A process
a `run` grant started as root may still move itself out: `run` is outside the sandbox."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time

_PREFIX = "plugin-host-"
KILL_ROUNDS = 100      # SIGKILL passes over a cgroup without cgroup.kill (a fork racing the kill)
RMDIR_WAIT = 2.0       # seconds for the killed processes to leave a cgroup before it is removed


def pid_namespace() -> str:
    """``ns<inode>`` of this process's PID namespace: a pid in a leftover's name means that process
    only there (a host in a namespace of its own sees none of the others' pids in its /proc)."""
    try:
        return f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return "ns0"


def made_elsewhere(rest: str) -> bool:
    """Whether ``plugin-host-<rest>`` (``<pid>-ns<inode>-...``) was named in another PID namespace, where
    its pid is not ours to judge. A name without the tag (an older host's) is judged by its pid."""
    tag = rest.split("-")[1] if rest.count("-") else ""
    return tag.startswith("ns") and tag[2:].isdigit() and tag != pid_namespace()


def own_cgroup_dir() -> str | None:
    """The directory of this process's cgroup in the cgroup v2 hierarchy, if one is mounted."""
    try:
        with open("/proc/self/cgroup") as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    if own is None:
        return None
    for fields in mounts:
        try:
            fstype, root, point = fields[fields.index("-") + 1], fields[3], fields[4]
        except (ValueError, IndexError):
            continue
        if fstype == "cgroup2" and (own == root or own.startswith(root.rstrip("/") + "/")):
            return os.path.join(point, own[len(root):].lstrip("/"))
    return None


def kill_cgroup(path: str) -> None:
    """SIGKILL every process in the cgroup at ``path`` (and its children cgroups)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
        return
    except FileNotFoundError:
        if not os.path.isdir(path):
            return
    except OSError:
        pass
    for _ in range(KILL_ROUNDS):  # before 5.14: what a fork adds meanwhile is found in the next pass
        pids = _procs(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def remove_cgroup(path: str, wait: float = RMDIR_WAIT) -> bool:
    """Kill what is in ``path`` and remove it (a killed process leaves it within milliseconds)."""
    kill_cgroup(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


class Cgroups:
    """The host's cgroup subtree: ``enter`` puts a worker in a cgroup of its own, ``remove``
    kills what is in it, ``close`` the whole subtree."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._pending: set[str] = set()  # killed, their processes not yet out: removed later

    @classmethod
    def create(cls) -> Cgroups | None:
        """A new subtree under this process's cgroup (stale ones of dead hosts swept first), or
        None when there is no cgroup v2 hierarchy this user may write in."""
        own = own_cgroup_dir()
        if own is None or not os.access(os.path.join(own, "cgroup.procs"), os.W_OK):
            return None
        sweep_stale(own)
        base = os.path.join(own, f"{_PREFIX}{os.getpid()}-{pid_namespace()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(base)
        except OSError:
            return None
        return cls(base)

    def path(self, pid: int) -> str:
        return os.path.join(self.base, f"w{pid}")

    def enter(self, pid: int) -> bool:
        """Move ``pid`` into a cgroup of its own; False when the system refuses (then only its
        process group is killed)."""
        path = self.path(pid)
        try:
            os.mkdir(path)
        except FileExistsError:  # a pid used again: what is left of the old one goes
            kill_cgroup(path)
            self._pending.discard(path)  # the new worker's now: a later remove() of another must not kill it
        except OSError:
            return False
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return False
        return True

    def remove(self, pid: int) -> None:
        """Kill what is in the worker's cgroup and remove it, without waiting (the event loop
        calls this): one its killed processes have not left yet is removed at a later call."""
        self._pending.add(self.path(pid))
        for path in list(self._pending):
            if remove_cgroup(path, wait=0):
                self._pending.discard(path)

    def close(self) -> None:
        close_tree(self.base)
        self._pending.clear()


def close_tree(base: str) -> None:
    """Kill everything under ``base`` and remove it."""
    kill_cgroup(base)
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if os.path.isdir(os.path.join(base, name)):
                remove_cgroup(os.path.join(base, name))
    remove_cgroup(base)


def sweep_stale(own: str) -> None:
    """Subtrees of hosts that are gone (their reaper killed too, say): what is left in them dies."""
    with contextlib.suppress(OSError):
        for name in os.listdir(own):
            if not name.startswith(_PREFIX):
                continue
            pid = name[len(_PREFIX):].partition("-")[0]
            if made_elsewhere(name[len(_PREFIX):]):
                continue
            if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                close_tree(os.path.join(own, name))


__all__ = ["Cgroups", "close_tree", "kill_cgroup", "made_elsewhere", "own_cgroup_dir", "pid_namespace",
           "remove_cgroup"]
