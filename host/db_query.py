"""The execute ``db`` tool's queries: what code may ask for (a select with conditions, order and
limit; an insert; an update; a delete; each on one table), decoded into a Struct and built into
one parameterised statement. Code never sends SQL: every table and column it names is checked
against the database's own schema before it is quoted into the statement, and every value is a
bound parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import InvalidHostCall

Scalar = str | int | float | bool | None
WRITES = ("insert", "update", "delete")
COMPARE = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "like": "LIKE"}
MAX_NODES = 200      # conditions in one where tree
MAX_DEPTH = 16
MAX_IN = 1000        # values of one in / notIn


class DbQuery(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One statement, as the worker runtime's db tool sends it (``db.<table>.select()...``).
    ``where``: ``{column: value}`` equalities, or a condition tree ``["and", ["eq", "id", 1], ...]``."""

    table: str
    op: Literal["select", "insert", "update", "delete"] = "select"
    columns: list[str] | None = None                      # select: these columns (None: all)
    where: dict[str, Scalar] | list[Any] | None = None
    order_by: list[tuple[str, Literal["asc", "desc"]]] | None = None
    limit: Annotated[int, Meta(ge=0)] | None = None
    offset: Annotated[int, Meta(ge=0)] | None = None
    values: list[dict[str, Scalar]] | dict[str, Scalar] | None = None  # insert: rows; update: SET
    returning: list[str] | bool | None = None             # writes: the changed rows (True: all columns)
    tx: int | None = None                                 # run inside this transaction (db.begin)


def decode(query: Any) -> DbQuery:
    """The query the worker sent, or InvalidHostCall saying which field is wrong."""
    try:
        return msgspec.convert(query, DbQuery)
    except msgspec.ValidationError as exc:
        raise InvalidHostCall(f"db: malformed query: {exc}") from None


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Built(msgspec.Struct):
    sql: str
    args: list[Any]
    rows: bool            # the statement returns rows


class _Where:
    """SQL of a condition tree, collecting the column names it uses and its bound values."""

    def __init__(self, ph: str, q: Callable[[str], str]) -> None:
        self.ph, self.q = ph, q
        self.args: list[Any] = []
        self.names: set[str] = set()
        self.nodes = 0

    def column(self, name: Any) -> str:
        if not isinstance(name, str):
            raise InvalidHostCall("db: a condition names its column as a string")
        self.names.add(name)
        return self.q(name)

    def value(self, v: Any) -> str:
        if not isinstance(v, Scalar):
            raise InvalidHostCall("db: a condition's value must be a string, number, boolean or null")
        self.args.append(v)
        return self.ph

    def equalities(self, where: dict[str, Scalar]) -> str:
        return " AND ".join(self.node(["eq", k, v], 1) for k, v in where.items()) or "1 = 1"

    def node(self, cond: Any, depth: int) -> str:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise InvalidHostCall(f"db: a where condition of more than {MAX_NODES} parts or {MAX_DEPTH} levels")
        if not isinstance(cond, list) or not cond or not isinstance(cond[0], str):
            raise InvalidHostCall('db: a condition is ["op", column, value], ["and"|"or", ...] or ["not", c]')
        op, rest = cond[0], cond[1:]
        if op in ("and", "or"):
            if not rest:
                return "1 = 1" if op == "and" else "1 = 0"
            return "(" + f" {op.upper()} ".join(self.node(c, depth + 1) for c in rest) + ")"
        if op == "not" and len(rest) == 1:
            return f"NOT ({self.node(rest[0], depth + 1)})"
        if op in ("isNull", "isNotNull") and len(rest) == 1:
            return f"{self.column(rest[0])} IS {'NOT ' if op == 'isNotNull' else ''}NULL"
        if op in ("in", "notIn") and len(rest) == 2:
            col, values = self.column(rest[0]), rest[1]
            if not isinstance(values, list) or len(values) > MAX_IN:
                raise InvalidHostCall(f"db: {op} takes a list of at most {MAX_IN} values")
            if not values:
                return "1 = 0" if op == "in" else "1 = 1"
            neg = "NOT " if op == "notIn" else ""
            return f"{col} {neg}IN ({', '.join(self.value(v) for v in values)})"
        if op in COMPARE and len(rest) == 2:
            col, v = self.column(rest[0]), rest[1]
            if v is None and op in ("eq", "ne"):
                return f"{col} IS {'NOT ' if op == 'ne' else ''}NULL"
            return f"{col} {COMPARE[op]} {self.value(v)}"
        raise InvalidHostCall(f"db: unknown condition {op!r} (or wrong number of parts); the conditions are "
                              f"{', '.join([*COMPARE, 'in', 'notIn', 'isNull', 'isNotNull', 'and', 'or', 'not'])}")


def build(query: DbQuery, columns_of: Callable[[str], list[str] | None], *, placeholder: str,
          quote_name: Callable[[str], str] = quote, max_rows: int) -> Built:
    """The statement of ``query``; InvalidHostCall for a table or column the schema does not
    have (``columns_of(table)``: its columns, or None for no such table), or a malformed query."""
    t, op = query.table, query.op
    known = columns_of(t)
    if known is None:
        raise InvalidHostCall(f"db: no table {t!r}")
    w = _Where(placeholder, quote_name)
    where = ""
    if query.where is not None:
        where = " WHERE " + (w.equalities(query.where) if isinstance(query.where, dict) else w.node(query.where, 1))
    rows: list[dict[str, Scalar]] = []
    if op == "insert":
        rows = query.values if isinstance(query.values, list) else [query.values] if query.values else []
        if not rows or not rows[0]:
            raise InvalidHostCall(f"db.{t}.insert: give the values of at least one column")
        if len(rows) > max_rows:
            raise InvalidHostCall(f"db.{t}.insert: at most {max_rows} rows at once ([execute] db_max_rows)")
        if any(set(r) != set(rows[0]) for r in rows):
            raise InvalidHostCall(f"db.{t}.insert: every row must set the same columns")
    elif op == "update" and not (isinstance(query.values, dict) and query.values):
        raise InvalidHostCall(f"db.{t}.update: give a map of the columns to set")
    if op in ("update", "delete") and query.where is None:
        raise InvalidHostCall(f"db.{t}.{op}: give a where condition (a whole-table {op} is refused)")
    returning = known if query.returning is True else query.returning or []
    order_by = query.order_by or []
    named = (set(query.columns or ()) | w.names | {c for c, _ in order_by} | set(returning)
             | {c for r in rows[:1] for c in r} | set(query.values if isinstance(query.values, dict) else ()))
    if missing := sorted(named - set(known)):
        raise InvalidHostCall(f"db: {t} has no column {', '.join(map(repr, missing))}")
    qt = quote_name(t)
    ret = f" RETURNING {', '.join(map(quote_name, returning))}" if returning else ""
    if op == "select":
        sql = f"SELECT {', '.join(map(quote_name, query.columns or ())) or '*'} FROM {qt}{where}"
        if order_by:
            sql += " ORDER BY " + ", ".join(f"{quote_name(c)} {d.upper()}" for c, d in order_by)
        limit = max_rows if query.limit is None else min(query.limit, max_rows)
        return Built(sql + f" LIMIT {placeholder} OFFSET {placeholder}", [*w.args, limit, query.offset or 0], True)
    if query.columns or query.order_by or query.limit is not None or query.offset:
        raise InvalidHostCall(f"db.{t}.{op}: columns, orderBy, limit and offset are for select")
    if op == "insert":
        cols = list(rows[0])
        marks = "(" + ", ".join([placeholder] * len(cols)) + ")"
        args = [r[c] for r in rows for c in cols]
        return Built(f"INSERT INTO {qt} ({', '.join(map(quote_name, cols))}) VALUES "
                     f"{', '.join([marks] * len(rows))}{ret}", args, bool(ret))
    if op == "update":
        assert isinstance(query.values, dict)
        sets = ", ".join(f"{quote_name(c)} = {placeholder}" for c in query.values)
        return Built(f"UPDATE {qt} SET {sets}{where}{ret}", [*query.values.values(), *w.args], bool(ret))
    return Built(f"DELETE FROM {qt}{where}{ret}", w.args, bool(ret))


__all__ = ["WRITES", "Built", "DbQuery", "build", "decode", "quote"]
