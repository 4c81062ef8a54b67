"""Whether a call gives a plugin function the arguments it declares, judged by the host before
the call goes out: a missing argument would otherwise be filled by the ``context`` the runtime
appends after the caller's (``add(a, b)`` called with nothing adds the context to undefined).

What a function takes comes, first, from its manifest (``metadata.functions.NAME.params``:
names, ``"x?"`` optional, ``"...rest"`` any number more), else from what the worker reported of
its source (protocol.Signature: ``fn.length``, the parameter names, a rest parameter).
TypeScript's types are stripped before the code runs, so they are not read. A last declared
parameter named ``context`` or ``ctx`` (or a destructuring pattern) is the context's place, not
an argument; so is the one after the arguments the plugin API defines for its own functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArguments
from .protocol import Signature

# The plugin API's functions: how many arguments the host passes before the context.
API_ARGUMENTS = {"queryBalance": 1, "validateConfig": 1, "healthCheck": 1, "onEvent": 2}
_CONTEXT = re.compile(r"_*(context|ctx)|\{\}")


def _declared(metadata: Any, fn: str) -> list[str] | None:
    """``metadata.functions[fn].params`` when the manifest gives it as a list of names."""
    functions = metadata.get("functions") if isinstance(metadata, Mapping) else None
    entry = functions.get(fn) if isinstance(functions, Mapping) else None
    params = entry.get("params") if isinstance(entry, Mapping) else None
    return params if isinstance(params, list) and all(isinstance(p, str) for p in params) else None


def bounds(fn: str, signature: Signature | None, metadata: Any = None) -> tuple[int, int | None, list[str]] | None:
    """(fewest arguments, most or None for any number, their names) that ``fn`` takes, or None
    when nothing is known of it."""
    if (params := _declared(metadata, fn)) is not None:
        rest = bool(params) and params[-1].startswith("...")
        fixed = params[:-1] if rest else params
        return sum(1 for p in fixed if not p.endswith("?")), None if rest else len(fixed), params
    if signature is None:
        return None
    names = list(signature.params or [])
    required = signature.length
    if fn in API_ARGUMENTS:
        required = min(required, API_ARGUMENTS[fn])
        names = names[:API_ARGUMENTS[fn]]
    elif required and len(names) >= required and _CONTEXT.fullmatch(names[required - 1]):
        required -= 1
        names = names[:required]
    elif names and _CONTEXT.fullmatch(names[-1]):
        names = names[:-1]
    if signature.params is None or signature.rest:
        return required, None, names
    most = API_ARGUMENTS.get(fn, len(names))
    return required, max(most, required), names


def check_arguments(plugin: str, fn: str, args: list[Any], signature: Signature | None,
                    metadata: Any = None, module: object = None) -> int | None:
    """InvalidArguments naming the function, what it takes and how many were given, when
    ``args`` are too few or too many for it; ``module``: the plugin's file, to say where to
    declare otherwise. Else where the context goes when optional arguments were left out
    (after every declared one, so that none of them receives it), or None."""
    known = bounds(fn, signature, metadata)
    if known is None:
        return None
    least, most, names = known
    given = len(args)
    if least <= given and (most is None or given <= most):
        return most if most is not None and most > given else None
    if most == least:
        takes = f"{least} argument{'s' if least != 1 else ''}"
    elif most is None:
        takes = f"at least {least} argument{'s' if least != 1 else ''}"
    else:
        takes = f"{least} to {most} arguments"
    shown = f" ({', '.join(names)})" if names else ""
    raise InvalidArguments(
        f"takes {takes}{shown}, {given} given (the context is passed after them; to declare other "
        f"parameters, set metadata.functions.{fn}.params{f' in {module}' if module else ''})",
        plugin=plugin, function=fn)


__all__ = ["API_ARGUMENTS", "bounds", "check_arguments"]
