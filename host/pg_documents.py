"""A table of JSON documents by key in the ``[state] database``, each row with a version taken
from one sequence at every write, shared by the config store and the approvals: a host polls
the highest version and the row count (``mark``), which change with every insert, update and
delete by any host, and reads the rows again only when they did. Blocking calls on a connection
a PgSession hands out (``session.run(lambda conn: docs.read(conn))``)."""

from __future__ import annotations

import json
from typing import Any

from .errors import StateError
from .pg_session import PgSession


class PgDocuments:
    def __init__(self, session: PgSession, table: str) -> None:
        self.db, self.table = session, table

    @staticmethod
    def schema(table: str) -> tuple[str, ...]:
        return (f"CREATE SEQUENCE IF NOT EXISTS {table}_version",
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                "version BIGINT NOT NULL)")

    def read(self, conn: Any) -> tuple[dict[str, dict[str, Any]], dict[str, int], tuple[int, int]]:
        """Every document, its version, and the mark they make."""
        data, versions = {}, {}
        for row in self.db.rows(conn, f"SELECT key, value, version FROM {self.table}", []):
            try:
                value = json.loads(row["value"])
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise StateError(f"[state] database, table {self.table}: the row for {row['key']!r} is not "
                                 "a JSON object; fix or delete that row")
            data[row["key"]], versions[row["key"]] = value, int(row["version"])
        return data, versions, (max(versions.values(), default=0), len(versions))

    def mark(self, conn: Any) -> tuple[int, int]:
        row = self.db.one(conn, f"SELECT COALESCE(MAX(version), 0) AS top, COUNT(*) AS n FROM {self.table}", [])
        assert row is not None
        return int(row["top"]), int(row["n"])

    def get(self, conn: Any, key: str) -> dict[str, Any] | None:
        row = self.db.one(conn, f"SELECT value FROM {self.table} WHERE key = %s", [key])
        return None if row is None else json.loads(row["value"])

    def lock(self, conn: Any, key: str) -> None:
        """Hold ``key`` until the transaction ends (its row may not exist yet)."""
        self.db.backend.run(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{self.table}:{key}"], 1)

    def put(self, conn: Any, key: str, value: dict[str, Any]) -> int:
        """Store ``value`` under ``key``; its new version."""
        rows = self.db.rows(conn, f"INSERT INTO {self.table} (key, value, version) VALUES "
                                  f"(%s, %s, nextval('{self.table}_version')) ON CONFLICT (key) DO UPDATE "
                                  "SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING version",
                            [key, json.dumps(value, sort_keys=True)])
        return int(rows[0]["version"])

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
