"""Plugins' persistent storage (``ctx.storage``) behind one small interface, so that where it
lives is configuration: by default one sqlite file per plugin under ``<state_dir>/storage``;
with ``[state] database = "postgresql://..."`` one table that every host sharing the database
reads and writes (plugin_storage_pg.py). Values arrive as msgpack bytes; every backend counts
an entry as its key (UTF-8) plus its value plus ENTRY_OVERHEAD against the plugin's cap."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import anyio

from .db_backends import give_up_by
from .errors import PayloadTooLarge, StateError, StorageError, StorageFull
from .logs import Throttle
from .security.private_files import MIN_FREE_BYTES, PrivateDb, storage_name

T = TypeVar("T")
log = logging.getLogger("host.services")

# Each storage entry counts its key (UTF-8) and value (msgpack) as stored plus this much: what
# sqlite spends on a row at least (measured: ~13 bytes a row for tiny entries), so that many tiny
# entries cannot take far more disk than the cap says.
ENTRY_OVERHEAD = 16


class PluginStorage(Protocol):
    """Where plugins' ``ctx.storage`` lives. Failures are StorageError (StorageFull past ``cap``)."""

    # ``deadline`` (monotonic): the calling plugin call's; the operation gives up (StorageError)
    # just before it, so that a busy or hung database fails the operation, not the worker.
    async def get(self, plugin: str, key: str, *, deadline: float | None = None) -> bytes | None: ...
    async def put(self, plugin: str, key: str, blob: bytes, cap: int, where: str, *,
                  deadline: float | None = None) -> None: ...
    async def delete(self, plugin: str, key: str, *, deadline: float | None = None) -> bool: ...
    # ``max_bytes``: PayloadTooLarge, before they are read, when the keys would take more than
    # that as a MessagePack list (``key_size``): the host holds an answer until its worker reads it
    async def keys(self, plugin: str, *, deadline: float | None = None, max_bytes: int | None = None) -> list[str]: ...
    def close(self) -> None: ...


def check_keys(count: int, size: int, max_bytes: int | None) -> int | None:
    """PayloadTooLarge when ``count`` keys that take ``size`` bytes as MessagePack strings
    (KEY_SIZE) would take more than ``max_bytes`` as one list; else the most rows a listing
    may then read."""
    if max_bytes is None:
        return None
    if 5 + size > max_bytes:
        raise PayloadTooLarge(
            f"storage.keys: the plugin's {count} keys take {5 + size} bytes, more than the {max_bytes} one "
            "answer may carry; keep the keys it needs to list under one key of its own")
    return max_bytes  # a key takes a byte at least: no more rows than that, whatever was added since


def key_size(length: str) -> str:
    """SQL: what a key of ``length`` bytes (UTF-8, at most 64 KiB) takes as a MessagePack string."""
    return f"{length} + CASE WHEN {length} < 32 THEN 1 WHEN {length} < 256 THEN 2 ELSE 3 END"


def check_cap(used: int, old: int, new: int, cap: int, where: str) -> None:
    """StorageFull when replacing an entry of ``old`` bytes (0: none) by one of ``new`` takes a
    storage holding ``used`` past ``cap`` (a write that takes no more room is always allowed)."""
    if new > old and used - old + new > cap:
        raise StorageFull(
            f"storage.set: {new} more bytes would take the plugin's storage past its cap of {cap} bytes "
            f"({used} in use): delete keys it no longer needs, or have the operator raise "
            f"limits.storage_max_bytes ({where})")


class _Store:
    """One plugin's sqlite database (opened again if the file is removed underneath). Every use
    goes through ``run``: one thread at a time. Keeps the bytes it holds (``used``), counted
    from the database whenever a connection opens, so that a cap holds across restarts."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.lock = anyio.Lock()
        self._db = PrivateDb(path, "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, "
                                   "value BLOB NOT NULL) WITHOUT ROWID", timeout=timeout)
        self._used = 0
        self._counted: sqlite3.Connection | None = None  # the connection ``_used`` was counted on
        self._version = 0  # its ``data_version`` then

    def used(self, db: sqlite3.Connection) -> int:
        """Bytes the store holds, as the cap counts them: counted again whenever another
        connection (a sibling ``serve`` process, a second host on this state directory) has
        written since (``data_version``), so that what it stored counts here too."""
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if db is not self._counted or version != self._version:
            n, total = db.execute(f"SELECT COUNT(*), COALESCE(SUM({_SIZE}), 0) FROM kv").fetchone()
            self._used, self._counted, self._version = total + n * ENTRY_OVERHEAD, db, version
        return self._used

    def write(self, db: sqlite3.Connection, fn: Callable[[], T]) -> T:
        """``fn`` in one transaction that holds the file's write lock from before it counts to
        after it writes, so that two processes cannot both find room for the last bytes."""
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # sqlite rolls some failures (SQLITE_FULL) back itself; a failed COMMIT not
                db.execute("ROLLBACK")
            raise
        return out

    def size_of(self, db: sqlite3.Connection, key: str) -> int:
        """What the entry ``key`` counts (0: there is none)."""
        row = db.execute(f"SELECT {_SIZE} FROM kv WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else row[0] + ENTRY_OVERHEAD

    def put(self, db: sqlite3.Connection, key: str, blob: bytes, cap: int, where: str) -> None:
        """Store ``blob`` under ``key`` unless the store would then hold more than ``cap``
        bytes (StorageFull; a write that takes no more room than the entry it replaces is
        always allowed) or the file system would be left with less than MIN_FREE_BYTES."""
        def put() -> None:
            used, old = self.used(db), self.size_of(db, key)
            new = entry_size(key, blob)
            check_cap(used, old, new, cap, where)
            if new > old:
                _check_room(self.path.parent, new - old)
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, blob))
            self._used = used - old + new
        self.write(db, put)

    def delete(self, db: sqlite3.Connection, key: str) -> bool:
        def delete() -> bool:
            used, old = self.used(db), self.size_of(db, key)
            gone = db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount > 0
            self._used = used - old if gone else used
            return gone
        return self.write(db, delete)

    async def run(self, fn: Callable[[sqlite3.Connection], T], deadline: float | None = None) -> T:
        until = give_up_by(time.monotonic() + self.timeout, deadline)
        with anyio.move_on_after(max(until - time.monotonic(), 0)) as waited:
            await self.lock.acquire()
        if waited.cancelled_caught:
            raise StorageError("storage: busy with this plugin's earlier operations until just before the call's "
                               "deadline")
        try:  # sqlite's busy timeout bounds the wait for another process's lock (a statement is short)
            return await anyio.to_thread.run_sync(self._call, fn, until)
        finally:
            self.lock.release()

    def _call(self, fn: Callable[[sqlite3.Connection], T], until: float) -> T:
        try:
            db = self._db.conn()
            db.execute(f"PRAGMA busy_timeout = {max(int((until - time.monotonic()) * 1000), 0)}")
            return fn(db)
        except StorageError:
            raise
        except StateError as exc:
            raise _typed(f"storage failed: {exc.message}") from None
        except (sqlite3.Error, OSError) as exc:  # messages name the failure, never the values
            raise _typed(f"storage failed: {self._db.failure(exc, 'use').message}") from None

    def close(self) -> None:
        self._db.close()


def _typed(message: str) -> StorageError:
    """StorageFull when the state directory's file system is full (the documented type: nothing
    was written, room is what it needs; helper-100 saw a plain StorageError, 502), else StorageError."""
    full = ("disk is full", "No space left on device", "Disk quota exceeded")
    return (StorageFull if any(f in message for f in full) else StorageError)(message)


_SIZE = "LENGTH(CAST(key AS BLOB)) + LENGTH(value)"  # an entry's bytes as stored (key as UTF-8)
_warn = Throttle(log)


def entry_size(key: str, blob: bytes) -> int:
    """What one storage entry counts against the cap."""
    return len(key.encode("utf-8", "surrogatepass")) + len(blob) + ENTRY_OVERHEAD


def _check_room(directory: Path, size: int) -> None:
    """StorageFull when writing ``size`` more bytes would leave the state directory's file
    system with less than MIN_FREE_BYTES free (the host's own state needs it); the operator
    hears of it in the host's log, the plugin only that the host refused."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return  # the write itself then fails, as a StorageError
    free = st.f_bavail * st.f_frsize
    if free - size < MIN_FREE_BYTES:
        _warn.warning(f"room:{directory}", "plugin storage refused a write: %s has %d KiB free, "
                      "less than the %d MiB the host keeps free; free some space",
                      directory, free // 1024, MIN_FREE_BYTES // (1024 * 1024))
        raise StorageFull(f"storage.set: refused, the host's state directory is nearly full (the host keeps "
                          f"{MIN_FREE_BYTES // (1024 * 1024)} MiB free); the operator must free some space")


class SqliteStorage:
    """The default: one sqlite file per plugin under ``storage_dir``."""

    def __init__(self, storage_dir: Path, timeout: float) -> None:
        self.storage_dir, self.timeout = storage_dir, timeout
        self._stores: dict[str, _Store] = {}

    def _store(self, plugin: str) -> _Store:
        store = self._stores.get(plugin)
        if store is None:
            path = self.storage_dir / f"{storage_name(plugin)}.sqlite3"
            store = self._stores[plugin] = _Store(path, self.timeout)
        return store

    async def get(self, plugin: str, key: str, *, deadline: float | None = None) -> bytes | None:
        def get(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else row[0]
        return await self._store(plugin).run(get, deadline)

    async def put(self, plugin: str, key: str, blob: bytes, cap: int, where: str, *,
                  deadline: float | None = None) -> None:
        store = self._store(plugin)
        await store.run(lambda db: store.put(db, key, blob, cap, where), deadline)

    async def delete(self, plugin: str, key: str, *, deadline: float | None = None) -> bool:
        store = self._store(plugin)
        return await store.run(lambda db: store.delete(db, key), deadline)

    async def keys(self, plugin: str, *, deadline: float | None = None, max_bytes: int | None = None) -> list[str]:
        def keys(db: sqlite3.Connection) -> list[str]:
            count, size = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM({key_size('LENGTH(CAST(key AS BLOB))')}), 0) FROM kv").fetchone()
            rows = check_keys(count, size, max_bytes)
            return [k for (k,) in db.execute("SELECT key FROM kv ORDER BY key LIMIT ?", (-1 if rows is None else rows,))]
        return await self._store(plugin).run(keys, deadline)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()


__all__ = ["ENTRY_OVERHEAD", "PluginStorage", "SqliteStorage", "check_cap", "check_keys", "entry_size", "key_size"]
