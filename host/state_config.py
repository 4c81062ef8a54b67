"""The ``[state]`` section: where state that several hosts must agree on lives. Left out, every
piece stays in files under ``state_dir``; ``database = "postgresql://..."`` moves plugin storage
(``ctx.storage``, plugin_storage_pg.py), the plugin config and secret store
(plugins/config_store.py), balance history (balances/history_pg.py) and approvals
(security/approvals_pg.py) into that database, shared by every host that names it, and copies
the audit log there (security/audit_pg.py), and keeps the stations added at run time and the
plugin switches there (plugins/host_lists.py). ``channel_storage = "redis://..."`` carries each
plugin's channel events to the other hosts (channel_relay.py)."""

from __future__ import annotations

import msgspec

from .db_backends import POSTGRES_SCHEMES, PostgresBackend
from .db_identity import tcp_endpoints
from .errors import InvalidConfig
from .policy.config import check_storage, check_userinfo, redact_uri


class StateConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    database: str | None = None  # postgresql://user:password@host:5432/db; None: files under state_dir
    channel_storage: str = "memory://"  # memory:// (this host only) or redis://host:port/db (all hosts on it)


def check_state(s: StateConfig) -> None:
    check_storage(s.channel_storage, "state.channel_storage")
    if s.database is None:
        return
    if not s.database.startswith(POSTGRES_SCHEMES):
        raise InvalidConfig(f"state.database: a postgresql:// URL (leave it out to keep state in files under "
                            f"state_dir), got {redact_uri(s.database)}")
    check_userinfo(s.database, "state.database", libpq=True)
    PostgresBackend(s.database, statement_timeout=1.0)  # psycopg missing: InvalidConfig saying what to install
    # read as libpq will: before, one it could not read failed the start quoting it, password and all
    # ("[::1" unclosed), and a port past 65535 as "PluginHost.reserve_address: argument `port`"
    tcp_endpoints(s.database, "state.database")


__all__ = ["StateConfig", "check_state"]
