"""What a plugin author sees at run time (seed 000 9.9's functions and context): console output of
any value, thrown values that are no Error, returned values of every kind, validateConfig's
answers, PluginError types, context.log levels and calls of what is not an exported function."""

from __future__ import annotations

import re

import pytest

from host import PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.one_backend, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)


def plugin(pid: str, extra: str = "", body: str = "export function f() { return 1; }") -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0"'
            f"{', ' + extra if extra else ''} }};\n{body}\n")


CONSOLE = """
class Point { constructor(x, y) { this.x = x; this.y = y; } }
export function show() {
  const a = { name: "a" }; a.self = a;
  console.log("cycle", a);
  console.log("bigint", 10n, { n: 2n ** 70n });
  console.log("map", new Map([[1, { a: 1 }]]), new Set([1, 2]));
  console.log("symbol", { [Symbol("k")]: 1 }, { u: undefined, v: NaN });
  console.log("getter", { get x() { throw new Error("boom"); } });
  console.log("class", new Point(1, 2));
  console.log("json", [1, 2, 3], { a: [1, { b: "c" }] }, "text", 5, null, new Date(0));
  return 1;
}
"""


async def test_console_shows_values_json_cannot_as_deno_inspects_them(plugin_dir, make_host):
    """Before: a cycle, or a BigInt anywhere in an object, logged "[object Object]"; a Map, a
    Set, symbol keys logged "{}" (JSON.stringify's view). What JSON shows faithfully stays JSON
    (the Isolate engine's logs: "Processing data: [1,2,3,4,5]", seed 001)."""
    plugin_dir.add("show.js", CONSOLE)
    async with make_host(pool=ONE) as h:
        assert await h.call("show", "show") == 1
        said = [e.message for e in h.logs("show") if e.kind == "console"]
    assert said == [
        "cycle <ref *1> { name: \"a\", self: [Circular *1] }",
        "bigint 10n { n: 1180591620717411303424n }",
        "map Map(1) { 1 => { a: 1 } } Set(2) { 1, 2 }",
        "symbol { Symbol(k): 1 } { u: undefined, v: NaN }",
        "getter { x: [Getter] }",
        "class Point { x: 1, y: 2 }",
        'json [1,2,3] {"a":[1,{"b":"c"}]} text 5 null "1970-01-01T00:00:00.000Z"',
    ]


THROWS = """
export function str() { throw "a plain string"; }
export function nothing() { throw null; }
export function num() { throw 404; }
export function obj() { throw { code: 42, message: "object message" }; }
export function getters() { throw { get message() { throw new Error("getter boom"); }, code: 7 }; }
export function map() { throw new Map([["why", "no key"]]); }
export function cycle() { const o = { name: "o" }; o.self = o; throw o; }
export function big() { throw 5n; }
"""


@pytest.mark.parametrize(("fn", "message"), [
    ("str", "a plain string"),
    ("nothing", "null"),
    ("num", "404"),
    ("obj", '{"code":42,"message":"object message"}'),
    ("getters", "{ message: [Getter], code: 7 }"),
    ("map", 'Map(1) { "why" => "no key" }'),
    ("cycle", '<ref *1> { name: "o", self: [Circular *1] }'),
    ("big", "5n"),
])
async def test_a_thrown_value_that_is_no_error_arrives_described(plugin_dir, make_host, fn, message):
    """Before: an object whose getter throws, a Map or a cycle arrived as "[object Object]" or
    "[object Map]": nothing of what was thrown."""
    from host import PluginError

    plugin_dir.add("thrower.js", THROWS)
    async with make_host(pool=ONE) as h:
        with pytest.raises(PluginError) as e:
            await h.call("thrower", fn)
    assert e.value.name == "Exception" and e.value.message == message


async def test_what_an_error_carries_besides_its_message_reaches_the_caller(plugin_dir, make_host):
    """helper-113: an Error subclass's own fields (Node's code, an HTTP status) and an
    AggregateError's inner errors were lost: details None, "All promises were rejected" alone."""
    from host import PluginError

    plugin_dir.add("carrier.js", plugin("carrier", body=(
        "class HttpError extends Error { constructor(m, status) { super(m); this.status = status; this.code = 'E_HTTP';"
        " this.body = { big: 1 }; } }\n"
        "export function sub() { throw new HttpError('teapot', 418); }\n"
        "export async function agg() { await Promise.any([Promise.reject(new Error('a down')), "
        "Promise.reject(new TypeError('b down'))]); }\n")))
    async with make_host(pool=ONE) as h:
        with pytest.raises(PluginError) as sub:
            await h.call("carrier", "sub")
        with pytest.raises(PluginError) as agg:
            await h.call("carrier", "agg")
    assert sub.value.name == "HttpError" and sub.value.details == {"status": 418, "code": "E_HTTP"}, sub.value.details
    assert agg.value.details == {"errors": ["Error: a down", "TypeError: b down"]}, agg.value.details


async def test_an_error_after_the_call_returned_says_what_it_was(plugin_dir, make_host):
    """helper-113: a throw in a timer, or a rejection nobody handled, after the call returned was
    logged as its bare message ("late failure"), as if the plugin had logged it."""
    from support.processes import wait_for

    plugin_dir.add("late.js", plugin("late", body=(
        "export function f() {\n  setTimeout(() => { throw new Error('late boom'); }, 5);\n"
        "  setTimeout(() => { Promise.reject(new Error('late reject')); }, 10);\n  return 1;\n}")))
    async with make_host(pool=ONE) as h:
        assert await h.call("late", "f") == 1
        await wait_for(lambda: len([e for e in h.logs("late") if "late " in e.message]) >= 2, timeout=10)
        said = [e.message for e in h.logs("late") if "late " in e.message]
    assert any(m.startswith("uncaught error while no call ran") and "late boom" in m for m in said), said
    assert any(m.startswith("unhandled rejection while no call ran") and "late reject" in m for m in said), said


RETURNS = """
class Point { constructor(x, y) { this.x = x; this.y = y; } }
export function undef() { return undefined; }
export function floats() { return [NaN, Infinity, -Infinity]; }
export function big() { return [10n, -(2n ** 63n)]; }
export function hugebig() { return 2n ** 70n; }
export function typed() { return [new Uint8Array([1, 2]), new Float64Array([1.5]), new ArrayBuffer(2)]; }
export function date() { return new Date(1500); }
export function collections() { return [new Map([["a", 1], [2, "b"]]), new Set([1, 1, 2])]; }
export function instances() { return [new Point(1, 2), new Error("lost"), { toJSON() { return "mine"; } }]; }
export function fn() { return { f() {} }; }
export async function unawaited(ids) { return ids.map(async (id) => ({ id })); }
export async function* stream(n) { for (let i = 0; i < n; i++) yield i; }
export function response() { return new Response("hi"); }
export function thenable() { class Money { constructor() { this.amount = 5; } then(f) { return f; } } return [new Money()]; }
export function headers() {
  const h = new Headers({ "X-A": "1" }); h.append("__proto__", "p"); h.append("Set-Cookie", "a=1"); h.append("Set-Cookie", "b=2");
  return h;
}
"""


async def test_what_a_caller_gets_for_each_kind_of_value_is_what_the_readme_says(plugin_dir, make_host):
    """The README's table of returned values, held to what a Python caller gets."""
    import datetime
    import math

    from host import PluginError

    plugin_dir.add("values.js", RETURNS)
    async with make_host(pool=ONE) as h:
        assert await h.call("values", "undef") is None
        nan, inf, ninf = await h.call("values", "floats")
        assert math.isnan(nan) and (inf, ninf) == (math.inf, -math.inf)
        assert await h.call("values", "big") == [10, -(2**63)]
        with pytest.raises(PluginError, match="bigint outside the 64-bit range"):
            await h.call("values", "hugebig")
        assert await h.call("values", "typed") == [b"\x01\x02", b"\x00\x00\x00\x00\x00\x00\xf8?", b"\x00\x00"]
        assert await h.call("values", "date") == datetime.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=datetime.UTC)
        assert await h.call("values", "collections") == [{"a": 1, 2: "b"}, [1, 2]]
        assert await h.call("values", "instances") == [{"x": 1, "y": 2}, {}, "mine"]
        with pytest.raises(PluginError, match="value is not serializable: function") as e:
            await h.call("values", "fn")
        assert e.value.name == "TypeError"
        # no data, and JSON would have sent {} for each (helper-80's finding): named, with the fix
        for fn, says in [("unawaited", "a Promise (a missing await"), ("stream", "an async generator"),
                         ("response", "a fetch Response (its body: await response.json")]:
            with pytest.raises(PluginError, match=re.escape(f"value is not serializable: {says}")):
                await h.call("values", fn, *([[1, 2]] if fn == "unawaited" else [3] if fn == "stream" else []))
        assert await h.call("values", "headers") == {"x-a": "1", "__proto__": "p", "set-cookie": ["a=1", "b=2"]}
        assert await h.call("values", "thenable") == [{"amount": 5}]  # a class with a then method is data


@pytest.mark.parametrize(("verdict", "says"), [
    ('{ isValid: false, errors: ["apiKey must start with sk-", "region is unknown"], warnings: [] }',
     "apiKey must start with sk-; region is unknown"),
    ('{ isValid: false, invalidMessage: "key expired" }', "key expired"),
    ('{ valid: false, message: "API Key 格式不正确" }', "API Key 格式不正确"),
    ("false", "invalid"),
])
async def test_validate_config_refuses_in_each_shape_the_seeds_write(plugin_dir, make_host, verdict, says):
    """Before: seed 002's ValidationResult (`is_valid`, `errors`: `{isValid: false, errors}` in
    JavaScript) and the usage scripts' `{isValid: false, invalidMessage}` were taken as a yes: the
    config the plugin refused was stored, and every call then ran with it."""
    from host import InvalidConfig

    plugin_dir.add("picky.js", plugin("picky", 'configSchema: { apiKey: { type: "string" } }',
                                      body="export function validateConfig(config) {\n"
                                           f'  return config.apiKey === "sk-ok" ? {{ valid: true }} : {verdict};\n}}\n'
                                           "export function f(config) { return 1; }"))
    async with make_host(pool=ONE) as h:
        with pytest.raises(InvalidConfig) as e:
            await h.set_config("picky", {"apiKey": "nope"})
        assert f"rejected by the plugin: {says}" in str(e.value)
        await h.set_config("picky", {"apiKey": "sk-ok"})


async def test_a_plugin_error_of_no_known_type_is_warned_of_where_it_was_made(plugin_dir, make_host):
    """Before: `new PluginError(ErrorTypes.AUTH_EROR, ...)` (a misspelt name: undefined) became
    UNKNOWN and `new PluginError("AUTH", ...)` kept a type the host classifies as nothing (a
    station's key is not reported invalid), with no word said (seed 000 9.9.5 lists the types)."""
    from host import PluginError

    path = plugin_dir.add("typo.js", plugin("typo", body=(
        'export function misspelt() { throw new PluginError(ErrorTypes.AUTH_EROR, "bad key"); }\n'
        'export function invented() { throw new PluginError("AUTH", "bad key"); }\n'
        'export function fine() { throw new PluginError(ErrorTypes.AUTH_ERROR, "bad key"); }')))
    async with make_host(pool=ONE) as h:
        for fn, kept in (("misspelt", "UNKNOWN"), ("invented", "AUTH"), ("fine", "AUTH_ERROR")):
            with pytest.raises(PluginError) as e:
                await h.call("typo", fn)
            assert e.value.error_type == kept
        warned = [e.message for e in h.logs("typo", level="warning") if e.kind == "console"]
    assert len(warned) == 2
    assert "errorType is undefined (a misspelt ErrorTypes name?), taken as UNKNOWN" in warned[0]
    assert f"{path}:2:" in warned[0]
    assert "errorType 'AUTH' is not one of ErrorTypes" in warned[1] and f"{path}:3:" in warned[1]


async def test_console_format_specifiers_are_applied_as_deno_applies_them(plugin_dir, make_host):
    """Before: console.log("%s has %d items", "cart", 3) logged "%s has %d items cart 3"."""
    plugin_dir.add("fmt.js", plugin("fmt", body=(
        "export function f() {\n"
        '  console.log("%s has %d items (%i%%), %f avg", "cart", 3.7, 42.9, 1.5);\n'
        '  console.log("obj %o and %O and %j", { a: 1 }, new Map([[1, 2]]), { b: [1] });\n'
        '  console.log("%c styled", "color: red", "extra", 5);\n'
        '  console.log("no args %s");\n'
        '  console.log("100%", "sure");\n'
        "  return 1;\n}")))
    async with make_host(pool=ONE) as h:
        assert await h.call("fmt", "f") == 1
        said = [e.message for e in h.logs("fmt") if e.kind == "console"]
    assert said == [
        "cart has 3 items (42%), 1.5 avg",
        'obj { a: 1 } and Map(1) { 1 => 2 } and {"b":[1]}',
        " styled extra 5",
        "no args %s",
        "100% sure",
    ]


async def test_context_log_takes_the_level_names_authors_write(plugin_dir, make_host):
    """Before: context.log("warning", ...) (Python's and most loggers' name) and "fatal" were
    logged at info level: a level not one of debug/info/warn/error became "log"."""
    plugin_dir.add("levels.js", plugin("levels", body=(
        "export function f(ctx) {\n"
        '  ctx.log("warning", "w"); ctx.log("WARN", "W"); ctx.log("fatal", "x"); ctx.log("critical", "c");\n'
        '  ctx.log("trace", "t"); ctx.log("verbose", "v");\n  return 1;\n}')))
    async with make_host(pool=ONE) as h:
        assert await h.call("levels", "f") == 1
        said = [(e.level, e.message) for e in h.logs("levels") if e.kind == "console"]
    assert said == [("warning", "w"), ("warning", "W"), ("error", "x"), ("error", "c"), ("debug", "t"), ("info", "v")]


async def test_context_log_without_a_level_logs_the_message(plugin_dir, make_host):
    """helper-113: ctx.log("oops only message") and ctx.log({msg: ...}) logged an empty line (the
    first argument was taken for a level and dropped)."""
    plugin_dir.add("onearg.js", plugin("onearg", body=(
        'export function f(ctx) {\n  ctx.log("only a message"); ctx.log({ msg: "an object" }); '
        'ctx.log("user", "logged in"); ctx.log("info", "ok");\n  return 1;\n}')))
    async with make_host(pool=ONE) as h:
        assert await h.call("onearg", "f") == 1
        said = [(e.level, e.message) for e in h.logs("onearg") if e.kind == "console"]
    assert said == [("info", "only a message"), ("info", '{"msg":"an object"}'), ("info", "user logged in"),
                    ("info", "ok")], said


async def test_a_failed_host_call_nothing_awaited_is_logged_not_lost(plugin_dir, make_host):
    """helper-113: ctx.cache.set({a: 1}, 1) or ctx.storage.set(42, "x") without await failed with
    nothing logged, and nothing stored (the runtime marks host calls handled, so that a forgotten
    one does not fail the call). It is logged at error level naming the call; one awaited and
    caught is not logged twice."""
    from support.processes import wait_for

    plugin_dir.add("forgot.js", plugin("forgot", body=(
        "export async function f(ctx) {\n  ctx.storage.set(42, 'x');\n"
        "  try { await ctx.cache.set({ a: 1 }, 1); } catch (e) { return e.name; }\n}\n"
        # started, then awaited later, after it failed: no log (helper-116: logged as not awaited)
        "export async function later(ctx) {\n  const b = ctx.storage.set(7, 'x');\n"
        "  await new Promise((r) => setTimeout(r, 50));\n  try { await b; } catch (e) { return e.name; }\n}")))
    async with make_host(pool=ONE) as h:
        assert await h.call("forgot", "later") == "InvalidHostCall"
        assert await h.call("forgot", "f") == "InvalidHostCall"
        await wait_for(lambda: h.logs("forgot", level="error"), timeout=5)
        await h.call("forgot", "later")  # a turn more: a late verdict of the first would be logged by now
        said = [e.message for e in h.logs("forgot", level="error")]
    assert len(said) == 1 and said[0].startswith("ctx.storage.set failed and nothing awaited it"), said


async def test_calling_what_is_not_an_exported_function_says_what_is(plugin_dir, make_host):
    """Before: 'no exported function "queryBalence"' for a typo, and the same for an export that
    is a number: nothing named the functions there are, or what the export is."""
    from host import FunctionNotFound

    plugin_dir.add("fns.js", plugin("fns", body=(
        "export async function queryBalance() { return 1; }\nexport const rate = 5;\n"
        "export function helper() {}")))
    async with make_host(pool=ONE) as h:
        with pytest.raises(FunctionNotFound) as typo:
            await h.call("fns", "queryBalence")
        with pytest.raises(FunctionNotFound) as number:
            await h.call("fns", "rate")
    assert 'no exported function "queryBalence"; did you mean "queryBalance"? (its functions: helper, queryBalance)' \
        in str(typo.value)
    assert '"rate" is exported, but as a number, not a function' in str(number.value)


async def test_an_exported_class_is_not_listed_as_callable_and_a_call_to_it_says_it_is_a_class(plugin_dir, make_host):
    """Before: an exported class was among the plugin's functions (list, info, the dashboard) and
    a call failed inside the plugin with "Class constructor Client cannot be invoked without 'new'"."""
    from host import FunctionNotFound

    plugin_dir.add("classy.js", plugin("classy", body=(
        "export class Client { constructor() { this.n = 1; } }\n"
        "export const Other = class {};\n"
        "export function make() { return new Client().n; }")))
    async with make_host(pool=ONE) as h:
        assert h.plugin("classy").exports == ["make"]
        assert await h.call("classy", "make") == 1
        with pytest.raises(FunctionNotFound) as e:
            await h.call("classy", "Client")
        with pytest.raises(FunctionNotFound) as typo:
            await h.call("classy", "Clinet")
    assert '"Client" is exported, but as a class' in str(e.value) and "new" in str(e.value)
    assert "its functions: make)" in str(typo.value)
