"""The db tool's statement builder, property-tested on a real in-memory sqlite: whatever names and
values a query carries, either it is refused (InvalidHostCall) or the statement it becomes
touches only the schema's names, binds every value, and finds exactly the rows a Python filter does."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.db_query import build, decode
from host.errors import InvalidHostCall

pytestmark = pytest.mark.timeout(60)

COLUMNS = ["id", "name", "note"]
ROWS = [(1, "a", None), (2, "b'; DROP TABLE t; --", "x"), (3, 'c" OR 1=1', "%"), (4, "d", "y")]
names = st.one_of(st.sampled_from(COLUMNS), st.text(max_size=12))
values = st.one_of(st.none(), st.integers(-5, 5), st.sampled_from([r[1] for r in ROWS]), st.text(max_size=8))
ops = st.sampled_from(["eq", "ne", "lt", "gt", "like", "DROP", "eq; --"])


@pytest.fixture(scope="module")
def db():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, note TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", ROWS)
    yield conn
    conn.close()


def columns_of(table: str) -> list[str] | None:
    return COLUMNS if table == "t" else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.one_of(st.just("t"), st.text(max_size=10)), column=names, op=ops, value=values,
       order=st.lists(st.tuples(names, st.sampled_from(["asc", "desc"])), max_size=2))
def test_a_query_is_refused_or_touches_only_known_names(db, table, column, op, value, order):
    raw = {"table": table, "where": [op, column, value], "order_by": [list(o) for o in order]}
    try:
        built = build(decode(raw), columns_of, placeholder="?", max_rows=100)
    except InvalidHostCall:
        assert table != "t" or column not in COLUMNS or op not in ("eq", "ne", "lt", "gt", "like") or \
            any(c not in COLUMNS for c, _ in order)
        return
    assert table == "t" and column in COLUMNS
    assert built.sql.count("?") == len(built.args)
    rows = db.execute(built.sql, built.args).fetchall()
    assert db.execute("SELECT count(*) FROM t").fetchone() == (4,)
    if op == "eq":
        i = COLUMNS.index(column)
        assert sorted(rows) == sorted(r for r in ROWS if (r[i] is None if value is None else r[i] == value))


def test_writes_need_a_where_and_known_columns():
    with pytest.raises(InvalidHostCall, match="whole-table delete"):
        build(decode({"table": "t", "op": "delete"}), columns_of, placeholder="?", max_rows=10)
    with pytest.raises(InvalidHostCall, match="has no column 'x'"):
        build(decode({"table": "t", "op": "insert", "values": [{"x": 1}]}), columns_of, placeholder="?", max_rows=10)
    with pytest.raises(InvalidHostCall, match="same columns"):
        build(decode({"table": "t", "op": "insert", "values": [{"id": 1}, {"name": "a"}]}), columns_of,
              placeholder="?", max_rows=10)
    with pytest.raises(InvalidHostCall, match="at most 1 rows"):
        build(decode({"table": "t", "op": "insert", "values": [{"id": 1}, {"id": 2}]}), columns_of,
              placeholder="?", max_rows=1)
    with pytest.raises(InvalidHostCall, match="malformed query"):
        decode({"table": "t", "sql": "DROP TABLE t"})
