"""Change detection for hot reload: a cheap fingerprint of a plugin's files (polling)."""

from __future__ import annotations

import os
from pathlib import Path

_SKIP_DIRS = {"node_modules", ".git", "__pycache__"}


def fingerprint(root: Path) -> tuple:
    """(path, size, mtime_ns) of every file that makes up the plugin: the file itself, or
    everything under its directory except hidden files and vendored folders."""
    entries = []
    try:
        if root.is_file():
            st = root.stat()
            return ((str(root), st.st_size, st.st_mtime_ns),)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                entries.append((path, st.st_size, st.st_mtime_ns))
    except FileNotFoundError:
        return ()
    return tuple(entries)
