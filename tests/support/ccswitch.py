"""cc-switch's files, written the way cc-switch writes them, for the import tests:

- ``cc_switch_db``: ``~/.cc-switch/cc-switch.db``, the ``providers`` table of
  src-tauri/src/database/schema.rs (v3.20);
- ``dump_sql``: what "Export" writes since v3.8, ``Database::dump_sql`` of
  src-tauri/src/database/backup.rs (header, pragmas, schema, INSERT batches of at most 200 rows
  and 1 MiB, ``format_sql_value`` literals, ``DELETE FROM sqlite_sequence``, triggers, COMMIT);
- ``config_json``: the v3.6-3.7 ``~/.cc-switch/config.json`` (MultiAppConfig v2, app_config.rs
  and provider.rs at v3.7.1), which 3.8+ renames ``config.json.migrated``.

A provider is ``(id, app_type, name, settings_config, meta)``."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

Provider = tuple[str, str, str, dict[str, Any], dict[str, Any]]

SCHEMA = """CREATE TABLE IF NOT EXISTS providers (
                id TEXT NOT NULL,
                app_type TEXT NOT NULL,
                name TEXT NOT NULL,
                settings_config TEXT NOT NULL,
                website_url TEXT,
                category TEXT,
                created_at INTEGER,
                sort_index INTEGER,
                notes TEXT,
                icon TEXT,
                icon_color TEXT,
                meta TEXT NOT NULL DEFAULT '{}',
                is_current BOOLEAN NOT NULL DEFAULT 0,
                in_failover_queue BOOLEAN NOT NULL DEFAULT 0,
                PRIMARY KEY (id, app_type)
            )"""
OTHER_TABLES = (
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)",
    """CREATE TABLE IF NOT EXISTS provider_endpoints (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                provider_id TEXT NOT NULL,
                app_type TEXT NOT NULL,
                url TEXT NOT NULL,
                added_at INTEGER,
                FOREIGN KEY (provider_id, app_type) REFERENCES providers(id, app_type) ON DELETE CASCADE
            )""",
    "CREATE INDEX IF NOT EXISTS idx_provider_endpoints_provider ON provider_endpoints(provider_id, app_type)",
    """CREATE TRIGGER IF NOT EXISTS trg_settings_touch AFTER UPDATE ON settings BEGIN
                UPDATE settings SET value = value WHERE key = NEW.key; SELECT 1;
            END""",
)
INSERT_BATCH_MAX_ROWS = 200
INSERT_BATCH_MAX_BYTES = 1024 * 1024


def usage(code: str = "", **fields: Any) -> dict[str, Any]:
    """A provider's ``meta`` with an enabled usage script (as UsageScriptModal.tsx saves it)."""
    return {"usage_script": {"enabled": True, "language": "javascript", "code": code, **fields}}


def cc_switch_db(path: Path, providers: list[Provider], *, user_version: int = 17) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(SCHEMA)
    for sql in OTHER_TABLES:
        conn.execute(sql)
    conn.execute(f"PRAGMA user_version={user_version}")
    for i, (pid, app, name, settings, meta) in enumerate(providers):
        conn.execute("INSERT INTO providers (id, app_type, name, settings_config, category, created_at, sort_index, "
                     "meta, is_current) VALUES (?, ?, ?, ?, 'custom', ?, ?, ?, ?)",
                     (pid, app, name, json.dumps(settings, ensure_ascii=False), 1762400000000 + i, i,
                      json.dumps(meta, ensure_ascii=False), int(i == 0)))
    conn.execute("INSERT INTO provider_endpoints (provider_id, app_type, url, added_at) VALUES ('x', 'claude', "
                 "'https://e.example', 1)")
    conn.commit()
    conn.close()
    return path


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _real(value: float) -> str:  # Database::format_sql_real
    if math.isnan(value):
        return "NULL"
    if math.isinf(value):
        return "-9.0e999" if value < 0 else "9.0e999"
    text = repr(value)
    return text if any(c in text for c in ".eE") else text + ".0"


def format_sql_value(value: Any) -> str:  # Database::format_sql_value
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _real(value)
    if isinstance(value, str):
        if "\0" not in value:
            return "'" + value.replace("'", "''") + "'"
        return f"CAST(X'{value.encode().hex().upper()}' AS TEXT)"
    return f"X'{bytes(value).hex().upper()}'"


def dump_sql(db: Path) -> str:
    """``Database::dump_sql(conn, &[])`` of the database at ``db``."""
    conn = sqlite3.connect(db)
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    out = [f"-- CC Switch SQLite 导出\n-- 生成时间: 2026-09-01 10:00:00\n-- user_version: {user_version}\n",
           "PRAGMA foreign_keys=OFF;\n", f"PRAGMA user_version={user_version};\n", "BEGIN TRANSACTION;\n"]
    tables, triggers = [], []
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql NOT NULL AND type IN "
                                        "('table','index','trigger','view') ORDER BY type='table' DESC, name"):
        if name.startswith("sqlite_"):
            continue
        if kind == "trigger":
            triggers.append(sql)
            continue
        out.append(sql + ";\n")
        if kind == "table":
            tables.append(name)
    for table in tables:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({_quote_identifier(table)})")]
        cols = ", ".join(_quote_identifier(c) for c in columns)
        prefix = f"INSERT INTO {_quote_identifier(table)} ({cols}) VALUES "
        batch, pending = "", 0
        for row in conn.execute(f"SELECT {cols} FROM {_quote_identifier(table)}"):
            row_sql = "(" + ", ".join(format_sql_value(v) for v in row) + ")"
            if pending and len(batch) + 1 + len(row_sql) + 2 > INSERT_BATCH_MAX_BYTES:
                out.append(batch + ";\n")
                pending = 0
            batch = (prefix if not pending else batch + ",") + row_sql
            pending += 1
            if pending >= INSERT_BATCH_MAX_ROWS:
                out.append(batch + ";\n")
                pending = 0
        if pending:
            out.append(batch + ";\n")
    sequences = conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall() \
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone() else None
    if sequences is not None:
        out.append("DELETE FROM sqlite_sequence;\n")
        if sequences:
            out.append("INSERT INTO sqlite_sequence (name, seq) VALUES "
                       + ",".join(f"({format_sql_value(n)}, {format_sql_value(s)})" for n, s in sequences) + ";\n")
    out.extend(sql + ";\n" for sql in triggers)
    out.append("COMMIT;\nPRAGMA foreign_keys=ON;\n")
    conn.close()
    return "".join(out)


def config_json(providers: list[Provider]) -> str:
    """The v3.6-3.7 ``config.json`` holding ``providers``."""
    doc: dict[str, Any] = {"version": 2}
    for i, (pid, app, name, settings, meta) in enumerate(providers):
        manager = doc.setdefault(app, {"providers": {}, "current": pid})
        manager["providers"][pid] = {"id": pid, "name": name, "settingsConfig": settings, "category": "custom",
                                     "createdAt": 1762400000000 + i, "sortIndex": i, "meta": meta}
    for app in ("claude", "codex", "gemini"):
        doc.setdefault(app, {"providers": {}, "current": ""})
    doc["mcp"] = {"claude": {"servers": {}}, "codex": {"servers": {}}, "gemini": {"servers": {}}}
    doc["prompts"] = {"claude": {"prompts": {}}, "codex": {"prompts": {}}, "gemini": {"prompts": {}}}
    doc["skills"] = {"skills": {}, "repos": []}
    doc["commonConfigSnippets"] = {}
    return json.dumps(doc, ensure_ascii=False, indent=2)
