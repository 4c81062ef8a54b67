"""Per-plugin configuration: validation against ``configSchema``, the host's config store, and
keeping ``secret`` values out of logs, errors and API output."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import msgspec

from ..errors import InvalidConfig, StateFileDamaged
from ..security.private_files import locked, os_failure, write_private
from ..security.secrets import Cipher, is_sealed, to_seal
from .keys import STATION_PREFIX
from .manifest import ConfigField
from .schema_rules import patterns_deadline, shown, value_problem

log = logging.getLogger("host")

MASK = "********"
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "object": (dict,), "array": (list,),
}


def apply_schema(schema: dict[str, ConfigField], values: dict[str, Any], *, plugin: str) -> dict[str, Any]:
    """``values`` checked against ``schema`` (unknown keys, types, required, enums) with the
    defaults filled in. Errors name the field and never contain a secret's value."""
    if not isinstance(values, dict):
        raise InvalidConfig("config must be an object", plugin=plugin)
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise InvalidConfig(f"config.{unknown[0]}: not in the plugin's configSchema", plugin=plugin)
    out: dict[str, Any] = {}
    deadline = patterns_deadline()  # one budget for all the values' patterns
    for key, field in schema.items():
        if key in values and values[key] is not None:
            value = values[key]
        elif field.default is not msgspec.UNSET:
            value = field.default
        elif field.required:
            raise InvalidConfig(f"config.{key}: is required", plugin=plugin)
        else:
            continue
        what = "the value" if field.secret else shown(value)
        ok = isinstance(value, _TYPES[field.type]) and not (
            field.type in ("number", "integer") and isinstance(value, bool))
        if not ok:
            raise InvalidConfig(f"config.{key}: {what} is not of type {field.type}", plugin=plugin)
        if field.enum is not None and value not in field.enum:
            raise InvalidConfig(f"config.{key}: {what} is not one of {shown(field.enum)}", plugin=plugin)
        if (why := value_problem(field, value, deadline)) is not None:
            raise InvalidConfig(f"config.{key}: {what} {why}", plugin=plugin)
        out[key] = value
    return out


def schema_fields(schema: dict[str, ConfigField], values: dict[str, Any], base: Collection[str], *, plugin: str,
                  version: str, warned: set[tuple[str, str, str]]) -> dict[str, Any]:
    """``values`` without the stored fields ``schema`` lacks. Such a field was one of an earlier
    version's, set through ``set_config``, that this version dropped: it is ignored (warned of
    once per version), its value kept for a downgrade, and removed by setting it to null. One
    from host.toml's config (``base``: its keys) is refused naming the place, where it is as
    likely the operator's typo."""
    station = plugin.startswith(STATION_PREFIX)
    unknown = [k for k in values if k not in schema]
    for key in unknown:
        if key in base:
            key = json.dumps(key)[1:-1]
            where = (f"host.toml's [stations.{plugin.removeprefix(STATION_PREFIX)}] config" if station
                     else f"host.toml's [plugins.{plugin}.config]")
            raise InvalidConfig(f"config.{key}: not in the plugin's configSchema (set in {where})", plugin=plugin)
    for key in unknown:
        if (plugin, version, key) not in warned:
            warned.add((plugin, version, key))
            name = json.dumps(key)[1:-1]  # a key of a hand-edited store holds no line break for the log
            how = (f"PUT /api/stations/{plugin.removeprefix(STATION_PREFIX)}/config with {{{json.dumps(key)}: null}}"
                   if station else f"python -m host config set {plugin} {name}=null")
            log.warning("%s: config.%s is stored but not in %s %s's configSchema: ignored (the value is kept for "
                        "an earlier version); remove it with %s", plugin, name,
                        "the provider" if station else plugin, version, how)
    return {k: v for k, v in values.items() if k in schema} if unknown else values


def secret_values(schema: dict[str, ConfigField], values: dict[str, Any]) -> list[str]:
    """The secret strings in ``values`` worth redacting (long enough not to hit by accident):
    the secret fields, and the passwords in URLs of the other fields."""
    found = [str(v) for k, v in values.items() if k in schema and schema[k].secret and v is not None]
    found += [pw for k, v in values.items() if not (k in schema and schema[k].secret) for pw in url_passwords(v)]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def mask(schema: dict[str, ConfigField], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as shown: every secret field replaced by a mask when set (a stored null or ""
    stays as it is: the secret is not set), every sealed value too, and in the others the
    password of every URL."""
    return {k: (MASK if (k in schema and schema[k].secret and v not in (None, "")) or is_sealed(v)
                else masked_urls(v))
            for k, v in values.items()}  # sealed: the secret of a field an earlier version had


# A URL's user-info: everything before its last "@" ahead of the query, as redact_uri (policy/config.py)
# reads it (libpq ends it at the last "@" even past a "/" in the password), and its password fields.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^?#]*)@")
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)([^&#]*)", re.IGNORECASE)


def masked_url(text: str) -> str:
    """``text`` with the password of the URL it starts with masked, in its user-info
    (``https://user:********@host``) and its query (``?password=``): the rest stays readable
    (and a value sent back as shown keeps the stored one: ``unmasked``)."""
    if not _SCHEME.match(text):
        return text
    m = _USERINFO.match(text)
    if m is not None:
        user, _, password = m.group(2).partition(":")
        if password:
            text = f"{m.group(1)}{user}:{MASK}@{text[m.end():]}"
    return _QUERY_PASSWORD.sub(lambda q: q.group(1) + (MASK if q.group(2) else ""), text)


def masked_urls(value: Any) -> Any:
    """``value`` with ``masked_url`` applied to every string in it (objects and arrays too)."""
    if isinstance(value, str):
        return masked_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: masked_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_urls(v) for v in value]
    return value


def url_passwords(value: Any) -> list[str]:
    """The passwords of the URLs in ``value`` (strings, objects and arrays), as written and
    decoded: what must be redacted wherever the plugin's output goes."""
    if isinstance(value, dict):
        return [pw for v in value.values() for pw in url_passwords(v)]
    if isinstance(value, list):
        return [pw for v in value for pw in url_passwords(v)]
    if not isinstance(value, str) or not _SCHEME.match(value):
        return []
    m = _USERINFO.match(value)
    found = [m.group(2).partition(":")[2] if m else "", *(q.group(2) for q in _QUERY_PASSWORD.finditer(value))]
    return [form for pw in found if pw for form in dict.fromkeys((pw, unquote(pw)))]


def unmasked(key: str, value: Any, stored: dict[str, Any], secret: Collection[str]) -> Any:
    """What a config value sent back as ``mask`` showed it stands for: the stored secret for a
    MASK, the stored URL for one shown with its password masked; anything else as sent."""
    if key in secret:
        return stored.get(key) if value == MASK else value
    old = stored.get(key)
    return old if old is not None and value != old and value == masked_urls(old) else value


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each secret masked, as it is and as a URL carries it (percent-encoded as
    encodeURIComponent, encodeURI or a form does: a key in a request's path or query)."""
    for s in secrets:
        for form in _forms(s):
            if form in text:
                text = text.replace(form, MASK)
    return text


# A number is masked when its whole text is a secret of at least this many characters: a secret
# "1234" turned every 1234 any plugin answered (an amount, a count) into a string.
MASKED_NUMBER = 6


def redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` with ``redact`` applied to every string in it (object keys too), and a number
    whose text is a secret (MASKED_NUMBER characters or more) masked: what a plugin answers may
    echo its config. Looked for in the answer's JSON first: with no escape in it every string and
    number is there as it is, so an answer with no secret in that text is returned unwalked (a
    large one costs one search)."""
    try:
        text = msgspec.json.encode(value, enc_hook=str).decode()
    except (TypeError, ValueError, OverflowError, RecursionError):
        text = "\\"
    if "\\" not in text and redact(text) == text:
        return value
    return _redacted(value, redact)


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redacted(k, redact): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(text := str(value)) >= MASKED_NUMBER \
            and redact(text) == MASK:
        return MASK
    return value


@functools.lru_cache(maxsize=4096)
def _forms(secret: str) -> tuple[str, ...]:
    forms = [secret, quote(secret, safe=""), quote(secret, safe="-_.!~*'()"),
             quote(secret, safe=";,/?:@&=+$-_.!~*'()#"), quote_plus(secret)]
    return tuple(dict.fromkeys(f for f in forms if f))


def secret_keys(schema: dict[str, ConfigField]) -> frozenset[str]:
    """The fields ``schema`` marks ``secret``."""
    return frozenset(k for k, f in schema.items() if f.secret)


def seal_configs(box: Cipher | None, configs: Mapping[str, dict[str, Any]],
                 secret: Mapping[str, Collection[str]] | None) -> dict[str, dict[str, Any]]:
    """``configs`` as stored: the fields ``secret`` names sealed with ``box``."""
    sealed = {}
    for plugin, values in configs.items():
        keys = (secret or {}).get(plugin, ())
        if keys and box is None:
            raise InvalidConfig("cannot store secrets: no secret key", plugin=plugin)
        sealed[plugin] = box.seal_fields(values, keys) if box is not None else dict(values)
    return sealed


def unsealed(data: Mapping[str, dict[str, Any]], secret: Mapping[str, Collection[str]]) -> list[str]:
    """The plugins whose stored config still holds a secret field in plaintext."""
    return [p for p, keys in secret.items() if p in data and any(to_seal(k, v, keys) for k, v in data[p].items())]


class ConfigStore:
    """Plugin configs persisted in ``<state_dir>/config.json`` (mode 0600, atomic writes).
    Secret fields are stored sealed (``enc:v1:...``, see host.secrets) with ``box``; ``get``
    returns them sealed, so they are opened only where a plugin or a validation needs them.

    Several processes may share the file (the CLI beside a running server): each write takes a
    lock, reads the file afresh and changes only the plugins it was asked to (compare and swap
    per plugin), so two processes changing different plugins never lose either change; ``refresh``
    reads what another process wrote."""

    def __init__(self, state_dir: str | Path, box: Cipher | None = None, filename: str = "config.json") -> None:
        self.path = Path(state_dir) / filename
        self._box = box
        # (the file's stamp, what it held then), replaced whole: a write or read runs in a worker
        # thread while the event loop reads both, and a stamp set before the data (a station just
        # removed) had the stations' cache keep the old names under the new stamp, listed for ~1.5 s
        self._view: tuple[tuple[int, int, int] | None, dict[str, dict[str, Any]]] = self._read()
        # entries another process changed, taken in with a write of ours: the next refresh says them
        self._unreported: set[str] = set()

    @property
    def _data(self) -> dict[str, dict[str, Any]]:
        return self._view[1]

    def get(self, plugin: str) -> dict[str, Any] | None:
        return self._data.get(plugin)

    def names(self) -> list[str]:
        return list(self._data)

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        """The file as last read or written (changes with every change to what ``get`` sees)."""
        return self._view[0]

    def insert(self, key: str, values: dict[str, Any]) -> bool:
        """Store ``values`` under a new ``key``: False (nothing written) if the file has it
        already, whoever wrote it (the check and the write under one lock)."""
        try:
            with locked(self.path):
                stamp, data = self._read()
                if key in data:
                    self._adopt(stamp, data, ())
                    return False
                data[key] = dict(values)
                stamp = self._write(data)
        except OSError as exc:
            raise os_failure(self.path, exc, "write") from None
        self._adopt(stamp, data, (key,))
        return True

    def remove(self, plugin: str) -> None:
        """Forget ``plugin``'s entry (the others kept as the file holds them now)."""
        try:
            with locked(self.path):
                stamp, data = self._read()
                if data.pop(plugin, None) is not None:
                    stamp = self._write(data)
        except OSError as exc:
            raise os_failure(self.path, exc, "write") from None
        self._adopt(stamp, data, (plugin,))

    @property
    def has_sealed(self) -> bool:
        """Whether any stored value is sealed (then its key must not be replaced by a new one)."""
        return any(is_sealed(v) for values in self._data.values() for v in values.values())

    def refresh(self) -> set[str]:
        """Read the file again if another process changed it; returns the plugins whose config
        differs from before (those a write of ours took in with the file included)."""
        unreported, self._unreported = self._unreported, set()
        if self._file_stamp() == self.stamp:
            return unreported
        before, self._view = self._data, self._read()
        return unreported | {p for p in set(before) | set(self._data) if before.get(p) != self._data.get(p)}

    def _adopt(self, stamp: tuple[int, int, int] | None, data: dict[str, dict[str, Any]],
               written: Collection[str]) -> None:
        """The file as a write of ours left it: the entries of others it changed are kept for the
        next refresh to say (before, taking them in with the stamp hid them from it for good, and
        another process's config change never reached this one's workers)."""
        before = self._data
        self._unreported |= {k for k in set(before) | set(data) if k not in written and before.get(k) != data.get(k)}
        self._view = (stamp, data)

    def set(self, plugin: str, values: dict[str, Any], secret: Collection[str] = ()) -> None:
        """Store ``values`` with the fields named in ``secret`` sealed."""
        self.set_many({plugin: values}, {plugin: secret})

    def set_many(self, configs: Mapping[str, dict[str, Any]],
                 secret: Mapping[str, Collection[str]] | None = None) -> None:
        """Store several plugins' configs in one atomic write: all of them or none. The other
        plugins' configs are kept as the file holds them now."""
        sealed = seal_configs(self._box, configs, secret)
        try:
            with locked(self.path):
                data = {**self._read()[1], **sealed}
                stamp = self._write(data)
        except OSError as exc:
            raise os_failure(self.path, exc, "write") from None
        self._adopt(stamp, data, sealed)

    def swap(self, key: str, values: dict[str, Any], secret: Collection[str],
             base: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        """``swap_many`` of one entry."""
        done, now = self.swap_many({key: values}, {key: secret}, {key: base})
        return done, now[key]

    def swap_many(self, configs: Mapping[str, dict[str, Any]], secret: Mapping[str, Collection[str]],
                  bases: Mapping[str, dict[str, Any] | None]) -> tuple[bool, dict[str, dict[str, Any] | None]]:
        """Store ``configs`` (their ``secret`` fields sealed) if the file still holds
        ``bases[key]`` under every key (None: no entry), checked and written under one lock,
        all or none: (True, what was stored); else nothing is written, nothing here changes,
        and (False, what the file holds under those keys)."""
        sealed = seal_configs(self._box, configs, secret)
        try:
            with locked(self.path):
                _, data = self._read()
                if any((data.get(k) or {}) != (bases.get(k) or {}) for k in sealed):
                    return False, {k: data.get(k) for k in sealed}  # the next refresh reports the changes
                data.update(sealed)
                stamp = self._write(data)
        except OSError as exc:
            raise os_failure(self.path, exc, "write") from None
        self._adopt(stamp, data, sealed)
        return True, dict(sealed)

    def verify(self) -> None:
        """Open every sealed value once, so that a wrong key is a SecretsError now (at host
        start) rather than at some plugin's first use (no key is loaded if nothing is sealed)."""
        if self._box is not None:
            for plugin, values in self._data.items():
                self._box.reveal(values, plugin=plugin)

    def migrate(self, secret: Mapping[str, Collection[str]]) -> list[str]:
        """Seal the secret fields still stored in plaintext (a config.json from before secrets
        were encrypted); returns the plugins rewritten."""
        if stale := unsealed(self._data, secret):
            self.set_many({p: self._data[p] for p in stale}, secret)
        return stale

    def _read(self) -> tuple[tuple[int, int, int] | None, dict[str, dict[str, Any]]]:
        """The file's stamp and configs (empty when there is none), checked: ``{plugin id: {key:
        value}}``."""
        stamp = self._file_stamp()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return stamp, {}
        except OSError as exc:
            raise os_failure(self.path, exc, "read") from None
        try:  # bytes that are not UTF-8 (a damaged disk, a tool's binary): before, a traceback at start
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise StateFileDamaged(f"{self.path}: not valid JSON ({exc}); fix it, or move it aside to start "
                                "without what it holds") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in data.items()):
            shape = type(data).__name__ if not isinstance(data, dict) else "an object whose values are not all objects"
            raise StateFileDamaged(f"{self.path}: must be an object of {{name: {{key: value}}}}, "
                                f"found {shape}; fix it, or move it aside to start without what it holds")
        return stamp, data

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _write(self, data: dict[str, dict[str, Any]]) -> tuple[int, int, int] | None:
        """Writes ``data``; the file's new stamp."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.path, json.dumps(data, indent=2, sort_keys=True).encode())
        return self._file_stamp()
