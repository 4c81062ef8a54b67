"""TypeScript's optional parameters (``b?: number``), which the code Deno runs no longer shows:
read from the function's declaration in the plugin's own ``.ts`` module, for the host's check
of a call's arguments (arity.py). A declaration this does not find (the function defined in
another file, a method of an object) leaves the check as the running code says it.

This is a reading of source text, not a parse: it finds ``function NAME(``, ``NAME = (``, ``NAME
= async (`` or ``NAME = function (`` and splits that parameter list at its top-level commas
(quotes, brackets and type arguments followed). A wrong reading can only make an argument
optional, never refuse a call that the running code's own parameters allow."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

TYPESCRIPT = frozenset({".ts", ".tsx", ".mts", ".cts"})
MAX_SOURCE = 512 * 1024  # a bigger module is not read for this
MAX_PLACES = 4096  # places the name stands that are looked at for `NAME = (...)`
MAX_TYPE_PARAMETERS = 2000  # characters of a function's <type parameters> skipped to its (
MAX_TRIED = 64  # declarations of one name looked at from the last (overloads, then the implementation)
_MODIFIERS = ("public ", "private ", "protected ", "readonly ", "override ")
_OPEN, _CLOSE = "([{<", ")]}>"
_MARKED = re.compile(r"[\w$]+\s*\?")


def optional_params(module: Path | None, fn: str) -> list[bool] | None:
    """For each parameter of ``fn`` as the module declares it, whether it is marked ``?``; None
    when ``module`` is no TypeScript file or its declaration of ``fn`` is not found."""
    if module is None or module.suffix not in TYPESCRIPT or not fn.isidentifier():
        return None
    try:
        st = os.stat(module)
    except OSError:
        return None
    if st.st_size > MAX_SOURCE:
        return None
    return _read(str(module), st.st_mtime_ns, st.st_size, fn)


@functools.lru_cache(maxsize=256)
def _read(path: str, _mtime: int, _size: int, fn: str) -> list[bool] | None:
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return None
    return declared_optional(source, fn)


def declared_optional(source: str, fn: str) -> list[bool] | None:
    # This runs in the host's event loop on a plugin's own text (before: "f:" * 200,000 held it
    # for minutes, and bounded but backtracking patterns 10 s on an 18 KB file). So every pattern
    # is possessive (``{0,20}+``, ``?+``: what a part took is never given back) and bounded, the
    # assignment form is tried only where the name stands (at most MAX_PLACES), and type
    # parameters (``<T extends Array<string>>``) are skipped by counting, not matched.
    ws = r"\s{0,20}+"
    fn_head = rf"function\b{ws}\*?+{ws}[\w$]{{0,100}}+{ws}"
    heads: list[int] = []
    if fn == "default":
        heads += [m.end() for m in re.finditer(rf"\bexport\s{{1,20}}+default\s{{1,20}}+(?:async\s{{1,20}}+)?+"
                                               rf"(?:{fn_head})?+", source)]
    else:
        name = re.escape(fn)
        heads += [m.end() for m in re.finditer(rf"\bfunction{ws}\*?+{ws}{name}(?![\w$])", source)]
        assigned = re.compile(rf"{name}{ws}(?::[^=;]{{0,1000}}+)?+={ws}(?:async{ws})?+(?:{fn_head})?+")
        for k, place in enumerate(re.finditer(rf"(?<![\w$.]){name}(?![\w$])", source)):
            if k >= MAX_PLACES:
                break
            if (m := assigned.match(source, place.start())) is not None:
                heads.append(m.end())
    # the last: overloads come before the implementation, whose parameters run (a few tried)
    opened = next((i for h in sorted(heads, reverse=True)[:MAX_TRIED] if (i := _parameters_at(source, h))), None)
    if opened is None:
        return None
    params = _split(source, opened)
    if params is None:
        return None
    if params and re.match(r"this\s*(:|$)", params[0]):
        params = params[1:]  # TypeScript's `this` parameter is erased
    return [_marked(p) for p in params]


def _parameters_at(source: str, i: int) -> int | None:
    """Just after the ``(`` that opens a parameter list at ``i``, past type parameters
    (``<T extends Array<string>>``, counted, at most MAX_TYPE_PARAMETERS characters); None when
    no parameter list starts there."""
    i = _blank(source, i)
    if source.startswith("<", i):
        depth, end = 0, min(len(source), i + MAX_TYPE_PARAMETERS)
        for k in range(i, end):
            c = source[k]
            if c == "<":
                depth += 1
            elif c == ">" and source[k - 1] != "=":
                depth -= 1
                if depth == 0:
                    i = _blank(source, k + 1)
                    break
        else:
            return None
    return i + 1 if source.startswith("(", i) else None


def _blank(source: str, i: int) -> int:
    while i < len(source) and source[i].isspace():
        i += 1
    return i


def _split(source: str, start: int) -> list[str] | None:
    """The top-level, comma-separated parameters from just after the ``(`` at ``start``."""
    out: list[str] = []
    depth, quote, begin, i = 0, "", start, start
    while i < len(source):
        c = source[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c == "/" and source[i + 1:i + 2] in ("/", "*"):
            end = source.find("\n" if source[i + 1] == "/" else "*/", i + 2)
            if end < 0:
                return None
            i = end + 1
        elif c == ">" and source[i - 1] == "=":  # an arrow in a function type
            pass
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            if depth == 0:
                if c != ")":
                    return None
                last = source[begin:i].strip()
                return [*out, last] if last else out  # a trailing comma (deno fmt, Prettier) ends no parameter
            depth -= 1
        elif c == "," and depth == 0:
            out.append(source[begin:i].strip())
            begin = i + 1
        i += 1
    return None


def _marked(param: str) -> bool:
    """``b?: T`` or ``b?``: True; ``b: T``, ``b = 1``, a pattern or ``...rest``: False."""
    text, i = param.strip(), 0
    while text.startswith(_MODIFIERS, i):  # an index, not the rest copied a modifier at a time (0.78 s)
        i = _blank(text, text.index(" ", i) + 1)
    return _MARKED.match(text, i) is not None


__all__ = ["TYPESCRIPT", "declared_optional", "optional_params"]
