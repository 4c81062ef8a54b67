"""The audit log's copy in the ``[state] database``: with ``database = "postgresql://..."`` every
line a host writes to its ``audit.jsonl`` also goes to one table, ``audit_log (id, ts, host,
event, entry)``, where the lines of every host sharing the database are read together (``host``
says which machine and process wrote each). The file stays: a line the database does not take
(down, slow) is still in it.

``put`` never blocks nor raises (audit must not stop what is audited): lines wait in a bounded
queue that a background thread writes in batches, one transaction each, through PgSession. A
batch that fails is logged, rate-limited, and counted (``failures``); past ``max_queue`` lines
waiting, new ones are dropped from the table (counted too)."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections import deque
from typing import Any

from ..errors import StateError
from ..pg_session import STATE_TIMEOUT, PgSession

log = logging.getLogger("host.audit")

SCHEMA = ("CREATE TABLE IF NOT EXISTS audit_log (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, "
          "host TEXT NOT NULL, event TEXT NOT NULL, entry TEXT NOT NULL)",
          "CREATE INDEX IF NOT EXISTS audit_log_by_ts ON audit_log (ts)")
BATCH = 500


class AuditTable:
    def __init__(self, url: str, *, timeout: float = STATE_TIMEOUT, max_queue: int = 100_000) -> None:
        self.db = PgSession(url, timeout, SCHEMA, what="the audit log ([state] database)")
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.max_queue = max_queue
        self.failures = 0  # lines the table did not take (still in the file)
        self._queue: deque[tuple[float, str, str]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def put(self, ts: float, event: str, line: str) -> None:
        """Queue one line (JSON, already redacted) for the table."""
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.max_queue:
                self._lost(1, "the queue is full")
                return
            self._queue.append((ts, event, line))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-table", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued line was written (or given up on); False past ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                self._busy = True
            try:
                self.db.run_blocking(functools.partial(self._write, batch=batch))
            except StateError as exc:
                self._lost(len(batch), exc.message)
            except Exception as exc:  # a bug here must not end the thread silently
                self._lost(len(batch), f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, conn: Any, *, batch: list[tuple[float, str, str]]) -> None:
        def body() -> None:
            for ts, event, line in batch:
                self.db.backend.run(conn, "INSERT INTO audit_log (ts, host, event, entry) VALUES (%s, %s, %s, %s)",
                                    [ts, self.host, event, line], 0)
        self.db.tx(conn, body)

    def _lost(self, n: int, why: str) -> None:
        before, self.failures = self.failures, self.failures + n
        if before == 0 or before // 1000 != self.failures // 1000:
            log.warning("audit log table: %d lines not written so far (each is in the audit file): %s",
                        self.failures, why)

    def close(self, wait: float = 2.0) -> None:
        """Write what is queued, waiting at most ``wait`` seconds (the host is stopping: a
        database that does not answer must not hold it), then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(wait)
        if thread is None or not thread.is_alive():
            self.db.close()  # else the thread still uses it: it ends with the process


__all__ = ["AuditTable"]
