"""execute under strict mode and the audit log (issue 18, item 6): every execution leaves one
audit line (who asked, the permission set, tools, outcome, duration, the code's sha256 and
size) and never the code, its input or what it printed; strict mode judges what an execution
asks for as it judges a plugin's grants, plus writes outside execute's own data directory."""

from __future__ import annotations

import hashlib
import json

import pytest
from support.servers import served

from host import ExecuteConfig, GrantRefused, InvalidCode
from host.security.audit import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SECRET = "sk-live-6f1d2e9a77"  # in the input, the code's output and an error: never in the log
ONE = {"min_workers": 1, "max_workers": 1}


def executions(state) -> list[dict]:
    return [x for x in read_audit(state / "audit.jsonl") if x["event"] == "execute"]


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def test_every_execution_is_audited_once_without_its_code_input_or_output(make_host, tmp_path):
    state = tmp_path / "state"
    ok = "export default (x) => { console.log(x.key); return x.key.length }"
    throws = "export default (x) => { const e = new Error(x.key); e.name = x.key; throw e }"
    loops = "export default () => { while (true) {} }"
    ts = "export default (x: { key: string }): number => x.key.length\n"
    broken = f"const k = '{SECRET}';\nconst b: = 2;\n"
    async with make_host(state_dir=str(state), execute=ExecuteConfig(**ONE)) as h:
        assert (await h.execute(ok, {"key": SECRET}, tools=["crypto"])).ok
        assert not (await h.execute(throws, {"key": SECRET})).ok
        assert not (await h.execute(loops, timeout=0.5)).ok
        assert (await h.execute(ts, {"key": SECRET}, language="typescript", by="tester")).result == len(SECRET)
        with pytest.raises(InvalidCode):
            await h.execute(broken, language="typescript")
        with pytest.raises(GrantRefused):
            await h.execute(ok, permissions={"run": ["id"]})
    lines = executions(state)
    assert [(x["action"], x.get("outcome"), x.get("error")) for x in lines] == [
        ("allowed", "ok", None), ("allowed", "exception", "other"), ("allowed", "timeout", None),
        ("allowed", "ok", None), ("allowed", "invalid", "InvalidCode"), ("refused", None, "GrantRefused")]
    assert [x["by"] for x in lines] == ["python", "python", "python", "tester", "python", "python"]
    assert [x["code_sha256"] for x in lines] == [sha(c) for c in (ok, throws, loops, ts, broken, ok)]
    assert [x["code_chars"] for x in lines] == [len(c) for c in (ok, throws, loops, ts, broken, ok)]
    assert lines[0]["tools"] == ["crypto"] and lines[3]["language"] == "typescript"
    assert lines[2]["duration_ms"] >= 500
    assert lines[4]["reason"] == "TypeScript syntax error at <execute>:2:10"  # the place, not the code
    assert lines[5]["permissions"] == {"run": ["id"]} and "[execute.allow]" in lines[5]["reason"]
    text = (state / "audit.jsonl").read_text()
    assert SECRET not in text and "console.log" not in text and "x.key" not in text


async def test_strict_refuse_judges_execute_grants_and_writes_outside_its_own_directory(make_host, tmp_path):
    state, outside = tmp_path / "state", tmp_path / "outside"
    outside.mkdir()
    xc = ExecuteConfig(**ONE, allow={"run": ["true"], "ffi": ["libc.so.6"], "write": [str(outside), "."]})
    write_out = f"export default async () => {{ await Deno.writeTextFile('{outside}/f', 'x'); return 'wrote' }}"
    write_own = "export default async () => { await Deno.writeTextFile('own.txt', 'x'); return 'wrote' }"
    async with make_host(state_dir=str(state), execute=xc, security={"strict": "refuse"}) as h:
        for perms, named in (({"run": ["true"]}, "run:"), ({"ffi": ["libc.so.6"]}, "ffi:"),
                             ({"write": [str(outside)]}, f"write: '{outside}' is outside execute's own data")):
            with pytest.raises(GrantRefused, match=r"refused by security\.strict") as e:
                await h.execute(write_out, permissions=perms)
            assert named in e.value.message
        own = await h.execute(write_own, permissions={"write": ["."]})
    assert own.ok and own.result == "wrote", own.logs
    assert not (outside / "f").exists()
    lines = executions(state)
    assert [x["action"] for x in lines] == ["refused", "refused", "refused", "allowed"]
    assert all(x["findings"] for x in lines[:3]) and lines[3]["findings"] == []

    async with make_host(state_dir=str(state), execute=xc, security={"strict": "warn"}) as h:
        warned = await h.execute(write_out, permissions={"write": [str(outside)]})
    assert warned.ok and (outside / "f").read_text() == "x"
    last = executions(state)[-1]
    assert last["action"] == "allowed" and last["outcome"] == "ok"
    assert any("outside execute's own data directory" in f for f in last["findings"])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_over_http_strict_refusal_is_403_and_every_request_is_audited_as_http(make_host, tmp_path):
    state = tmp_path / "state"
    xc = ExecuteConfig(**ONE, allow={"net": True, "run": ["true"]})
    async with make_host(state_dir=str(state), execute=xc, security={"strict": "refuse"}) as h, \
            served(h, enable_execute=True) as (_, http):
        async def execute(body: dict) -> tuple[int, dict]:
            async with http.post("/execute", json=body) as r:
                return r.status, await r.json()

        status, out = await execute({"code": "export default (x) => x", "input": SECRET})
        assert (status, out["result"]) == (200, SECRET)
        status, out = await execute({"code": "export default () => 1", "permissions": {"run": ["true"]}})
        assert status == 403 and "refused by security.strict: run" in out["error"]["message"], out
        status, out = await execute({"code": "export default () => 1", "permissions": {"net": ["api.example.com"]}})
        assert status == 200 and out["ok"]
    lines = executions(state)
    assert [(x["by"], x["action"]) for x in lines] == [("http", "allowed"), ("http", "refused"), ("http", "allowed")]
    assert lines[2]["permissions"] == {"net": ["api.example.com"]} and lines[2]["outcome"] == "ok"
    assert SECRET not in json.dumps(lines)
