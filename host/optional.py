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
MAX_PLACES = 4096  # places a declaration could start that are looked at
_MODIFIERS = ("public ", "private ", "protected ", "readonly ", "override ")
_OPEN, _CLOSE = "([{<", ")]}>"


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
    # Every quantifier bounded and possessive (``{0,20}+``, ``?+``: what one took is never given
    # back, so a place costs at most the pattern's length in characters), each pattern tried only
    # where its first word stands, at most MAX_PLACES of those: this runs in the host's event loop
    # on a plugin's own text (before: "f:" * 200,000 held it for minutes, and with bounded but
    # backtracking quantifiers an 18 KB file still held it 10 s).
    ws, generic = r"\s{0,20}+", r"(?:<[^(<>]{0,200}+>)?+"
    if fn == "default":
        first, patterns = r"\bexport\b", [
            rf"export\s{{1,20}}+default\s{{1,20}}+(?:async\s{{1,20}}+)?+function\b{ws}\*?+{ws}[\w$]{{0,100}}+{ws}"
            rf"{generic}{ws}\(",
            rf"export\s{{1,20}}+default\s{{1,20}}+(?:async{ws})?+{generic}{ws}\("]
    else:
        name = re.escape(fn)
        first, patterns = rf"(?<![\w$.])(?:function\b|{name}(?![\w$]))", [
            rf"function{ws}\*?+{ws}{name}{ws}{generic}{ws}\(",
            rf"{name}{ws}(?::[^=;]{{0,200}}+)?+={ws}(?:async{ws})?+(?:function\b{ws}\*?+{ws}[\w$]{{0,100}}+{ws})?+"
            rf"{generic}{ws}\("]
    found: list[re.Match[str] | None] = [None, None]
    compiled = [re.compile(p) for p in patterns]
    for k, place in enumerate(re.finditer(first, source)):
        if k >= MAX_PLACES:
            break
        for i, pattern in enumerate(compiled):
            if (m := pattern.match(source, place.start())) is not None:
                found[i] = m  # the last: overloads come before the implementation, whose parameters run
    for last in found:
        if last is not None:
            params = _split(source, last.end())
            if params is None:
                return None
            if params and re.match(r"this\s*(:|$)", params[0]):
                params = params[1:]  # TypeScript's `this` parameter is erased
            return [_marked(p) for p in params]
    return None


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
    text = param.strip()
    while text.startswith(_MODIFIERS):
        text = text.split(" ", 1)[1].lstrip()
    found = re.match(r"[\w$]+\s*\?", text)
    return found is not None


__all__ = ["TYPESCRIPT", "declared_optional", "optional_params"]
