"""A plugin module that would not load, said as what its author can change: a refused import,
or a CommonJS module.

Deno reports a refused import as a TypeError (the runtime names it NotCapable, worker_runtime/
errors.ts) in terms of its command line: "npm specifiers were requested; but --no-npm is
specified", 'Requires read access to "/x.js", run again with the --allow-read flag'. A plugin
author passes no flags: workers run with ``--no-remote --no-npm --cached-only`` (nothing is
fetched at run time, DENO_FACTS Q6) and may read only the plugin's own file or directory. What
tells an import from an API call refused alike (``Deno.readTextFile``) is the error itself: a
refused import is a TypeError (its stack starts so), an API's refusal a NotCapable.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import protocol as p

_FETCH = re.compile(r"but --no-(npm|remote) is specified\.?")
_READ = re.compile(r'^Requires read access to "([^"]*)"(?:, run again with the --allow-read flag)?')


def import_advice(info: p.ErrorInfo, module: str | None, root: str | None) -> str | None:
    """``info``'s message with what to do instead of Deno's flag, when it is a refused import of
    the plugin at ``module`` (its own file or directory: ``root``); None for anything else."""
    if module is None or info.name != "NotCapable" or not (info.stack or "").startswith("TypeError: "):
        return None
    single = root is None or Path(root) == Path(module)
    home = (f"make the plugin a directory ({Path(module).stem}/mod{Path(module).suffix}) holding that code, "
            "and import it by a relative path" if single
            else f"copy its code into the plugin's directory ({root}) and import it by a relative path")
    if (m := _FETCH.search(info.message)) is not None:
        return (f"{info.message[:m.end()]}: nothing is fetched at run time (plugins run with --no-remote "
                f"--no-npm); {home}{info.message[m.end():]}")
    if (m := _READ.match(info.message)) is not None:
        why = ("a single-file plugin imports only itself (and \"@plugin-host/kit\"); " if single
               else f"it is outside the plugin's directory ({root}), the only files a plugin may import; ")
        types = ("; if it imports only types, write `import type { ... }` (erased: an `import { type X }` "
                 "still loads the file)" if m.group(1).endswith((".ts", ".tsx", ".mts")) else "")
        missing = "; there is no such file either" if _absent(m.group(1), Path(module).parent) else ""
        return f'Requires read access to "{m.group(1)}"{missing}: {why}{home}{types}{info.message[m.end():]}'
    return None


def _absent(path: str, beside: Path) -> bool:
    """Whether ``path`` (from a worker's message: the plugin's own words) names a file that is not
    there, looked at only beside the plugin (its directory and below): the host is no file-existence
    oracle for a plugin, and a path it may not look at (EACCES, too long) says nothing."""
    try:
        target = Path(path)
        if not target.is_absolute() or not target.resolve().is_relative_to(beside.resolve()):
            return False
        return not target.exists()
    except (OSError, ValueError, RuntimeError):
        return False


_SLOPPY = re.compile(r"Maybe (?:add a '(\.\w+)' extension|specify path to '([^']+)' file in directory instead) "
                     r"or run with --sloppy-imports")


def extension_advice(info: p.ErrorInfo) -> str | None:
    """Deno's "Maybe add a '.ts' extension or run with --sloppy-imports" without the flag no plugin
    author can pass: an import names its file whole, extension included (ES modules, no Node-style
    resolution)."""
    found = _SLOPPY.search(info.message)
    if found is None:
        return None
    write = (f"Write the import with its extension ('{found.group(1)}')" if found.group(1)
             else f"Import the file itself ('{found.group(2)}' in that directory), not the directory")
    head = info.message[:found.start()].rstrip()
    return (f"{head}{' ' if head.endswith(('.', ':')) else '. '}{write}: plugins are ES modules, which name a "
            f"file whole (no Node-style lookup of extensions or index files){info.message[found.end():]}")


_COMMONJS = re.compile(r"^(module|exports|require) is not defined$")


def commonjs_advice(info: p.ErrorInfo) -> str | None:
    """``info``'s message with what to write instead, when the module is CommonJS (``module.exports``,
    ``require``), which Deno runs as an ES module: those names are not defined there."""
    if info.name != "ReferenceError" or _COMMONJS.match(info.message) is None:
        return None
    return (f"{info.message}: plugins are ES modules, not CommonJS; write `export const metadata = {{...}}` "
            "and `export async function name(...)` instead of module.exports, and `import` instead of require")


_TRAILING_AT = re.compile(r"\n[ \t]*at file://\S+:\d+:\d+\s*$")  # [ \t]: not \s, which retried every newline


def located(message: str, where: str | None) -> str:
    """A failed load's message with where it failed at the end of its first line: Deno ends a
    module's load error with "\\n    at file:///...:L:C", after a syntax error's code frame, and a
    log entry (one line, newlines escaped) then shows the frame before the file."""
    if not where:
        return message
    message = _TRAILING_AT.sub("", message)
    first, nl, rest = message.partition("\n")
    return f"{first} (at {where}){nl}{rest}"
