"""The network addresses of the host's own state services: the Redis of rate limits, the result
cache and channel delivery, the PostgreSQL of ``[state] database`` and of execute's db tool.
They are the host's as much as its HTTP API is, so every worker is denied them, private network
allowed or not (``PluginHost.reserve_address``): a plugin that reached them could publish on any
plugin's channel, rewrite quotas and cached results, or another plugin's storage and approvals."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config import HostConfig

DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432}


def state_addresses(config: HostConfig) -> list[tuple[str, int]]:
    """``(host, port)`` of each network state service ``config`` names (none for memory://,
    sqlite or a PostgreSQL reached over a Unix socket)."""
    uris = [config.policy.storage, config.policy.cache_storage, config.state.channel_storage,
            config.state.database, config.execute.database]
    out: list[tuple[str, int]] = []
    for uri in uris:
        if not uri:
            continue
        try:
            parts = urlsplit(uri)
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:  # checked when the config was read: nothing reachable to deny
            continue
        if parts.scheme in DEFAULT_PORTS and parts.hostname and not parts.hostname.startswith("/") and port:
            out.append((parts.hostname, port))
    return list(dict.fromkeys(out))


__all__ = ["state_addresses"]
