"""Keys of the host's per-name stores (config store, breakers, redaction): a plugin is keyed by
its id, a relay station by ``station:NAME``, which no plugin id can be (ids have no ":")."""

from __future__ import annotations

STATION_PREFIX = "station:"


def station_key(name: str) -> str:
    """Where a relay station's config is kept (and its breaker, and its secrets for redaction)."""
    return STATION_PREFIX + name


__all__ = ["STATION_PREFIX", "station_key"]
