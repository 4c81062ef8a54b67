"""Plugins' storage in PostgreSQL (``[state] database = "postgresql://..."``): one table,
``plugin_storage (plugin, key, value)``, that every host sharing the database reads and writes,
so a value one host's worker stores is the value another host's worker reads. The cap is
counted from the table itself inside the write's transaction, under a per-plugin advisory
lock, so two hosts writing at once cannot take a plugin past it together.

One connection per host, one statement at a time, in a thread (psycopg through the db tool's
backend); past ``storage_timeout`` the statement is interrupted and the call fails with
StorageError. A broken connection is dropped and opened again at the next call. Errors name
the database with its password hidden."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from .db_backends import PostgresBackend, close_quietly, in_thread
from .errors import DbError, StorageError
from .plugin_storage import ENTRY_OVERHEAD, check_cap, entry_size

T = TypeVar("T")

SCHEMA = ("CREATE TABLE IF NOT EXISTS plugin_storage (plugin TEXT NOT NULL, key TEXT NOT NULL, "
          "value BYTEA NOT NULL, PRIMARY KEY (plugin, key))")
SCHEMA_LOCK = 7_305_561_042  # pg_advisory_xact_lock key: hosts starting at once create the table once
SIZE = "octet_length(key) + octet_length(value)"  # as the sqlite backend counts (key as UTF-8)


class PostgresStorage:
    def __init__(self, url: str, timeout: float) -> None:
        self.backend = PostgresBackend(url, statement_timeout=timeout)
        self.timeout = timeout
        self._lock = anyio.Lock()
        self._conn: Any = None
        self._ready = False

    async def _run(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in a thread, one at a time, within ``storage_timeout``."""
        async with self._lock:
            until = time.monotonic() + self.timeout
            try:
                if self._conn is None:
                    opened: list[Any] = []

                    def connect() -> None:
                        opened.append(self.backend.connect(write=True, timeout=self.timeout))
                    await in_thread(self.backend, connect, None, until, late=opened,
                                    setting="storage_timeout")
                    self._conn = opened[0]
                conn = self._conn
                if not self._ready:
                    await in_thread(self.backend, lambda: self._create(conn), conn, until,
                                    setting="storage_timeout")
                    self._ready = True
                return await in_thread(self.backend, lambda: fn(conn), conn, until, setting="storage_timeout")
            except DbError as exc:  # the connection may be mid-transaction or broken: start afresh
                self._drop()
                raise StorageError(f"storage failed ({self.backend.where}): {exc.message}") from None

    def _create(self, conn: Any) -> None:
        self._tx(conn, lambda: (self.backend.run(conn, "SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK], 1),
                                self.backend.run(conn, SCHEMA, [], 0)))

    def _tx(self, conn: Any, body: Callable[[], T]) -> T:
        b = self.backend
        b.run(conn, "BEGIN", [], 0)
        try:
            out = body()
        except BaseException:
            b.rollback(conn)
            raise
        b.run(conn, "COMMIT", [], 0)
        return out

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            close_quietly(self.backend, conn)

    def _one(self, conn: Any, sql: str, args: list[Any]) -> dict | None:
        rows = self.backend.run(conn, sql, args, 1)[0]
        return rows[0] if rows else None

    async def get(self, plugin: str, key: str) -> bytes | None:
        row = await self._run(lambda c: self._one(
            c, "SELECT value FROM plugin_storage WHERE plugin = %s AND key = %s", [plugin, key]))
        return None if row is None else bytes(row["value"])

    async def put(self, plugin: str, key: str, blob: bytes, cap: int, where: str) -> None:
        def put(conn: Any) -> None:
            def body() -> None:
                self.backend.run(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", ["plugin_storage:" + plugin], 1)
                total = self._one(conn, f"SELECT COUNT(*) AS n, COALESCE(SUM({SIZE}), 0) AS bytes FROM "
                                        "plugin_storage WHERE plugin = %s", [plugin])
                assert total is not None
                mine = self._one(conn, f"SELECT {SIZE} AS size FROM plugin_storage WHERE plugin = %s AND key = %s",
                                 [plugin, key])
                used = int(total["bytes"]) + int(total["n"]) * ENTRY_OVERHEAD
                old = 0 if mine is None else int(mine["size"]) + ENTRY_OVERHEAD
                check_cap(used, old, entry_size(key, blob), cap, where)
                self.backend.run(conn, "INSERT INTO plugin_storage (plugin, key, value) VALUES (%s, %s, %s) "
                                       "ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value",
                                 [plugin, key, blob], 0)
            self._tx(conn, body)
        await self._run(put)

    async def delete(self, plugin: str, key: str) -> bool:
        return await self._run(lambda c: self.backend.run(
            c, "DELETE FROM plugin_storage WHERE plugin = %s AND key = %s", [plugin, key], 0)[1] > 0)

    async def keys(self, plugin: str) -> list[str]:
        rows = await self._run(lambda c: self.backend.run(
            c, "SELECT key FROM plugin_storage WHERE plugin = %s ORDER BY key COLLATE \"C\"", [plugin], 1_000_000)[0])
        return [r["key"] for r in rows]

    def close(self) -> None:
        self._drop()


__all__ = ["PostgresStorage"]
