"""``dev_plugins = ["name:path"]`` (host.toml; the socket-runtime document's setting): plugins run
from a source path outside the plugin directories, under the id ``name``.

``path`` is a plugin module (``.ts``, ``.js``, ``.mjs``) or a directory with an entry module
(``mod.ts``, ``mod.js``, ``index.ts``, ``index.js``); relative paths in host.toml are resolved
against the file's directory. Each entry is checked when the configuration is read (InvalidConfig
naming ``dev_plugins[i]`` and what is wrong); the module's ``metadata.id`` must be ``name``. Such a
plugin is loaded, approved, sandboxed (its path is all it may read) and hot-reloaded like any
other, and it wins over a plugin of the same id in the plugin directories. The seed's own
placement, ``[plugins] dev_plugins = [...]``, is read as the same setting."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidConfig
from .manifest import ID_RE, RESERVED_IDS

ENTRY_NAMES = ("mod.ts", "mod.js", "index.ts", "index.js")
SUFFIXES = (".ts", ".js", ".mjs")


def entry_module(path: Path) -> Path | None:
    """The module a plugin at ``path`` (file or directory) runs, or None if it is not one."""
    if path.is_dir():
        return next((path / n for n in ENTRY_NAMES if (path / n).is_file()), None)
    return path if path.is_file() and path.suffix in SUFFIXES else None


def dev_entries(entries: list[str], where: str = "dev_plugins") -> list[tuple[str, Path, Path]]:
    """Each entry as (id, entry module, root), checked; InvalidConfig names the entry at fault."""
    out: list[tuple[str, Path, Path]] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        name, sep, raw = entry.partition(":") if isinstance(entry, str) else ("", "", "")
        if not sep or not name or not raw:
            raise InvalidConfig(f'{at}: {entry!r} is not "name:path" (e.g. "example:/src/example-plugin")')
        if not ID_RE.match(name) or name.lower() in RESERVED_IDS:
            raise InvalidConfig(f"{at}: {name!r} is not a plugin id (letters, digits, '_', '.', '-'; "
                                "at most 64; not execute, host or plugin-host)")
        if name in seen:
            raise InvalidConfig(f"{at}: {name!r} is named twice in {where}")
        seen.add(name)
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            raise InvalidConfig(f"{at}: {name}: {root}: no such file or directory")
        module = entry_module(root)
        if module is None:
            want = (f"a directory with one of {', '.join(ENTRY_NAMES)}" if root.is_dir()
                    else f"a module ending in {', '.join(SUFFIXES)}")
            raise InvalidConfig(f"{at}: {name}: {root} is not a plugin: give {want}")
        out.append((name, module, root))
    return out


__all__ = ["ENTRY_NAMES", "SUFFIXES", "dev_entries", "entry_module"]
