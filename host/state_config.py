"""The ``[state]`` section: where state that several hosts must agree on lives. Left out, every
piece stays in files under ``state_dir``; ``database = "postgresql://..."`` moves plugin storage
(``ctx.storage``, plugin_storage_pg.py), the plugin config and secret store
(plugins/config_store.py), balance history (balances/history_pg.py) and approvals
(security/approvals_pg.py) into that database, shared by every host that names it, and copies
the audit log there (security/audit_pg.py). (Stations added at run time and enable/disable
switches are still per host.)"""

from __future__ import annotations

import msgspec

from .db_backends import POSTGRES_SCHEMES, PostgresBackend
from .errors import InvalidConfig
from .policy.config import redact_uri


class StateConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    database: str | None = None  # postgresql://user:password@host:5432/db; None: files under state_dir


def check_state(s: StateConfig) -> None:
    if s.database is None:
        return
    if not s.database.startswith(POSTGRES_SCHEMES):
        raise InvalidConfig(f"state.database: a postgresql:// URL (leave it out to keep state in files under "
                            f"state_dir), got {redact_uri(s.database)}")
    PostgresBackend(s.database, statement_timeout=1.0)  # psycopg missing: InvalidConfig saying what to install


__all__ = ["StateConfig", "check_state"]
