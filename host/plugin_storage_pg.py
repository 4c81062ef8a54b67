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

from typing import Any

from .errors import StorageError
from .pg_session import PgSession
from .plugin_storage import ENTRY_OVERHEAD, check_cap, check_keys, entry_size, key_size

SCHEMA = ("CREATE TABLE IF NOT EXISTS plugin_storage (plugin TEXT NOT NULL, key TEXT NOT NULL, "
          "value BYTEA NOT NULL, PRIMARY KEY (plugin, key))")
SIZE = "octet_length(key) + octet_length(value)"  # as the sqlite backend counts (key as UTF-8)


class PostgresStorage:
    def __init__(self, url: str, timeout: float) -> None:
        self.db = PgSession(url, timeout, [SCHEMA], what="storage", setting="storage_timeout", error=StorageError)

    async def get(self, plugin: str, key: str, *, deadline: float | None = None) -> bytes | None:
        row = await self.db.run(lambda c: self.db.one(
            c, "SELECT value FROM plugin_storage WHERE plugin = %s AND key = %s", [plugin, key]), deadline)
        return None if row is None else bytes(row["value"])

    async def put(self, plugin: str, key: str, blob: bytes, cap: int, where: str, *,
                  deadline: float | None = None) -> None:
        def put(conn: Any) -> None:
            def body() -> None:
                self.db.backend.run(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", ["plugin_storage:" + plugin], 1)
                total = self.db.one(conn, f"SELECT COUNT(*) AS n, COALESCE(SUM({SIZE}), 0) AS bytes FROM "
                                        "plugin_storage WHERE plugin = %s", [plugin])
                assert total is not None
                mine = self.db.one(conn, f"SELECT {SIZE} AS size FROM plugin_storage WHERE plugin = %s AND key = %s",
                                 [plugin, key])
                used = int(total["bytes"]) + int(total["n"]) * ENTRY_OVERHEAD
                old = 0 if mine is None else int(mine["size"]) + ENTRY_OVERHEAD
                check_cap(used, old, entry_size(key, blob), cap, where)
                self.db.backend.run(conn, "INSERT INTO plugin_storage (plugin, key, value) VALUES (%s, %s, %s) "
                                       "ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value",
                                 [plugin, key, blob], 0)
            self.db.tx(conn, body)
        await self.db.run(put, deadline)

    async def delete(self, plugin: str, key: str, *, deadline: float | None = None) -> bool:
        return await self.db.run(lambda c: self.db.backend.run(
            c, "DELETE FROM plugin_storage WHERE plugin = %s AND key = %s", [plugin, key], 0)[1] > 0, deadline)

    async def keys(self, plugin: str, *, deadline: float | None = None, max_bytes: int | None = None) -> list[str]:
        def keys(conn: Any) -> list[Any]:
            total = self.db.one(conn, f"SELECT COUNT(*) AS n, COALESCE(SUM({key_size('octet_length(key)')}), 0) "
                                      "AS bytes FROM plugin_storage WHERE plugin = %s", [plugin])
            assert total is not None
            rows = check_keys(int(total["n"]), int(total["bytes"]), max_bytes) or 1_000_000
            return self.db.backend.run(conn, "SELECT key FROM plugin_storage WHERE plugin = %s ORDER BY key "
                                             "COLLATE \"C\" LIMIT %s", [plugin, rows], rows)[0]
        return [r["key"] for r in await self.db.run(keys, deadline)]

    def close(self) -> None:
        self.db.close()


__all__ = ["PostgresStorage"]
