"""PluginHost.execute: the Isolate engine's contract. Errors in user code come back as
``exception`` log entries of an ExecuteResult; only the host's own limits raise."""

from __future__ import annotations

import re
import time

import anyio
import pytest

from host import CryptoToolConfig, ExecuteConfig, ExecuteResult, InvalidConfig, LogEntry, PayloadTooLarge

pytestmark = [pytest.mark.anyio, pytest.mark.one_backend]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def exception_of(out: ExecuteResult) -> LogEntry:
    """The single exception entry of a failed execute."""
    assert out.ok is False
    assert out.result is None
    found = [e for e in out.logs if e.level == "exception"]
    assert len(found) == 1, out.logs
    return found[0]


def assert_recent_ms(ts: int, slack_ms: int = 30_000) -> None:
    assert isinstance(ts, int)
    assert abs(ts - time.time() * 1000) < slack_ms, ts


# ---------------------------------------------------------------------------------------------
# The seed's examples


async def test_default_export_doubles_the_input(make_host):
    async with make_host() as h:
        out = await h.execute("export default (x) => x * 2", input=21)
    assert isinstance(out, ExecuteResult)
    assert out.ok is True and out.result == 42
    assert out.logs == []
    assert isinstance(out.duration, float) and out.duration > 0


async def test_crypto_tool_gives_a_uuid_and_random_bytes(make_host):
    code = (
        "export default function() { const uuid = crypto.randomUUID(); const bytes = new Uint8Array(16);"
        " crypto.getRandomValues(bytes); return { uuid, bytes: Array.from(bytes) }; }"
    )
    async with make_host() as h:
        a = await h.execute(code, tools=["crypto"])
        b = await h.execute(code, tools=["crypto"])
    assert a.ok and b.ok, (a.logs, b.logs)
    assert UUID_RE.match(a.result["uuid"]) and UUID_RE.match(b.result["uuid"])
    assert a.result["uuid"] != b.result["uuid"]
    for out in (a, b):
        assert len(out.result["bytes"]) == 16
        assert all(isinstance(x, int) and 0 <= x <= 255 for x in out.result["bytes"])
    assert a.result["bytes"] != b.result["bytes"]


@pytest.mark.parametrize(
    ("code", "kw", "expected"),
    [
        pytest.param(
            "export default async function(text) { const encoder = new TextEncoder(); const data = encoder.encode(text);"
            ' const hash = await crypto.subtle.digest("SHA-256", data);'
            ' return Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, "0")).join(""); }',
            {"input": "Hello, World!", "tools": ["crypto"]},
            "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f",
            id="crypto-subtle-sha256-of-hello-world",
        ),
        pytest.param(
            "export default async function(items) { const results = await Promise.all(items.map(async (item) =>"
            " { await new Promise(r => setTimeout(r, 10)); return item.toUpperCase(); })); return results; }",
            {"input": ["hello", "world", "deno"], "timeout": 5.0},
            ["HELLO", "WORLD", "DENO"],
            id="async-entry-with-promise-all",
        ),
        pytest.param(
            "export function solution(x) { return x.a + x.b; }\nexport default () => 'wrong entry';",
            {"input": {"a": 40, "b": 2}, "entry": "solution"},
            42,
            id="custom-entry-is-called",
        ),
    ],
)
async def test_execute_returns_the_entry_result(make_host, code, kw, expected):
    async with make_host() as h:
        out = await h.execute(code, **kw)
    assert out.ok, out.logs
    assert out.result == expected


async def test_without_the_crypto_tool_crypto_is_undefined(make_host):
    """The seed: `"tools": []  // crypto 将不可用`. Tools left out are the default ones, crypto:
    the seed's crypto.subtle.digest example names none, and the Isolate engine's workers always
    have Web Crypto (it answered TypeError here)."""
    async with make_host() as h:
        bare = await h.execute("export default () => typeof crypto", tools=[])
        used = await h.execute("export default () => crypto.randomUUID()", tools=[])
        granted = await h.execute("export default () => typeof crypto", tools=["crypto"])
        default = await h.execute(
            'export default async (msg) => { const hash = await crypto.subtle.digest("SHA-256", new TextEncoder()'
            '.encode(msg)); return Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, "0")).join("") }',
            "hello world")
    assert bare.ok and bare.result == "undefined"
    assert exception_of(used).name == "TypeError"
    assert granted.ok and granted.result == "object"
    assert default.ok, default.logs
    assert default.result == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"


def _huge(spec: object) -> bool:
    return spec == 10**5000 or (isinstance(spec, list) and isinstance(spec[1], dict) and spec[1].get("limit") == -10**5000)


async def test_tools_with_settings_narrow_the_tool(make_host):
    """The Isolate engine's ToolSpec, [name, settings] (its README's examples): crypto's subtle,
    limit and methods narrow what the operator allows, never widen it; a setting a tool does
    not take is InvalidConfig naming the entry (it was a 400 for any pair)."""
    shape = "export default () => [typeof crypto.randomUUID, typeof crypto.getRandomValues, typeof crypto.subtle]"
    fill = "export default (n) => crypto.getRandomValues(new Uint8Array(n)).length"
    async with make_host() as h:
        no_subtle = await h.execute(shape, tools=[["crypto", {"subtle": False}]])
        uuid_only = await h.execute(shape, tools=[["crypto", {"methods": ["randomUUID"]}]])
        with_subtle = await h.execute(shape, tools=[["crypto", {"methods": ["randomUUID", "subtle"]}]])
        within = await h.execute(fill, 8, tools=[["crypto", {"limit": 8, "methods": ["getRandomValues"]}]])
        beyond = await h.execute(fill, 9, tools=[["crypto", {"limit": 8}]])
        mixed = await h.execute("export default () => [typeof crypto, typeof channel]",
                                tools=[["crypto", None], "channel"])
        bad = {}
        for spec in (["crypto", {"nope": 1}], ["channel", {"x": 1}], ["crypto", {"limit": "8"}],
                     ["crypto", {"subtle": 1}], ["crypto", {"methods": ["digest"]}], ["crypto", 5], 7,
                     ["crypto", {}, 3], ["crypto", {"limit": -10**5000}], 10**5000):  # repr() refuses those two
            with pytest.raises(InvalidConfig) as exc:
                await h.execute("export default () => 1", tools=["channel", spec])
            bad["huge" if _huge(spec) else repr(spec)] = exc.value.message
    async with make_host(execute=ExecuteConfig(crypto=CryptoToolConfig(methods=["randomUUID"], subtle=False))) as h:
        not_widened = await h.execute(shape, tools=[["crypto", {"methods": ["getRandomValues", "subtle"],
                                                                "subtle": True}]])
    assert no_subtle.result == ["function", "function", "undefined"]
    assert uuid_only.result == ["function", "undefined", "undefined"]
    assert with_subtle.result == ["function", "undefined", "object"]
    assert within.ok and within.result == 8
    assert exception_of(beyond).name == "ResourceLimitExceeded"
    assert mixed.result == ["object", "object"]
    assert bad["['crypto', {'nope': 1}]"] == "tools[1]: 'crypto' takes no setting 'nope'; its settings are subtle, limit, methods"
    assert bad["['channel', {'x': 1}]"].startswith("tools[1]: 'channel' takes no setting 'x'")
    assert "crypto's limit is a number of bytes" in bad["['crypto', {'limit': '8'}]"]
    assert "crypto's subtle is true or false" in bad["['crypto', {'subtle': 1}]"]
    assert "crypto's methods is a list of getRandomValues, randomUUID, subtle" in bad["['crypto', {'methods': ['digest']}]"]
    assert "are an object" in bad["['crypto', 5]"]
    assert all(m.startswith("tools[1]: a tool name") for m in (bad["7"], bad["['crypto', {}, 3]"]))
    assert not_widened.result == ["undefined", "undefined", "undefined"]
    assert "bits" in bad["huge"]  # a ValueError of repr() before


async def test_a_crypto_reference_taken_at_load_serves_only_calls_that_asked(make_host):
    code = "const c = crypto; export default () => c ? c.randomUUID() : 'no crypto at load';"
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h:
        granted = await h.execute(code, tools=["crypto"])
        ungranted = await h.execute(code, tools=[])  # same code, same worker, no tool: loaded afresh
        again = await h.execute(code, tools=["crypto"])
        tampered = await h.execute("export default () => { crypto.randomUUID = () => 'x'; return 1; }",
                                   tools=["crypto"])
        after = await h.execute("export default () => crypto.randomUUID()", tools=["crypto"])
    assert granted.ok and UUID_RE.match(granted.result)
    assert ungranted.ok and ungranted.result == "no crypto at load"  # nothing kept from the first
    assert again.ok and UUID_RE.match(again.result)
    assert exception_of(tampered).name == "TypeError"  # the tool object is frozen
    assert after.ok and UUID_RE.match(after.result)


async def test_crypto_tool_limits_operations_bytes_and_methods(make_host):
    xc = ExecuteConfig(crypto=CryptoToolConfig(methods=["randomUUID"], max_ops=5, subtle=False))
    async with make_host(execute=xc) as h:
        five = await h.execute("export default () => Array.from({length: 5}, () => crypto.randomUUID()).length",
                               tools=["crypto"])
        six = await h.execute("export default () => { for (let i = 0; i < 6; i++) crypto.randomUUID(); }",
                              tools=["crypto"])
        shape = await h.execute("export default () => [typeof crypto.getRandomValues, typeof crypto.subtle]",
                                tools=["crypto"])
    async with make_host() as h:
        big = await h.execute("export default () => crypto.getRandomValues(new Uint8Array(65537))",
                              tools=["crypto"])
        digests = await h.execute(
            "export default async () => { for (let i = 0; i < 1001; i++)"
            " await crypto.subtle.digest('SHA-256', new Uint8Array(1)); }", tools=["crypto"])
    assert five.ok and five.result == 5
    exc = exception_of(six)
    assert exc.name == "ResourceLimitExceeded" and "more than 5 operations" in exc.message
    assert shape.ok and shape.result == ["undefined", "undefined"]
    exc = exception_of(big)
    assert exc.name == "ResourceLimitExceeded" and "65537 bytes" in exc.message
    exc = exception_of(digests)
    assert exc.name == "ResourceLimitExceeded" and "subtle.digest" in exc.message


async def test_unknown_tool_is_refused_with_invalid_config(make_host):
    async with make_host() as h:
        with pytest.raises(InvalidConfig, match="unknown tool 'fs'; the tools are crypto, channel, db"):
            await h.execute("export default () => 1", tools=["crypto", "fs"])


async def test_channel_tool_example_succeeds_and_logs_the_message(make_host):
    code = (
        'export default function(message) { console.log("Sending message:", message);'
        ' channel.emit("notification", { type: "info", text: message, timestamp: Date.now() });'
        ' return "Message sent successfully"; }'
    )
    async with make_host() as h:
        out = await h.execute(code, input="Task completed", tools=["channel"])
        # the worker is not harmed by the host call it left behind
        again = await h.execute("export default (x) => x + 1", input=1)
    assert out.ok is True, out.logs
    assert out.result == "Message sent successfully"
    assert [(e.level, e.message) for e in out.logs] == [("log", "Sending message: Task completed")]
    assert out.logs[0].name is None and out.logs[0].stack is None
    assert_recent_ms(out.logs[0].timestamp)
    assert again.ok and again.result == 2


async def test_thrown_error_becomes_an_exception_entry(make_host):
    code = 'export default function(x) { if (!x) throw new Error("Input is required"); return x * 2; }'
    async with make_host() as h:
        out = await h.execute(code, input=None)
        fine = await h.execute(code, input=4)
    exc = exception_of(out)
    assert (exc.name, exc.message) == ("Error", "Input is required")
    assert exc.stack and "Input is required" in exc.stack
    assert_recent_ms(exc.timestamp, slack_ms=10_000)
    assert fine.ok and fine.result == 8


async def test_infinite_loop_ends_in_execution_timeout(make_host):
    async with make_host() as h:
        t0 = time.monotonic()
        out = await h.execute("export default function() { while(true) {} }", timeout=1.0)
        elapsed = time.monotonic() - t0
        # the killed worker is replaced: the next execute is served normally
        after = await h.execute("export default () => 'alive'")
    exc = exception_of(out)
    assert (exc.name, exc.message) == ("TimeoutError", "Execution timeout")
    assert_recent_ms(exc.timestamp, slack_ms=10_000)
    assert 900 <= out.duration <= 2000, out.duration
    assert elapsed < 2.5
    assert after.ok and after.result == "alive"


async def test_console_logs_are_returned_in_order(make_host):
    code = (
        'export default function(data) { console.log("Processing data:", data);'
        ' const result = data.map(x => x * 2); console.log("Result:", result); return result; }'
    )
    async with make_host() as h:
        out = await h.execute(code, input=[1, 2, 3, 4, 5])
    assert out.ok, out.logs
    assert out.result == [2, 4, 6, 8, 10]
    assert [(e.level, e.message) for e in out.logs] == [
        ("log", "Processing data: [1,2,3,4,5]"),
        ("log", "Result: [2,4,6,8,10]"),
    ]
    assert out.logs[0].timestamp <= out.logs[1].timestamp
    assert_recent_ms(out.logs[0].timestamp)


# ---------------------------------------------------------------------------------------------
# Error cases


async def test_syntax_error_is_reported_as_syntax_error(make_host):
    async with make_host() as h:
        out = await h.execute("export default (x) => { return x +")
    exc = exception_of(out)
    assert exc.name == "SyntaxError", exc
    assert exc.message
    assert "base64" not in exc.message  # the code's data: URL is not echoed back


async def test_runtime_type_error_is_reported_as_type_error(make_host):
    async with make_host() as h:
        out = await h.execute("export default (x) => { return x.foo.bar }", input=None)
    exc = exception_of(out)
    assert exc.name == "TypeError"
    assert "foo" in exc.message or "null" in exc.message, exc.message
    assert exc.stack


async def test_thrown_primitive_becomes_exception_named_exception(make_host):
    async with make_host() as h:
        out = await h.execute("export default (x) => { throw 404 }")
    exc = exception_of(out)
    assert (exc.name, exc.message) == ("Exception", "404")


async def test_entry_that_is_not_a_function_is_an_entry_error(make_host):
    async with make_host() as h:
        out = await h.execute('export default "not a function"')
        missing = await h.execute("export const x = 1", entry="nope")
    exc = exception_of(out)
    assert (exc.name, exc.message) == ("EntryError", 'Entry "default" is not a function')
    exc = exception_of(missing)
    assert (exc.name, exc.message) == ("EntryError", 'Entry "nope" is not a function')


async def test_code_over_max_code_chars_raises_payload_too_large(make_host):
    async with make_host(execute=ExecuteConfig(max_code_chars=1000)) as h:
        small = await h.execute("export default () => 1")
        with pytest.raises(PayloadTooLarge):
            await h.execute("export default () => 1;\n" + "// padding\n" * 200)
        # the Isolate engine counts characters: 900 two-byte characters are under the limit
        wide = await h.execute("export default () => '" + "é" * 900 + "'.length")
        after = await h.execute("export default () => 2")
    assert small.ok and small.result == 1
    assert wide.ok and wide.result == 900
    assert after.ok and after.result == 2


def test_execute_defaults_follow_seed_001():
    xc = ExecuteConfig()
    assert (xc.pooled, xc.min_workers, xc.max_workers, xc.idle_timeout) == (True, 2, 8, 120.0)
    assert (xc.timeout, xc.max_code_chars) == (3.0, 100_000)


async def test_unhandled_rejection_fails_the_execute_with_one_exception_entry(make_host):
    code = (
        "export default async () => { Promise.reject(new Error('escaped'));"
        " await new Promise((r) => setTimeout(r, 50)); return 'finished'; }"
    )
    async with make_host() as h:
        out = await h.execute(code)
    exc = exception_of(out)  # one exception, reported once
    assert (exc.name, exc.message) == ("Error", "escaped")


async def test_stack_of_long_code_names_execute_not_the_data_url(make_host):
    # V8 shortens long URLs in stack frames ("data:...AAAA......tail"); none of it may remain.
    code = "// " + "x" * 3000 + "\nexport default () => { throw new Error('deep'); }"
    async with make_host() as h:
        out = await h.execute(code)
    exc = exception_of(out)
    assert exc.message == "deep"
    assert exc.stack and "(<execute>:2:" in exc.stack, exc.stack


async def test_user_code_that_exits_the_worker_is_reported_not_raised(make_host):
    async with make_host() as h:
        out = await h.execute("export default () => Deno.exit(7)")
        after = await h.execute("export default () => 'next'")
    exc = exception_of(out)
    assert exc.name == "WorkerCrashed"
    assert "exit code 7" in exc.message
    # what happened, not the host's own: no pid, no worker name, no output
    assert "pid" not in exc.message and "execute#" not in exc.message and "/" not in exc.message, exc.message
    assert after.ok and after.result == "next"


async def test_default_timeout_comes_from_execute_config(make_host):
    async with make_host(execute=ExecuteConfig(timeout=0.5)) as h:
        out = await h.execute("export default () => { while (true) {} }")
    exc = exception_of(out)
    assert exc.name == "TimeoutError"
    assert 400 <= out.duration <= 1500, out.duration


async def test_concurrent_executes_keep_their_own_logs_and_results(make_host):
    code = (
        "export default async (x) => { console.log('in', x);"
        " await new Promise((r) => setTimeout(r, 50)); console.log('out', x); return x * 10; }"
    )
    results: dict[int, ExecuteResult] = {}

    async def one(h, i: int) -> None:
        results[i] = await h.execute(code, input=i)

    async with make_host() as h, anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(one, h, i)
    for i, out in results.items():
        assert out.ok and out.result == i * 10, out
        assert [e.message for e in out.logs] == [f"in {i}", f"out {i}"]
    assert sorted(results) == list(range(6))


# ---------------------------------------------------------------------------------------------
# Pooling


async def test_pooled_executes_reuse_the_warm_workers(make_host):
    async with make_host() as h:
        pids = [(await h.execute("export default () => Deno.pid")).result for _ in range(6)]
    assert all(isinstance(p, int) for p in pids), pids
    assert len(set(pids)) <= 2, pids  # the Isolate engine's cluster keeps two warm workers
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1)) as h:
        one = {(await h.execute("export default () => Deno.pid")).result for _ in range(3)}
    assert len(one) == 1, one


async def test_unpooled_executes_get_a_fresh_worker_each(make_host):
    async with make_host(execute=ExecuteConfig(pooled=False)) as h:
        a = await h.execute("export default () => Deno.pid")
        b = await h.execute("export default () => Deno.pid")
        c = await h.execute("export default () => Deno.pid")
    assert a.ok and b.ok and c.ok, (a.logs, b.logs, c.logs)
    assert len({a.result, b.result, c.result}) == 3


async def test_unpooled_executes_take_a_worker_started_ahead(make_host):
    from support.processes import wait_for

    async with make_host(execute=ExecuteConfig(pooled=False)) as h:
        await h.warm_execute()
        (pool,) = h._exec.pools()

        def ready() -> set[int]:
            return {w.pid for w in pool.spares if w.state == "ready"}

        await wait_for(lambda: len(ready()) == 2, timeout=20)  # the spares (FRESH_SPARES)
        before = ready()
        first = await h.execute("export default () => Deno.pid")
        assert first.ok and first.result in before  # a spare served it: no spawn in its path
        # it served once and goes; another spare is started in its place
        await wait_for(lambda: len(ready()) == 2 and first.result not in ready(), timeout=20)
        second = await h.execute("export default () => Deno.pid")
        assert second.ok and second.result != first.result


# ---------------------------------------------------------------------------------------------
# Permissions

FETCH = "export default async function(url) { const r = await fetch(url); return await r.json(); }"


async def test_execute_without_permissions_cannot_fetch(make_host, local_server):
    url = f"http://127.0.0.1:{local_server.port}/denied"
    async with make_host() as h:
        out = await h.execute(FETCH, input=url)
    exc = exception_of(out)
    assert exc.name in ("NotCapable", "TypeError"), exc
    assert f"127.0.0.1:{local_server.port}" in exc.message
    assert local_server.connections == 0 and local_server.requests == []


async def test_execute_with_net_permission_fetches_the_local_server(make_host, local_server):
    url = f"http://127.0.0.1:{local_server.port}/allowed"
    grant = [f"127.0.0.1:{local_server.port}"]
    lan = ExecuteConfig(allow={"net": True, "allowPrivateNetwork": True})  # the operator's ceiling
    async with make_host(execute=lan) as h:
        out = await h.execute(FETCH, input=url, permissions={"net": grant, "allowPrivateNetwork": True})
        # the grant belongs to that execute, not to the shared unprivileged workers
        denied = await h.execute(FETCH, input=url)
        # loopback is on the deny list unless allowPrivateNetwork lifts it
        private = await h.execute(FETCH, input=url, permissions={"net": grant})
    assert exception_of(private).name in ("NotCapable", "TypeError")
    assert "Requires net access" in exception_of(private).message
    assert out.ok, out.logs
    assert out.result == {"served": "local", "path": "/allowed"}
    assert local_server.requests == ["/allowed"]
    assert exception_of(denied).name in ("NotCapable", "TypeError")


@pytest.mark.parametrize(
    ("permissions", "named"),
    [
        ({"nett": ["127.0.0.1"]}, []),
        ({"net": ["inherit"]}, ["inherit"]),
        ({"read": "all"}, []),
    ],
    ids=["unknown-field", "inherit", "wrong-type"],
)
async def test_invalid_execute_permissions_raise_invalid_config(make_host, permissions, named):
    async with make_host() as h:
        with pytest.raises(InvalidConfig) as e:
            await h.execute("export default () => 1", permissions=permissions)
        assert next(iter(permissions)) in e.value.message
        assert all(word in e.value.message for word in named), e.value.message
        assert (await h.execute("export default () => 1")).result == 1


# ---------------------------------------------------------------------------------------------
# The db tool


@pytest.fixture
def users_db(tmp_path):
    import sqlite3

    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, active INTEGER, note TEXT)")
        db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", [
            (1, "Alice", 1, None), (2, "Bob", 1, "x"), (3, "Carol", 0, None), (4, "Dan", 1, None), (5, "Eve", 0, None)])
        db.execute("CREATE TABLE secrets (k TEXT)")
    db.close()
    return path


async def test_db_tool_reads_the_configured_database(make_host, users_db):
    async with make_host(execute=ExecuteConfig(database=str(users_db), db_max_rows=3)) as h:
        ex4 = await h.execute(
            "export default async function() { const users = await db.users.select().limit(10); return { total: "
            "users.length, users: users.map(u => ({ id: u.id, name: u.name })) }; }", tools=["db"])
        found = await h.execute(
            "export default async () => (await db.users.findMany({ where: { active: 0 }, orderBy: { id: 'desc' } }))"
            ".map(u => u.name)", tools=["db"])
        chained = await h.execute(
            "export default async () => await db.users.select('name').where({ active: 1 }).orderBy('name', 'desc')"
            ".offset(1).limit(2)", tools=["db"])
        first = await h.execute("export default async () => (await db.users.findFirst({ where: { note: null } })).name",
                                tools=["db"])
        absent = await h.execute("export default () => typeof db")
        no_table = await h.execute("export default async () => await db['users; DROP TABLE users'].select()",
                                   tools=["db"])
        no_column = await h.execute("export default async () => await db.users.findMany({ where: { 'id = 1 OR 1': 1 } })",
                                    tools=["db"])
        count = await h.execute("export default async () => (await db.users.select()).length", tools=["db"])
    assert ex4.ok, ex4.logs
    assert ex4.result == {"total": 3, "users": [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"},
                                                {"id": 3, "name": "Carol"}]}  # db_max_rows caps the 10
    assert found.result == ["Eve", "Carol"]
    assert chained.result == [{"name": "Bob"}, {"name": "Alice"}]
    assert first.result == "Alice"
    assert absent.result == "undefined"
    assert "no table 'users; DROP TABLE users'" in exception_of(no_table).message
    assert "has no column" in exception_of(no_column).message
    assert count.result == 3  # still all there: nothing was dropped


async def test_db_tool_is_refused_without_a_database(make_host):
    async with make_host() as h:
        with pytest.raises(InvalidConfig, match=r"the db tool needs a database"):
            await h.execute("export default () => 1", tools=["db"])


async def test_db_tool_refuses_malformed_queries(make_host, users_db):
    async with make_host(execute=ExecuteConfig(database=str(users_db))) as h:
        negative = await h.execute("export default async () => await db.users.findMany({ limit: -1 })", tools=["db"])
        nested = await h.execute("export default async () => await db.users.findMany({ where: { id: { $gt: 1 } } })",
                                 tools=["db"])
    assert "malformed query" in exception_of(negative).message and "$.limit" in exception_of(negative).message
    assert "value must be a string, number, boolean or null" in exception_of(nested).message


def test_database_must_be_sqlite_or_postgresql():
    from host import HostConfig

    with pytest.raises(InvalidConfig, match=r"a sqlite file .* or a postgresql:// URL") as e:
        HostConfig(execute={"database": "mysql://user:pw@db.example:3306/app"})
    assert "pw" not in str(e.value)
    assert HostConfig(execute={"database": "postgresql://user:pw@db.example:5432/app"}).execute.database


async def test_a_plugin_worker_answers_an_execute_frame_with_an_error_and_keeps_serving(calc, make_host):
    # execute.ts (and node:vm, isolate.ts, tools.ts) load only in execute workers: a plugin's
    # worker answers ad-hoc code with an error, and serves its plugin's next call
    async with make_host() as h:
        worker = h.pool("calc").workers[0]
        done = await worker.execute("export default () => 1", entry="default", input=None, timeout=5, tools=[])
        assert done.info is not None and done.info.name == "ExecuteUnavailable"
        assert await h.call("calc", "add", 1, 2) == 3


async def test_a_sandbox_refusal_says_which_request_permission_allows_it(make_host):
    """Code reading an env variable or a file it was not given: the exception entry said Deno's
    "Requires env access to "HOME", run again with the --allow-env flag", a flag no caller of
    /execute can pass. It names the request's permission to add (as a plugin's refusal names
    its manifest field)."""
    async with make_host() as h:
        env = await h.execute('export default () => Deno.env.get("HOME")')
        read = await h.execute('export default () => Deno.readTextFileSync("/etc/hostname")')
    for out, wanted in ((env, 'add "HOME" to the request\'s permissions.env'),
                        (read, 'add "/etc/hostname" to the request\'s permissions.read')):
        (exc,) = [e for e in out.logs if e.level == "exception"]
        assert not out.ok and exc.name == "NotCapable" and wanted in exc.message, exc.message
        assert "--allow-" not in exc.message


async def test_the_entry_gets_the_context_only_when_it_declares_a_second_parameter(make_host):
    """Isolate calls entry(input). The host passed its context as a second argument to every
    entry, so `(x, factor = 3) => x * factor` lost its default (2 * context: null) and
    `(data, opts = {})` got the context's keys (helper-77's finding). A function declaring a
    second parameter without a default (length 2) still gets it."""
    async with make_host() as h:
        factor = await h.execute("export default (x, factor = 3) => x * factor", 2)
        opts = await h.execute("export default (data, opts = {}) => Object.keys(opts)", 1)
        ctx = await h.execute("export default (input, ctx) => [input, typeof ctx.signal]", "in")
    assert (factor.ok, factor.result) == (True, 6), factor
    assert (opts.ok, opts.result) == (True, []), opts
    assert (ctx.ok, ctx.result) == (True, ["in", "object"]), ctx
