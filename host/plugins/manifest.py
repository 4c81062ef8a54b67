"""A plugin's ``metadata`` export, validated: every error names the file and the field."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import semantic_version as sv

from ..errors import InvalidConfig
from ..security.grant_entries import problems
from ..security.permissions import BIDI, CONTROL, Permissions
from .manifest_hints import RANGE_SYNTAX, convert_hint, fields_of, missing_hint, similar_export
from .schema_rules import patterns_deadline, rule_problem, shown, value_problem

HOST_API_VERSION = "1.0"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# Ids the host itself uses for its own workers and views: no plugin may take them.
RESERVED_IDS = frozenset({"execute", "host", "plugin-host"})
_EVENT_RE = re.compile(r"^[A-Za-z0-9_-]+([.:][A-Za-z0-9_*-]+)+\Z")
_SEPARATED = re.compile(r"([.:])")  # split keeping the separators (odd places)
# Longest text a manifest may give for each field (characters): a name that pushes every control
# off the dashboard, or a description of megabytes, is refused with the field named.
MAX_TEXT = {"name": 100, "description": 2000, "author": 200, "homepage": 500, "icon": 500, "version": 64,
            "apiVersion": 16}
MAX_SCHEMA_FIELDS = 100
# How many entries a list or table of the metadata may hold: each is compared with what was
# approved at every load (5,000 capabilities took 29 s of the event loop a restart) and shown
MAX_ENTRIES = {"capabilities": 100, "dependencies": 100, "functions": 1000}
MAX_ENUM = 1000
MAX_DEFAULT_BYTES = 64 * 1024  # a config field's default, encoded
MAX_FIELD_TEXT = 500  # a config field's title, description, and each enum value shown
# Capabilities with a meaning of their own, and the export each one needs.
KNOWN_CAPABILITIES = {"balance": "queryBalance"}
BALANCE, BALANCE_EXPORT = "balance", "queryBalance"
# JSON types of configSchema's types (bool is no number)
_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "number": (int, float), "integer": (int,),
                                       "boolean": (bool,), "object": (dict,), "array": (list,)}


class InvalidManifest(InvalidConfig):
    """A plugin's metadata is missing a field or has a wrong one; ``field`` names it."""

    def __init__(self, message: str, *, path: str, field: str, plugin: str | None = None):
        super().__init__(f"{path}: metadata.{field}: {message}", plugin=plugin)
        self.path = path
        self.field = field


class ConfigField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One entry of ``configSchema``."""

    type: Literal["string", "number", "integer", "boolean", "object", "array"]
    required: bool = False
    secret: bool = False
    default: Any = msgspec.UNSET
    enum: list[Any] | None = None
    description: str | None = None
    title: str | None = None
    # constraints (schema_rules.py): numbers, then strings
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = msgspec.field(default=None, name="minLength")
    max_length: int | None = msgspec.field(default=None, name="maxLength")
    pattern: str | None = None
    format: str | None = None


class FunctionSpec(msgspec.Struct, forbid_unknown_fields=True):
    """``metadata.functions.NAME``: the arguments a caller gives (the context comes after
    them): names, ``"x?"`` optional, ``"...rest"`` any number more (host/arity.py)."""

    params: list[str]


class Manifest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, rename="camel"):
    """The validated metadata of one plugin version."""

    id: str
    name: str
    version: str
    api_version: str
    description: str = ""
    author: str = ""
    homepage: str = ""
    icon: str = ""  # an icon's URL (the balance plugin system's manifests have one)
    permissions: dict[str, Any] = {}
    config_schema: dict[str, ConfigField] = {}
    capabilities: list[str] = []
    priority: int = 0
    dependencies: dict[str, str] = {}
    functions: dict[str, FunctionSpec] = {}

    @property
    def semver(self) -> sv.Version:
        return _semver(self.version)

    @property
    def grants(self) -> Permissions:
        """The permissions declared, config references resolved with the schema's defaults."""
        return self.grants_for(None)

    def grants_for(self, config: Mapping[str, Any] | None, *, allow_private_network: bool = False,
                   also: Iterable[Mapping[str, Any]] = ()) -> Permissions:
        """The permissions a worker gets with ``config`` (None: the configSchema's defaults): a
        net entry ``"{config.KEY}"`` becomes the host (and port, if the value names one) of
        that config value, e.g. ``baseUrl = "https://relay.example:8443/v1"`` grants
        ``relay.example:8443``; with no value it grants nothing. ``allow_private_network`` is
        the operator's opt-in (``[plugins.<id>] allow_private_network``), the only one: the
        manifest's own ``allowPrivateNetwork`` is a request (``asks_private_network``).
        ``also``: more configs the same worker serves (a provider's stations), whose hosts are
        granted too."""
        raw: Mapping[str, Any] = self.permissions
        net = raw.get("net") if isinstance(raw, dict) else None
        if isinstance(net, list) and any(_config_ref(e) for e in net):
            values = config if config is not None else defaults(self.config_schema)
            hosts = [h for v in (values, *also) for h in resolve_net(net, v)]
            raw = {**raw, "net": list(dict.fromkeys(hosts))}
        perms = Permissions.parse(raw)
        if perms.allow_private_network != allow_private_network:  # the manifest may only ask
            perms = msgspec.structs.replace(perms, allow_private_network=allow_private_network)
        return perms

    def call_shapes(self) -> dict[str, Any]:
        """What its workers' calls are judged by (arity.py), as the metadata declares it:
        ``{"functions": {NAME: {"params": [...]}}}``."""
        return {"functions": {name: {"params": list(spec.params)} for name, spec in self.functions.items()}}

    def config_grants(self) -> dict[str, str | None]:
        """Each ``"{config.KEY}"`` net entry and the host its configSchema default grants (None:
        nothing until the config sets it): what ``grants`` alone cannot show."""
        net = self.permissions.get("net") if isinstance(self.permissions, dict) else None
        values = defaults(self.config_schema)
        return {e: url_host(values.get(key)) for e in (net if isinstance(net, list) else [])
                if (key := _config_ref(e)) is not None}

    @property
    def asks_private_network(self) -> bool:
        """``permissions.allowPrivateNetwork``: a request only the operator can grant."""
        return isinstance(self.permissions, dict) and self.permissions.get("allowPrivateNetwork") is True

    def findings(self, *, max_net_hosts: int = 10, grants: Permissions | None = None) -> list[str]:
        """What strict mode objects to in ``grants`` (default: the declared ones), plus the
        plugin asking for private networks when the operator has not allowed them."""
        grants = self.grants if grants is None else grants
        out = grants.findings(max_net_hosts=max_net_hosts)
        if self.asks_private_network and not grants.allow_private_network:
            out.append("allowPrivateNetwork: asked by the plugin; only the operator allows it "
                       f"([plugins.{self.id}] allow_private_network = true in host.toml)")
        return out

    def events(self) -> list[str]:
        return [c for c in self.capabilities if _EVENT_RE.match(c)]

    def handles(self, event: str) -> bool:
        """Whether ``emit(event)`` reaches this plugin: an event capability naming it, where a
        ``*`` segment stands for any one segment (``message.*`` takes ``message.incoming``, not
        ``message.a.b``)."""
        return any(c == event or ("*" in c and _wildcard(c, event)) for c in self.capabilities)


def covers(approved: str, event: str) -> bool:
    """Whether a plugin taking ``approved`` (an event or a pattern) already takes ``event``
    (an event or a pattern): the same, or every event ``event`` names is one ``approved`` names."""
    return approved == event or ("*" in approved and _wildcard(approved, event))


def _wildcard(pattern: str, event: str) -> bool:
    """Segment by segment, separators alike, a ``*`` segment taking any one non-empty segment:
    linear (a regular expression of ``[^.:]+`` runs backtracked exponentially on ``a.****...``)."""
    if not _EVENT_RE.match(pattern):
        return False
    want, got = _SEPARATED.split(pattern), _SEPARATED.split(event)
    return len(want) == len(got) and all(w == g or (w == "*" and g != "" and i % 2 == 0)
                                         for i, (w, g) in enumerate(zip(want, got, strict=True)))


def parse_manifest(raw: Any, exports: list[str], *, path: str, expected_id: str,
                   expected_version: str | None = None, id_from: str = "the file or directory name") -> Manifest:
    """Validate ``metadata`` as the worker reported it (plus the module's function exports)."""
    if not isinstance(raw, dict):
        raise InvalidManifest(
            "the module must export `metadata`, an object: `export const metadata = { id, name, version, "
            "apiVersion }`, with each function exported by name (`export async function queryBalance(config, "
            "context)`); a default export (an object holding them, a class, a factory) is not read"
            + ("; a module whose default export is a function to run once is ad-hoc code: "
               "`python -m host execute FILE`" if exports == ["default"] else ""),
            path=path, field="*")
    for key in ("id", "name", "version", "apiVersion"):
        if raw.get(key) in (None, ""):
            raise InvalidManifest(f"is required{missing_hint(raw, key)}", path=path, field=key, plugin=expected_id)
    try:
        m = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        message, field = _keyed(raw, str(exc))
        message += convert_hint(raw, message, field, fields_of(Manifest), {
            "configSchema": ("a configSchema entry", fields_of(ConfigField)),
            "functions": ("a metadata.functions entry", fields_of(FunctionSpec))})
        raise InvalidManifest(message, path=path, field=field, plugin=expected_id) from None
    _check_text(m, path=path, plugin=expected_id)
    if not ID_RE.match(m.id):
        raise InvalidManifest(f"{m.id!r} is not a valid id: use letters, digits, '.', '-' and '_' (at most 64, "
                              "starting with a letter or digit)", path=path, field="id", plugin=expected_id)
    if m.id.lower() in RESERVED_IDS:
        raise InvalidManifest(f"{m.id!r} is reserved for the host's own use; rename the plugin",
                              path=path, field="id", plugin=expected_id)
    if m.id != expected_id:
        raise InvalidManifest(f"{m.id!r} does not match {id_from} {expected_id!r}",
                              path=path, field="id", plugin=expected_id)
    try:
        version = m.semver
    except ValueError:
        raise InvalidManifest(f"{m.version!r} is not a semantic version (MAJOR.MINOR.PATCH)",
                              path=path, field="version", plugin=m.id) from None
    if expected_version is not None and str(version) != expected_version:
        raise InvalidManifest(f"{m.version!r} does not match the version in the name ({expected_version})",
                              path=path, field="version", plugin=m.id)
    if not _api_compatible(m.api_version):
        raise InvalidManifest(
            f"{m.api_version!r} is not compatible with this host's plugin API {HOST_API_VERSION}"
            " (the major version must match)", path=path, field="apiVersion", plugin=m.id)
    net = m.permissions.get("net")
    for entry in net if isinstance(net, list) else ():
        key = _config_ref(entry)
        if key is not None and (key not in m.config_schema or m.config_schema[key].type != "string"):
            raise InvalidManifest(f"{entry!r} must name a string field of configSchema", path=path,
                                  field="permissions.net", plugin=m.id)
    try:
        m.grants  # noqa: B018 (validates, config references resolved with the defaults)
    except InvalidConfig as exc:
        raise InvalidManifest(exc.message.removeprefix("permissions: "), path=path,
                              field="permissions", plugin=m.id) from None
    refs = [e for e in net if _config_ref(e) is not None] if isinstance(net, list) else []
    for kind, entry, why in problems(Permissions.parse(m.permissions), skip=refs):  # else every worker dies
        raise InvalidManifest(f"{entry!r} {why}", path=path, field=f"permissions.{kind}", plugin=m.id)
    for name, dep_range in m.dependencies.items():
        try:
            sv.NpmSpec(dep_range)
        except ValueError:
            raise InvalidManifest(f"{dep_range!r} is not a semver range ({RANGE_SYNTAX})", path=path,
                                  field=f"dependencies.{name}", plugin=m.id) from None
    deadline = patterns_deadline()  # one budget for all the defaults' patterns
    for key, spec in m.config_schema.items():
        if spec.enum is not None and spec.default is not msgspec.UNSET and spec.default not in spec.enum:
            raise InvalidManifest(f"default {shown(spec.default)} is not one of the enum values",
                                  path=path, field=f"configSchema.{key}.default", plugin=m.id)
        if (why := rule_problem(spec)) is not None:
            raise InvalidManifest(why, path=path, field=f"configSchema.{key}", plugin=m.id)
        wrong = spec.default is not msgspec.UNSET and spec.default is not None and (
            not isinstance(spec.default, _TYPES[spec.type]) or (isinstance(spec.default, bool) and spec.type != "boolean"))
        if wrong:  # it passed validate, and every load then failed on config.<key> (helper-106)
            raise InvalidManifest(f"default {shown(spec.default)} is not of type {spec.type}", path=path,
                                  field=f"configSchema.{key}.default", plugin=m.id)
        if spec.default is not msgspec.UNSET and spec.default is not None and isinstance(
                spec.default, _TYPES[spec.type]) and (why := value_problem(spec, spec.default, deadline)) is not None:
            raise InvalidManifest(f"default {shown(spec.default)} {why}", path=path,
                                  field=f"configSchema.{key}.default", plugin=m.id)

    for fn in m.functions:
        if fn not in exports:
            raise InvalidManifest(f"{fn!r} is not an exported function of the module", path=path,
                                  field=f"functions.{fn}", plugin=m.id)
    for cap in m.capabilities:
        if _EVENT_RE.match(cap) and any("*" in seg and seg != "*" for seg in _SEPARATED.split(cap)):
            raise InvalidManifest(f"{cap!r}: a * stands for a whole segment (message.*), not part of one",
                                  path=path, field="capabilities", plugin=m.id)
        needed = KNOWN_CAPABILITIES.get(cap) or ("onEvent" if _EVENT_RE.match(cap) else cap)
        if needed not in exports:
            what = "an exported function" if needed == cap else f"the export {needed!r}"
            raise InvalidManifest(f"{cap!r} needs {what}, and the module has no such function"
                                  f"{similar_export(needed, exports)}", path=path, field="capabilities", plugin=m.id)
    return m


def unheard(m: Manifest, exports: list[str], module: str) -> list[str]:
    """A warning when the module exports ``onEvent`` and declares no event: no event reaches it."""
    if "onEvent" not in exports or any(_EVENT_RE.match(c) for c in m.capabilities):
        return []
    return [f"exports onEvent but declares no event in metadata.capabilities, so no event reaches it: add the "
            f'events it handles ("message.incoming", "message.*") to metadata.capabilities in {module}']


def infer_capabilities(m: Manifest, exports: list[str]) -> list[str]:
    """Capabilities the module's exports imply and its manifest does not declare, added to it:
    a plugin of the balance plugin system exports ``queryBalance`` and declares nothing."""
    added = [BALANCE] if BALANCE_EXPORT in exports and BALANCE not in m.capabilities else []
    m.capabilities = [*m.capabilities, *added]
    return added


_CONFIG_REF = re.compile(r"^\{config\.([A-Za-z_][A-Za-z0-9_]*)\}\Z")


def defaults(schema: Mapping[str, ConfigField]) -> dict[str, Any]:
    """The configSchema's default values, by field."""
    return {k: f.default for k, f in schema.items() if f.default is not msgspec.UNSET}


def resolve_net(net: list[Any], values: Mapping[str, Any]) -> list[Any]:
    """``net`` with each ``"{config.KEY}"`` entry replaced by the host of ``values[KEY]`` (left
    out when that names no host), without duplicates."""
    resolved = []
    for entry in net:
        key = _config_ref(entry)
        if key is None:
            resolved.append(entry)
        elif (host := url_host(values.get(key))) is not None:
            resolved.append(host)
    return list(dict.fromkeys(resolved))


def _config_ref(entry: Any) -> str | None:
    """``"{config.baseUrl}"`` -> ``"baseUrl"``; anything else -> None."""
    m = _CONFIG_REF.match(entry) if isinstance(entry, str) else None
    return m.group(1) if m else None


def url_host(value: Any) -> str | None:
    """The ``host[:port]`` a URL (or a bare ``host[:port]``) names, for a net grant; None for
    no value or one that names no host. User info, path, query and fragment are dropped."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else "//" + text)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unclosed "[", ...
        return None
    if not host or (host := _valid_host(host)) is None:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def _valid_host(host: str) -> str | None:
    """``host`` as a net grant may name it: an IP address, or a DNS name of letters, digits and
    hyphens (an international name in its IDNA form); None for anything else ("*.com", spaces,
    commas, percent signs): a config value must never widen a grant beyond one host."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    return name


def unresolved(m: Manifest, config: Mapping[str, Any]) -> list[str]:
    """The config fields a ``"{config.KEY}"`` net entry names whose value is set but names no
    host a grant may name (``"https://*.com"``, a typo with a comma): "KEY: why"."""
    net = m.permissions.get("net") if isinstance(m.permissions, dict) else None
    out = []
    for entry in net if isinstance(net, list) else ():
        key = _config_ref(entry)
        value = config.get(key) if key is not None else None
        if isinstance(value, str) and value.strip() and url_host(value) is None:
            out.append(f"config.{key}: {value[:80]!r} names no valid host")
    return out


def _api_compatible(api: str) -> bool:
    try:
        return int(str(api).split(".")[0]) == int(HOST_API_VERSION.split(".")[0])
    except ValueError:
        return False


_KEYED = re.compile(r"at `\$\.([A-Za-z]+)\[\.\.\.\]([^`]*)`")
_JSON_SCHEMA = ("this looks like a JSON Schema: configSchema maps each config field to its rule; move the "
                "entries of `properties` up into configSchema and give each field named in `required` "
                "required: true")


def _keyed(raw: dict[str, Any], message: str) -> tuple[str, str]:
    """msgspec's error and the field it names, with the key it writes ``[...]`` found: each entry of
    that object is tried alone (``configSchema.apiKey.type``, not ``configSchema....type``)."""
    m = _KEYED.search(message)
    entries = raw.get(m.group(1)) if m else None
    if m is None or not isinstance(entries, dict):
        return message, _field_of(message)
    container = m.group(1)
    for key, value in entries.items():
        try:
            msgspec.convert({**raw, container: {key: value}}, Manifest)
        except msgspec.ValidationError as exc:
            if (found := _KEYED.search(str(exc))) is not None and found.group(1) == container:
                rest = found.group(2)
                message = str(exc).replace(f"`$.{container}[...]", f"`$.{container}.{key}")
                if container == "configSchema" and ("properties" in entries or entries.get("type") == "object"):
                    message += f" ({_JSON_SCHEMA})"
                return message, f"{container}.{key}{rest.replace('[', '.').replace(']', '')}"
    return message, _field_of(message)


def _field_of(message: str) -> str:
    """msgspec says e.g. "Expected `int`, got `str` - at `$.priority`" or "Object contains
    unknown field `nmae`"."""
    at = re.search(r"at `\$\.([^`]+)`", message)
    if at:
        return at.group(1).replace("[", ".").replace("]", "")
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        return unknown.group(1)
    return "*"


@functools.lru_cache(maxsize=1024)
def _semver(version: str) -> sv.Version:
    """Parsed once per version string: plugins are sorted by version on every call by name."""
    return sv.Version(version)


def _check_text(m: Manifest, *, path: str, plugin: str) -> None:
    """Refuse text the host would show that is too long, or that hides or reorders what is
    around it (bidirectional controls, Trojan Source; control characters outside descriptions'
    newlines). Grants are checked likewise by Permissions."""
    texts: list[tuple[str, str, int]] = [
        (f, getattr(m, attr), MAX_TEXT[f]) for f, attr in (
            ("name", "name"), ("description", "description"), ("author", "author"),
            ("homepage", "homepage"), ("icon", "icon"), ("version", "version"), ("apiVersion", "api_version"))]
    if len(m.config_schema) > MAX_SCHEMA_FIELDS:
        raise InvalidManifest(f"{len(m.config_schema)} fields, more than {MAX_SCHEMA_FIELDS}", path=path,
                              field="configSchema", plugin=plugin)
    for field, bound in MAX_ENTRIES.items():
        if len(getattr(m, field)) > bound:
            raise InvalidManifest(f"{len(getattr(m, field))} entries, more than {bound}", path=path, field=field,
                                  plugin=plugin)
    for key, spec in m.config_schema.items():
        if spec.enum is not None and len(spec.enum) > MAX_ENUM:
            raise InvalidManifest(f"{len(spec.enum)} values, more than {MAX_ENUM}", path=path,
                                  field=f"configSchema.{key}.enum", plugin=plugin)
        if spec.default is not msgspec.UNSET and len(msgspec.msgpack.encode(spec.default)) > MAX_DEFAULT_BYTES:
            raise InvalidManifest(f"more than {MAX_DEFAULT_BYTES // 1024} KiB", path=path,
                                  field=f"configSchema.{key}.default", plugin=plugin)
    for key, spec in m.config_schema.items():
        texts.append((f"configSchema.{key}", key, 64))
        texts.append((f"configSchema.{key}.title", spec.title or "", MAX_FIELD_TEXT))
        texts.append((f"configSchema.{key}.description", spec.description or "", MAX_FIELD_TEXT))
        for value in spec.enum or ():
            if isinstance(value, str):
                texts.append((f"configSchema.{key}.enum", value, MAX_FIELD_TEXT))
    texts += [("capabilities", c, 200) for c in m.capabilities]
    texts += [(f"dependencies.{d}", d, 64) for d in m.dependencies]
    for field, text, limit in texts:
        if len(text) > limit:
            raise InvalidManifest(f"{len(text)} characters, more than {limit}", path=path, field=field,
                                  plugin=plugin)
        if found := BIDI.search(text):
            raise InvalidManifest(f"contains the bidirectional control character U+{ord(found.group()):04X}, "
                                  "which can disguise the text around it", path=path, field=field, plugin=plugin)
        multiline = field == "description" or field.endswith(".description")
        if (found := CONTROL.search(text.replace("\n", "") if multiline else text)):
            raise InvalidManifest(f"contains the control character U+{ord(found.group()):04X}", path=path,
                                  field=field, plugin=plugin)
