"""The result cache's file, ``<state_dir>/cache.sqlite3`` (``[cache] persist``): written by a
thread of its own, in order, never by the event loop. Before, each store and each expired entry
dropped was a sqlite statement on the event loop: with the file locked (another process in a
write transaction, an operator's ``sqlite3`` shell) or its disk hanging, every cached call froze
the whole server, ``/healthz`` included, for sqlite's busy timeout, 5 s. The entries in memory
are the cache; the file only warms the next start, so a write that cannot be made is logged
(throttled) and dropped, and at most MAX_PENDING wait (more are dropped, and said)."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from ..errors import StateError
from ..logs import Throttle
from ..security.private_files import PrivateDb

log = logging.getLogger("host.cache")
_warn = Throttle(log)

SCHEMA = ("CREATE TABLE IF NOT EXISTS entries (plugin TEXT, key BLOB, value BLOB, stored_at REAL, "
          "expires REAL, stale_until REAL, PRIMARY KEY (plugin, key))")
MAX_PENDING = 10_000  # writes waiting for the file; more are dropped (the entries in memory stand)
FLUSH = 5.0           # seconds close() waits for the writes queued before it
CLEAR_TIMEOUT = 10.0  # seconds a clear waits for the file


class _Job:
    """One write: ``run(db)`` in the writer thread; ``done`` once it ran (``error``: its failure)."""

    def __init__(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self.run = run
        self.done = threading.Event()
        self.error: BaseException | None = None


class CacheFile:
    """``<state_dir>/cache.sqlite3``: ``load`` at start (on the caller's thread, before any write),
    then ``store``/``delete`` queued for the writer thread, ``clear`` waited for off the event
    loop, ``close`` flushing within FLUSH seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # a damaged file is set aside and the cache starts empty: it is only a cache
        self._db = PrivateDb(path, SCHEMA, damaged_ok=True)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def load(self) -> list[tuple[Any, ...]]:
        """The rows that may still be served (the others are deleted); [] when the file cannot
        be read (logged)."""
        if not self.path.exists():
            return []
        try:
            db = self._db.conn()
            db.execute("DELETE FROM entries WHERE stale_until <= ?", (time.time(),))
            return db.execute("SELECT plugin, key, value, stored_at, expires, stale_until FROM entries "
                              "ORDER BY stored_at").fetchall()
        except (sqlite3.Error, OSError, StateError) as exc:
            _warn.warning("persist", "result cache: cannot load %s (%s): starting empty", self.path, exc)
            return []

    def store(self, plugin: str, row: tuple[Any, ...], evicted: list[bytes]) -> None:
        """Write the entry ``row`` (key, value and times) of ``plugin``, and drop ``evicted``."""
        def run(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", (plugin, *row))
            if evicted:
                db.executemany("DELETE FROM entries WHERE plugin = ? AND key = ?", [(plugin, k) for k in evicted])
        self._submit(_Job(run), "an entry stored")

    def delete(self, plugin: str, keys: list[bytes]) -> None:
        """Drop ``keys`` of ``plugin``, if there is a file (never made here)."""
        if not keys or (not self.path.exists() and self._thread is None):
            return
        self._submit(_Job(lambda db: db.executemany("DELETE FROM entries WHERE plugin = ? AND key = ?",
                                                    [(plugin, k) for k in keys])), "entries dropped")

    async def clear(self, plugin: str | None) -> None:
        """Drop every entry of ``plugin`` (of all when None), after the writes queued before;
        StateError when the file cannot be written within CLEAR_TIMEOUT."""
        if not self.path.exists() and self._thread is None:
            return
        if plugin is None:
            job = _Job(lambda db: db.execute("DELETE FROM entries"))
        else:
            job = _Job(lambda db: db.execute("DELETE FROM entries WHERE plugin = ?", (plugin,)))
        if not self._submit(job, "a clear"):
            raise StateError(f"result cache: cannot clear {self.path}: {MAX_PENDING} writes wait for it")
        if not await anyio.to_thread.run_sync(job.done.wait, CLEAR_TIMEOUT, abandon_on_cancel=True):
            raise StateError(f"result cache: cannot clear {self.path}: it did not answer within "
                             f"{CLEAR_TIMEOUT:g} s (is it locked by another process?)")
        if job.error is not None:
            raise StateError(f"result cache: cannot clear {self.path}: {job.error}")

    def close(self, timeout: float = FLUSH) -> None:
        """Write what is queued (at most ``timeout`` seconds), then close the file; the writer
        thread closes it itself once its last statement returns when that takes longer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is None:
            self._db.close()
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("result cache: %s did not take the last writes within %g s; they are dropped",
                        self.path, timeout)

    def _submit(self, job: _Job, doing: str) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._pending >= MAX_PENDING:
                _warn.warning("persist-queue", "result cache: %d writes wait for %s; this one (%s) is dropped "
                              "(is the file locked by another process, or its disk hanging?)",
                              MAX_PENDING, self.path, doing)
                return False
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="result-cache-file", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return True

    def _write(self) -> None:
        """The writer thread: each job in turn, until close()'s None (or, past its wait, the
        jobs left are dropped as the process ends)."""
        try:
            while (job := self._queue.get()) is not None:
                try:
                    job.run(self._db.conn())
                except (sqlite3.Error, OSError, StateError) as exc:
                    job.error = exc
                    _warn.warning("persist", "result cache: cannot write %s: %s", self.path, exc)
                finally:
                    with self._lock:
                        self._pending -= 1
                    job.done.set()
        finally:
            self._db.close()
