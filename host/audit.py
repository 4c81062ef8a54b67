"""The security audit log: one JSON object per line for each worker spawn (the Deno flags it was
granted), each strict-mode finding and, when the egress proxy is on, each outbound request.

Callers pass only what is safe to keep: flags, host names, byte counts, reasons. Never a config
value, a token or a header; ``record`` runs every string through the redaction it was given
as a second line of defence."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
log = logging.getLogger("host.audit")


class AuditLog:
    """Appends to ``path`` (created 0600). ``AuditLog(None)`` records nothing."""

    def __init__(self, path: str | Path | None, *, redact: Callable[[str], str] | None = None) -> None:
        self.path = Path(path) if path else None
        self._redact = redact
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.failures = 0  # lines that could not be written
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, event: str, **fields: Any) -> None:
        """One line ``{"ts": <unix seconds>, "event": event, **fields}``; one write(2) each,
        so lines from several threads or hosts appending to one file never interleave."""
        if self._fd is None:
            return
        entry = {"ts": round(time.time(), 3), "event": event, **fields}
        line = _encoder.encode(entry) + b"\n"
        if self._redact is not None:
            line = self._redact(line.decode()).encode()
        with self._lock:
            if self._fd is not None:
                try:
                    os.write(self._fd, line)
                except OSError as exc:  # a full or read-only disk must not stop what is audited
                    self.failures += 1
                    if self.failures == 1 or self.failures % 1000 == 0:
                        log.warning("audit log %s: cannot write (%d lines lost so far): %s",
                                    self.path, self.failures, exc.strerror or exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of an audit log file (for tests and tools)."""
    text = Path(path).read_text()
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]
