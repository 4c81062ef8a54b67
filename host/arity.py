"""Whether a call gives a plugin function the arguments it declares, judged by the host before
the call goes out: a missing argument would otherwise be filled by the ``context`` the runtime
appends after the caller's (``add(a, b)`` called with nothing adds the context to undefined).

What a function takes comes, first, from its manifest (``metadata.functions.NAME.params``:
names, ``"x?"`` optional, ``"...rest"`` any number more), else from what the worker reported of
its source (protocol.Signature: ``fn.length``, the parameter names, a rest parameter).
A last declared
parameter named ``context`` or ``ctx``, or an object pattern of the context's own keys
(``{log, signal}``; ``{query, limit}`` is an options argument), is the context's place, not an
argument; so is the one after the arguments the plugin API defines for its own functions. A
function whose manifest declares a rest parameter last (``"...numbers"``) gets the caller's
arguments only, no context. TypeScript's ``b?: number`` is gone from the code that runs: a ``.ts`` module's own
declaration of the function is read for it (optional.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidArguments
from .optional import optional_params
from .protocol import HOOKS, Signature

# The plugin API's functions: how many arguments the host passes before the context.
API_ARGUMENTS = {"queryBalance": 1, "validateConfig": 1, "healthCheck": 1, "onEvent": 2}
_CONTEXT = re.compile(r"_*(context|ctx)")
# What the context holds (worker_runtime/context.ts makeContext): a pattern of these is its place.
CONTEXT_KEYS = frozenset({"callId", "pluginId", "config", "timeout", "signal", "log", "cache", "storage",
                          "channel", "fetchJson"})
NO_CONTEXT = -1  # Call.context_at: the function gets the caller's arguments only
MAX_ARGUMENTS = 1024  # as many as the worker pads to the context's place (calls.ts)


def is_context(name: str) -> bool:
    """A parameter the worker reported that is the context's place: ``context``/``ctx``, or an
    object pattern of the context's keys only (``{}``, ``{log, signal}``)."""
    if name.startswith("{") and name.endswith("}"):
        return all(k.strip() in CONTEXT_KEYS for k in name[1:-1].split(",") if k.strip())
    return _CONTEXT.fullmatch(name) is not None


def _declared(metadata: Any, fn: str) -> list[str] | None:
    """``metadata.functions[fn].params`` when the manifest gives it as a list of names."""
    functions = metadata.get("functions") if isinstance(metadata, Mapping) else None
    entry = functions.get(fn) if isinstance(functions, Mapping) else None
    params = entry.get("params") if isinstance(entry, Mapping) else None
    return params if isinstance(params, list) and all(isinstance(p, str) for p in params) else None


def bounds(fn: str, signature: Signature | None, metadata: Any = None,
           optional: list[bool] | None = None) -> tuple[int, int | None, list[str]] | None:
    """(fewest arguments, most or None for any number, their names) that ``fn`` takes, or None
    when nothing is known of it. ``optional``: which of the source's parameters TypeScript
    marks optional (``b?``), when its declaration was read."""
    if (params := _declared(metadata, fn)) is not None:
        rest = bool(params) and params[-1].startswith("...")
        fixed = params[:-1] if rest else params
        return sum(1 for p in fixed if not p.endswith("?")), None if rest else len(fixed), params
    if signature is None:
        return None
    names = list(signature.params or [])
    required = max(0, min(signature.length, MAX_ARGUMENTS))  # the worker's word: a plugin can set fn.length
    if optional is not None and len(optional) == len(names) and True in optional:
        required = min(required, optional.index(True))
        names = [f"{n}?" if o else n for n, o in zip(names, optional, strict=True)]
    if fn in API_ARGUMENTS:
        required = min(required, API_ARGUMENTS[fn])
        names = names[:API_ARGUMENTS[fn]]
    elif required and len(names) >= required and is_context(names[required - 1]):
        required -= 1
        names = names[:required]
    elif names and is_context(names[-1].rstrip("?")):
        names = names[:-1]
    if signature.params is None or signature.rest:
        return required, None, names
    most = API_ARGUMENTS.get(fn, len(names))
    return required, max(most, required), names


def takes_context(fn: str, metadata: Any = None) -> bool:
    """Whether ``fn`` is given the context after the caller's arguments: not when its manifest
    declares a rest parameter last (``"...numbers"``). One read from its source still gets it as
    its last element: a wrapper, ``(...args) => inner(...args)``, passes it on to a function
    that takes it (``rest_warnings`` tells the author of a ``sum(...nums)``)."""
    if fn in API_ARGUMENTS:
        return True
    params = _declared(metadata, fn)
    return not (params and params[-1].startswith("..."))


def rest_warnings(signatures: Mapping[str, Signature], metadata: Any, module: object) -> list[str]:
    """A warning for each function whose source ends in a rest parameter and whose manifest does
    not declare its parameters: the context arrives as the rest's last element."""
    out = []
    for fn, sig in signatures.items():
        if sig.rest and fn not in API_ARGUMENTS and fn not in HOOKS.values() and _declared(metadata, fn) is None \
                and sig.params:
            rest = sig.params[-1].removeprefix("...")
            out.append(f"{fn}(...{rest}) gets the context as the last element of {rest} (every function gets "
                       f"the caller's arguments, then the context: a wrapper passes it on); for the caller's "
                       f'arguments only, declare metadata.functions = {{ {fn}: {{ params: ["...{rest}"] }} }} '
                       f"in {module}")
    return out


def check_arguments(plugin: str, fn: str, args: list[Any], signature: Signature | None,
                    metadata: Any = None, module: Path | None = None) -> int | None:
    """InvalidArguments naming the function, what it takes and how many were given, when
    ``args`` are too few or too many for it; ``module``: the plugin's file, to say where to
    declare otherwise (and, a TypeScript one, to read its optional parameters). Else where the
    context goes when optional arguments were left out (after every declared one, so that none
    of them receives it), NO_CONTEXT for a rest parameter's function, or None."""
    optional = (optional_params(module, fn) if signature is not None and signature.params
                and _declared(metadata, fn) is None else None)
    known = bounds(fn, signature, metadata, optional)
    if known is None:
        return None
    least, most, names = known
    given = len(args)
    if least <= given and (most is None or given <= most):
        if not takes_context(fn, metadata):
            return NO_CONTEXT
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


__all__ = ["API_ARGUMENTS", "CONTEXT_KEYS", "NO_CONTEXT", "bounds", "check_arguments", "is_context", "rest_warnings",
           "takes_context"]
