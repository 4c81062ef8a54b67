"""An execution cannot rotate the audit log's history away through an operator's tool: each
call of a tool is an ``execute.tool`` line, and code can call a trivial one in a loop (25,780
lines in 5 s, 600 KB a second: the 60 MB the rotation keeps in under two minutes). The lines
are budgeted per tool (security/refusals.py ``record_tool``); the next one written says how
many were left out."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

from host import ExecuteConfig
from host.security.audit import read_audit
from host.security.refusals import EGRESS_BURST, EGRESS_RATE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120), pytest.mark.parametrize("anyio_backend", ["asyncio"])]

CALLS = 3000
_seq = itertools.count()


@pytest.fixture
def operator(tmp_path, monkeypatch) -> str:
    name = f"atk_tool_ops_{next(_seq)}_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("async def ping():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_an_execution_calling_a_tool_in_a_loop_cannot_flood_the_audit_log(make_host, operator, tmp_path):
    state = tmp_path / "state"
    config = ExecuteConfig(min_workers=1, max_workers=1, tools={"ping": {"function": f"{operator}:ping"}})
    code = "export default async (n) => { let done = 0; for (let i = 0; i < n; i++) done += await ping(); return done; }"
    async with make_host(state_dir=str(state), execute=config) as h:
        started = time.monotonic()
        out = await h.execute(code, CALLS, tools=["ping"], timeout=60)
        took = time.monotonic() - started
        assert out.ok and out.result == CALLS, out.logs
        lines = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "execute.tool"]
        await anyio.sleep(2 / EGRESS_RATE)  # the budget refills: the next line is written, and tells
        assert (await h.execute(code, 1, tools=["ping"])).result == 1
    assert len(lines) <= EGRESS_BURST + EGRESS_RATE * (took + 1)  # before: one line per call, 3,000
    every = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "execute.tool"]
    assert every[-1]["suppressed"] > 0 and every[-1]["tool"] == "ping"
    assert len(every) + sum(e.get("suppressed", 0) for e in every) == CALLS + 1  # every call accounted for
    assert [e["event"] for e in read_audit(state / "audit.jsonl")].count("execute") == 2  # the history stays
