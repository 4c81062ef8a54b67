"""A call with too few or too many arguments for what the function declares is refused by the
host before it goes out (host/arity.py), instead of the context landing in a parameter."""

from __future__ import annotations

import time

import pytest

from host import InvalidArguments, PluginUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SHAPES = """
export const metadata = { id: "shapes", name: "Shapes", version: "1.0.0", apiVersion: "1.0",
  functions: { total: { params: ["...numbers"] }, greet: { params: ["name", "greeting?"] } } };
export function add(a, b) { return a + b; }
export function withContext(a, context) { return typeof context.signal; }
export function total(...numbers) { return numbers.length; }  // no context after a rest parameter
export function greet(name, greeting = "hi") { return `${greeting} ${name}`; }
export function fixed() { return "ok"; }
export const arrow = (x, { signal }) => typeof signal;
"""


async def test_too_few_or_too_many_arguments_are_refused_naming_the_function(make_host, plugin_dir):
    plugin_dir.add("shapes.js", SHAPES)
    async with make_host() as host:
        with pytest.raises(InvalidArguments) as missing:
            await host.call("shapes", "add")
        assert str(missing.value).startswith("shapes.add: takes 2 arguments (a, b), 0 given")
        assert "metadata.functions.add.params" in str(missing.value) and "shapes.js" in str(missing.value)
        with pytest.raises(InvalidArguments, match=r"takes 2 arguments \(a, b\), 1 given"):
            await host.call("shapes", "add", 1)
        with pytest.raises(InvalidArguments, match="3 given"):
            await host.call("shapes", "add", 1, 2, 3)
        with pytest.raises(InvalidArguments, match=r"takes 0 arguments, 1 given"):
            await host.call("shapes", "fixed", 1)
        assert await host.call("shapes", "add", 1, 2) == 3
        assert await host.call("shapes", "fixed") == "ok"
        # a last parameter named context (or a pattern) is the context's place, not an argument
        assert await host.call("shapes", "withContext", 1) == "object"
        assert await host.call("shapes", "arrow", 1) == "object"
        with pytest.raises(InvalidArguments, match=r"takes 1 argument \(x\), 0 given"):
            await host.call("shapes", "arrow")
        # the manifest's declared signature wins over the source
        assert await host.call("shapes", "total") == 0 and await host.call("shapes", "total", 1, 2, 3) == 3
        assert await host.call("shapes", "greet", "ann") == "hi ann"
        with pytest.raises(InvalidArguments, match=r"takes 1 to 2 arguments \(name, greeting\?\), 0 given"):
            await host.call("shapes", "greet")
        # a refused call never reached the worker: it still serves, nothing was counted as failing
        info = host.plugin("shapes")
        assert info.state == "running" and info.crashes == 0


OPTIONS = """
export const metadata = { id: "options", name: "Options", version: "1.0.0", apiVersion: "1.0",
  functions: { sum: { params: ["...nums"] } } };
export function sum(...nums: number[]) { return nums.reduce((a, b) => a + b, 0); }
export function count(...items: unknown[]) { return items.length; }  // undeclared: the context is last
const logged = (fn: (...a: any[]) => unknown) => (...args: any[]) => fn(...args);
export const getUser = logged((id: number, ctx: any) => `${typeof ctx?.log}:${id}`);  // a wrapper passes it on
export function search({ query, limit = 10 }: { query: string; limit?: number }) { return `${query}/${limit}`; }
export const ask = async ({ q }: { q: string }) => q;
export function opt(a: number, b?: number) { return a + (b ?? 0); }
export const optArrow = (a: string, b?: string, c?: string) => [a, b ?? "-", c ?? "-"].join("");
export function withLog(a: number, { log, signal }: any) { return typeof log + typeof signal; }
export function onlyContext({ config }: any) { return typeof config; }
export function formatted(
  query: string,
  limit?: number,
) { return `${query}/${limit ?? 10}`; }
export function ov(a: string): string;
export function ov(a: number, b?: number): string;
export function ov(a: any, b?: any) { return `${a}/${b ?? "-"}`; }
export function withThis(this: unknown, a: number, b?: number) { return a + (b ?? 0); }
export default function (a: number, b?: number) { return a * (b ?? 1); }
"""


async def test_rest_parameters_options_objects_and_optional_typescript_parameters(make_host, plugin_dir, caplog):
    # helper-80's findings: sum(...nums) got the context as its last number ("6[object Object]"),
    # a single options object was taken for the context ("takes 0 arguments, 1 given"), and
    # TypeScript's b?: number was required (the ? is gone from the code that runs).
    import logging

    path = plugin_dir.add("options.ts", OPTIONS)
    with caplog.at_level(logging.WARNING, logger="host"):
        async with make_host() as host:
            await host.call("options", "sum", 1)
    said = [r.getMessage() for r in caplog.records if "gets the context as the last element" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith("plugin options: count(...items) gets the context") and \
        'functions = { count: { params: ["...items"] } }' in said[0] and str(path) in said[0], said
    assert said[1].startswith("plugin options: getUser(...args) gets the context") and "sum" not in "".join(said)
    async with make_host() as host:
        assert await host.call("options", "sum", 1, 2, 3) == 6  # declared "...nums": no context
        assert await host.call("options", "sum") == 0
        assert await host.call("options", "count", 1, 2) == 3  # the context is its last item, as documented
        assert await host.call("options", "getUser", 7) == "function:7"  # helper-81: a wrapper keeps it
        assert await host.call("options", "formatted", "q") == "q/10"  # a trailing comma (deno fmt)
        assert await host.call("options", "ov", 1) == "1/-"  # overloads: the implementation's parameters
        assert await host.call("options", "withThis", 2) == 2  # `this` is no parameter
        assert await host.call("options", "default", 3) == 3
        assert await host.call("options", "search", {"query": "x"}) == "x/10"
        assert await host.call("options", "ask", {"q": "y"}) == "y"
        with pytest.raises(InvalidArguments, match=r"takes 1 argument \(\{query, limit\}\), 0 given"):
            await host.call("options", "search")
        assert await host.call("options", "opt", 1) == 1 and await host.call("options", "opt", 1, 2) == 3
        with pytest.raises(InvalidArguments, match=r"takes 1 to 2 arguments \(a, b\?\), 0 given"):
            await host.call("options", "opt")
        assert await host.call("options", "optArrow", "a") == "a--"
        assert await host.call("options", "optArrow", "a", "b", "c") == "abc"
        assert await host.call("options", "withLog", 1) == "functionobject"  # a pattern of the context's keys
        assert await host.call("options", "onlyContext") == "object"


async def test_a_function_length_the_plugin_forged_is_never_a_crash_of_the_host(make_host, plugin_dir):
    # helper-83: Object.defineProperty(f, "length", {value: -1}) made a call raise IndexError (no HostError)
    plugin_dir.add("neg.js", 'export function f(a) { return a ?? "none"; }\n'
                             'Object.defineProperty(f, "length", { value: -1 });\n'
                             'export function g(a) { return 1; }\nObject.defineProperty(g, "length", { value: 2 ** 40 });\n')
    async with make_host() as host:
        assert await host.call("neg", "f", 1) == 1
        with pytest.raises(InvalidArguments, match="takes 1024 arguments"):
            await host.call("neg", "g", 1)


async def test_a_declared_signature_must_name_an_export(make_host, plugin_dir):
    plugin_dir.add("odd.js", 'export const metadata = { id: "odd", name: "Odd", version: "1.0.0", apiVersion: "1.0",'
                             ' functions: { gone: { params: [] } } };\nexport function here() { return 1; }\n')
    async with make_host() as host:
        with pytest.raises(PluginUnavailable, match=r"metadata\.functions\.gone: 'gone' is not an exported function"):
            await host.call("odd", "here")


SLOW_BLOCK = "f:" * 99 + "f" + "=function" + " " * 30 + "<" + ">" * 199 + "x\n"  # helper-83: 10 s for 18 KB


@pytest.mark.timeout(20)  # before: minutes, in the host's event loop, at a plugin's first call
@pytest.mark.parametrize("source", ["f:" * 200_000 + "x", "f=<" * 100_000, "function " * 100_000,
                                    "f: " + "x" * 400_000 + "= (a?: 1)", "/*\n" + SLOW_BLOCK * 42 + "*/",
                                    ("f = async function" + " " * 80 + "x\n") * 4096,
                                    ("function f<" + "<" * 1990 + "\n") * 200])
def test_reading_optional_parameters_of_a_hostile_source_is_bounded(source):
    from host.optional import declared_optional

    t0 = time.process_time()
    assert declared_optional(source + "\nexport function f(a: number, b?: number) {}\n", "f") == [False, True]
    assert time.process_time() - t0 < 5  # seconds of CPU, on a loaded machine: before, minutes


def test_reading_a_parameter_behind_many_modifiers_is_linear():
    """``public public ... x?``: each modifier skipped copied the rest of the parameter, 0.78 s at
    the 512 KiB a module may have (in the host's event loop, at a plugin's first call). Four
    times that makes the square plain: 7.6 s of CPU before, 0.5 s now."""
    from host.optional import declared_optional

    source = "function f(a, " + "public " * 4 * 74_000 + "b?) {}"
    t0 = time.process_time()
    assert declared_optional(source, "f") == [False, True]
    assert time.process_time() - t0 < 2  # seconds of CPU
    assert declared_optional("class C { constructor(public readonly a: number, override  b?: string) {} }\n"
                             "function f(private x, protected   y?: number) {}", "f") == [False, True]


@pytest.mark.parametrize(("source", "fn"), [
    ("function f<T extends Array<string>>(a: T, b?: number) {}", "f"),  # helper-84: nested type arguments
    ("const f = <T extends Record<string, unknown>>(a: T, b?: number) => 1", "f"),
    ("function f<T = () => void>(a: T, b?: T) {}", "f"),
    ("const f: Fn<" + "x" * 210 + "> = (a, b?) => 1", "f"),  # a type annotation over 200 characters
    ("function g() {}\n" * 5000 + "function f(a, b?: number) {}", "f"),  # past 4,096 other functions
    ("export default async function <T>(a: T, b?: T) {}", "default"),
])
def test_optional_parameters_are_read_past_type_parameters_and_long_annotations(source, fn):
    from host.optional import declared_optional

    assert declared_optional(source, fn) == [False, True]
