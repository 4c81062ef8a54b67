"""The network addresses of the host's own state services: the Redis of rate limits, the result
cache and channel delivery, the PostgreSQL of ``[state] database`` and of execute's db tool.
They are the host's as much as its HTTP API is, so every worker is denied them, private network
allowed or not (``PluginHost.reserve_address``): a plugin that reached them could publish on any
plugin's channel, rewrite quotas and cached results, or another plugin's storage and approvals."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config import HostConfig
from ..db_identity import tcp_endpoints
from ..errors import InvalidConfig

REDIS_PORT = 6379


def state_addresses(config: HostConfig) -> list[tuple[str, int]]:
    """``(host, port)`` of each network state service ``config`` names (none for memory://,
    sqlite or a PostgreSQL reached over a Unix socket)."""
    out: list[tuple[str, int]] = []
    for uri in (config.policy.storage, config.policy.cache_storage, config.state.channel_storage):
        try:
            parts = urlsplit(uri or "")
            if parts.scheme in ("redis", "rediss") and parts.hostname:
                out.append((parts.hostname, parts.port or REDIS_PORT))
        except ValueError:  # checked when the config was read: nothing reachable to deny
            continue
    for setting, db in (("state.database", config.state.database), ("execute.database", config.execute.database)):
        if db and (db.startswith(("postgresql://", "postgres://")) or ("://" not in db and "=" in db)):
            # read as libpq reads it: ?host=/?port=, key=value, host lists
            try:
                out += tcp_endpoints(db, setting)
            except InvalidConfig:
                continue
    return list(dict.fromkeys(out))


__all__ = ["state_addresses"]
