"""Import the usage scripts a user already has in cc-switch (``~/.cc-switch/cc-switch.db``).

cc-switch keeps its providers in a SQLite table ``providers`` (``id``, ``app_type``, ``name``,
``settings_config`` JSON, ``meta`` JSON); a provider's ``meta.usage_script`` holds its script
(``enabled``, ``code``, and optionally ``apiKey``, ``baseUrl``, ``accessToken``, ``userId``,
``templateType``). Where the script gives no key or base URL, cc-switch uses the provider's own,
read from its settings the way it reads them for each app (Claude's ``env``:
``ANTHROPIC_AUTH_TOKEN`` / ``ANTHROPIC_API_KEY`` / ``OPENROUTER_API_KEY`` / ``GOOGLE_API_KEY``
and ``ANTHROPIC_BASE_URL``; Codex's ``auth.OPENAI_API_KEY`` and the ``base_url`` of its TOML
``config``; Gemini's ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` and ``GOOGLE_GEMINI_BASE_URL``; the
flat ``apiKey`` / ``baseUrl`` / ``api_key`` / ``base_url`` of the others). Each enabled script
becomes a usage-script plugin (``<id>.usage.js``) with those values as its config.

The database is opened read-only; nothing of cc-switch is changed. Values are never printed:
a plan shows which are set, and secrets are stored sealed like any plugin config."""

from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HostError

DEFAULT_DB = Path.home() / ".cc-switch" / "cc-switch.db"
VALUES = ("apiKey", "baseUrl", "accessToken", "userId")


class CcSwitchUnreadable(HostError):
    """The cc-switch database cannot be read (missing, not a database, another schema)."""


@dataclass
class Found:
    """One cc-switch provider with an enabled usage script, as the plugin it becomes."""

    id: str                      # the plugin id
    name: str                    # the provider's name in cc-switch
    app: str                     # its app_type (claude, codex, gemini, ...)
    script: str
    template: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # non-empty ones only


def _first(env: Any, *keys: str) -> str:
    """The first present, non-empty string among ``keys`` (cc-switch's ``a || b || c``)."""
    if not isinstance(env, dict):
        return ""
    for key in keys:
        value = env.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _codex_base_url(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        m = re.search(r'^\s*base_url\s*=\s*"([^"]*)"', text, re.M)
        return m.group(1) if m else ""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("base_url"), str) and node["base_url"]:
                return node["base_url"]
            stack.extend(node.values())
    return ""


def provider_credentials(app: str, settings: Any) -> tuple[str, str]:
    """(base URL, API key) of a provider, as cc-switch resolves them for its usage script."""
    s = settings if isinstance(settings, dict) else {}
    if app == "codex":
        return _codex_base_url(s.get("config")), _first(s.get("auth"), "OPENAI_API_KEY")
    if app == "gemini":
        env = s.get("env")
        return _first(env, "GOOGLE_GEMINI_BASE_URL"), _first(env, "GEMINI_API_KEY", "GOOGLE_API_KEY")
    if app in ("claude", "claude_desktop", "claudedesktop"):
        env = s.get("env")
        return (_first(env, "ANTHROPIC_BASE_URL"),
                _first(env, "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GOOGLE_API_KEY"))
    if app == "opencode":
        options = s.get("options")
        return _first(options, "baseURL"), _first(options, "apiKey")
    return _first(s, "baseUrl", "base_url"), _first(s, "apiKey", "api_key")


def plugin_id(name: str, provider_id: str, taken: set[str]) -> str:
    """A plugin id for a provider: its name made safe (else its cc-switch id), unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._").lower()[:48]
    if not base:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", provider_id).strip("-._").lower()[:48] or "station"
    if not base[0].isalnum():
        base = "s" + base
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def read(db: Path, taken: set[str] | None = None) -> list[Found]:
    """Every provider of the database with an enabled usage script."""
    if not db.is_file():
        raise CcSwitchUnreadable(f"{db}: no cc-switch database there (give its path with --db)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT id, app_type, name, settings_config, meta FROM providers "
                                "ORDER BY app_type, COALESCE(sort_index, 0), name").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise CcSwitchUnreadable(f"{db}: not a cc-switch database this host can read ({exc})") from None
    taken = set() if taken is None else taken
    found: list[Found] = []
    for provider_id, app, name, settings_text, meta_text in rows:
        try:
            meta = json.loads(meta_text or "{}")
            settings = json.loads(settings_text or "{}")
        except ValueError:
            continue
        usage = meta.get("usage_script") if isinstance(meta, dict) else None
        if not isinstance(usage, dict) or usage.get("enabled") is not True:
            continue
        code = usage.get("code")
        if not isinstance(code, str) or not code.strip() or usage.get("language", "javascript") != "javascript":
            continue
        base_url, api_key = provider_credentials(str(app), settings)
        values = {"apiKey": _first(usage, "apiKey") or api_key, "baseUrl": (_first(usage, "baseUrl") or base_url),
                  "accessToken": _first(usage, "accessToken"), "userId": _first(usage, "userId")}
        values["baseUrl"] = values["baseUrl"].rstrip("/")
        found.append(Found(plugin_id(str(name), str(provider_id), taken), str(name), str(app), code,
                           usage.get("templateType") if isinstance(usage.get("templateType"), str) else None,
                           {k: v for k, v in values.items() if v}))
    return found


__all__ = ["DEFAULT_DB", "Found", "provider_credentials", "read"]
