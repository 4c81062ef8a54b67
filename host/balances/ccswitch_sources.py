"""The providers of whatever cc-switch file the user has, told apart by content (not by name):

- its database, ``~/.cc-switch/cc-switch.db`` (v3.8+): the table ``providers`` (``id``,
  ``app_type``, ``name``, ``settings_config`` JSON, ``meta`` JSON, ``sort_index``), opened
  read-only, with an authorizer that lets a query read columns and nothing else (no function,
  no view, no virtual table: a crafted database runs no code of its author's);
- its SQL export (what "Export" writes since v3.8), read by ccswitch_sql.py without running it;
- the ``config.json`` of v3.6-3.7 (``~/.cc-switch/config.json``, renamed
  ``config.json.migrated`` when 3.8 moved it into the database; also what those versions'
  "Export" wrote): ``{"version": 2, "<app>": {"providers": {id: {id, name, settingsConfig,
  sortIndex, meta}}, "current": id}, "mcp": ..., ...}`` (app_config.rs MultiAppConfig, provider.rs).

Each provider comes out as a Row, in cc-switch's order (app, sort index, name)."""

from __future__ import annotations

import codecs
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..plugins.usage_scripts import Unreadable, text_of
from . import ccswitch_sql
from .ccswitch_sql import TABLE, CcSwitchUnreadable, dump_rows

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_VALUE_BYTES = 16 * 1024 * 1024  # one settings_config or meta; SQLite refuses to make a bigger one
READ_SECONDS = 10.0                 # the whole read of a database; past it, refused as damaged
_WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _wide_without_bom(head: bytes) -> bool:
    """ASCII text as UTF-16 with no BOM: every other byte zero (``{\\0"\\0`` or ``\\0-\\0-``)."""
    return len(head) >= 4 and ((not any(head[1::2]) and all(head[0::2])) or (not any(head[0::2]) and all(head[1::2])))


@dataclass(frozen=True, slots=True)
class Row:
    """One cc-switch provider: its settings and meta as JSON values (None: missing or not JSON,
    with ``damaged`` saying which)."""

    provider_id: str
    app: str
    name: str
    settings: Any
    meta: Any
    sort_index: int = 0
    damaged: str = ""


def _json(value: Any, field: str) -> tuple[Any, str]:
    if value is None or value == "":
        return {}, ""
    if isinstance(value, (dict, list)):  # a config.json's, decoded already
        return value, ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None, f"its {field} is not JSON text"
    try:  # msgspec: a lone surrogate (\ud800) is refused, not passed on to fail a write or a print later
        return msgspec.json.decode(value), ""
    except (ValueError, RecursionError):
        return None, f"its {field} is not valid JSON"


def _row(values: dict[str, Any]) -> Row:
    settings, bad_settings = _json(values.get("settings_config"), "settings_config")
    meta, bad_meta = _json(values.get("meta"), "meta")
    index = values.get("sort_index")
    return Row(str(values.get("id") or ""), str(values.get("app_type") or ""), str(values.get("name") or ""),
               settings, meta, index if isinstance(index, int) else 0, bad_meta or bad_settings)


def _only_reads(action: int, arg1: str | None, *_: Any) -> int:
    """SQLite authorizer: reading columns and the one SELECT; no function, pragma or attach."""
    return sqlite3.SQLITE_OK if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ) else sqlite3.SQLITE_DENY


def database_rows(path: Path) -> list[dict[str, Any]]:
    """The providers rows of a cc-switch database, read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CcSwitchUnreadable(f"{path}: not a cc-switch database this host can read ({exc})") from None
    deadline = time.monotonic() + READ_SECONDS
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
        if kind is None or kind[0] != "table":
            raise CcSwitchUnreadable(f"{path}: a SQLite database without a {TABLE} table: not cc-switch's")
        columns = [c[1] for c in conn.execute(f"PRAGMA table_info({TABLE})")]  # before the authorizer
        wanted = [c for c in ("id", "app_type", "name", "settings_config", "meta", "sort_index") if c in columns]
        conn.set_authorizer(_only_reads)
        cur = conn.execute(f"SELECT {', '.join(wanted)} FROM {TABLE}")
        return [dict(zip(wanted, r, strict=True)) for r in cur.fetchall()]
    except sqlite3.Error as exc:
        why = "it took too long to read" if time.monotonic() > deadline else str(exc)
        raise CcSwitchUnreadable(f"{path}: not a cc-switch database this host can read ({why})") from None
    finally:
        conn.close()


def config_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The providers of a v3.6-3.7 ``config.json`` (MultiAppConfig v2), as database rows."""
    try:
        doc = msgspec.json.decode(text)
    except (ValueError, RecursionError) as exc:
        raise CcSwitchUnreadable(f"{path}: not valid JSON, so not a cc-switch config.json ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise CcSwitchUnreadable(f"{path}: JSON that is not an object: not a cc-switch config.json")
    if isinstance(doc.get("providers"), dict) and isinstance(doc.get("current"), str) and "version" not in doc:
        raise CcSwitchUnreadable(f"{path}: a v1 cc-switch config.json (before 3.2): it holds no usage scripts; "
                                 "open it once with cc-switch 3.2-3.7 to migrate it")
    rows = []
    for app, manager in doc.items():
        providers = manager.get("providers") if isinstance(manager, dict) else None
        if not isinstance(providers, dict):
            continue  # version, mcp, prompts, skills, commonConfigSnippets, ...
        for key, p in providers.items():
            if not isinstance(p, dict):
                continue
            rows.append({"id": p.get("id") or key, "app_type": app, "name": p.get("name") or key,
                         "settings_config": p.get("settingsConfig") or {},
                         "meta": p.get("meta") or {}, "sort_index": p.get("sortIndex")})
    if not rows and not any(isinstance(v, dict) and "providers" in v for v in doc.values()):
        raise CcSwitchUnreadable(f"{path}: JSON without any app's providers: not a cc-switch config.json")
    return rows


def read_rows(path: Path) -> tuple[str, list[Row]]:
    """(what the file is, its providers in cc-switch's order)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except FileNotFoundError:
        raise CcSwitchUnreadable(f"{path}: no cc-switch database there (give its path with --db)") from None
    except OSError as exc:
        raise CcSwitchUnreadable(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head == SQLITE_MAGIC:
        kind, raw = "cc-switch database", database_rows(path)
    elif b"\x00" in head and not head.startswith(_WIDE_BOMS):
        if _wide_without_bom(head):
            raise CcSwitchUnreadable(f"{path}: UTF-16 text without a byte-order mark: save it as UTF-8 (or "
                                     "UTF-16 with its BOM), or give cc-switch's database itself")
        raise CcSwitchUnreadable(f"{path}: not a cc-switch database this host can read (neither SQLite, "
                                 "a cc-switch SQL export nor a config.json)")
    else:
        # text, as a usage script's file is read: UTF-8 (a BOM or not), or UTF-16 with its BOM
        # (an export saved again by a Windows editor as "Unicode")
        if size > (cap := ccswitch_sql.MAX_DUMP_BYTES):
            raise CcSwitchUnreadable(f"{path}: {size} bytes, over the {cap >> 20} MiB this host reads "
                                     "of a SQL export or config.json; give cc-switch's database itself "
                                     "(--db ~/.cc-switch/cc-switch.db)")
        try:
            text = text_of(path.read_bytes(), path)
        except OSError as exc:
            raise CcSwitchUnreadable(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except Unreadable as exc:  # its message names the file: said once
            raise CcSwitchUnreadable(f"{path}: not a cc-switch SQL export or config.json this host can read: it "
                                     f"{str(exc).removeprefix(f'{path} ')}") from None
        if text.lstrip(" \t\r\n").startswith("{"):
            kind, raw = "cc-switch 3.6-3.7 config.json", config_rows(path, text)
        else:
            kind, raw = "cc-switch SQL export", dump_rows(path, text)
    rows = [_row(r) for r in raw]
    return kind, sorted(rows, key=lambda r: (r.app, r.sort_index, r.name))


__all__ = ["CcSwitchUnreadable", "Row", "read_rows"]
