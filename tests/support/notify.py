"""A stand-in for systemd's notification socket: an AF_UNIX datagram socket the test binds (a
path, or an abstract name), with SO_PASSCRED on as systemd has it, so that each datagram comes
with the pid of the process that sent it (how systemd applies ``NotifyAccess=main``)."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Notification:
    at: float  # time.monotonic() when it was read
    pid: int  # the sender, as the kernel says it
    fields: dict[str, str] = field(default_factory=dict)


class NotifySocket:
    def __init__(self, address: str) -> None:
        self.address = address  # as $NOTIFY_SOCKET names it: a path, or "@name"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.received: list[Notification] = []
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            note = Notification(time.monotonic(), pid, fields)
            self.received.append(note)
            self._queue.put(note)

    def wait_for(self, name: str, timeout: float) -> Notification | None:
        """The next datagram that carries ``name`` (those before it are passed over), or None
        when none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:  # with a timeout of 0, what has come already
            try:
                note = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return None
            if name in note.fields:
                return note

    def with_field(self, name: str) -> list[Notification]:
        return [n for n in self.received if name in n.fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def notify_socket(address: str) -> Iterator[NotifySocket]:
    ns = NotifySocket(address)
    try:
        yield ns
    finally:
        ns.close()


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (/proc/PID/environ)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
