"""The balance plugin document's ``[rate_limit]`` keys, read as today's settings with a
deprecation hint naming the setting to write instead.

That document (seed 000, 9.6.1) configures the limiter with three keys:

- ``global_max_requests_per_second = N``: one quota over every plugin: ``[policy] global_limit
  = "N/second"``.
- ``per_plugin_max_requests_per_minute = N``: each plugin's quota: ``[rate_limit] limit =
  "N/minute"``.
- ``burst_size = N``: at most N requests at once before the per-minute rate applies. Our
  limiter counts moving windows, not a token bucket, so the nearest setting is a short window
  beside the long one: ``limit = "N/second"`` added to the plugin's limit ("30/minute;
  5/second"). That is what it becomes; the hint says so.

A document key given together with the setting it stands for is refused (which one wins would be
a guess), naming both."""

from __future__ import annotations

import logging
from typing import Any

from .errors import InvalidConfig

log = logging.getLogger("host.config")

GLOBAL = "global_max_requests_per_second"
PER_PLUGIN = "per_plugin_max_requests_per_minute"
BURST = "burst_size"
LEGACY = (GLOBAL, PER_PLUGIN, BURST)


def translate_rate_limit(data: dict[str, Any], source: str) -> list[str]:
    """Rewrite the document's keys in ``data``'s ``[rate_limit]`` (or ``[policy.rate_limit]``)
    as today's settings, in place; returns (and logs) one deprecation hint per key."""
    hints: list[str] = []
    policy = data.get("policy")
    plugins = data.get("plugins")
    tables = [(data.get("rate_limit"), "rate_limit"),
              (policy.get("rate_limit") if isinstance(policy, dict) else None, "policy.rate_limit"),
              (policy, "policy")]  # [policy] global_max_requests_per_second, as the document's top level
    tables += [(entry.get("rate_limit"), f"plugins.{pid}.rate_limit")
               for pid, entry in (plugins.items() if isinstance(plugins, dict) else ()) if isinstance(entry, dict)]
    for table, where in tables:
        if not isinstance(table, dict) or not any(k in table for k in LEGACY):
            continue
        if where == "policy" and (extra := [k for k in (PER_PLUGIN, BURST) if k in table]):
            raise InvalidConfig(f"{source}: policy.{extra[0]}: unknown field (the balance plugin document's name): "
                                "write [policy.rate_limit] limit = \"N/minute\" (every plugin's own limit)")
        if where.startswith("plugins.") and GLOBAL in table:
            raise InvalidConfig(f"{source}: {where}.{GLOBAL}: a limit of the whole host, not of one plugin: "
                                f'write [policy] global_limit = "{table[GLOBAL]}/second"')
        given = {k: _count(table.pop(k), f"{source}: {where}.{k}") for k in LEGACY if k in table}
        limits: list[str] = []
        if PER_PLUGIN in given:
            limits.append(f"{given[PER_PLUGIN]}/minute")
        if BURST in given:
            limits.append(f"{given[BURST]}/second")
        if limits:
            if table.get("limit") is not None:
                keys = " and ".join(k for k in (PER_PLUGIN, BURST) if k in given)
                raise InvalidConfig(f"{source}: {where}: {keys} and limit are both given; keep only "
                                    f'limit (the equivalent of {keys} is limit = "{"; ".join(limits)}")')
            table["limit"] = "; ".join(limits)
            for key in (PER_PLUGIN, BURST):
                if key in given:
                    hints.append(f'{source}: {where}.{key} is deprecated (the balance plugin document\'s '
                                 f'name): read as [{where}] limit = "{table["limit"]}"; write that instead'
                                 + (" (a moving window of 1 s stands for the burst)" if key == BURST else ""))
        if GLOBAL in given:
            pol = data.setdefault("policy", {})
            if not isinstance(pol, dict):
                raise InvalidConfig(f"{source}: policy: Expected `object`, got `{type(pol).__name__}`")
            if pol.get("global_limit") is not None:
                raise InvalidConfig(f"{source}: {where}.{GLOBAL} and policy.global_limit are both given; keep "
                                    f'only [policy] global_limit (the equivalent is "{given[GLOBAL]}/second")')
            pol["global_limit"] = f"{given[GLOBAL]}/second"
            hints.append(f"{source}: {where}.{GLOBAL} is deprecated (the balance plugin document's name): read "
                         f'as [policy] global_limit = "{given[GLOBAL]}/second"; write that instead')
    for hint in hints:
        log.warning("%s", hint)
    return hints


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"{where}: must be a whole number of requests, at least 1, got {value!r}")
    return value


__all__ = ["LEGACY", "translate_rate_limit"]
