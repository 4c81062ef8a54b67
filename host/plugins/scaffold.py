"""The plugin developer's commands: ``validate PATH`` (check a plugin as the host would load it,
without starting a host) and ``new NAME`` (a working plugin with a test that passes)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import msgspec

from ..config import HostConfig
from ..errors import HostError, InvalidConfig
from ..runtime import Runtime
from ..security.private_files import PLUGINS_DIR, os_failure
from .discovery import USAGE_SUFFIX, PluginSource, load_manifest, source_for
from .manifest import ID_RE, KNOWN_CAPABILITIES, RESERVED_IDS, infer_capabilities, unheard
from .manifest_hints import unrun_hooks
from .templates import BALANCE_TEST, BALANCE_TS, EVENT_TEST, EVENT_TS, TEMPLATES, USAGE_JS, USAGE_TEST
from .usage_scripts import script_source


class Report(msgspec.Struct, omit_defaults=True):
    """What ``validate`` found: the manifest as the host reads it, or the error."""

    path: str
    valid: bool
    id: str | None = None
    version: str | None = None
    exports: list[str] = []
    capabilities: list[str] = []
    permissions: dict = {}  # with config references resolved by the schema's defaults
    config_net: dict[str, str | None] = {}  # "{config.KEY}" net entries -> the default's host (None: no default)
    findings: list[str] = []  # what security.strict objects to
    error: str | None = None  # what is wrong, without the path (``path`` says it)


async def validate(path: str | Path, config: HostConfig) -> Report:
    """Load the plugin at ``path`` in a worker with no permissions, as the host does, and check
    its manifest, its directory (no symlink out of it) and its permissions."""
    where = Path(path)
    if where.is_file() and where.name.endswith(USAGE_SUFFIX):  # checked as the module the host makes of it
        with tempfile.TemporaryDirectory(prefix="validate-") as out:
            try:
                src = script_source(where.resolve(), Path(out))
            except InvalidConfig as exc:
                return Report(path=str(where), valid=False, error=exc.message)
            return await _checked(src, config, shown=str(where.resolve()))
    src = source_for(where) if where.exists() else None
    if src is None:
        return Report(path=str(where), valid=False,
                      error="not a plugin: a .js/.ts file, or a directory with mod.ts, mod.js, "
                            f"index.ts or index.js (or a cc-switch usage script, NAME{USAGE_SUFFIX})")
    return await _checked(src, config, shown=str(src.module))


async def _checked(src: PluginSource, config: HostConfig, *, shown: str) -> Report:
    """The report on ``src`` loaded in a worker as the host loads it; ``shown``: the file named."""
    runtime = Runtime.create(config)
    try:
        manifest, exports = await load_manifest(src, runtime, config.limits_for(src.id),
                                                https_only=config.security.https_only)
    except HostError as exc:  # its message names the file already: said once, by ``path``
        said = exc.message
        for where in dict.fromkeys((shown, str(src.module), str(src.root))):
            said = said.removeprefix(f"{where}: ")
        return Report(path=shown, valid=False, id=src.id, error=said)
    finally:
        runtime.close()
    inferred = infer_capabilities(manifest, exports)
    return Report(
        path=shown, valid=True, id=manifest.id, version=manifest.version,
        exports=sorted(exports), capabilities=list(manifest.capabilities),
        permissions=msgspec.to_builtins(manifest.grants), config_net=manifest.config_grants(),
        findings=manifest.findings(max_net_hosts=config.security.max_net_hosts) + [
            f'exports {KNOWN_CAPABILITIES[c]} without declaring it: add "{c}" to metadata.capabilities'
            for c in inferred] + unrun_hooks(exports, str(src.module)) + unheard(manifest, exports, str(src.module)),
    )


MOD_TS = '''// {name}: a Plugin Host plugin. `python -m host validate {path}` checks it;
// `python -m host --plugins {plugins} call {name} greet '"world"'` calls it.

export const metadata = {{
  id: "{name}",
  name: "{name}",
  version: "0.1.0",
  apiVersion: "1.0",
  description: "Greets; replace with what your plugin does.",
  permissions: {{}}, // nothing granted: add e.g. {{ net: ["api.example.com"] }}
  configSchema: {{
    greeting: {{ type: "string", default: "Hello" }},
  }},
}};

export function greet(name: string, context?: {{ config?: {{ greeting?: string }} }}): string {{
  const greeting = context?.config?.greeting ?? "Hello";
  return `${{greeting}}, ${{name}}!`;
}}
'''

TEST_TS = '''// Run: python -m host test {name} --plugins {plugins}
// (the deno the host uses, the runtime's import map; it fails when there is nothing to test)
import {{ greet, metadata }} from "./mod.ts";

Deno.test("greet uses the configured greeting", () => {{
  const got = greet("world", {{ config: {{ greeting: "Hi" }} }});
  if (got !== "Hi, world!") throw new Error(`got ${{got}}`);
}});

Deno.test("metadata names the plugin", () => {{
  if (metadata.id !== "{name}") throw new Error(`id is ${{metadata.id}}`);
}});
'''


def new_plugin(name: str, plugins_dir: str | Path, template: str = "basic") -> list[Path]:
    """Write a plugin from ``template`` (templates.TEMPLATES) and a test that passes as written;
    returns their paths: ``plugins_dir/name/mod.ts`` and its test (``mod_test.ts`` for deno
    test, ``test_NAME.py`` for pytest), or for a usage script ``NAME.usage.js`` and
    ``test_NAME_usage.py``. InvalidConfig for a bad name or template, or a plugin that exists."""
    if not ID_RE.match(name) or name.endswith("."):  # any id the host loads (seed 004's "wk.plugin.example")
        raise InvalidConfig(f"plugin name {name!r}: use letters, digits, '.', '-' and '_' "
                            "(at most 64, starting with a letter or digit)")
    if name.lower() in RESERVED_IDS:
        raise InvalidConfig(f"plugin name {name!r} is reserved for the host's own use; choose another")
    if template not in TEMPLATES:
        raise InvalidConfig(f"template {template!r}: one of {', '.join(TEMPLATES)}")
    plugins = Path(plugins_dir)
    root = plugins / name
    if root.exists() or any(plugins.glob(f"{name}.*")):
        raise InvalidConfig(f"{root}: a plugin named {name!r} already exists")
    fields = dict(name=name, path=root, plugins=plugins)
    module = re.sub(r"[^A-Za-z0-9_]", "_", name)  # the pytest file's name is a Python module's
    if template == "usage-script":
        script, test = plugins / f"{name}.usage.js", plugins / f"test_{module}_usage.py"
        return _write_all(plugins, None, [(script, USAGE_JS.format(**fields, test=test)),
                                          (test, USAGE_TEST.format(**fields))])
    mod_text, test_name, test_text = {
        "basic": (MOD_TS, "mod_test.ts", TEST_TS),
        "balance": (BALANCE_TS, f"test_{module}.py", BALANCE_TEST),
        "event": (EVENT_TS, "mod_test.ts", EVENT_TEST),
    }[template]
    return _write_all(plugins, root, [(root / "mod.ts", mod_text.format(**fields)),
                                      (root / test_name, test_text.format(**fields))])


def _write_all(plugins: Path, root: Path | None, files: list[tuple[Path, str]]) -> list[Path]:
    """Make ``root`` (a new directory) if given and write ``files``: all of them, or (a full
    disk) none, a StateError naming the file; a half-made plugin would load broken and keep
    its name taken."""
    path, made, written, whole = root or plugins, None, [], False
    try:
        plugins.mkdir(parents=True, exist_ok=True)
        if root is not None:
            root.mkdir()
            made = root
        for path, text in files:
            with open(path, "x", encoding="utf-8") as f:  # never over a file that is there
                written.append(path)
                f.write(text)
        whole = True
    except FileExistsError:
        raise InvalidConfig(f"{path}: exists already; remove it or choose another name") from None
    except OSError as exc:
        raise os_failure(path, exc, "write", PLUGINS_DIR) from None
    finally:
        if not whole:
            for done in written:
                done.unlink(missing_ok=True)
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
    return written
