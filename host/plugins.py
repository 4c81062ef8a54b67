"""Finding plugins on disk: single ``.js``/``.ts`` files and directories with an entry module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENTRY_NAMES = ("mod.ts", "mod.js", "index.ts", "index.js")
SUFFIXES = (".ts", ".js", ".mjs")


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin lives. ``root`` is what its workers may read: the file, or its directory."""

    id: str
    module: Path
    root: Path

    @property
    def base_dir(self) -> Path:
        return self.root if self.root.is_dir() else self.root.parent


def source_for(path: Path) -> PluginSource | None:
    """The plugin at ``path`` (file or directory), or None if it is not one."""
    path = path.resolve()
    if path.name.startswith((".", "_")):
        return None
    if path.is_dir():
        for name in ENTRY_NAMES:
            entry = path / name
            if entry.is_file():
                return PluginSource(id=path.name, module=entry, root=path)
        return None
    if path.is_file() and path.suffix in SUFFIXES and not path.name.endswith(".d.ts"):
        return PluginSource(id=path.stem, module=path, root=path)
    return None


def discover(dirs: list[Path]) -> list[PluginSource]:
    """Every plugin in ``dirs``, sorted by id; the first directory wins on duplicate ids."""
    found: dict[str, PluginSource] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for child in sorted(d.iterdir()):
            src = source_for(child)
            if src is not None and src.id not in found:
                found[src.id] = src
    return [found[k] for k in sorted(found)]
