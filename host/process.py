"""Spawning and reaping a sandboxed child process (Linux): own process group,
PR_SET_PDEATHSIG, resource limits, a pidfd to await its exit without threads.

PR_SET_PDEATHSIG is set by exec'ing through util-linux ``setpriv --pdeathsig KILL`` when it is
installed: a Python ``preexec_fn`` forces a full fork() of the host (about 5 ms here) where
setpriv keeps the fast vfork path (about 0.5 ms). Resource limits are then applied from the
parent with prlimit(2) before the child has done any real work."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from .process_cgroup import Cgroups

_PR_SET_PDEATHSIG = 1
READ_BURST = 16  # chunks (64 KiB) of a child's output read before the event loop gets a turn
# Lines of a child's output handed to ``on_output`` per second; past them a line is only counted
# (the next one handed over first says how many were left out). A plugin writing "a\n" without
# end made ~500,000 a second, each split, decoded, redacted and logged: the host's whole core.
OUTPUT_LINES_PER_SECOND = 1000
# Bytes of a child's output read per second on average, with a burst: past them the reading
# pauses (the child's writes wait on the full pipe), so that output alone, lines or not, costs
# the host a bounded share of its core (flat out, reading took ~85 % of it).
OUTPUT_BYTES_PER_SECOND = 16 << 20
OUTPUT_BURST = 64 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# The reaper: one small process per host that outlives it to kill what its workers started.
# PR_SET_PDEATHSIG kills a worker with the host, but not the processes a plugin granted `run`
# started (Deno does not pass SIGKILL on; they would be re-parented to PID 1). Each worker
# leads a process group of its own, which its children join; the host tells the reaper each
# group, and when its pipe from the host reaches end of file (the host is gone, however it
# died) the reaper SIGKILLs every group it was told of and still holds. A process that left
# its group (setsid) is still in its worker's cgroup (process_cgroup.py) when the host has a
# cgroup subtree: the reaper is told its directory ("c DIR") and kills all in it too, with
# process_cgroup.close_tree (its source runs in the reaper, which imports nothing of the host).
_REAPER = (Path(__file__).with_name("process_cgroup.py").read_text()  # close_tree: stdlib only
           + """
import sys
groups, base = set(), None
for line in sys.stdin:
    op, _, arg = line.strip().partition(" ")
    if op == "c":
        base = arg
    elif arg.isdigit():
        (groups.add if op == "+" else groups.discard)(int(arg))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
if base:
    close_tree(base)
""")


class Reaper:
    """Kills the process groups of a host's workers (and whatever they started) when the host
    is gone: see _REAPER. ``start`` runs it (the host does at its start, while its interpreter is
    surely there; a spawn does again if it died, telling the new one every group still held);
    ``close`` ends it (normal shutdown)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()
        self._cgroups: Cgroups | None = None
        self._cgroups_tried = False

    def start(self) -> None:
        """Run the reaper if it is not running. Raises OSError when the system refuses (the
        interpreter gone, a process limit): a worker must not start without it."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if not self._cgroups_tried:  # once: a host without a cgroup hierarchy it may write in goes without
            self._cgroups_tried = True
            self._cgroups = Cgroups.create()
        if self._proc is not None and self._proc.stdin is not None:  # the one that died
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, close_fds=True)
        if self._cgroups is not None:
            self._send(f"c {self._cgroups.base}\n")
        for pgid in self._groups:
            self._send(f"+ {pgid}\n")

    def add(self, pgid: int) -> None:
        """A worker just started (before any plugin code runs): its group, and its cgroup."""
        self._groups.add(pgid)
        self._send(f"+ {pgid}\n")
        if self._cgroups is not None:
            self._cgroups.enter(pgid)

    def remove(self, pgid: int) -> None:
        """A worker is gone: what is left in its cgroup is killed."""
        self._groups.discard(pgid)
        self._send(f"- {pgid}\n")
        if self._cgroups is not None:
            self._cgroups.remove(pgid)

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()
        except OSError:  # it died: the next spawn starts another; workers die with the host anyway
            pass

    def close(self) -> None:
        """End of the host: the reaper kills what is left (nothing, normally) and exits."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._cgroups is not None:  # the reaper did, unless it was gone
            self._cgroups.close()
            self._cgroups, self._cgroups_tried = None, False


def vm_data(pid: int | None) -> int | None:
    """The data segment of process ``pid`` in bytes (VmData: what RLIMIT_DATA bounds, the V8
    heap and ArrayBuffers included), or None when it cannot be read (the process is gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class ChildProcess:
    """A child in its own process group; the stdout+stderr pipe's tail is kept for errors."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        data_limit_mb: int | None = None,
        cpu_seconds: int | None = None,
        tail_bytes: int = 4096,
        on_output: Callable[[str], None] | None = None,
        stdin_data: bytes = b"",
        reaper: Reaper | None = None,
    ) -> None:
        """``stdin_data``: written to the child's stdin, which is then closed (what it must know
        but no other code in it may read: Deno.args needs no permission)."""
        argv = list(argv)
        if reaper is not None:
            reaper.start()  # before the child: nothing to clean up if it cannot run
        preexec = None
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        else:
            preexec = _pdeathsig_preexec(os.getpid())
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec,
        )
        self.pid = self._proc.pid
        self._reaper = reaper
        try:
            self._watch(stdin_data, data_limit_mb, cpu_seconds)
        except BaseException:  # out of file descriptors, say: never a child left running unwatched
            self._abandon()
            raise
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._tail_max = tail_bytes
        self._on_output = on_output
        self._partial = b""
        self._lines_since, self._lines_left, self._left_out = 0.0, 0, 0  # OUTPUT_LINES_PER_SECOND
        self._allowance, self._allowed_at = float(OUTPUT_BURST), time.monotonic()  # OUTPUT_BYTES_PER_SECOND
        self.returncode: int | None = None
        self._exit_event: anyio.Event | None = None

    def _watch(self, stdin_data: bytes, data_limit_mb: int | None, cpu_seconds: int | None) -> None:
        """The steps after the fork: the reaper told, stdin written, limits set, a pidfd."""
        if self._reaper is not None:
            self._reaper.add(self.pid)  # its own process group (start_new_session): pgid == pid
        if self._proc.stdin is not None:
            try:  # a few hundred bytes: the pipe buffer takes them at once
                self._proc.stdin.write(stdin_data)
            except OSError:  # the child is already gone; its exit is reported as usual
                pass
            finally:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        try:
            if data_limit_mb:
                size = data_limit_mb * 1024 * 1024
                resource.prlimit(self.pid, resource.RLIMIT_DATA, (size, size))
            if cpu_seconds:
                resource.prlimit(self.pid, resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        except OSError:  # the child is already gone; its exit is reported as usual
            pass
        self._pidfd = os.pidfd_open(self.pid)
        assert self._proc.stdout is not None
        self._out_fd = self._proc.stdout.fileno()
        os.set_blocking(self._out_fd, False)

    def _abandon(self) -> None:
        """A child this object cannot watch: killed with its group and reaped at once."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        self._proc.wait()
        if self._reaper is not None:
            self._reaper.remove(self.pid)
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._pidfd)

    @property
    def exit_signal(self) -> int | None:
        rc = self.returncode
        return -rc if rc is not None and rc < 0 else None

    @property
    def exit_code(self) -> int | None:
        rc = self.returncode
        return rc if rc is not None and rc >= 0 else None

    def has_exited(self) -> bool:
        """Whether the process has ended (reaped, or a zombie not yet reaped), without reaping."""
        if self.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and anything it started)."""
        if self.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group leader gone, pgid reused
            pass

    async def wait(self) -> int:
        """Wait for exit and reap; returns the Popen-style return code. Any number of tasks
        may wait: one watches the pidfd (an fd can have only one waiter), the rest an event."""
        if self.returncode is None:
            if self._exit_event is None:
                self._exit_event = anyio.Event()
                try:
                    await anyio.wait_readable(self._pidfd)
                    self._reap()
                finally:
                    event, self._exit_event = self._exit_event, None
                    event.set()
            else:
                await self._exit_event.wait()
                if self.returncode is None:  # the watching task was cancelled: take over
                    return await self.wait()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> None:
        if self.returncode is not None:
            return
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._proc.returncode = self.returncode
        # The group leader is gone; kill stragglers it may have left in its group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reaper is not None:
            self._reaper.remove(self.pid)

    async def pump_output(self) -> None:
        """Read the child's output until EOF, keeping a tail and forwarding lines, at most
        OUTPUT_BYTES_PER_SECOND on average."""
        while True:
            await anyio.wait_readable(self._out_fd)
            if not self._read_available():
                return
            now = time.monotonic()
            self._allowance = min(OUTPUT_BURST, self._allowance + (now - self._allowed_at) * OUTPUT_BYTES_PER_SECOND)
            self._allowed_at = now
            if self._allowance < 0:
                await anyio.sleep(-self._allowance / OUTPUT_BYTES_PER_SECOND)

    def _read_available(self) -> bool:
        """Read what is readable now, at most READ_BURST chunks (then the event loop gets a
        turn, whatever a worker writes); False at EOF. A line longer than the tail is cut
        into pieces of that size: it was copied whole at every chunk (quadratic), so 64 MiB
        with no newline held the host's event loop for over a minute."""
        for _ in range(READ_BURST):
            try:
                chunk = os.read(self._out_fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                if self._on_output:
                    self._say_left_out()
                    if self._partial:
                        self._on_output(self._partial.decode("utf-8", "replace"))
                self._partial = b""
                return False
            self._keep(chunk)
            self._allowance -= len(chunk)
            if self._on_output:
                self._forward(chunk)
        return True

    def _forward(self, chunk: bytes) -> None:
        """Hand the complete lines of ``chunk`` to ``on_output``, within the lines per second."""
        assert self._on_output is not None
        now = time.monotonic()
        if now - self._lines_since >= 1.0:
            self._lines_since, self._lines_left = now, OUTPUT_LINES_PER_SECOND
        if self._lines_left <= 0:  # over the budget: counted, not split
            cut = chunk.rfind(b"\n")
            if cut < 0:
                self._partial = (self._partial + chunk)[-self._tail_max:]
            else:
                self._left_out += chunk.count(b"\n")
                self._partial = chunk[cut + 1:][-self._tail_max:]
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > (most := self._tail_max):
            rest, pieces = self._partial, (len(self._partial) - 1) // most
            lines.extend(rest[i * most:(i + 1) * most] for i in range(pieces))
            self._partial = rest[pieces * most:]
        self._say_left_out()
        if len(lines) > self._lines_left:
            self._left_out = len(lines) - self._lines_left
            del lines[self._lines_left:]
        self._lines_left -= len(lines)
        for line in lines:
            self._on_output(line.decode("utf-8", "replace"))

    def _say_left_out(self) -> None:
        if self._left_out and self._on_output is not None:
            self._on_output(f"({self._left_out:,} lines of output left out: over {OUTPUT_LINES_PER_SECOND:,} a second)")
        self._left_out = 0

    def _keep(self, chunk: bytes) -> None:
        self._tail.append(chunk)
        self._tail_len += len(chunk)
        while self._tail_len - len(self._tail[0]) >= self._tail_max:
            self._tail_len -= len(self._tail.popleft())

    def stderr_tail(self) -> str:
        self._read_available()
        data = b"".join(self._tail)[-self._tail_max :]
        return data.decode("utf-8", "replace")

    def close(self) -> None:
        """Kill if still running, reap if exited, release fds. Safe to call twice."""
        if self.returncode is None:
            self.kill()
            try:  # SIGKILL cannot be ignored: this returns within milliseconds
                self._reap()
            except ChildProcessError:  # reaped elsewhere: the reaper must not keep its number
                if self._reaper is not None:
                    self._reaper.remove(self.pid)
        for fd in (self._pidfd,):
            try:
                os.close(fd)
            except OSError:
                pass
        self._pidfd = -1
        if self._proc.stdout and not self._proc.stdout.closed:
            self._proc.stdout.close()
