"""The audit log's copy in PostgreSQL (``[state] database``): every line each host writes to its
own audit.jsonl is also in one table, redacted as in the file; a database that is down never
stops what is audited (the file keeps the line, the loss is counted and logged without the
password). On the real postgres of tests/support/postgres.py."""

from __future__ import annotations

import json
import logging
import os

import psycopg
import pytest
from support.plugins import fresh_state
from support.processes import free_port

from host import PoolConfig
from host.security.audit import AuditLog, read_audit
from host.security.audit_pg import AuditTable
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio


def table(url: str) -> list[tuple[str, str, dict]]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT host, event, entry FROM audit_log ORDER BY id").fetchall()
    return [(h, e, json.loads(entry)) for h, e, entry in rows]


def test_the_lines_of_two_logs_go_to_one_table_redacted(tmp_path, postgres_url):
    hide = lambda text: text.replace("s3cret-value", "********")  # noqa: E731
    one = AuditLog(tmp_path / "a" / "audit.jsonl", redact=hide, table=AuditTable(postgres_url), own_dir=tmp_path / "a")
    two = AuditLog(tmp_path / "b" / "audit.jsonl", redact=hide, table=AuditTable(postgres_url), own_dir=tmp_path / "b")
    one.record("approve", plugin="alpha", note="s3cret-value")
    assert one.table is not None and one.table.flush(10)
    two.record("spawn", plugin="beta", flags=["--allow-net=api.example.com"])
    one.close()
    two.close()
    rows = table(postgres_url)
    assert [(e, entry) for _, e, entry in rows] == [
        ("approve", read_audit(tmp_path / "a" / "audit.jsonl")[0]), ("spawn", read_audit(tmp_path / "b" / "audit.jsonl")[0])]
    assert rows[0][2]["note"] == "********" and all(h.endswith(f":{os.getpid()}") for h, _, _ in rows)


async def test_a_host_on_the_state_database_copies_its_audit_lines(make_host, plugin_dir, tmp_path, shared_state,
                                                                   postgres_url):
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }")
    state_dir = fresh_state(tmp_path / "h", shared_state)
    async with make_host(state_dir=str(state_dir), state=StateConfig(database=postgres_url),
                         pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("calc", "add", 1, 2) == 3
    in_file = read_audit(state_dir / "audit.jsonl")
    assert any(e["event"] == "spawn" and e["plugin"] == "calc" for e in in_file)
    assert [entry for _, _, entry in table(postgres_url)] == in_file


def test_a_database_that_is_down_loses_no_line_from_the_file(tmp_path, caplog):
    port = free_port()  # nothing listens there
    caplog.set_level(logging.WARNING)
    audit = AuditLog(tmp_path / "audit.jsonl",
                     table=AuditTable(f"postgresql://app:t0psecret@127.0.0.1:{port}/app", timeout=2.0))
    audit.record("spawn", plugin="calc")  # returns at once: the table is written in the background
    assert audit.table is not None and audit.table.flush(10)
    audit.close()
    assert [e["event"] for e in read_audit(tmp_path / "audit.jsonl")] == ["spawn"]
    assert audit.table.failures == 1
    assert f"127.0.0.1:{port}" in caplog.text and "t0psecret" not in caplog.text
