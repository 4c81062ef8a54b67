"""The ``db`` tool of ``execute`` (the Isolate engine's db examples: ``await db.users.select()
.limit(10)``, ``db.users.findMany({ where, limit })``): read-only queries of the one sqlite
database the operator names (``[execute] database``, or ``DATABASE_URL=sqlite:///path``).

The code never sends SQL: the worker sends a structured query (table, columns, equality
conditions, order, limit, offset); the host checks every name against the database's own schema,
builds the SELECT with quoted identifiers and bound values, and runs it on a read-only
connection, at most ``max_rows`` rows. The worker gets neither the file nor a network grant."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from .errors import InvalidHostCall

SCALARS = (str, int, float, bool, type(None))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidHostCall(f"db: {what} must be a list of column names")
    return value


def _count(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidHostCall(f"db: {what} must be a whole number >= 0")
    return value


class DbTool:
    def __init__(self, path: str | Path, *, max_rows: int = 1000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows

    def _connect(self) -> sqlite3.Connection:
        # mode=ro: sqlite itself refuses every write, whatever the statement.
        db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        db.row_factory = sqlite3.Row
        return db

    def select(self, query: Any) -> list[dict[str, Any]]:
        """Rows of ``{"table", "columns"?, "where"?, "order_by"?, "limit"?, "offset"?}`` as
        dicts; InvalidHostCall for a name that is not in the schema or a malformed query."""
        if not isinstance(query, dict) or not isinstance(query.get("table"), str):
            raise InvalidHostCall("db: a query needs a table name")
        unknown = set(query) - {"table", "columns", "where", "order_by", "limit", "offset"}
        if unknown:
            raise InvalidHostCall(f"db: unknown query field(s) {sorted(unknown)}")
        table = query["table"]
        columns = _names(query.get("columns"), "columns")
        where = query.get("where") or {}
        if not isinstance(where, dict) or not all(isinstance(v, SCALARS) for v in where.values()):
            raise InvalidHostCall("db: where must map column names to strings, numbers, booleans or null")
        order = query.get("order_by") or []
        if not isinstance(order, list) or not all(
                isinstance(o, list) and len(o) == 2 and isinstance(o[0], str) and o[1] in ("asc", "desc")
                for o in order):
            raise InvalidHostCall('db: order_by must be a list of [column, "asc"|"desc"]')
        limit = min(_count(query.get("limit"), "limit", self.max_rows), self.max_rows)
        offset = _count(query.get("offset"), "offset", 0)
        with closing(self._connect()) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                               (table,)).fetchone()
            if found is None:
                raise InvalidHostCall(f"db: no table {table!r}")
            known = {row[1] for row in db.execute(f"PRAGMA table_info({_quote(table)})")}
            named = set(columns) | set(where) | {o[0] for o in order}
            if missing := sorted(named - known):
                raise InvalidHostCall(f"db: {table} has no column {', '.join(map(repr, missing))}")
            sql = f"SELECT {', '.join(map(_quote, columns)) or '*'} FROM {_quote(table)}"
            args: list[Any] = []
            if where:
                conds = []
                for col, value in where.items():
                    conds.append(f"{_quote(col)} IS NULL" if value is None else f"{_quote(col)} = ?")
                    if value is not None:
                        args.append(value)
                sql += " WHERE " + " AND ".join(conds)
            if order:
                sql += " ORDER BY " + ", ".join(f"{_quote(c)} {d.upper()}" for c, d in order)
            sql += " LIMIT ? OFFSET ?"
            rows = db.execute(sql, (*args, limit, offset)).fetchall()
        return [dict(row) for row in rows]
