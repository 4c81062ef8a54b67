"""Starting the host's egress proxy (security/egress.py) in the host's task group, and what it
enforces for each name it is told: a plugin's grants, or an execute pool's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from anyio.abc import TaskGroup

from ..config import SecurityConfig
from ..execute import EXECUTE_EGRESS
from ..runtime import Runtime
from .egress import EgressProxy
from .permissions import Permissions

if TYPE_CHECKING:
    from ..execute_pools import ExecutePools
    from ..plugins.registry import Registry


async def start_proxy(tg: TaskGroup, runtime: Runtime, sec: SecurityConfig,
                      permissions_for: Any) -> EgressProxy:
    """The proxy, serving in ``tg``; workers started from now on get its URL (``runtime.egress``)."""
    proxy = EgressProxy(audit=runtime.audit, permissions_for=permissions_for,
                        max_response_bytes=sec.max_response_bytes, https_only=sec.https_only,
                        reserved=lambda: runtime.reserved_addresses, **msgspec.structs.asdict(sec.egress))
    await tg.start(proxy.serve)
    runtime.egress = proxy
    return proxy


def egress_grants(plugin_id: str, pools: ExecutePools | None, registry: Registry) -> Permissions | None:
    """What the egress proxy enforces for ``plugin_id``: its newest manifest's grants, or for
    ad-hoc ``execute`` code (``execute+<digest>``, a name no plugin id can take) the permissions
    of that execute pool. None: unknown, so private addresses are refused."""
    if plugin_id.startswith(EXECUTE_EGRESS):
        return pools.permissions_of(plugin_id) if pools is not None else None
    newest = registry.newest(r for r in registry.records if r.id == plugin_id and r.manifest is not None)
    return registry.grants(newest[plugin_id]) if plugin_id in newest else None


__all__ = ["egress_grants", "start_proxy"]
