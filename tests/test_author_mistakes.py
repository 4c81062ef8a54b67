"""Mistakes a plugin author makes with the shapes the balance plugin system documents (seed 000
section 9.9, seed 002's lifecycle and dependencies): each is refused when the plugin loads, with
the file, the field and what to write instead, never a plugin that loads and then fails every call."""

from __future__ import annotations

from pathlib import Path

import pytest

from host import PermissionDenied, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.one_backend, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)


def plugin(pid: str, extra: str = "", body: str = "export function f() { return 1; }") -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0"'
            f"{', ' + extra if extra else ''} }};\n{body}\n")


@pytest.mark.parametrize(("entry", "says"), [
    ("https://api.openai.com", "is a URL; name its host: 'api.openai.com'"),
    ("https://api.openai.com:8443/v1", "is a URL; name its host: 'api.openai.com:8443'"),
    ("api.openai.com/v1", "has a path; a grant names only the host: 'api.openai.com'"),
    ("api.openai.com:https", "has a port that is not a number from 0 to 65535"),
    ("api.openai.com:65536", "has a port that is not a number from 0 to 65535"),
    ("2001:db8::1", "is an IPv6 address without brackets: write '[2001:db8::1]'"),
    ("a..example.com", "is not a host name"),
    ("münchen.de", "is an international name; write its IDNA form: 'xn--mnchen-3ya.de'"),
])
async def test_a_net_grant_deno_cannot_read_is_refused_at_load_naming_the_field(
        plugin_dir, make_host, entry, says):
    """Before: a URL in permissions.net passed validation (strict mode called it "a wildcard or
    range") and every worker then died at start (Deno: "URLs are not supported"), five times,
    until the plugin sat in a crash loop."""
    path = plugin_dir.add("netty.js", plugin("netty", f'permissions: {{ net: ["{entry}"] }}'))
    plugin_dir.add("fine.js", plugin("fine", 'permissions: { net: ["api.openai.com:443", "*.example.com", '
                                             '"10.0.0.0/8", "[::1]:8080", "my_host.example."] }'))
    async with make_host(pool=ONE) as h:
        info = h.plugin("netty")
        assert info.state == "error" and info.workers == []
        assert f"{path}: metadata.permissions.net: {entry!r}" in info.error
        assert says in info.error
        assert h.plugin("fine").state in ("loaded", "running")  # what Deno reads still loads
        assert await h.call("fine", "f") == 1


HANG = """
export const metadata = { id: "hang", name: "hang", version: "1.0.0", apiVersion: "1.0" };
await new Promise(() => {});  // a top-level await that never settles
export function f() { return 1; }
"""


async def test_a_module_whose_top_level_await_never_settles_is_said_to_hang_while_loading(plugin_dir, make_host):
    """Before: "handshake rejected: no handshake within 1s", though the worker had said hello at
    once and the host had sent its welcome: the author was sent to look at the protocol, not at
    the await on their module's line 3."""
    from host import HostError, WorkerLimits

    path = plugin_dir.add("hang.js", HANG, auto_metadata=False)
    async with make_host(pool=ONE, limits=WorkerLimits(handshake_timeout=1)) as h:
        with pytest.raises(HostError) as e:
            await h.call("hang", "f", timeout=10)
        for text in (str(e.value), h.plugin("hang").error):
            assert f"{path}: the module did not finish loading within 1s" in text
            assert "top-level await" in text and "handshake_timeout" in text
            assert "no handshake" not in text


@pytest.mark.parametrize(("specifier", "deno_says"), [
    ("npm:lodash@4", "npm specifiers were requested"),
    ("jsr:@std/assert", "A remote specifier was requested"),
    ("https://deno.land/std@0.200.0/assert/mod.ts", 'A remote specifier was requested: "https://deno.land/'),
])
async def test_an_import_the_host_never_fetches_says_to_vendor_it(plugin_dir, make_host, specifier, deno_says):
    """Before: "NotCapable: npm specifiers were requested; but --no-npm is specified": a flag the
    author cannot change, and nothing about what to do instead."""
    plugin_dir.add("fetcher.js", f'import x from "{specifier}";\nexport function f() {{ return 1; }}\n')
    plugin_dir.add("later/mod.js", f'export async function f() {{ return (await import("{specifier}")).default; }}\n')
    async with make_host(pool=ONE) as h:
        error = h.plugin("fetcher").error
        assert h.plugin("fetcher").state == "error" and deno_says in error
        assert "nothing is fetched at run time" in error and "make the plugin a directory" in error
        assert "fetcher.js:2:" in error  # the import's line (after the metadata line)
        with pytest.raises(PermissionDenied) as e:
            await h.call("later", "f")
        assert deno_says in e.value.message and "nothing is fetched at run time" in e.value.message
        assert f"copy its code into the plugin's directory ({plugin_dir.root / 'later'})" in e.value.message


async def test_an_import_of_a_file_outside_the_plugin_says_where_the_plugin_may_import_from(
        plugin_dir, make_host, tmp_path):
    """Before: 'Requires read access to ".../secret.js", run again with the --allow-read flag':
    a flag the author cannot pass, for a file no grant should reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.js").write_text("export const x = 42;\n")
    (plugin_dir.root / "helper.js").parent.mkdir(parents=True, exist_ok=True)
    plugin_dir.add("single.js", 'import { x } from "../outside/secret.js";\nexport function f() { return x; }\n')
    plugin_dir.add("sibling.js", 'import { y } from "./shared/util.js";\nexport function f() { return y; }\n')
    plugin_dir.add("shared/util.js", "export const y = 1;\n")
    plugin_dir.add("dir/mod.js", 'import { x } from "../../outside/secret.js";\nexport function f() { return x; }\n')
    async with make_host(pool=ONE) as h:
        single, sibling, folder = (h.plugin(p).error for p in ("single", "sibling", "dir"))
        assert f'Requires read access to "{outside / "secret.js"}"' in single
        assert "a single-file plugin imports only itself" in single and "make the plugin a directory" in single
        assert "a single-file plugin imports only itself" in sibling
        assert f"outside the plugin's directory ({plugin_dir.root / 'dir'})" in folder
        for error in (single, sibling, folder):
            assert "--allow-read" not in error


async def test_an_import_without_its_extension_or_of_no_file_says_so(plugin_dir, make_host):
    # helper-80's findings: Deno's "or run with --sloppy-imports" named a flag no author can pass, and
    # a single-file plugin's import of a file that does not exist said nothing of its absence
    plugin_dir.add("slop/mod.ts", 'import { f } from "./lib/util";\nexport function g() { return f(); }\n')
    plugin_dir.add("slop/lib/util.ts", "export function f() { return 1; }\n", auto_metadata=False)
    plugin_dir.add("lonely.ts", 'import { f } from "./missing.ts";\nexport function g() { return f(); }\n')
    plugin_dir.add("dirimp/mod.ts", 'import { f } from "./lib";\nexport function g() { return f(); }\n')
    plugin_dir.add("dirimp/lib/index.ts", "export function f() { return 1; }\n", auto_metadata=False)
    # helper-84: a path the host may not look at (too long, EACCES) failed the load with an OSError
    plugin_dir.add("longname.ts", f'import {{ f }} from "/{"x" * 5000}.ts";\nexport function g() {{ return f(); }}\n')
    async with make_host(pool=ONE) as h:
        slop, lonely, dirimp, long = (h.plugin(p).error or "" for p in ("slop", "lonely", "dirimp", "longname"))
    assert "Write the import with its extension ('.ts')" in slop and "--sloppy-imports" not in slop, slop
    assert "missing.ts\"; there is no such file either" in lonely, lonely
    assert "Import the file itself ('index.ts' in that directory)" in dirimp and "--sloppy" not in dirimp, dirimp
    assert "Requires read access to" in long and "no such file" not in long and "ExceptionGroup" not in long, long


@pytest.mark.parametrize(("schema", "field", "says"), [
    ('{ apiKey: { type: "strin" } }', "configSchema.apiKey.type", "Invalid enum value 'strin'"),
    ('{ apiKey: { type: "string", requird: true } }', "configSchema.apiKey", "unknown field `requird`"),
    ('{ apiKey: { type: "string" }, region: "eu" }', "configSchema.region", "Expected `object`, got `str`"),
    ('{ type: "object", properties: { apiKey: { type: "string" } }, required: ["apiKey"] }', "configSchema.type",
     "this looks like a JSON Schema: configSchema maps each config field to its rule; move the entries of "
     "`properties` up into configSchema and give each field named in `required` required: true"),
])
async def test_a_config_schema_mistake_names_the_config_field(plugin_dir, make_host, schema, field, says):
    """Before: every configSchema error said `metadata.configSchema....` (msgspec's `[...]` for a
    key), naming no field; a JSON Schema (the shape seed 002's SchemaDefinition has, and most
    authors know) got "Expected `object`, got `str`" with nothing about what shape is wanted."""
    path = plugin_dir.add("schemy.js", plugin("schemy", f"configSchema: {schema}"))
    async with make_host(pool=ONE) as h:
        info = h.plugin("schemy")
        assert info.state == "error"
        assert f"{path}: metadata.{field}: " in info.error and says in info.error
        assert "[...]" not in info.error and "...." not in info.error


@pytest.mark.parametrize(("name", "source"), [
    ("default_object", 'export default {\n  metadata: { id: "default_object", name: "D", version: "1.0.0", '
                       'apiVersion: "1.0" },\n  async hello(name) { return `hi ${name}`; },\n};\n'),
    ("class_based", 'export default class Plugin {\n  metadata = { id: "class_based", name: "C", version: "1.0.0", '
                    'apiVersion: "1.0" };\n  async hello(name) { return `hi ${name}`; }\n}\n'),
    ("factory", 'export default async function createPlugin() {\n  return { metadata: { id: "factory", name: "F", '
                'version: "1.0.0", apiVersion: "1.0" }, hello: async (n) => `hi ${n}` };\n}\n'),
])
async def test_a_plugin_in_another_module_shape_is_told_the_shape_to_write(plugin_dir, make_host, name, source):
    """Before: "metadata.*: the module must export `metadata`, an object", for a module that has
    its metadata, only in a default export: nothing said that named exports are what is read."""
    path = plugin_dir.add(f"{name}.js", source, auto_metadata=False)
    async with make_host(pool=ONE) as h:
        error = h.plugin(name).error
    assert f"{path}: metadata.*: the module must export `metadata`, an object" in error
    assert "export const metadata = {" in error and "export async function queryBalance(config, context)" in error
    assert "a default export" in error and "is not read" in error


async def test_an_execute_snippet_in_the_plugin_directory_is_pointed_to_execute(plugin_dir, make_host):
    """Seed 001's code (`export default (x) => x * 2`) is ad-hoc code for /execute, not a plugin."""
    path = plugin_dir.add("double.js", "export default (x) => x * 2;\n", auto_metadata=False)
    async with make_host(pool=ONE) as h:
        error = h.plugin("double").error
    assert f"{path}: metadata.*: the module must export `metadata`" in error
    assert "a module whose default export is a function to run once is ad-hoc code: `python -m host execute FILE`" in error


async def test_a_commonjs_plugin_is_told_to_use_exports(plugin_dir, make_host):
    """Before: 'failed to load: ReferenceError: module is not defined': true, and no word of
    CommonJS or of what to write instead (seed 001 names `module.exports` as the form to avoid)."""
    path = plugin_dir.add("cjs.js", 'module.exports = {\n  metadata: { id: "cjs", name: "C", version: "1.0.0", '
                                    'apiVersion: "1.0" },\n  hello: async (n) => `hi ${n}`,\n};\n', auto_metadata=False)
    plugin_dir.add("req.js", plugin("req", body='const fs = require("fs");\nexport function f() { return 1; }'))
    async with make_host(pool=ONE) as h:
        cjs, req = h.plugin("cjs").error, h.plugin("req").error
    assert "ReferenceError: module is not defined" in cjs and f"{path}:1:1" in cjs
    assert "ReferenceError: require is not defined" in req
    for error in (cjs, req):
        assert "plugins are ES modules" in error and "export const metadata" in error


@pytest.mark.parametrize(("metadata", "field", "says"), [
    ('id: "m", name: "m", version: "1.0.0", api_version: "1.0"', "apiVersion",
     "is required (found `api_version`: metadata's fields are camelCase, apiVersion)"),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: "1.0", config_schema: {}', "config_schema",
     "Object contains unknown field `config_schema` (did you mean `configSchema`?)"),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: "1.0", dependecies: {}', "dependecies",
     "(did you mean `dependencies`?)"),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: 1.0', "apiVersion",
     'Expected `str`, got `int` - at `$.apiVersion` (write it as a string: "1.0")'),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: "1.0", dependencies: ["calc@^1.0.0"]', "dependencies",
     'Expected `object`, got `array` - at `$.dependencies` (an object of plugin id to semver range: '
     '{ "calc": "^1.0.0" })'),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: "1.0", dependencies: { calc: ">=1.0.0, <2.0.0" }',
     "dependencies.calc", "'>=1.0.0, <2.0.0' is not a semver range (npm's syntax: ^1.2.0, ~1.2.0, "
     ">=1.0.0 <2.0.0, 1.x, *)"),
    ('id: "m", name: "m", version: "1.0.0", apiVersion: "1.0", permissions: ["net:api.example.com"]',
     "permissions", "(an object of kind to grant: { net: [\"api.example.com\"], read: [\"data\"] })"),
])
async def test_a_metadata_slip_says_what_was_meant(plugin_dir, make_host, metadata, field, says):
    """Before: a snake_case field (seed 000's Rust struct is snake_case, renamed to camelCase for JS)
    got "apiVersion: is required" beside the api_version given; seed 002's "plugin@version"
    dependency strings got "Expected `object`, got `array`", with no word of the shape wanted."""
    plugin_dir.add("calc.js", plugin("calc"))
    path = plugin_dir.add("m.js", f"export const metadata = {{ {metadata} }};\nexport function f() {{ return 1; }}\n",
                          auto_metadata=False)
    async with make_host(pool=ONE) as h:
        error = h.plugin("m").error
    assert f"{path}: metadata.{field}: " in error and says in error


HOOKISH = """
export async function onLoad(ctx) { console.log("loading"); }
export async function onUnload(ctx) {}
export async function handleConfigChange(config, ctx) {}
export async function onStart(ctx) {}
export function f() { return 1; }
"""


async def test_an_export_named_like_a_lifecycle_hook_the_host_never_runs_is_warned_of(plugin_dir, make_host, caplog):
    """Before: onLoad (or seed 002's handleConfigChange, an onUnload) loaded as any function and
    was never run, with no word said: the author's setup silently never happened."""
    import logging

    from host import HostConfig
    from host.plugins.scaffold import validate

    path = plugin_dir.add("hooky.js", HOOKISH)
    with caplog.at_level(logging.WARNING, logger="host"):
        async with make_host(pool=ONE) as h:
            assert await h.call("hooky", "f") == 1
    said = [r.getMessage() for r in caplog.records if "never runs" in r.getMessage()]
    assert len(said) == 3 and all(f"in {path}" in s for s in said)
    assert any("exports onLoad, which the host never runs: rename it onStart" in s for s in said)
    assert any("exports onUnload, which the host never runs: rename it onStop" in s for s in said)
    assert any("exports handleConfigChange, which the host never runs: rename it onConfigChange" in s for s in said)
    report = await validate(path, HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(plugin_dir.root.parent / "v")))
    assert report.valid and sum("never runs" in f for f in report.findings) == 3


async def test_an_on_event_export_with_no_event_declared_is_warned_of(plugin_dir, make_host, caplog):
    # helper-80's finding: onEvent with no event in metadata.capabilities was silently dead (emit: [])
    import logging

    from host import HostConfig
    from host.plugins.scaffold import validate

    path = plugin_dir.add("deaf.js", plugin("deaf", body="export function onEvent(name, payload) { return 1; }"))
    heard = plugin_dir.add("heard.js", plugin("heard", 'capabilities: ["message.*"]',
                                             body="export function onEvent(name, payload) { return 2; }"))
    with caplog.at_level(logging.WARNING, logger="host"):
        async with make_host(pool=ONE) as h:
            assert [r.value for r in await h.emit("message.incoming", {})] == [2]
    said = [r.getMessage() for r in caplog.records if "declares no event" in r.getMessage()]
    assert len(said) == 1 and f"in {path}" in said[0] and '"message.*"' in said[0], said
    report = await validate(path, HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(plugin_dir.root.parent / "v")))
    assert any("exports onEvent but declares no event" in f for f in report.findings), report.findings
    quiet = await validate(heard, HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(plugin_dir.root.parent / "w")))
    assert not any("declares no event" in f for f in quiet.findings)


async def test_a_type_import_that_loads_a_file_says_how_to_import_types_only(plugin_dir, make_host):
    """`import { type Context } from "./types.ts"` is kept as an import of the file (Deno keeps
    an import whose specifiers are all inline `type`s); `import type` is erased. Before, the
    refusal said to pass --allow-read; now it says to write `import type`."""
    plugin_dir.add("typed.ts", 'import { type Context } from "./types.ts";\n'
                               "export function f(x: number, ctx: Context): number { return x; }\n")
    plugin_dir.add("erased.ts", 'import type { Context } from "./types.ts";\n'
                                "export function f(x: number, ctx: Context): number { return x; }\n")
    async with make_host(pool=ONE) as h:
        assert "if it imports only types, write `import type { ... }`" in h.plugin("typed").error
        assert await h.call("erased", "f", 2) == 2


@pytest.mark.parametrize(("body", "says"), [
    ("Deno.exit(3);", "crashed (exit code 3) while loading"),
    ("const a = []; for (;;) a.push({ x: new Array(1000).fill(1) });", "ran out of memory (signal SIGTRAP) while loading"),
])
async def test_a_worker_that_dies_while_its_module_loads_says_how_it_died(plugin_dir, make_host, body, says):
    """Before: "handshake rejected: connection closed", for a module that called Deno.exit or
    ran out of memory at its top level: the exit code, the signal and Deno's own words were lost."""
    from host import HostError, WorkerLimits

    path = plugin_dir.add("dies.js", plugin("dies", body=body + "\nexport function f() { return 1; }"))
    async with make_host(pool=ONE, limits=WorkerLimits(heap_mb=64)) as h:
        with pytest.raises(HostError):
            await h.call("dies", "f", timeout=20)
        error = h.plugin("dies").error
    assert says in error and str(path) in error and "connection closed" not in error
    if "memory" in says:  # helper-113: the setting to change, not V8's GC trace and C stack
        assert "limits.heap_mb (64 MiB)" in error and "[plugins.dies.limits]" in error and "Mark-Compact" not in error


async def test_a_dependency_that_failed_to_load_is_not_called_missing(plugin_dir, make_host):
    """Before: "dependency 'broken' (^1.0.0) is not installed", for a plugin sitting in the
    directory beside it, in error for its own reason: the author looked for a missing file."""
    plugin_dir.add("broken.js", plugin("broken", body='throw new Error("broken at load");'))
    plugin_dir.add("user.js", plugin("user", 'dependencies: { broken: "^1.0.0" }'))
    plugin_dir.add("lonely.js", plugin("lonely", 'dependencies: { absent: "*" }'))
    async with make_host(pool=ONE) as h:
        user, lonely = h.plugin("user"), h.plugin("lonely")
    assert user.state == "error" and "not installed" not in user.error
    assert "dependency 'broken' (^1.0.0) is in error: broken: failed to load: Error: broken at load" in user.error
    assert "dependency 'absent' (*) is not installed" in lonely.error


async def test_a_load_failure_says_where_on_its_first_line(plugin_dir, make_host):
    """Before: Deno's "\\n    at file:///...:2:29" came after a syntax error's code frame, so the
    serve log (one line an entry, newlines escaped) showed the frame before the file and line."""
    syntax = plugin_dir.add("syntax.js", plugin("syntax", body="export function f( { return 1; }"))
    npm = plugin_dir.add("npm.js", plugin("npm", body='import x from "npm:left-pad";\nexport function f() { return 1; }'))
    async with make_host(pool=ONE) as h:
        syntax_error, npm_error = h.plugin("syntax").error, h.plugin("npm").error
    first = syntax_error.splitlines()[0]
    assert first.startswith("syntax: failed to load: SyntaxError: ") and first.endswith(f"(at {syntax}:2:29)")
    assert "export function f( { return 1; }" in syntax_error  # Deno's code frame is kept, after
    assert npm_error.endswith(f"(at {npm}:2:15)") and "\n" not in npm_error
    assert "file://" not in syntax_error + npm_error


@pytest.mark.parametrize(("perms", "field", "says"), [
    ('{ sys: ["cpu"] }', "permissions.sys", "'cpu' is not a name Deno knows; one of hostname, osRelease"),
    ('{ env: ["API_KEY=sk-1"] }', "permissions.env", "'API_KEY=sk-1' is not a variable name"),
])
async def test_a_sys_or_env_grant_deno_cannot_read_is_refused_at_load(plugin_dir, make_host, perms, field, says):
    """Before: sys: ["cpu"] (Deno: "unknown sys descriptor") and env: ["A=B"] ("invalid env var
    name") passed validation and every worker died at start, into a crash loop."""
    path = plugin_dir.add("granty.js", plugin("granty", f"permissions: {perms}"))
    async with make_host(pool=ONE) as h:
        info = h.plugin("granty")
    assert info.state == "error" and f"{path}: metadata.{field}: {says}" in info.error


async def test_execute_refuses_a_net_grant_deno_cannot_read_before_any_worker_starts(make_host):
    """Before: POST /execute with permissions {net: ["https://api.example.com"]} started worker
    after worker (each died: Deno refuses URLs in --allow-net) and answered "Execution timeout"."""
    from host import InvalidConfig

    async with make_host() as h:
        with pytest.raises(InvalidConfig) as e:
            await h.execute("export default () => 1", permissions={"net": ["https://api.example.com"]})
        assert "permissions.net: 'https://api.example.com' is a URL; name its host: 'api.example.com'" in str(e.value)
        out = await h.execute("export default () => 1", permissions={"net": ["api.example.com"]})
        assert out.ok and out.result == 1


@pytest.mark.parametrize(("extra", "says"), [
    ('extensionPoints: ["message.incoming"]', "(this host has no `extensionPoints`: list the events or functions "
                                               "the plugin provides in `capabilities`)"),
    ('requiredExtensions: ["calc@^1.0.0"]', "(this host has no `requiredExtensions`: name each plugin it needs "
                                            "in `dependencies`: { \"calc\": \"^1.0.0\" })"),
    ('license: "MIT"', "(not a field of this host's metadata, which has id, name, version, apiVersion, "),
    # helper-80's finding: a slip inside a configSchema entry listed the metadata's own fields
    ('configSchema: { apiKey: { type: "string", placeholder: "sk-..." } }',
     "(not a field of a configSchema entry, which has type, required, secret, default, enum, description, "),
    ('configSchema: { apiKey: { type: "string", minlength: 3 } }', "(did you mean `minLength`?)"),
    ('functions: { f: { params: [], returns: "number" } }',
     "(not a field of a metadata.functions entry, which has params; remove it)"),
    ('permissions: { network: ["api.example.com"] }', "(did you mean `net`? the kinds are net, read, write, env, "),
])
async def test_a_field_this_host_does_not_read_says_what_to_do(plugin_dir, make_host, extra, says):
    """Before: seed 002's PluginMetadata fields (extension_points, required_extensions, in
    camelCase) and any other extra field got "Object contains unknown field `X`" and nothing on
    where that information goes here, or that the field must go."""
    path = plugin_dir.add("extra.js", plugin("extra", extra))
    async with make_host(pool=ONE) as h:
        error = h.plugin("extra").error
    assert f"{path}: metadata." in error and "unknown field" in error and says in error


@pytest.mark.parametrize("template", ["basic", "balance", "event", "usage-script"])
async def test_new_scaffolds_a_plugin_under_any_id_the_host_loads(plugin_dir, make_host, template):
    """Before: `new wk.plugin.example` (seed 004's plugin_no) was refused ("use lowercase letters,
    digits, - and _") though the host loads a plugin of that id: the scaffold's rule was not the
    manifest's."""
    from host.plugins.scaffold import new_plugin

    written = new_plugin("wk.plugin.example", plugin_dir.root, template)
    assert all("wk.plugin.example" in str(p) or "wk_plugin_example" in p.name for p in written)
    assert not any(p.name.startswith("test_") and p.name.count(".") > 1 for p in written)  # importable by pytest
    async with make_host(pool=ONE) as h:
        assert h.plugin("wk.plugin.example").state in ("loaded", "running"), h.plugin("wk.plugin.example").error


async def test_the_plugin_host_fixture_takes_a_plugin_whose_id_has_dots(plugin_host, tmp_path):
    """Before: the fixture authors test with (host.testing) took a plugin's id as its file name up
    to the first dot: for seed 004's "wk.plugin.example" that is "wk", so `config=` failed with
    PluginNotFound and the loopback grant went to no plugin."""
    root = tmp_path / "src" / "wk.plugin.example"
    root.mkdir(parents=True)
    (root / "mod.js").write_text(plugin("wk.plugin.example", 'configSchema: { greeting: { type: "string" } }',
                                        body="export function hello(name, ctx) { return `${ctx.config.greeting} ${name}`; }"))
    single = tmp_path / "src" / "my.tool.js"
    single.write_text(plugin("my.tool"))
    async with plugin_host(root, config={"greeting": "hi"}) as h:
        assert await h.call("wk.plugin.example", "hello", "there") == "hi there"
        assert h.config.plugins["wk.plugin.example"].allow_private_network  # the fixture's loopback grant
    async with plugin_host(single) as h:
        assert h.config.plugins["my.tool"].allow_private_network and await h.call("my.tool", "f") == 1


def test_the_plugin_types_require_what_the_host_requires(tmp_path):
    """Before: plugin.d.ts's PluginMetadata had `name?` and `apiVersion?`, so a TypeScript author's
    `deno check` passed a manifest the host then refused ("metadata.apiVersion: is required")."""
    import os
    import subprocess

    from host.runtime import find_deno

    runtime = Path(__file__).resolve().parents[1] / "worker_runtime"
    mod = tmp_path / "mod.ts"
    mod.write_text(f'import type {{ PluginMetadata }} from "{runtime / "plugin.d.ts"}";\n'
                   'export const metadata: PluginMetadata = { id: "t", version: "1.0.0" };\n')
    checked = subprocess.run([find_deno(), "check", "--no-remote", "--no-npm", str(mod)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
    assert checked.returncode != 0
    assert "is missing the following properties from type 'PluginMetadata': name, apiVersion" in checked.stderr


@pytest.mark.parametrize(("given", "meant"), [("String", "string"), ("int", "integer"), ("bool", "boolean"),
                                              ("float", "number"), ("list", "array"), ("dict", "object")])
async def test_a_config_field_type_in_another_spelling_says_the_one_to_write(plugin_dir, make_host, given, meant):
    """Before: "Invalid enum value 'String'" (seed 000's Rust types are capitalised; Python's are
    int, bool, float), naming neither the types there are nor the one meant."""
    path = plugin_dir.add("typed.js", plugin("typed", f'configSchema: {{ retries: {{ type: "{given}" }} }}'))
    async with make_host(pool=ONE) as h:
        error = h.plugin("typed").error
    assert f"{path}: metadata.configSchema.retries.type: Invalid enum value '{given}'" in error
    assert f'(write "{meant}"; the types are string, number, integer, boolean, object, array)' in error


@pytest.mark.parametrize("export", ["on_event", "onevent", "handleEvent"])
async def test_an_event_handler_under_another_name_is_named(plugin_dir, make_host, export):
    """Before: "'message.incoming' needs the export 'onEvent', and the module has no such function",
    beside an on_event (seed 004's handler, ported from Rust) or a handleEvent the module has."""
    plugin_dir.add("evm.js", plugin("evm", 'capabilities: ["message.incoming"]',
                                    body=f"export function {export}(event, payload) {{ return 1; }}"))
    async with make_host(pool=ONE) as h:
        error = h.plugin("evm").error
    assert f"it exports {export}: rename it onEvent" in error


async def test_metadata_an_async_factory_makes_is_awaited(plugin_dir, make_host):
    """Before: `export const metadata = loadMetadata()` (an async factory's promise) reached the
    host as {} and was refused with "metadata.id: is required", for a module whose metadata was
    one await away."""
    plugin_dir.add("later.js", (
        'async function loadMetadata() { return { id: "later", name: "L", version: "1.0.0", apiVersion: "1.0" }; }\n'
        "export const metadata = loadMetadata();\nexport function f() { return 1; }\n"), auto_metadata=False)
    path = plugin_dir.add("refused.js", 'export const metadata = Promise.reject(new Error("no metadata today"));\n'
                                        "export function f() { return 1; }\n", auto_metadata=False)
    async with make_host(pool=ONE) as h:
        assert await h.call("later", "f") == 1 and h.plugin("later").version == "1.0.0"
        error = h.plugin("refused").error
    assert "failed to load: Error: no metadata today" in error and f"(at {path}:1:" in error
