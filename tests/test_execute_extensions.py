"""execute extensions (issue 18, item 5): operator tools registered in ``[execute.tools.NAME]``
(Python callables of the host that code calls as globals, over the ``tool.call`` host call) and
the ``[execute.hooks]`` pipeline (validate, before_execute, after_execute, format). The
callables live in a module the test writes to tmp_path and puts on sys.path."""

from __future__ import annotations

import itertools
import sys
import textwrap

import anyio
import pytest
from support.servers import served

from host import ExecuteConfig, ExecuteRefused, GrantRefused, HookFailed, InvalidConfig, PluginHost
from host import protocol as p
from host.errors import InvalidHostCall
from host.security.audit import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]

ONE = {"min_workers": 1, "max_workers": 1}
OPERATOR = '''
import anyio
import msgspec
from host import InvalidArguments
from host.execute import ExecuteResult

calls = []

def weather(city, unit="C"):
    calls.append(city)
    if city == "nowhere":
        raise ValueError("no such city")
    return {"city": city, "temp": 21, "unit": unit}

async def lookup(key):
    await anyio.sleep(0)
    return {"key": key, "found": True}

async def slow():
    await anyio.sleep(30)

def unsendable():
    return object()

def typed(x):
    raise InvalidArguments(f"typed refusal of {x}")

def validate(request):
    if "forbidden" in request.code:
        return "no forbidden words"
    return None

def before(request):
    if request.input is not msgspec.UNSET and isinstance(request.input, int):
        request.input = request.input * 10
    if request.entry == "escalate":
        request.entry = "default"
        request.permissions = {"run": ["id"]}

async def after(request, result):
    if result.ok and isinstance(result.result, int):
        return ExecuteResult(ok=True, result=result.result + 1, logs=result.logs, duration=result.duration)
    return None

def fmt(answer, result):
    return {"success": answer["ok"], "value": answer.get("result"), "logs": len(result.logs),
            "levels": [e["level"] for e in answer.get("logs", [])]}

def broken(*args):
    raise RuntimeError("hook bug")

seen_tools = []

def anon_no_tools(request):  # an operator's policy of before: anonymous requests use no tools
    seen_tools.append((list(request.tools), list(request.default_tools)))
    if request.by == "anon" and request.tools:
        return f"anonymous requests use no tools (asked {request.tools})"
    if request.entry == "bare":
        request.default_tools = []
        request.entry = "default"
    return None

async def stuck(*args):
    await anyio.sleep(30)

def wrong(*args):
    return 42
'''
_seq = itertools.count()


@pytest.fixture
def operator(tmp_path, monkeypatch) -> str:
    """The name of a fresh module holding the operator's callables (unique: modules are cached)."""
    name = f"operator_ext_{next(_seq)}_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(OPERATOR))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def tools_of(mod: str, **extra: dict) -> dict:
    out = {name: {"function": f"{mod}:{name}"} for name in ("weather", "lookup", "unsendable", "typed")}
    return out | extra


def audit(state, event: str) -> list[dict]:
    return [x for x in read_audit(state / "audit.jsonl") if x["event"] == event]


# ---------------------------------------------------------------------------------------------
# tools


async def test_operator_tools_sync_and_async_are_globals_of_code_that_asks_and_are_audited(
        make_host, operator, tmp_path):
    state = tmp_path / "state"
    code = ("export default async (city) => ({ w: await weather(city, 'F'), l: await lookup('k'), "
            "c: typeof crypto.randomUUID })")
    async with make_host(state_dir=str(state), execute=ExecuteConfig(**ONE, tools=tools_of(operator))) as h:
        out = await h.execute(code, "Oslo", tools=["weather", "lookup", "crypto"])
        assert out.ok, out.logs
        assert out.result == {"w": {"city": "Oslo", "temp": 21, "unit": "F"}, "l": {"key": "k", "found": True},
                              "c": "function"}
        # Not asked for: neither the global nor the built-in tool is there.
        bare = await h.execute("export default () => [typeof weather, typeof crypto]", tools=[])
        assert bare.result == ["undefined", "undefined"], bare.logs
    lines = audit(state, "execute.tool")
    assert [(x["tool"], x["outcome"]) for x in lines] == [("weather", "ok"), ("lookup", "ok")]
    assert lines[0]["function"] == f"{operator}:weather" and lines[0]["duration_ms"] >= 0
    assert audit(state, "execute")[0]["tools"] == ["weather", "lookup", "crypto"]


async def test_host_calls_an_execution_left_unawaited_end_with_it_and_leave_the_next_caller_its_own(
        make_host, operator, tmp_path):
    """An execution that fired 64 calls of a slow tool, did not await them and answered held the
    worker's host-call slots until they finished (its own deadline, 30 s): the next caller on the
    worker had every tool call refused with ResourceLimitExceeded (helper-98)."""
    state = tmp_path / "state"
    tools = tools_of(operator, slow={"function": f"{operator}:slow", "timeout": 60})
    leaver = ("export default async () => { for (let i = 0; i < 64; i++) slow().catch(() => {});"
              " await new Promise((r) => setTimeout(r, 300)); return 'answered'; }")
    async with make_host(state_dir=str(state), execute=ExecuteConfig(**ONE, tools=tools)) as h:
        a = await h.execute(leaver, tools=["slow"], timeout=30)
        with anyio.fail_after(10):
            b = await h.execute("export default async () => await lookup('k')", tools=["lookup"])
        # the next one makes its own 64 at once, right after (helper-103: the host still counted the
        # first one's until their replies were written, and killed the worker at the 65th)
        again = await h.execute(leaver.replace("300", "20"), tools=["slow"], timeout=30)
        with anyio.fail_after(10):
            many = await h.execute("export default async () => (await Promise.all(Array.from({ length: 64 }, "
                                   "() => lookup('k')))).length", tools=["lookup"])
    assert a.ok and a.result == "answered", a.logs
    assert b.ok, b.logs  # before: ResourceLimitExceeded, at most 64 host calls may be in flight
    assert b.result == {"key": "k", "found": True}
    assert again.ok and many.ok and many.result == 64, many.logs
    # the host stopped serving them when the execution settled (their audit lines say so)
    outcomes = [(x["tool"], x["outcome"]) for x in audit(state, "execute.tool")]
    assert sorted(set(outcomes)) == [("lookup", "ok"), ("slow", "cancelled")] and len(outcomes) == 2 * 64 + 1 + 64


async def test_a_tool_that_raises_times_out_or_returns_the_unsendable_is_a_typed_error_code_can_catch(
        make_host, operator, tmp_path):
    state = tmp_path / "state"
    tools = tools_of(operator, slow={"function": f"{operator}:slow", "timeout": 0.3})
    catch = ("export default async () => { try { await {CALL}; return 'no error' } "
             "catch (e) { return [e.name, e.message] } }")
    async with make_host(state_dir=str(state), execute=ExecuteConfig(**ONE, tools=tools)) as h:
        async def run(call: str, tool: str) -> list:
            out = await h.execute(catch.replace("{CALL}", call), tools=[tool], timeout=10)
            assert out.ok, out.logs
            return out.result

        name, message = await run("weather('nowhere')", "weather")
        assert (name, message) == ("ToolFailed", "tool weather: ValueError: no such city")
        name, message = await run("unsendable()", "unsendable")
        assert name == "ToolFailed" and "MessagePack cannot carry" in message
        name, message = await run("typed(7)", "typed")
        assert (name, message) == ("InvalidArguments", "typed refusal of 7")
        name, message = await run("slow()", "slow")
        assert name == "ToolFailed" and "no answer within 0.3s" in message and "[execute.tools.slow] timeout" in message
        # The worker survived all of it: the next execution uses a tool again.
        assert (await h.execute("export default () => weather('Rome')", tools=["weather"])).result["city"] == "Rome"
    outcomes = [(x["tool"], x["outcome"], x.get("error")) for x in audit(state, "execute.tool")]
    assert outcomes == [("weather", "error", "ToolFailed"), ("unsendable", "error", "ToolFailed"),
                        ("typed", "error", "InvalidArguments"), ("slow", "error", "ToolFailed"),
                        ("weather", "ok", None)]


async def test_unknown_tools_and_bad_tool_settings_are_refused_naming_the_setting(make_host, operator):
    async with make_host(execute=ExecuteConfig(**ONE, tools=tools_of(operator))) as h:
        with pytest.raises(InvalidConfig, match=r"unknown tool 'radar'; the tools are crypto, channel, db, db:write, "
                                                r"weather, lookup, unsendable, typed \(the operator adds tools with "
                                                r"\[execute.tools.NAME\] in host.toml\)"):
            await h.execute("export default 1", tools=["radar"])
        with pytest.raises(InvalidConfig, match="the db tool needs a database"):  # built-ins: same path as before
            await h.execute("export default 1", tools=["db"])
    for tools, match in [
        ({"weather": {"function": f"{operator}:missing"}}, r"\[execute.tools.weather\] function = .*has no 'missing'"),
        ({"weather": {"function": "no_such_module_x:f"}}, r"\[execute.tools.weather\] function = .*cannot import"),
        ({"weather": {"function": "nocolon"}}, r"\[execute.tools.weather\] function = 'nocolon': write it as"),
        ({"fetch": {"function": f"{operator}:weather"}}, r"\[execute.tools.fetch\]: the name must be"),
        ({"db": {"function": f"{operator}:weather"}}, r"\[execute.tools.db\]: the name must be"),
    ]:
        with pytest.raises(InvalidConfig, match=match):
            async with make_host(execute=ExecuteConfig(**ONE, tools=tools)):
                pass


async def test_the_host_refuses_tool_calls_from_a_plugin_or_an_execution_that_did_not_ask(
        make_host, calc, operator):
    """The worker runtime only helps: whatever a worker sends, the host runs an operator's tool
    only for an execution in flight that asked for it."""
    async with make_host(execute=ExecuteConfig(**ONE, tools=tools_of(operator))) as h:
        await h.warm_execute()
        plugin_worker = h.pool("calc").workers[0]
        (pool,) = h._exec.pools()
        execute_worker = pool.workers[0]
        for worker, args in [(plugin_worker, ["weather", ["x"]]), (execute_worker, ["weather", ["x"]]),
                             (execute_worker, ["weather", "x"]), (execute_worker, ["nope", []])]:
            with pytest.raises(InvalidHostCall):
                await h._services.handle(worker, p.HostCall(id=1, op="tool.call", args=args, call=1))
    assert sys.modules[operator].calls == []  # never ran


# ---------------------------------------------------------------------------------------------
# hooks


def hooks(mod: str, **names: str) -> dict:
    return {kind: f"{mod}:{fn}" for kind, fn in names.items()}


async def test_validate_refuses_and_before_and_after_execute_adjust_input_and_result(make_host, operator, tmp_path):
    state = tmp_path / "state"
    xc = ExecuteConfig(**ONE, hooks=hooks(operator, validate="validate", before_execute="before",
                                          after_execute="after"))
    async with make_host(state_dir=str(state), execute=xc) as h:
        out = await h.execute("export default (x) => x * 2", input=2)
        assert out.ok and out.result == 41  # before: 2 -> 20; code: 40; after: +1
        with pytest.raises(ExecuteRefused, match=r"refused by \[execute.hooks\] validate \(.*:validate\): "
                                                 r"no forbidden words"):
            await h.execute("export default () => 'forbidden'")
        # what before_execute returns is judged by admission: no way past [execute.allow]
        with pytest.raises(GrantRefused, match=r"beyond what the operator allows \(\[execute.allow\]"):
            await h.execute("export default () => 1", entry="escalate")
        left_out = await h.execute("export default (x) => String(x === undefined)")
        assert left_out.result == "true", left_out.logs  # an omitted input stays undefined through the hooks
    refused = [x for x in audit(state, "execute") if x["action"] == "refused"]
    assert [x["error"] for x in refused] == ["ExecuteRefused", "GrantRefused"]


@pytest.mark.parametrize("kind", ["validate", "before_execute", "after_execute"])
async def test_a_hook_that_fails_times_out_or_returns_the_wrong_type_is_hook_failed(make_host, operator, kind):
    async with make_host(execute=ExecuteConfig(**ONE, hooks={**hooks(operator, **{kind: "broken"})})) as h:
        with pytest.raises(HookFailed, match=rf"\[execute.hooks\] {kind} \(.*:broken\) raised RuntimeError: hook bug"):
            await h.execute("export default () => 1")
    xc = ExecuteConfig(**ONE, hooks={**hooks(operator, **{kind: "stuck"}), "timeout": 0.2})
    async with make_host(execute=xc) as h:
        with pytest.raises(HookFailed, match=rf"\[execute.hooks\] {kind} .* did not finish within 0.2s"):
            await h.execute("export default () => 1")
    async with make_host(execute=ExecuteConfig(**ONE, hooks=hooks(operator, **{kind: "wrong"}))) as h:
        with pytest.raises(HookFailed, match=rf"\[execute.hooks\] {kind} \(.*:wrong\) returned int"):
            await h.execute("export default () => 1")


async def test_a_hook_that_cannot_be_imported_fails_the_start_naming_the_setting(tmp_path, operator):
    from host import HostConfig

    cfg = HostConfig(plugins_dir=str(tmp_path), state_dir=str(tmp_path / "state"),
                     execute=ExecuteConfig(**ONE, hooks={"format": f"{operator}:nope"}))
    with pytest.raises(InvalidConfig, match=r"\[execute.hooks\] format = .*has no 'nope'"):
        async with PluginHost(cfg):
            pass


# ---------------------------------------------------------------------------------------------
# over HTTP


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_tools_and_hooks_over_http(make_host, operator):
    xc = ExecuteConfig(**ONE, tools=tools_of(operator),
                       hooks=hooks(operator, validate="validate", format="fmt"))
    async with make_host(execute=xc) as h, served(h, enable_execute=True) as (_, http):
        async def execute(body: dict) -> tuple[int, dict]:
            async with http.post("/execute", json=body) as r:
                return r.status, await r.json()

        status, out = await execute({"code": "export default async (c) => { console.info(c); "
                                             "return (await weather(c)).temp }", "input": "Oslo", "tools": ["weather"]})
        assert (status, out) == (200, {"success": True, "value": 21, "logs": 1, "levels": ["info"]})  # by format
        status, out = await execute({"code": "export default () => 1", "tools": ["radar"]})
        assert status == 400 and "[execute.tools.NAME]" in out["error"]["message"], out
        status, out = await execute({"code": "export default () => 'forbidden'"})
        assert status == 400 and out["error"]["type"] == "ExecuteRefused", out
        assert "[execute.hooks] validate" in out["error"]["message"] and "no forbidden words" in out["error"]["message"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_a_failing_format_hook_is_a_typed_answer_not_a_500(make_host, operator):
    xc = ExecuteConfig(**ONE, hooks=hooks(operator, format="broken"))
    async with make_host(execute=xc) as h, served(h, enable_execute=True) as (_, http), \
            http.post("/execute", json={"code": "export default () => 1"}) as r:
        status, out = r.status, await r.json()
    assert status == 502 and out["error"]["type"] == "HookFailed", out
    assert "[execute.hooks] format" in out["error"]["message"] and "hook bug" in out["error"]["message"]


# ---------------------------------------------------------------------------------------------
# module tools

FILES_TOOL = """
export function setup(ctx: { name: string; config: { path: string; greeting: string } }) {
  return Object.freeze({
    greet: (n: string): string => `${ctx.config.greeting}, ${n} (from ${ctx.name})`,
    note: (): string => Deno.readTextFileSync(ctx.config.path).trim(),
  });
}
"""


def files_tool(tmp_path, **over) -> tuple[dict, str]:
    """A module tool outside the plugins directory that reads one file, and that file's directory."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "note.txt").write_text("a note\n")
    (tmp_path / "files_tool.ts").write_text(FILES_TOOL)
    tool = {"kind": "module", "module": str(tmp_path / "files_tool.ts"), "permissions": {"read": [str(data)]},
            "config": {"path": str(data / "note.txt"), "greeting": "Hi"}}
    return tool | over, str(data)


async def test_a_module_tool_gets_its_permissions_and_code_sees_what_setup_returns(make_host, tmp_path):
    state = tmp_path / "state"
    tool, data = files_tool(tmp_path)
    xc = ExecuteConfig(**ONE, allow={"net": True, "read": [data]}, tools={"files": tool})
    read = f"export default () => Deno.readTextFileSync({str(data + '/note.txt')!r})"
    async with make_host(state_dir=str(state), execute=xc) as h:
        out = await h.execute("export default () => [files.greet('Ann'), files.note()]", tools=["files"])
        assert out.ok and out.result == ["Hi, Ann (from files)", "a note"], out.logs
        # Without the tool: neither the global nor its read grant.
        bare = await h.execute(read)
        assert not bare.ok and bare.logs[-1].name == "NotCapable", bare.logs
        assert (await h.execute("export default () => typeof files")).result == "undefined"
    lines = audit(state, "execute")
    assert lines[0]["tools"] == ["files"] and lines[0]["permissions"]["read"] == [data], lines[0]


async def test_a_module_tool_without_setup_fails_the_execution_that_asks_for_it(make_host, tmp_path):
    (tmp_path / "bad_tool.js").write_text("export const nothing = 1;\n")
    xc = ExecuteConfig(**ONE, tools={"bad": {"kind": "module", "module": str(tmp_path / "bad_tool.js")}})
    async with make_host(execute=xc) as h:
        out = await h.execute("export default () => 1", tools=["bad"])
        assert not out.ok and "tool bad: its module exports no setup(ctx) function" in out.logs[-1].message
        assert (await h.execute("export default () => 2")).result == 2  # others are unaffected


async def test_module_tool_settings_are_checked_at_start_naming_the_setting(make_host, tmp_path):
    tool, _ = files_tool(tmp_path)
    for tools, match in [
        ({"files": tool}, r"\[execute.tools.files\] permissions ask for read: .*beyond \[execute.allow\]"),
        ({"files": tool | {"module": str(tmp_path / "missing.js")}},
         r"\[execute.tools.files\] module = .*missing.js': cannot read it"),
        ({"files": tool | {"module": str(tmp_path / "tool.py")}}, r"\[execute.tools.files\] module: a .js or .ts"),
        ({"files": {"function": "x:y", "config": {"a": 1}}},
         r'\[execute.tools.files\]: module, permissions and config belong to kind = "module"'),
    ]:
        with pytest.raises(InvalidConfig, match=match):
            async with make_host(execute=ExecuteConfig(**ONE, tools=tools)):
                pass


def test_host_toml_reads_tools_and_hooks_with_module_paths_relative_to_the_file(tmp_path):
    from host import load_config

    (tmp_path / "host.toml").write_text(
        '[execute.tools.weather]\nfunction = "ops.tools:weather"\ntimeout = 2\n'
        '[execute.tools.files]\nkind = "module"\nmodule = "tools/files.js"\npermissions = { net = ["api.example.com"] }\n'
        'config = { greeting = "Hi" }\n'
        '[execute.hooks]\nvalidate = "ops.hooks:validate"\ntimeout = 1.5\n')
    xc = load_config(tmp_path / "host.toml").execute
    assert xc.tools["weather"].function == "ops.tools:weather" and xc.tools["weather"].timeout == 2
    files = xc.tools["files"]
    assert files.module == str(tmp_path / "tools" / "files.js") and files.permissions.net == ["api.example.com"]
    assert files.config == {"greeting": "Hi"}
    assert (xc.hooks.validate, xc.hooks.timeout) == ("ops.hooks:validate", 1.5)
    (tmp_path / "host.toml").write_text('[execute.hooks]\nvalidated = "a:b"\n')
    with pytest.raises(InvalidConfig, match="validated"):
        load_config(tmp_path / "host.toml")


async def test_hooks_see_the_tools_a_request_asked_for_not_the_default_crypto(make_host, operator, tmp_path):
    """A request naming no tools gets crypto (as the Isolate engine's workers have Web Crypto),
    but hooks and the audit see what it asked for: a validate policy written as `if
    request.tools: refuse` refused every such request once the default showed as ["crypto"]
    (helper-94). The default is request.default_tools, which a hook may empty."""
    import importlib

    state = tmp_path / "state"
    xc = ExecuteConfig(**ONE, hooks=hooks(operator, validate="anon_no_tools", before_execute="anon_no_tools"))
    async with make_host(state_dir=str(state), execute=xc) as h:
        plain = await h.execute("export default () => typeof crypto.randomUUID", by="anon")
        bare = await h.execute("export default () => typeof crypto", entry="bare", by="anon")
        with pytest.raises(ExecuteRefused):
            await h.execute("export default () => 1", tools=["crypto"], by="anon")
    assert plain.ok and plain.result == "function", plain.logs
    assert bare.ok and bare.result == "undefined", bare.logs
    seen = importlib.import_module(operator).seen_tools
    assert seen[0] == ([], ["crypto"]) and seen[-1] == (["crypto"], [])
    assert [x["tools"] for x in audit(state, "execute")][:2] == [[], []]
