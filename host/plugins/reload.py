"""Change detection for hot reload: a cheap fingerprint of a plugin's files (polling).

Size and mtime alone miss a change that keeps both: ``tar x``, ``cp -p`` and ``rsync -a`` set
the mtime a file had elsewhere (a version bump "1.0.1" -> "1.0.2" keeps the size), and a
restore from a backup may set it back to the very value seen before. Every write, rename
into place or utime also sets the inode's ctime, which no tool can set, and a rename into
place brings another inode: both are in the fingerprint, at no extra cost (the same stat).
A fingerprint that changed is confirmed by the content of the same files (``content``) before a
reload (watch.py): the stat changes with every save, the code only with some."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from .manifest_cache import digest_files, file_stat

_SKIP_DIRS = {"node_modules", ".git", "__pycache__"}


def fingerprint(root: Path) -> tuple:
    """(path, size, mtime_ns, ctime_ns, inode) of every file that makes up the plugin: the file itself, or
    everything under its directory except hidden files and vendored folders."""
    return tuple(_stamp(path, st) for path, st in _files(root))


def content(root: Path) -> str | None:
    """sha256 of the path and content of the files ``fingerprint`` covers, and only those: an
    editor's hidden swap or backup file (vim's ``.mod.ts.swp``) written with a save changes
    neither (manifest_cache.digest_files: big files by their stamp, FIFOs never opened). None:
    unreadable."""
    try:
        return digest_files(_files(root))
    except OSError:
        return None


# What a worker can load: a change to anything else (a README, an image) changes no code
CODE_SUFFIXES = (".ts", ".js", ".mjs", ".cjs", ".mts", ".cts", ".tsx", ".jsx", ".json", ".jsonc", ".wasm")


def digests(root: Path) -> tuple[str | None, str | None]:
    """(``content``, ``code_content``) of ``root`` in one walk of its files."""
    try:
        files = _files(root)
        return digest_files(files), digest_files([(p, st) for p, st in files if p.endswith(CODE_SUFFIXES)])
    except OSError:
        return None, None


def code_content(root: Path) -> str | None:
    """``content`` of the plugin's files a worker can load (CODE_SUFFIXES) only; None: unreadable."""
    try:
        return digest_files([(p, st) for p, st in _files(root) if p.endswith(CODE_SUFFIXES)])
    except OSError:
        return None


def still_read(root: Path, digest: str | None, plugin: str, version: str) -> Callable[[], Awaitable[str | None]]:
    """For a pool of the version whose code was read from ``root`` as ``digest`` (code_content):
    before each new worker, None while its code is still what was read (or cannot be read just
    now: not taken for a change), else why no new worker may start. The module is loaded from
    the files as they are at spawn: once a newer version's are in place (waiting for approval,
    refused at load), a respawn of the old pool ran their code under its name (helper-114),
    where the old version's no longer exist to run."""
    async def changed() -> str | None:
        now = await anyio.to_thread.run_sync(code_content, root) if digest is not None else None
        if now is None or now == digest:
            return None
        return (f"{plugin}: the code at {root} is no longer what version {version} was loaded from (a newer "
                "version waiting for approval or refused at load?): no new worker runs it; approve or reload "
                "it (or put its files back while a worker of it still serves)")
    return changed


def _files(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every file that makes up the plugin, with its stat: the file itself, or everything under
    its directory except hidden files and vendored folders."""
    entries = []
    try:
        if root.is_file():
            return [(str(root), root.stat())]
        real_root = os.path.realpath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = file_stat(path, real_root)  # a link out of it or in a loop: the link itself
                except FileNotFoundError:
                    continue
                entries.append((path, st))
    except FileNotFoundError:
        return []
    return entries


def _stamp(path: str, st: os.stat_result) -> tuple:
    return (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


async def quiet(roots: list[Path], settle: float, limit: float) -> bool:
    """Return True once the files under ``roots`` have not changed for ``settle`` seconds (at once
    when ``settle`` is 0), False after ``limit`` seconds of changes: they are then taken as they are."""
    if settle <= 0:
        return True

    def look() -> list[tuple]:  # in a thread: a large directory takes a while to stat
        return [fingerprint(r) for r in roots]

    before = await anyio.to_thread.run_sync(look)
    with anyio.move_on_after(limit):
        while True:
            await anyio.sleep(settle)
            now = await anyio.to_thread.run_sync(look)
            if now == before:
                return True
            before = now
    return False
