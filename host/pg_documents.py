"""A table of JSON documents by key in the ``[state] database``, each row with a version taken
from one sequence at every write, shared by the config store and the approvals: a host polls
the highest version and the row count (``mark``), which change with every insert, update and
delete by any host, and reads the rows again only when they did. Every write holds the table's
lock until it commits (``write``), so versions are committed in the order they are taken: a write
that took a lower version cannot commit after a poll saw a higher one. Blocking calls on a
connection a PgSession hands out (``session.run(docs.read)``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import StateError
from .pg_session import PgSession

T = TypeVar("T")
# A row made with the table, holding a random generation: a table made again (dropped by hand, a
# database restored without it, a fresh replica) holds another one, or none. No key a host stores
# (plugin ids, station names) can take this one: they begin with a letter or a digit.
GENERATION = "#generation"


class PgDocuments:
    def __init__(self, session: PgSession, table: str) -> None:
        self.db, self.table = session, table

    @staticmethod
    def schema(table: str) -> tuple[str, ...]:
        return (f"CREATE SEQUENCE IF NOT EXISTS {table}_version",
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                "version BIGINT NOT NULL)",
                f"INSERT INTO {table} (key, value, version) VALUES ('{GENERATION}', json_build_object('generation', "
                f"md5(random()::text || clock_timestamp()::text))::text, nextval('{table}_version')) "
                "ON CONFLICT (key) DO NOTHING")

    def read(self, conn: Any) -> tuple[dict[str, dict[str, Any]], dict[str, int], tuple[int, int], dict[str, str]]:
        """Every document, its version, the mark they make, and why each damaged row (not a
        JSON object: a hand edit) is unusable: one row never makes the others unreadable."""
        data, versions, damaged = {}, {}, {}
        for row in self.db.rows(conn, f"SELECT key, value, version FROM {self.table} WHERE key <> %s", [GENERATION]):
            key, versions[row["key"]] = row["key"], int(row["version"])
            try:
                data[key] = self._document(key, row["value"])
            except StateError as exc:
                damaged[key] = exc.message
        return data, versions, (max(versions.values(), default=0), len(versions)), damaged

    def mark(self, conn: Any) -> tuple[int, int]:
        row = self.db.one(conn, f"SELECT COALESCE(MAX(version), 0) AS top, COUNT(*) AS n FROM {self.table}", [])
        assert row is not None
        return int(row["top"]), int(row["n"])

    def generation(self, conn: Any) -> str | None:
        """The table's generation (GENERATION): another than the one read before, or none, says
        the table was made again, and what it held is gone."""
        row = self.db.one(conn, f"SELECT value FROM {self.table} WHERE key = %s", [GENERATION])
        return None if row is None else str(row["value"])

    def get(self, conn: Any, key: str) -> dict[str, Any] | None:
        row = self.db.one(conn, f"SELECT value FROM {self.table} WHERE key = %s", [key])
        return None if row is None else self._document(key, row["value"])

    def _document(self, key: str, text: str) -> dict[str, Any]:
        """A row's value: a JSON object, else (a hand edit, JSON nested past the stack) a
        StateError naming the table and the row."""
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise StateError(f"[state] database, table {self.table}: the row for {key!r} is not "
                             "a JSON object; fix or delete that row")
        return value

    def write(self, conn: Any, body: Callable[[], T]) -> tuple[T, tuple[int, int], tuple[int, int]]:
        """``body()`` (puts, swaps, deletes) in one transaction holding the table's lock; returns
        what it returned, and the mark before and after it (when the one before is the mark this
        host last read, the one after is exactly what it holds now)."""
        def locked() -> tuple[T, tuple[int, int], tuple[int, int]]:
            self.db.backend.run(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", [self.table], 1)
            before = self.mark(conn)
            out = body()
            return out, before, self.mark(conn)
        return self.db.tx(conn, locked)

    def put(self, conn: Any, key: str, value: dict[str, Any]) -> int:
        """Store ``value`` under ``key``; its new version."""
        rows = self.db.rows(conn, f"INSERT INTO {self.table} (key, value, version) VALUES "
                                  f"(%s, %s, nextval('{self.table}_version')) ON CONFLICT (key) DO UPDATE "
                                  "SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING version",
                            [key, json.dumps(value, sort_keys=True)])
        return int(rows[0]["version"])

    def insert(self, conn: Any, key: str, value: dict[str, Any]) -> int | None:
        """Store ``value`` under ``key`` if no row has it; its version, or None (nothing written)."""
        rows = self.db.rows(conn, f"INSERT INTO {self.table} (key, value, version) VALUES "
                                  f"(%s, %s, nextval('{self.table}_version')) ON CONFLICT (key) DO NOTHING "
                                  "RETURNING version", [key, json.dumps(value, sort_keys=True)])
        return int(rows[0]["version"]) if rows else None

    def swap(self, conn: Any, key: str, value: dict[str, Any], version: int) -> int | None:
        """Store ``value`` under ``key`` if its row is still at ``version``; the new version, or
        None (another host changed it meanwhile: nothing written)."""
        rows = self.db.rows(conn, f"UPDATE {self.table} SET value = %s, version = nextval('{self.table}_version') "
                                  "WHERE key = %s AND version = %s RETURNING version",
                            [json.dumps(value, sort_keys=True), key, version])
        return int(rows[0]["version"]) if rows else None

    def delete(self, conn: Any, key: str) -> None:
        self.db.backend.run(conn, f"DELETE FROM {self.table} WHERE key = %s", [key], 0)


__all__ = ["PgDocuments"]
