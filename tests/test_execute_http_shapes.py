"""``POST /execute`` answers in the shapes seed 001 (the Isolate engine) documents, beyond its
curl examples: its error-handling guidance reads a failed execution's ``result.error.name``
and ``result.error.message`` (TimeoutError, EntryError...), as its sandbox's timeout answer
carries them."""

from __future__ import annotations

import pytest
from support.servers import served

from host import ExecuteConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_a_failed_execution_names_its_error_as_the_seeds_clients_read_it(make_host):
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h, \
            served(h, enable_execute=True) as (_, http):
        async def execute(body: dict) -> dict:
            async with http.post("/execute", json=body) as r:
                assert r.status == 200
                return await r.json()

        thrown = await execute({"code": "export default (x) => { if (!x) throw new TypeError('Input is required'); }",
                                "input": None})
        entry = await execute({"code": 'export default "not a function"'})
        late = await execute({"code": "export default () => { for (;;) {} }", "timeout": 300})
        fine = await execute({"code": "export default (x) => x * 2", "input": 21})
    assert thrown["ok"] is False and "result" not in thrown
    def error(body: dict) -> tuple[str, str]:
        err = body["error"]  # before: no "error" key
        assert err["stack"] == body["logs"][-1]["stack"] and body["logs"][-1]["level"] == "exception"
        return err["name"], err["message"]

    assert error(thrown) == ("TypeError", "Input is required")
    assert error(entry) == ("EntryError", 'Entry "default" is not a function')
    assert error(late) == ("TimeoutError", "Execution timeout")
    assert "error" not in fine and fine["result"] == 42


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_a_timeout_beyond_the_operators_ceiling_is_refused_naming_both(make_host):
    """Any caller could ask for a deadline of up to a week (``"timeout": 604800000``) and hold a
    worker that long with ``for (;;) {}``: every worker of every pool, the machine's CPUs with
    them, for days. ``[execute] max_timeout`` (60 s) bounds it; beyond, a 400 names the field."""
    xc = ExecuteConfig(min_workers=1, max_workers=1, timeout=1.0, max_timeout=2.0)
    async with make_host(execute=xc) as h, served(h, enable_execute=True) as (_, http):
        async with http.post("/execute", json={"code": "export default () => { for (;;) {} }",
                                               "timeout": 604_800_000}) as r:
            status, body = r.status, await r.json()
        async with http.post("/execute", json={"code": "export default () => 1", "timeout": 2000}) as r:
            edge = await r.json()
    assert status == 400, body  # before: 200 after a week
    assert "timeout" in body["error"]["message"] and "[execute] max_timeout" in body["error"]["message"], body
    assert edge["ok"] is True and edge["result"] == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_every_413_of_execute_has_the_seeds_shape(make_host):
    """Seed 001's 413 is ``{"error": {"name": "PayloadTooLarge", "message": ...}}``. Code over
    max_code_chars answered so, but a body announced over the server's cap (Content-Length, as
    curl sends it) answered ``{"error": {"type": ..., "message": ...}}``, with no ``name``."""
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h, \
            served(h, enable_execute=True, max_body=64 * 1024) as (_, http):
        async with http.post("/execute", json={"code": "export default (x) => x.length", "input": "x" * 100_000}) as r:
            body_status, body = r.status, await r.json()
        async with http.post("/execute", json={"code": "//" + "x" * 100_001 + "\nexport default 1"}) as r:
            code_status, code = r.status, await r.json()
    assert (body_status, code_status) == (413, 413)
    for answer in (body, code):
        assert answer["error"]["name"] == "PayloadTooLarge" and answer["error"]["message"], answer
        assert answer["error"]["type"] == "PayloadTooLarge"  # as every other error of the API


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_every_error_answer_of_execute_has_the_seeds_name(make_host):
    """Seed 001's error envelope is ``{"error": {"name", "message"}}``; only the 413s carried
    ``name``: a 400 for a bad field, a malformed body or a refused permission, and a 403 with
    /execute off, carried ``type`` alone, so a seed client's ``error.name`` read undefined."""
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h:
        async with served(h, enable_execute=True) as (_, http):
            answers = []
            for kwargs in ({"json": {"code": "export default 1", "timeout": "soon"}},  # a field of the wrong type
                           {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
                           {"json": {"code": "export default 1", "permissions": {"run": True}}}):  # over [execute.allow]
                async with http.post("/execute", **kwargs) as r:
                    answers.append((r.status, await r.json()))
        async with served(h, enable_execute=False) as (_, http), http.post("/execute", json={"code": "1"}) as r:
            answers.append((r.status, await r.json()))
    assert [status for status, _ in answers] == [400, 400, 403, 403], answers
    for _, answer in answers:
        assert answer["error"]["name"] == answer["error"]["type"] and answer["error"]["message"], answer


async def test_integers_past_the_safe_range_reach_the_code_as_json_parse_reads_them(make_host, plugin_dir):
    """An Isolate client's snowflake id (1234567890123456789) reached /execute's code as a
    bigint: `x * 2` threw "Cannot mix BigInt and other types" (helper-77's finding); a plugin's
    call over HTTP likewise. What JSON carries reaches JavaScript as JSON.parse reads it: a
    number, rounded to the nearest double (Infinity past the largest)."""
    plugin_dir.add("calc.js", "export function kind(x) { return [typeof x, String(x)]; }")
    plugin_dir.add("ev.js", 'export const metadata = { id: "ev", name: "ev", version: "1.0.0", apiVersion: "1.0", '
                            'capabilities: ["message.in"] };\n'
                            "export function onEvent(event, payload) { return typeof payload.id; }")
    big, huge = 1234567890123456789, int("9" * 400)
    async with make_host() as h, served(h, enable_execute=True) as (_, http):
        code = "export default (x) => [typeof x.id, x.id * 2, typeof x.huge, String(x.huge), x.small]"
        async with http.post("/execute", json={"code": code, "input": {"id": big, "huge": huge, "small": 7}}) as r:
            out = await r.json()
        async with http.post("/api/plugins/calc/call/kind", json={"args": [-big]}) as r:
            called = await r.json()
        async with http.post("/api/events/message.in", json={"id": big}) as r:
            assert [x["value"] for x in (await r.json())["replies"]] == ["number"]  # an event's payload too
    assert out["ok"] is True, out
    assert out["result"] == ["number", float(big) * 2, "number", "Infinity", 7]  # before: TypeError (bigint)
    assert called == {"ok": True, "result": ["number", "-1234567890123456800"]}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_the_isolate_readmes_tool_pairs_are_served(make_host, tmp_path):
    """Isolate's README gives tools as `[name, settings]` (`(string | [string, object])[]`):
    each such request was a 400 "Expected `str`, got `array`". Bodies as its README has them."""
    import sqlite3

    db = tmp_path / "app.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO users (name) VALUES ('Alice'), ('Bob')")
    code_db = ("export default async function() { const users = await db.users.select().limit(10); "
               "return { total: users.length, users: users.map(u => ({ id: u.id, name: u.name })) }; }")
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1, database=str(db))) as h, \
            served(h, enable_execute=True) as (_, http):
        async def execute(body: dict) -> tuple[int, dict]:
            async with http.post("/execute", json=body) as r:
                return r.status, await r.json()

        limited = await execute({
            "code": "export default function() { const uuid = crypto.randomUUID(); const bytes = new Uint8Array(8); "
                    "crypto.getRandomValues(bytes); return { uuid, bytes: Array.from(bytes) }; }",
            "tools": [["crypto", {"limit": 1024, "methods": ["randomUUID", "getRandomValues"]}]]})
        hosts = await execute({"code": code_db, "tools": [["db", {"hosts": ["replica.db.example.com:5432"]}]]})
        mixed = await execute({"code": "export default () => [typeof crypto.subtle, typeof channel, typeof db]",
                               "tools": [["crypto", {"subtle": False}], "channel",
                                         ["db", {"hosts": ["replica.db.internal:5432"]}]]})
        wrong = await execute({"code": "export default () => 1", "tools": ["crypto", ["crypto", {"subtel": False}]]})
    assert limited[0] == 200 and limited[1]["ok"] is True, limited
    assert len(limited[1]["result"]["bytes"]) == 8
    assert hosts[1]["ok"] is True and hosts[1]["result"] == {
        "total": 2, "users": [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]}, hosts
    assert mixed[1]["result"] == ["undefined", "object", "object"], mixed
    assert wrong[0] == 400
    assert wrong[1]["error"]["message"] == ("tools[1]: 'crypto' takes no setting 'subtel'; "
                                            "its settings are subtle, limit, methods"), wrong
