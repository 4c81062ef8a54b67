"""The guard of ``serve --processes N``: a small process that outlives the parent to make sure no
serve process does. A child gets SIGTERM when the parent dies (PR_SET_PDEATHSIG), but one that
cannot act on it (stopped by SIGSTOP, its event loop wedged: what the parent's watch kills while
it lives) lived on for ever, with its reaper and the listening socket, so the port could not be
bound again. The parent hands the guard a pidfd of each child it starts (over a socket pair, so
it is the child's and no later process's); at end of file (the parent gone, however it died) the
guard sends each one still running SIGTERM and SIGCONT, waits the drain's time, and SIGKILLs
those still there. When the parent stops normally its children are gone first: nothing to do."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

_GUARD = """
import os, select, signal, socket, sys
grace = float(sys.argv[1])
conn = socket.socket(fileno=0)
fds = []
def running(fds, wait=0.0):
    done = set(select.select(fds, [], [], wait)[0]) if fds else set()
    for fd in done:
        os.close(fd)
    return [fd for fd in fds if fd not in done]
while True:
    try:
        msg, got, _, _ = socket.recv_fds(conn, 16, 16)
    except OSError:
        break
    fds = running(fds + list(got))
    if not msg:
        break
def send(fd, sig):
    try:
        signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
for fd in fds:
    send(fd, signal.SIGTERM)
    send(fd, signal.SIGCONT)
import time
deadline = time.monotonic() + grace
while fds and time.monotonic() < deadline:
    fds = running(fds, min(0.2, max(deadline - time.monotonic(), 0)))
for fd in fds:
    send(fd, signal.SIGKILL)
"""


class Guard:
    """The guard process of one parent (see the module docstring)."""

    def __init__(self, grace: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _GUARD, f"{grace:g}"], stdin=theirs,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock: socket.socket | None = ours

    def watch(self, pid: int) -> None:
        """A child just started (not yet waited for, so ``pid`` is surely it)."""
        if self._sock is None:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # out of descriptors: that child goes without
            return
        try:
            socket.send_fds(self._sock, [b"+"], [fd])
        except OSError:  # the guard is gone: the children still get SIGTERM at the parent's death
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        """The parent stops normally (its children gone): the guard finds nothing to do."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)


__all__ = ["Guard"]
