"""sd_notify(3), the protocol a ``Type=notify`` service uses to tell systemd how it is doing:
newline-separated ``NAME=value`` assignments in one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a file system path, or an abstract socket when it starts with ``@``), and
``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or names this
process (sd_watchdog_enabled(3)). A few lines of our own: libsystemd's binding is C, and no
pure-Python package for it is maintained.

The variables are taken out of the environment as they are read (sd_notify's
``unset_environment``): nothing this process starts (serve processes, Deno workers, the guard)
inherits them, so only the main process can speak for the service (``NotifyAccess=main``).
A variable that cannot be used is said in one warning naming it, and ``serve`` goes on without
it: telling systemd is a courtesy, never a reason not to serve."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from .errors import InvalidConfig

log = logging.getLogger("host.serve")

SOCKET_ENV, WATCHDOG_ENV, WATCHDOG_PID_ENV = "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"
_SUN_PATH = 108  # bytes of sockaddr_un.sun_path: a path's NUL, or an abstract name's leading NUL, included


def notify_address(value: str) -> str:
    """The address ``$NOTIFY_SOCKET`` names, checked by connecting to it (InvalidConfig naming
    the variable when it cannot be used: no such file, not a datagram socket, too long)."""
    if value.startswith("@"):  # Linux's abstract namespace: no file, a leading NUL instead
        address = "\0" + value[1:]
    elif value.startswith("/"):
        address = value
    else:  # "vsock:CID:PORT" (systemd 253 for VMs) and relative paths are not for us
        raise InvalidConfig(f"{SOCKET_ENV}={value!r} is neither an absolute path nor an @abstract socket name")
    if len(os.fsencode(address)) + (address[0] != "\0") > _SUN_PATH:
        raise InvalidConfig(f"{SOCKET_ENV} is {len(os.fsencode(value))} bytes long: a Unix socket address "
                            f"holds at most {_SUN_PATH - 1}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
            probe.connect(address)
    except OSError as exc:  # ENOENT, ECONNREFUSED (a plain file, no one bound), EPROTOTYPE (a stream socket)
        raise InvalidConfig(f"{SOCKET_ENV}={value!r} cannot be reached: {exc.strerror or exc}") from None
    return address


def watchdog_interval(usec: str, pid: str) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC``; None when the watchdog is
    not this process's (``$WATCHDOG_PID`` names another). InvalidConfig naming the variable
    when one is not a positive number."""
    if not usec:
        return None
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        raise InvalidConfig(f"{WATCHDOG_ENV}={usec!r} is not a positive number of microseconds")
    if pid:
        if not (pid.isascii() and pid.isdigit()) or int(pid) == 0:
            raise InvalidConfig(f"{WATCHDOG_PID_ENV}={pid!r} is not a process id")
        if int(pid) != os.getpid():  # set for another process of the service
            return None
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends assignments to systemd's notification socket; does nothing when there is none."""

    def __init__(self, address: str | None = None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None  # seconds between pings, or None
        self._failing = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET`` asks for (the variables taken out of ``environ``)."""
        value, usec, pid = (environ.pop(name, "") for name in (SOCKET_ENV, WATCHDOG_ENV, WATCHDOG_PID_ENV))
        if not value:
            return cls()
        try:
            address = notify_address(value)
        except InvalidConfig as exc:
            log.warning("%s; serving without telling systemd (readiness, watchdog)", exc)
            return cls()
        try:
            watchdog = watchdog_interval(usec, pid)
        except InvalidConfig as exc:
            log.warning("%s; serving without the systemd watchdog", exc)
            watchdog = None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``NAME=value`` lines; True when it was sent. Never blocks (a full
        queue is a failure) and never raises: the first failure of a run is one warning."""
        if self.address is None:
            return False
        # (a status may name a path that is not UTF-8: written out, never a reason to fail)
        data = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "backslashreplace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot tell systemd %s through %s: %s", assignments[0].split("=")[0],
                            SOCKET_ENV, exc.strerror or exc)
            self._failing = True
            return False
        self._failing = False
        return True


__all__ = ["Notifier", "notify_address", "watchdog_interval"]
