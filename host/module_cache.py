"""Deno's module cache under the host's DENO_DIR (``<state>/deno``), which every worker writes with
no grant at all: a module it imports is analysed, compiled and cached there whatever it came from.
A plugin with no permission importing ever-new modules made at run time (``data:`` and ``blob:``
URLs, its own file under ever-new ``?query`` strings) grew it without bound: 30 modules of 1 MB
of TypeScript took 365 MB in seconds, and every respawned worker could go on (helper-97).

- The JavaScript Deno emits for a ``data:`` or ``blob:`` TypeScript module would go to
  ``gen/data`` and ``gen/blob``: each is made an empty file, so no directory can be made there
  and nothing is written (Deno then transpiles such a module each time it is imported; the
  runtime's and the plugins' files, emitted under ``gen/file``, are cached as before).
- The analysis and V8 code caches are SQLite databases the runtime's own start relies on
  (without them a spawn took ~20 ms more): they stay, and past ``MAX_BYTES`` the host deletes
  the rows of modules that are no file on disk (``data:``, ``blob:``, any specifier with a query
  or a fragment), which a module of a plugin's own files never is. Their pages are reused, or
  given back when the database can be vacuumed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import anyio

log = logging.getLogger("host.module_cache")

GUARDED = ("data", "blob")  # gen/<scheme>: the emitted JavaScript of such TypeScript modules
TABLES = {"dep_analysis_cache_v2": "moduleinfocache", "v8_code_cache_v2": "codecache",
          "node_analysis_cache_v2": "cjsanalysiscache"}
MAX_BYTES = 256 * 1024 * 1024  # the databases together, their write-ahead logs included
CHECK_EVERY = 1.0  # seconds
# What no file on disk is: made at run time, each a new row for ever.
_MADE_AT_RUN_TIME = "specifier NOT LIKE 'file:%' OR instr(specifier, '?') > 0 OR instr(specifier, '#') > 0"


def guard(deno_dir: Path) -> None:
    """Make ``gen/data`` and ``gen/blob`` empty files (a directory there from before is removed:
    it holds only caches)."""
    gen = deno_dir / "gen"
    gen.mkdir(exist_ok=True)
    for name in GUARDED:
        path = gen / name
        if path.is_file() and not path.is_symlink() and not path.stat().st_size:
            continue  # guarded already
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():  # a host of before sharing the state directory writes in it: next start
                continue
        else:
            path.unlink(missing_ok=True)
        path.touch()


def size(deno_dir: Path) -> int:
    """Bytes of the cache databases and their write-ahead logs."""
    total = 0
    for name in TABLES:
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += (deno_dir / f"{name}{suffix}").stat().st_size
    return total


def prune(deno_dir: Path) -> int:
    """Delete the rows of modules made at run time from every cache database; the rows deleted."""
    deleted = 0
    for name, table in TABLES.items():
        path = deno_dir / name
        if not path.is_file():
            continue
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=2.0, isolation_level=None)) as db:
                deleted += db.execute(f"DELETE FROM {table} WHERE {_MADE_AT_RUN_TIME}").rowcount
                with contextlib.suppress(sqlite3.Error):  # a worker reading it: its pages are reused instead
                    db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # busy, or not Deno's: tried again at the next check
            log.debug("module cache %s not pruned: %s", path, exc)
    return deleted


async def watch(deno_dir: Path) -> None:
    """Keep the cache databases near ``MAX_BYTES``: checked every ``CHECK_EVERY`` seconds."""
    limit = MAX_BYTES
    said_at: float | None = None
    while True:
        await anyio.sleep(CHECK_EVERY)
        used = await anyio.to_thread.run_sync(size, deno_dir)
        if used <= limit:
            continue
        deleted = await anyio.to_thread.run_sync(prune, deno_dir, abandon_on_cancel=True)
        after = await anyio.to_thread.run_sync(size, deno_dir)
        if deleted:  # what is left is the plugins' own files (a prune that failed is tried again)
            limit = max(MAX_BYTES, after + MAX_BYTES // 4)
        elif said_at is not None and time.monotonic() - said_at < 60:
            continue
        said_at = time.monotonic()
        log.warning("Deno's module cache in %s grew to %d MiB: %d modules made at run time (data:, blob:, "
                    "imports with a query) dropped from it, %d MiB left", deno_dir, used >> 20, deleted, after >> 20)


__all__ = ["MAX_BYTES", "guard", "prune", "size", "watch"]
