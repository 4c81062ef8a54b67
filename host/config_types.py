"""The constrained field types of the configuration, checked by msgspec wherever a section is
decoded (host.toml, a dict) and re-checked by ``checked`` for sections built in Python: a value
out of range is an ``InvalidConfig`` that names the field, e.g. ``pool.max_workers: Expected
`int` >= 1``. Checks that relate two fields stay with the section that has them."""

from __future__ import annotations

import os
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from .config_errors import validation_message
from .errors import InvalidConfig

# Longest duration a setting may give (about 31 years): finite, so that ``inf`` and ``nan``
# from TOML are refused rather than turned into deadlines that never come.
MAX_SECONDS = 1e9

# Largest count a setting may give: what a worker's JavaScript holds exactly (Number.MAX_SAFE_INTEGER),
# and msgpack and the C longs of setrlimit too. Before, a number with a few digits too many passed,
# and every worker failed to start ("OverflowError: Python int too large to convert to C long",
# "unhandled errors in a TaskGroup"), a crash loop naming no setting.
MAX_COUNT = 2**53 - 1

Count = Annotated[int, Meta(ge=1, le=MAX_COUNT)]           # one or more
Amount = Annotated[int, Meta(ge=0, le=MAX_COUNT)]          # zero or more (0 often: none, or no cap)
Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]     # a duration above zero
Delay = Annotated[float, Meta(ge=0, le=MAX_SECONDS)]       # a duration, zero allowed
Fraction = Annotated[float, Meta(ge=0, le=1)]
Port = Annotated[int, Meta(ge=0, le=65535)]                # 0: any free port

S = TypeVar("S")


def checked(value: Any, kind: Any, where: str, root: type | None = None) -> Any:
    """``value`` (a Struct, or the dict, list or mapping of Structs of a section) validated as
    ``kind``: a dict becomes its Struct, and a Struct built in Python (which msgspec does not
    check on construction) is checked like one read from a file. ``root``: the Struct type
    error messages are resolved against (default ``kind``)."""
    try:
        return msgspec.convert(msgspec.to_builtins(value), kind)
    except msgspec.ValidationError as exc:
        base = root if root is not None else kind if isinstance(kind, type) else None
        raise InvalidConfig(validation_message(str(exc), base or object, where)) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # an object msgspec has no form for
        raise InvalidConfig(f"{where}: {exc}") from None


def nul_in(value: Any, where: str, depth: int = 0) -> str | None:
    """The first setting under ``value`` (``where``) holding a NUL character: the paths among
    them failed with a ValueError of os (embedded null byte) wherever they were first used."""
    if isinstance(value, (str, os.PathLike)):
        return where or "config" if "\x00" in str(os.fspath(value)) else None
    if depth > 8:
        return None
    if isinstance(value, msgspec.Struct):
        items: Any = ((f, getattr(value, f)) for f in value.__struct_fields__)
    elif isinstance(value, dict):
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, v in items:
        if isinstance(key, str) and "\x00" in key:
            return f"{where}.{key!r}" if where else repr(key)
        found = nul_in(v, f"{where}{key}" if key.startswith("[") else f"{where}.{key}" if where else key, depth + 1)
        if found:
            return found
    return None



__all__ = ["MAX_COUNT", "MAX_SECONDS", "Amount", "Count", "Delay", "Fraction", "Port", "Seconds", "checked", "nul_in"]
