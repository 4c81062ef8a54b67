"""The security audit log: one JSON object per line for each worker spawn (the Deno flags it was
granted), each strict-mode finding, approval and judged execution and, when the egress proxy is
on, each outbound request.

Callers pass only what is safe to keep: flags, host names, byte counts, reasons. Never a config
value, a token or a header; ``record`` runs every string through the redaction it was given
as a second line of defence.

The log rotates at ``max_bytes`` (``audit.jsonl`` → ``.1`` → ... → ``.keep``, the oldest
dropped), under a lock shared by every process appending to it; a process whose file was rotated
or removed by another opens the current one at its next line. A write that fails (a full disk,
a file-size limit) is logged, rate-limited, and never raised into what is being audited; the
line waits in memory (the newest WAITING of them) and is written, in order, before the next one
once the disk has room. A line that fits only in part is cut off again: no half lines."""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import InvalidConfig, StateError
from .private_files import locked, os_failure

if TYPE_CHECKING:
    from .audit_pg import AuditTable

_encoder = msgspec.json.Encoder()
WAITING = 10_000  # lines kept in memory while the log cannot be written (a full disk), then written
log = logging.getLogger("host.audit")


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


def check_audit_dir(path: Path, own_dir: Path | None) -> None:
    """``security.audit_log``'s directory exists, or is ``own_dir`` (the state directory, which
    the host makes): else InvalidConfig naming the setting."""
    if not path.parent.is_dir() and not _same(path.parent, own_dir):
        raise InvalidConfig(f"security.audit_log: the directory {path.parent} of {path} does not exist: make "
                            "it, or fix the path (a relative one is under the state directory)")


class AuditLog:
    """Appends to ``path`` (created 0600). ``AuditLog(None)`` records nothing. Only the file is
    created, in a directory that exists, or in ``own_dir`` (the state directory, made again if
    it is removed while the host runs): a typo in ``security.audit_log`` is an InvalidConfig
    naming it, not a directory tree made where nobody looks."""

    def __init__(self, path: str | Path | None, *, redact: Callable[[str], str] | None = None,
                 max_bytes: int = 10 * 1024 * 1024, keep: int = 5, table: AuditTable | None = None,
                 own_dir: Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._own_dir = own_dir
        self.table = table  # the [state] database's copy (audit_pg.py), or None
        self._redact = redact
        self.max_bytes, self.keep = max_bytes, keep
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino: int | None = None
        self._closed = False
        self.failures = 0  # writes that failed (a line that waits is counted at each attempt)
        self.lost = 0  # lines dropped: more than WAITING waited at once
        self._waiting: collections.deque[bytes] = collections.deque(maxlen=WAITING)
        if self.path is not None:
            check_audit_dir(self.path, own_dir)
            try:
                self._make_parent()
                self._open()
            except OSError as exc:
                raise os_failure(self.path, exc, "open the audit log", "security.audit_log") from None

    def _own(self, directory: Path) -> bool:
        """Whether ``directory`` is the one the log may make: the state directory."""
        return _same(directory, self._own_dir)

    def _make_parent(self) -> None:
        """The state directory the log is in, made again if it is gone; no other directory."""
        assert self.path is not None
        if self._own(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        assert self.path is not None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._ino = os.fstat(self._fd).st_ino

    def record(self, event: str, **fields: Any) -> None:
        """One line ``{"ts": <unix seconds>, "event": event, **fields}``; one write(2) each,
        so lines from several threads or hosts appending to one file never interleave."""
        if self.path is None or self._closed:
            return
        entry = {"ts": round(time.time(), 3), "event": event, **fields}
        line = _encoder.encode(entry) + b"\n"
        if self._redact is not None:
            line = self._redact(line.decode()).encode()
        if self.table is not None:
            self.table.put(entry["ts"], event, line.decode().rstrip("\n"))
        with self._lock:
            if len(self._waiting) == self._waiting.maxlen:
                self.lost += 1  # the oldest waiting line goes
            self._waiting.append(line)
            try:
                self._current()
                while self._waiting:  # in order: what waited first
                    self._write_whole(self._waiting[0])
                    self._waiting.popleft()
                assert self._fd is not None
                if os.fstat(self._fd).st_size >= self.max_bytes:
                    self._rotate()
            except (OSError, StateError) as exc:  # a full or read-only disk (or a rotation's lock held
                self.failures += 1                # elsewhere) must not stop what is audited
                if self.failures == 1 or self.failures % 1000 == 0:
                    log.warning("audit log %s: cannot write (%d lines wait to be written, %d lost): %s",
                                self.path, len(self._waiting), self.lost, getattr(exc, "strerror", None) or exc)

    def _write_whole(self, line: bytes) -> None:
        """Append ``line`` whole, or raise: a line that fits only in part (a short write on a
        full disk) is cut off the file again, so no reader meets half a line glued to the next."""
        assert self._fd is not None
        written = os.write(self._fd, line)
        if written == len(line):
            return
        assert self.path is not None
        with contextlib.suppress(OSError), open(self.path, "rb") as f:
            size = os.fstat(self._fd).st_size
            f.seek(max(0, size - written))
            if f.read() == line[:written]:  # only if it is still the end (another host may append)
                os.ftruncate(self._fd, size - written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _current(self) -> None:
        """Open the file again if it was rotated or removed (by another process, say)."""
        assert self.path is not None
        try:
            same = self._fd is not None and os.stat(self.path).st_ino == self._ino
        except FileNotFoundError:
            same = False
        if not same:
            self._close_fd()
            self._make_parent()
            self._open()

    def _rotate(self) -> None:
        assert self.path is not None
        with locked(self.path):
            try:
                if os.stat(self.path).st_size < self.max_bytes:
                    return  # another process rotated it meanwhile
            except FileNotFoundError:
                return
            for n in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._close_fd()
        self._open()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):  # a last chance for the lines that wait
                while self._waiting and self._fd is not None:
                    self._write_whole(self._waiting[0])
                    self._waiting.popleft()
            self._close_fd()
        if self.table is not None:
            self.table.close()


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of an audit log file (for tests and tools)."""
    text = Path(path).read_text()
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]
