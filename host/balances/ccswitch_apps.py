"""A cc-switch provider's own API key and base URL, read from its settings the way cc-switch reads
them for each app (``Provider::resolve_usage_credentials``, src-tauri/src/provider.rs, v3.20): the
values a usage script's ``{{apiKey}}`` and ``{{baseUrl}}`` fall back to, and the ones its built-in
balance and coding-plan queries run with.

Nothing here reads the environment: a Grok Build provider whose key is an ``env_key`` (cc-switch
reads that variable of its own process) is reported by name, for the operator to give."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

# cc-switch's AppType::from_str spellings (app_config.rs), to the one it stores (AppType::as_str)
_APPS = {"claude-desktop": "claude-desktop", "claude_desktop": "claude-desktop", "claudedesktop": "claude-desktop",
         "grokbuild": "grokbuild", "grok-build": "grokbuild", "grok_build": "grokbuild", "grok": "grokbuild"}
# Codex's own model providers (codex_config.rs CODEX_RESERVED_MODEL_PROVIDER_IDS): their bearer
# token is never read from their [model_providers.*] section
_CODEX_RESERVED = {"amazon-bedrock", "openai", "ollama", "lmstudio", "oss", "ollama-chat"}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What cc-switch would use: the base URL (no trailing ``/``) and the API key; ``env_key``: the
    environment variable cc-switch reads the key from, when the settings name one instead."""

    base_url: str = ""
    api_key: str = ""
    env_key: str = ""


def app_name(app: str) -> str:
    """The app as cc-switch stores it (``claude-desktop``, ``grokbuild``, ...), whatever its spelling."""
    norm = app.strip().lower()
    return _APPS.get(norm, norm)


def str_at(value: Any) -> str:
    """cc-switch's ``str_at``: the string, else empty."""
    return value if isinstance(value, str) else ""


def _first(table: Any, *keys: str) -> str:
    """The first present, non-empty string among ``keys`` (cc-switch's ``first_non_empty``, JS ``a || b``)."""
    if not isinstance(table, dict):
        return ""
    for key in keys:
        value = table.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _toml(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError):  # TOMLDecodeError, 5,000 digits: cc-switch gets no value (parse().ok()?)
        return None


def codex(settings: dict[str, Any]) -> Credentials:
    """``auth.OPENAI_API_KEY`` (trimmed), else the TOML's ``experimental_bearer_token`` (the
    active custom provider's, else the top-level one); the ``base_url`` of the ACTIVE
    ``[model_providers.<model_provider>]``, else a top-level ``base_url`` (codex_config.rs
    ``extract_codex_api_key``, ``extract_codex_experimental_bearer_token``, ``extract_codex_base_url``):
    never another provider's section left in the file."""
    doc = _toml(settings.get("config")) or {}
    active = doc.get("model_provider")
    providers = doc.get("model_providers") if isinstance(doc.get("model_providers"), dict) else {}
    section = providers.get(active) if isinstance(active, str) else None
    section = section if isinstance(section, dict) else {}
    base = section.get("base_url") if isinstance(section.get("base_url"), str) else str_at(doc.get("base_url"))
    auth = settings.get("auth")
    key = str_at(auth.get("OPENAI_API_KEY")).strip() if isinstance(auth, dict) else ""
    if not key:
        token: Any = doc.get("experimental_bearer_token")
        active_id = active.strip() if isinstance(active, str) else ""
        if active_id and active_id.lower() not in _CODEX_RESERVED:
            own = providers.get(active_id)
            if isinstance(own, dict) and isinstance(own.get("experimental_bearer_token"), str):
                token = own["experimental_bearer_token"]
        key = str_at(token).strip()
    return Credentials(base, key)


def grokbuild(settings: dict[str, Any]) -> Credentials:
    """``[model.<models.default>]``'s ``base_url`` and ``api_key`` (grok_config.rs
    ``extract_model_config``: the selected model's section must be whole, with ``model``, ``name``,
    ``api_backend`` and ``context_window`` too, or cc-switch finds no endpoint at all); a key
    given as ``env_key`` is named, not read."""
    doc = _toml(settings.get("config")) or {}
    models = doc.get("models")
    default = models.get("default") if isinstance(models, dict) else None
    table = doc.get("model")
    chosen = table.get(default.strip()) if isinstance(default, str) and isinstance(table, dict) else None
    if not isinstance(chosen, dict) or not all(isinstance(chosen.get(k), str) for k in
                                                ("model", "base_url", "name", "api_backend")):
        return Credentials()
    if not isinstance(chosen.get("context_window"), int) or isinstance(chosen.get("context_window"), bool):
        return Credentials()
    key, env = str_at(chosen.get("api_key")).strip(), str_at(chosen.get("env_key")).strip()
    return Credentials(chosen["base_url"], key, "" if key else env)


def pi(settings: dict[str, Any]) -> Credentials:
    """``baseUrl``, else the first model's non-empty ``baseUrl`` (pi_config ``provider_base_url``); ``apiKey``."""
    base = _first(settings, "baseUrl")
    if not base and isinstance(settings.get("models"), list):
        base = next((m["baseUrl"] for m in settings["models"]
                     if isinstance(m, dict) and isinstance(m.get("baseUrl"), str) and m["baseUrl"]), "")
    return Credentials(base, str_at(settings.get("apiKey")))


def provider_credentials(app: str, settings: Any) -> Credentials:
    """The provider's (base URL, key) as cc-switch resolves them for ``app``."""
    s = settings if isinstance(settings, dict) else {}
    env = s.get("env") if isinstance(s.get("env"), dict) else None
    match app_name(app):
        case "codex":
            found = codex(s)
        case "gemini":
            found = Credentials(str_at(env and env.get("GOOGLE_GEMINI_BASE_URL")), _first(env, "GEMINI_API_KEY", "GOOGLE_API_KEY"))
        case "grokbuild":
            found = grokbuild(s)
        case "hermes":
            found = Credentials(str_at(s.get("base_url")), str_at(s.get("api_key")))
        case "openclaw":
            found = Credentials(str_at(s.get("baseUrl")), str_at(s.get("apiKey")))
        case "pi":
            found = pi(s)
        case "opencode":
            options = s.get("options") if isinstance(s.get("options"), dict) else {}
            found = Credentials(str_at(options.get("baseURL")), str_at(options.get("apiKey")))
        case "claude" | "claude-desktop":
            found = Credentials(str_at(env and env.get("ANTHROPIC_BASE_URL")),
                                _first(env, "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GOOGLE_API_KEY"))
        case _:  # an app this cc-switch release does not know: the flat fields the others use
            found = Credentials(_first(s, "baseUrl", "base_url"), _first(s, "apiKey", "api_key"))
    return Credentials(found.base_url.rstrip("/"), found.api_key, found.env_key)


__all__ = ["Credentials", "app_name", "provider_credentials", "str_at"]
