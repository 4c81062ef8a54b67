"""The columns each of the host's tables in the ``[state] database`` must have, read from the
statements that create them, for ``doctor`` to compare with what the database holds: a table an
older version or a hand made differently (a column dropped) answered every query with "column ...
does not exist" at serve's start, while doctor said the database was fine (helper-100)."""

from __future__ import annotations

import re


def statements() -> list[str]:
    """Every CREATE TABLE the host runs on the state database."""
    from .balances.history_pg import SCHEMA as HISTORY
    from .pg_documents import PgDocuments
    from .plugin_storage_pg import SCHEMA as STORAGE
    from .plugins.config_store import CHECK_SCHEMA, TABLE
    from .plugins.host_lists import STATIONS_TABLE, SWITCHES_TABLE
    from .security.approvals_pg import TABLE as APPROVALS
    from .security.audit_pg import SCHEMA as AUDIT

    documents = [s for t in (TABLE, STATIONS_TABLE, SWITCHES_TABLE, APPROVALS) for s in PgDocuments.schema(t)]
    return [s for s in (*documents, CHECK_SCHEMA, STORAGE, *HISTORY, *AUDIT) if s.startswith("CREATE TABLE")]


_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)\s*$", re.S)
_CONSTRAINTS = ("PRIMARY", "CHECK", "UNIQUE", "FOREIGN", "CONSTRAINT", "EXCLUDE")


def expected() -> dict[str, list[str]]:
    """Table -> the columns the host creates it with."""
    out: dict[str, list[str]] = {}
    for statement in statements():
        m = _TABLE.match(statement)
        if m is None:
            continue
        parts, depth, current = [], 0, ""
        for ch in m[2]:
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                parts.append(current)
                current = ""
            else:
                current += ch
        parts.append(current)
        out[m[1]] = [p.split()[0] for p in parts if p.strip() and p.split()[0].upper() not in _CONSTRAINTS]
    return out


def drift(present: dict[str, set[str]]) -> list[str]:
    """What the tables the database holds (table -> its columns) lack of what the host needs;
    a table it does not hold yet is made at the first start, and is no drift."""
    return [f"table {table} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            for table, columns in expected().items() if table in present
            for missing in [[c for c in columns if c not in present[table]]] if missing]


__all__ = ["drift", "expected", "statements"]
