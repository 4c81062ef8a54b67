"""Import the usage queries a user already has in cc-switch: from its database
(``~/.cc-switch/cc-switch.db``), its SQL export, or the ``config.json`` of v3.6-3.7
(ccswitch_sources.py tells them apart by content).

A provider's ``meta.usage_script`` holds its query (``enabled``, ``code``, ``templateType``,
``timeout`` and optionally ``apiKey``, ``baseUrl``, ``accessToken``, ``userId``). Each enabled one
becomes, as cc-switch would run it:

- a script (``code``): a usage-script plugin (``<id>.usage.js``) with the script's own key and
  base URL, else the provider's (ccswitch_apps.py), and its ``timeout`` clamped to 2-30 s as
  cc-switch clamps it (usage_script.rs ``send_http_request``) as the plugin's call timeout;
- a built-in query (``templateType`` ``balance`` / ``token_plan``, no code): a station of the
  provider plugin shipped here that cc-switch's choice maps to (ccswitch_builtin.py), with the
  provider's key;
- anything else (an empty script, a query with no plugin here, a provider whose JSON is damaged):
  listed as not imported, with the reason. Nothing is skipped silently.

The file is only read; nothing of cc-switch is changed. Values are never printed: a plan shows
which are set, and secrets are stored sealed like any plugin config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ccswitch_apps import app_name, provider_credentials, str_at
from .ccswitch_builtin import BALANCE, OTHER_BUILTINS, TOKEN_PLAN, builtin, coding_plan_credentials
from .ccswitch_link import NOT_ENABLED, is_link, link_row
from .ccswitch_sources import CcSwitchUnreadable, Row, read_rows

DEFAULT_DB = Path.home() / ".cc-switch" / "cc-switch.db"
MIN_TIMEOUT, MAX_TIMEOUT = 2, 30  # cc-switch's clamp of a script's timeout (usage_script.rs)


@dataclass
class Found:
    """One cc-switch provider's enabled usage query, as what it becomes here: a usage script
    (``script``) or a station of the provider plugin ``plugin``."""

    id: str                      # read(): the provider's cc-switch id; the import names it (plugin id / station name)
    name: str                    # the provider's name in cc-switch
    app: str                     # its app_type (claude, codex, gemini, ...)
    script: str | None = None    # None: a built-in query, served by ``plugin``
    template: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # non-empty ones only
    plugin: str | None = None    # the shipped provider plugin of a built-in query
    timeout: float | None = None  # the script's own timeout, clamped as cc-switch clamps it
    note: str = ""               # what the operator still has to give (a key cc-switch reads from the environment)
    interval: int | None = None  # cc-switch's automatic query every N minutes (autoQueryInterval): not carried over


@dataclass
class Skipped:
    """An enabled usage query that is not imported, and why."""

    name: str
    app: str
    template: str | None
    reason: str


@dataclass
class Scan:
    """What a cc-switch file holds: its kind, what can be imported, and what cannot."""

    kind: str
    found: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def clamped_timeout(value: Any) -> float | None:
    """A script's ``timeout`` (seconds) as cc-switch uses it: clamped to 2-30; None if it gives none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(min(max(value, MIN_TIMEOUT), MAX_TIMEOUT))


def auto_interval(usage: dict[str, Any]) -> int | None:
    """The minutes between cc-switch's own queries of a provider (``autoQueryInterval``, written
    ``autoIntervalMinutes`` by older versions; a deep link's ``usageAutoInterval``), None when off.
    This host has no timer of its own per station: it asks a station when asked."""
    for key in ("autoQueryInterval", "autoIntervalMinutes"):
        value = usage.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value if value > 0 else None
    return None


def safe_id(name: str, provider_id: str) -> str:
    """A plugin id (or station name) for a provider: its name made safe, else its cc-switch id."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._").lower()[:48]
    if not base:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", provider_id).strip("-._").lower()[:48] or "station"
    return base if base[0].isalnum() else "s" + base


def _script(row: Row, usage: dict[str, Any], app: str, template: str | None) -> Found:
    own = provider_credentials(app, row.settings)
    # explicit non-empty script values win, trimmed (services/provider/usage.rs resolve_script_credentials)
    api_key = str_at(usage.get("apiKey")).strip() or own.api_key
    base_url = str_at(usage.get("baseUrl")).strip().rstrip("/") or own.base_url
    values = {"apiKey": api_key, "baseUrl": base_url,
              "accessToken": str_at(usage.get("accessToken")), "userId": str_at(usage.get("userId"))}
    note = ""
    if not api_key and own.env_key:
        note = f"cc-switch reads its key from ${own.env_key}: `config set ID --from-env apiKey={own.env_key}`"
    return Found(row.provider_id, row.name, app, usage["code"], template, {k: v for k, v in values.items() if v},
                 timeout=clamped_timeout(usage.get("timeout")), note=note, interval=auto_interval(usage))


def _one(row: Row) -> Found | Skipped | None:
    """What one provider becomes (None: it has no enabled usage query)."""
    app = app_name(row.app)
    meta = row.meta if isinstance(row.meta, dict) else {}
    usage = meta.get("usage_script")
    if row.meta is None:  # damaged: whether it has a query cannot be told, so say so
        return Skipped(row.name, app, None, row.damaged)
    if not isinstance(usage, dict) or usage.get("enabled") is not True:
        return None
    template = str_at(usage.get("templateType")) or None
    if row.settings is None:
        return Skipped(row.name, app, template, row.damaged)
    # cc-switch looks at the template first: a built-in query runs whatever code is left beside it
    # (commands/provider.rs query_provider_usage_inner)
    if template in OTHER_BUILTINS:
        return Skipped(row.name, app, template, OTHER_BUILTINS[template])
    if template not in (BALANCE, TOKEN_PLAN):
        code = usage.get("code")
        if isinstance(code, str) and code.strip():
            return _script(row, usage, app, template)
        return Skipped(row.name, app, template, "its usage script is empty")
    own = provider_credentials(app, row.settings)
    base_url, api_key = own.base_url, own.api_key
    if template == TOKEN_PLAN:
        base_url, api_key = coding_plan_credentials(usage, (base_url, api_key))
    b = builtin(template, usage, base_url, api_key)
    if b.plugin is None:
        return Skipped(row.name, app, template, b.reason)
    return Found(row.provider_id, row.name, app, None, template, b.config, plugin=b.plugin,
                 interval=auto_interval(usage))


def read(path: Path | str) -> Scan:
    """Every provider of the cc-switch file at ``path`` (or of a ``ccswitch://`` deep link) with an
    enabled usage query: what it becomes, or why it is not imported. ``Found.id`` is the
    provider's cc-switch id here; the import names it."""
    if isinstance(path, str) and is_link(path):
        row, enabled = link_row(path)
        scan = Scan("cc-switch deep link")
        got = _one(row) if enabled else Skipped(row.name, app_name(row.app), None, NOT_ENABLED)
        (scan.found if isinstance(got, Found) else scan.skipped).append(got)  # type: ignore[arg-type]
        return scan
    path = Path(path)
    try:
        kind, rows = read_rows(path)
    except (ValueError, RecursionError) as exc:  # a literal no export writes (odd hex, 5,000 digits), say
        raise CcSwitchUnreadable(f"{path}: not a cc-switch file this host can read "
                                 f"({type(exc).__name__}: {str(exc)[:200]})") from None
    scan = Scan(kind)
    for row in rows:
        got = _one(row)
        if isinstance(got, Found):
            scan.found.append(got)
        elif got is not None:
            scan.skipped.append(got)
    return scan


__all__ = ["DEFAULT_DB", "CcSwitchUnreadable", "Found", "Scan", "Skipped", "auto_interval", "clamped_timeout",
           "provider_credentials", "read", "safe_id"]
