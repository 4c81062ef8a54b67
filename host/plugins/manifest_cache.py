"""What loading found in each plugin (its metadata and exported functions), kept in
``<state_dir>/manifests.msgpack`` so that a host with 1,000 installed plugins starts without
spawning 1,000 workers to read them again: loading a module takes a Deno process for ~25 ms of
CPU; a cached entry takes a stat of the plugin's files.

An entry counts only for the same files (a digest of the path and content of every file under the
plugin's root, hidden and vendored ones included: an mtime can miss an edit made within the same
clock tick) under the same runtime (the Deno binary and the worker runtime's files); anything else, and the
module is loaded in a worker again. Only successful loads are kept, and what they found is
validated again each time (``parse_manifest``), so the cache can skip a spawn, never a check.
The file lives in the state directory, which no plugin may be granted. Several processes on one
state directory (``serve --processes``) may overwrite each other's additions: that costs a load.

Loads that do spawn are bounded (INSPECT_SLOTS at once): 1,000 Deno processes started together
missed their handshake deadline and every plugin ended in ``error``. A load a call waits for
(``HostConfig.load = "background"``, loading.py) takes an urgent slot instead, so that it never
queues behind the background loads: at most INSPECT_SLOTS more."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ..security.private_files import write_private

log = logging.getLogger("host.plugins")

CACHE_FILE = "manifests.msgpack"
MAX_ENTRY_BYTES = 256 * 1024  # one module's metadata and exports, encoded: larger ones are read again each time
MAX_FILE_BYTES = 64 * 1024 * 1024  # a larger file (of an earlier version that kept anything) is not read
BIG_FILE = 8 * 1024 * 1024  # bytes: a file larger is known by its stat, not read
CHUNK = 1024 * 1024
SAVE_INTERVAL = 1.0  # seconds: a start that loads many plugins writes the file about once a second
INSPECT_SLOTS = max(4, 2 * (os.cpu_count() or 1))  # workers loading plugins at once
URGENT: ContextVar[bool] = ContextVar("urgent_load", default=False)  # this task's load is waited for


class LoadSlots:
    """The slots of loads that spawn a worker: INSPECT_SLOTS, and as many for urgent loads."""

    def __init__(self) -> None:
        self.normal = anyio.Semaphore(INSPECT_SLOTS)
        self.urgent = anyio.Semaphore(INSPECT_SLOTS)

    def take(self) -> anyio.Semaphore:
        return self.urgent if URGENT.get() else self.normal


class _Entry(msgspec.Struct, array_like=True):
    digest: str
    metadata: Any
    exports: list[str]


class _File(msgspec.Struct):
    runtime: str
    entries: dict[str, _Entry] = {}


def file_stat(path: str, real_root: str) -> os.stat_result:
    """The stat of a plugin's file; a link that leads outside ``real_root`` (its load refuses it)
    or that cannot be followed (a loop, a path too long) stands as the link itself, never opened:
    a link to /proc/self/pagemap, a regular file of size 0 that reads 256 GiB, held the host's
    start and stop for minutes, and a link loop failed every plugin's rescan (helper-104)."""
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode):
        return st
    try:
        if os.path.commonpath([real_root, os.path.realpath(path)]) == real_root:
            return os.stat(path)
    except (OSError, ValueError):
        pass
    return st


def content_digest(root: Path) -> str | None:
    """sha256 of the path and content of every regular file under ``root`` (or of the file):
    hidden files and vendored folders too, since the module may import them (None: unreadable)."""
    try:
        if root.is_file():
            return digest_files([(str(root), os.stat(root))])
        files = []
        real_root = os.path.realpath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            files += [os.path.join(dirpath, name) for name in sorted(filenames)]
        return digest_files((path, file_stat(path, real_root)) for path in files)
    except OSError:
        return None


def digest_files(files: Iterable[tuple[str, os.stat_result]]) -> str:
    """sha256 of the path and content of each (path, stat) given, in order; OSError if one cannot
    be read. Read in chunks; a file over BIG_FILE bytes counts by its stat instead (size, mtime,
    ctime, inode: a write changes its ctime), so a huge one (a 1 GiB blob took 2 GB and 6.5 s) costs
    a stat; what is not a regular file (a FIFO) counts by its path alone, never opened."""
    h = hashlib.sha256()
    for path, st in files:
        h.update(os.fsencode(path) + b"\0")
        if not stat.S_ISREG(st.st_mode):
            h.update(b"special")
        elif st.st_size > BIG_FILE:
            h.update(f"stat {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_dev} {st.st_ino}".encode())
        else:  # as many bytes as its stat says, never more (/proc's files say 0 and read on)
            left = st.st_size
            with open(path, "rb") as f:
                while left > 0 and (chunk := f.read(min(CHUNK, left))):
                    h.update(chunk)
                    left -= len(chunk)
        h.update(b"\0")
    return h.hexdigest()


def runtime_key(deno: str, entry: Path) -> str:
    """Identifies the code that reads metadata: the Deno binary and the worker runtime's files."""
    h = hashlib.sha256()
    st = os.stat(deno)
    h.update(f"{os.path.realpath(deno)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for path in sorted(entry.parent.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class ManifestCache:
    """Module path -> what loading it found, for one state directory and one runtime."""

    def __init__(self, path: Path, runtime: str) -> None:
        self.path = path
        self._runtime = runtime
        self._entries: dict[str, _Entry] = {}
        self._dirty = False
        self._saved = 0.0
        try:
            if (size := path.stat().st_size) > MAX_FILE_BYTES:
                raise OSError(f"{size} bytes, more than {MAX_FILE_BYTES}")
            data = msgspec.msgpack.decode(path.read_bytes(), type=_File)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError) as exc:  # damaged or of another version: start anew
            log.warning("%s: not used (%s); plugins are loaded again", path, exc)
            return
        if data.runtime == runtime:
            self._entries = data.entries

    def get(self, module: str, digest: str | None) -> tuple[Any, list[str]] | None:
        entry = self._entries.get(module)
        if entry is None or digest is None or entry.digest != digest:
            return None
        return entry.metadata, list(entry.exports)

    def put(self, module: str, digest: str | None, metadata: Any, exports: list[str]) -> None:
        if digest is None:
            return
        try:
            if len(msgspec.msgpack.encode((metadata, exports))) > MAX_ENTRY_BYTES:
                return
        except (TypeError, ValueError, OverflowError):
            return
        self._entries[module] = _Entry(digest, metadata, list(exports))
        self._dirty = True
        if time.monotonic() - self._saved >= SAVE_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write the entries out if anything changed (a failure is logged: it is only a cache)."""
        if not self._dirty:
            return
        # plugins removed since, and the staging directories of installs, go with the next write
        self._entries = {module: e for module, e in self._entries.items() if os.path.exists(module)}
        self._saved = time.monotonic()
        try:
            write_private(self.path, msgspec.msgpack.encode(_File(self._runtime, self._entries)))
        except OSError as exc:  # a full disk: still to write, at the next load or at close
            log.warning("%s: cannot be written (%s)", self.path, exc)
            return
        except (TypeError, ValueError) as exc:  # not encodable: writing again would not help
            log.warning("%s: cannot be written (%s)", self.path, exc)
        self._dirty = False


__all__ = ["CACHE_FILE", "INSPECT_SLOTS", "URGENT", "LoadSlots", "ManifestCache", "content_digest", "file_stat",
           "runtime_key"]
