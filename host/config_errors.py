"""Configuration errors as an operator reads them: msgspec's validation messages turned into
``section.field: what is wrong``, with the known fields of a section after an unknown one and
the allowed values after a value outside a Literal's choices."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from .errors import InvalidConfig

_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`$", re.S)


def validation_message(message: str, root: type, prefix: str, *, top_level: Iterable[str] = ()) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.pool.max_workers`" as
    "pool.max_workers: Expected `int`, got `str`"; an unknown field or a value outside a
    Literal's choices with what is allowed there. ``top_level``: names accepted at the top of
    the file besides ``root``'s fields."""
    m = _AT.match(message)
    assert m is not None  # the pattern matches any text
    text, at = m[1], (m[2] or "").lstrip(".")
    where = ".".join(p for p in (prefix, at) if p)
    unknown = _UNKNOWN.match(text)
    if unknown is None:
        choices = _choices_at(root, at.split(".") if at else []) if text.startswith("Invalid enum value") else []
        if choices:
            text = f"{text.removeprefix('Invalid enum value ')} is not one of {', '.join(map(repr, choices))}"
        return f"{where}: {text}" if where else text
    key = unknown[1]
    known = _fields_at(root, at.split(".") if at else [])
    if not where:  # the top level of host.toml
        known = sorted({*known, *top_level})
        return f"{key}: unknown section or key; known: {', '.join(known)}"
    return f"{where}.{key}: unknown field{_meant(key, known)}; {where} has: {', '.join(known)}"


def _meant(key: str, known: list[str]) -> str:
    """`` (did you mean `allowPrivateNetwork`?)`` for the same name in another case style or a
    near spelling of a known field."""
    bare = key.replace("_", "").replace("-", "").lower()
    same = [k for k in known if k.replace("_", "").replace("-", "").lower() == bare]
    close = same or difflib.get_close_matches(key, known, 1, 0.8)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _choices_at(root: type, parts: list[str]) -> list[Any]:
    """The values a Literal field at ``parts`` below ``root`` allows (empty if it is none)."""
    t: Any = msgspec.inspect.type_info(root)
    for part in parts:
        if isinstance(t, msgspec.inspect.UnionType):
            t = next((u for u in t.types if isinstance(u, msgspec.inspect.StructType)), t)
        field = next((f for f in t.fields if part in (f.encode_name, f.name)),
                     None) if isinstance(t, msgspec.inspect.StructType) else None
        if field is None:
            return []
        t = field.type
    return sorted(t.values, key=str) if isinstance(t, msgspec.inspect.LiteralType) else []


def _fields_at(root: type, parts: list[str]) -> list[str]:
    """The field names of the Struct at ``parts`` below ``root`` (for unknown-field errors)."""
    t: Any = msgspec.inspect.type_info(root)
    for part in [*parts, None]:
        if isinstance(t, msgspec.inspect.UnionType):
            t = next((u for u in t.types if isinstance(u, msgspec.inspect.StructType)), t)
        if not isinstance(t, msgspec.inspect.StructType):
            return []
        if part is None:
            return [f.encode_name for f in t.fields]  # as the file spells them (allowPrivateNetwork)
        field = next((f for f in t.fields if part in (f.encode_name, f.name)), None)
        if field is None:
            return []
        t = field.type
    return []


__all__ = ["validation_message"]


def check_directory_name(name: str, path: str) -> None:
    """InvalidConfig unless ``path`` (setting ``name``) names a directory: not empty ("" was the
    config file's own directory), and UTF-8 text (bytes that are not, os.fsdecode's surrogates,
    would reach every plugin path and log line)."""
    if not path.strip():
        raise InvalidConfig(f"{name}: empty; give a directory (\".\" for the current one)")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        raise InvalidConfig(f"{name}: {shown!r} holds bytes that are not UTF-8 text: every plugin path "
                            "and log line would carry them; use a directory named in UTF-8") from None
