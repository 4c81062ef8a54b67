"""What a manifest's author most likely meant, said after the error that refuses it.

The slips seen in plugins written from the balance plugin system's documents: its Rust structs
spell the fields in snake_case (``api_version``, renamed to camelCase for JavaScript), seed 002
writes a dependency as ``"plugin@version"``, a number where a version string goes, a list of
``"kind:entry"`` grants, and a range in a syntax other than npm's (which the host reads).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

_SHAPES = {
    "dependencies": 'an object of plugin id to semver range: { "%s": "^1.0.0" }',
    "permissions": 'an object of kind to grant: { net: ["api.example.com"], read: ["data"] }',
    "configSchema": 'an object of config field to its rule: { apiKey: { type: "string", required: true } }',
    "capabilities": 'a list: ["balance"] or ["message.incoming"]',
}
CONFIG_TYPES = ("string", "number", "integer", "boolean", "object", "array")
# Other languages' names for configSchema's types (Rust's are capitalised, as seed 000's structs)
TYPE_SPELLINGS = {"str": "string", "int": "integer", "i64": "integer", "u32": "integer", "bool": "boolean",
                  "float": "number", "f64": "number", "double": "number", "list": "array", "vec": "array",
                  "dict": "object", "map": "object", "hashmap": "object"}
RANGE_SYNTAX = "npm's syntax: ^1.2.0, ~1.2.0, >=1.0.0 <2.0.0, 1.x, *"


# Seed 002's PluginMetadata fields (in camelCase) -> where this host takes that information.
ELSEWHERE = {
    "extensionPoints": "list the events or functions the plugin provides in `capabilities`",
    "requiredExtensions": "name each plugin it needs in `dependencies`: %s",
    "pluginType": "`capabilities` says what the plugin does (\"balance\", an event such as \"message.incoming\")",
    "entryPoint": "the module itself is the entry point; remove it",
    "config": "describe the config in `configSchema`; its values are the operator's (config set)",
    "signature": "a package's signature goes beside its archive (ARCHIVE.sig, docs/packages.md), not in metadata",
}


def _elsewhere(key: str, given: Any) -> str:
    text = ELSEWHERE[key]
    if "%s" not in text:
        return text
    first = given[0] if isinstance(given, list) and given and isinstance(given[0], str) else "other@^1.0.0"
    dep, _, rng = first.partition("@")
    return text % f'{{ "{dep}": "{rng or "*"}" }}'


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def fields_of(struct: type[msgspec.Struct]) -> list[str]:
    """The names a manifest spells its fields with (camelCase)."""
    return [f.encode_name for f in msgspec.structs.fields(struct)]


def missing_hint(raw: dict[str, Any], key: str) -> str:
    """For a required field not given: the snake_case spelling given instead, if any."""
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
    if snake != key and snake in raw:
        return f" (found `{snake}`: metadata's fields are camelCase, {key})"
    return ""


def convert_hint(raw: dict[str, Any], message: str, field: str, known: list[str],
                 nested: dict[str, tuple[str, list[str]]] | None = None) -> str:
    """For msgspec's refusal of ``field``: the field meant by an unknown name, or the shape wanted.
    ``known``: the metadata's own fields; ``nested``: for an object under a top-level field
    (``configSchema.apiKey``, ``functions.f``), what that object is called and its fields."""
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        name = unknown.group(1)
        parts = field.split(".")
        what, fields = "this host's metadata", known
        if len(parts) == 2 and nested and parts[0] in nested:
            what, fields = nested[parts[0]]
        meant = camel(name) if camel(name) in fields else next(
            iter(difflib.get_close_matches(name, fields, 1, 0.75)), None)
        if meant is None and fields is not known:
            meant = next((f for f in fields if f.lower() == name.lower()), None)
        if meant:
            return f" (did you mean `{meant}`?)"
        if fields is known and camel(name) in ELSEWHERE:
            return f" (this host has no `{name}`: {_elsewhere(camel(name), raw.get(name))})"
        return f" (not a field of {what}, which has {', '.join(fields)}; remove it)"
    if field.startswith("configSchema.") and field.endswith(".type") and \
            (bad := re.search(r"Invalid enum value '([^']*)'", message)) is not None:
        meant = TYPE_SPELLINGS.get(bad.group(1).lower(), bad.group(1).lower())
        said = f'write "{meant}"; ' if meant in CONFIG_TYPES else ""
        return f" ({said}the types are {', '.join(CONFIG_TYPES)})"
    top = field.split(".")[0]
    value = raw.get(top)
    if top in ("apiVersion", "version") and isinstance(value, int | float) and not isinstance(value, bool):
        shown = f"{float(value):.1f}" if top == "apiVersion" else ".".join([*str(value).split("."), "0", "0"][:3])
        return f' (write it as a string: "{shown}")'
    if field == top and top in _SHAPES and ("Expected `object`" in message or "Expected `array`" in message):
        first = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else ""
        shape = _SHAPES[top]
        return f" ({shape % (first.split('@')[0] or 'other',)})" if "%s" in shape else f" ({shape})"
    return ""


# Names of other plugin systems' lifecycle hooks (seed 002's Plugin trait, in camelCase; common
# JS spellings) -> the host's hook that does that job. The host runs only its own three.
HOOK_LOOKALIKES = {
    "onLoad": "onStart", "onInit": "onStart", "onInitialize": "onStart", "onEnable": "onStart",
    "onUnload": "onStop", "onDestroy": "onStop", "onDisable": "onStop", "onCleanup": "onStop",
    "onShutdown": "onStop", "onClose": "onStop",
    "onConfigChanged": "onConfigChange", "onConfigUpdate": "onConfigChange", "handleConfigChange": "onConfigChange",
}
_HOOKS_SAID = ("its lifecycle hooks are onStart(ctx) (in each worker, before its first call), onStop(ctx) and "
               "onConfigChange(config, ctx)")


def unrun_hooks(exports: list[str], module: str) -> list[str]:
    """A warning for each export named like a lifecycle hook the host does not have."""
    return [f"exports {name}, which the host never runs: rename it {hook} ({_HOOKS_SAID}) in {module}"
            for name, hook in HOOK_LOOKALIKES.items() if name in exports]


# What other plugin systems call the function this host's capabilities need
EXPORT_ALIASES = {"onEvent": ("handleEvent", "handle_event", "onMessage", "handle", "handler"),
                  "queryBalance": ("getBalance", "get_balance", "fetchBalance", "balance")}


def similar_export(needed: str, exports: list[str]) -> str:
    """For a capability's missing export: the export that is most likely it under another name."""
    for name in exports:
        if camel(name) == needed or name.lower() == needed.lower() or name in EXPORT_ALIASES.get(needed, ()):
            return f" (it exports {name}: rename it {needed})"
    close = difflib.get_close_matches(needed, exports, 1, 0.8)
    return f" (it exports {close[0]}: rename it {needed})" if close else ""
