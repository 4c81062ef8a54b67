"""BalanceResult: what ``query_balances`` returns for each relay station.

A balance plugin's ``queryBalance(config, context)`` returns ``{ balance, currency, quota?,
usedQuota?, expiresAt?, rawData?, unlimited?, invalid?, invalidMessage? }``; the host fills in
the rest. Field names are camelCase on the wire (JSON, msgpack), snake_case in Python.

``invalid``: the station answered with an amount but says the key or plan is not valid (a
cc-switch script's ``isValid: false``, which cc-switch shows in red, amount and all): status
``success`` with the amount, ``invalid: true`` and ``errorMessage`` saying why. It is not a
usable balance (``usable``): it raises a ``failing`` alert, is not recorded in the history and
makes ``balances`` exit 1."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..errors import CallTimeout, HostError, PluginError, js_type

BALANCE_CAPABILITY = "balance"
if TYPE_CHECKING:
    from ..config import HostConfig, WorkerLimits

BALANCE_FUNCTION = "queryBalance"
Status = Literal["success", "error", "timeout", "not_configured"]  # not_configured: add its key


class BalanceResult(msgspec.Struct, rename="camel", omit_defaults=False):
    provider: str                       # the station: a balance plugin's id, or a station's name
    provider_name: str                  # its display name (the plugin's metadata name)
    status: Status
    last_updated: dt.datetime           # when the plugin answered (a cached answer keeps its time)
    balance: float | None = None        # None unless status is success
    currency: str | None = None
    quota: float | None = None
    used_quota: float | None = None
    expires_at: str | None = None
    error_message: str | None = None
    error_type: str | None = None       # the PluginError type (AUTH_ERROR, ...) or the host error's name
    raw_data: Any = None
    unlimited: bool = False             # the station sets no limit (a usage script's remaining of -1)
    cached: bool = False                # served from the result cache
    duration: float = 0.0               # milliseconds this query took
    plugin: str | None = None           # the plugin that answered (a station's provider)
    # The plugin's rate limit (strategy "degrade") refused the query: this is the station's last
    # balance, ``age`` seconds old, not a fresh answer (balances/degrade.py).
    stale: bool = False
    age: float | None = None
    invalid: bool = False               # answered, but the key or plan is not valid (errorMessage: why)

    @property
    def usable(self) -> bool:
        """A balance to go by: a success the station does not itself call invalid."""
        return self.status == "success" and not self.invalid


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {js_type(value)} {value!r:.40}")
    return float(value)


def _instant(value: Any) -> str | None:
    """``expiresAt`` as ISO 8601: a string as given, a Date (a datetime here) or epoch seconds
    or milliseconds converted."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = value / 1000 if abs(value) >= 1e11 else value  # past 1973 in ms, past 5138 in s
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            pass
    raise ValueError("expiresAt must be an ISO 8601 string, a Date or epoch milliseconds")


# What other systems call a balance answer's fields (cc-switch's usage scripts: remaining, total,
# used, unit; relay APIs: quota, credit, ...) -> this host's field.
OTHER_NAMES = {"remaining": "balance", "remain": "balance", "credit": "balance", "credits": "balance",
               "available": "balance", "amount": "balance", "left": "balance", "total": "quota",
               "limit": "quota", "used": "usedQuota", "usage": "usedQuota", "spent": "usedQuota",
               "unit": "currency"}


def _other_names(value: dict) -> str:
    """``; remaining is this host's balance, ...`` for the fields an answer gives in another
    system's names."""
    said, named = [], set()
    for k, v in OTHER_NAMES.items():  # one name for each field, and only a value that field could hold
        fits = isinstance(value.get(k), str) if v == "currency" else (
            isinstance(value.get(k), int | float | str) and not isinstance(value.get(k), bool))
        if k in value and v not in value and v not in named and fits:
            said.append(f"{k} is this host's {v}")
            named.add(v)
    return f"; {', '.join(said)}: rename {'them' if len(said) > 1 else 'it'}" if said else ""


def from_reply(provider: str, name: str, value: Any, *, stored_at: float, cached: bool,
               duration: float, plugin: str | None = None) -> BalanceResult:
    """The BalanceResult for a plugin's answer; an answer of the wrong shape is an error
    result (PARSE_ERROR) naming the field, never an exception."""
    when = dt.datetime.fromtimestamp(stored_at, dt.UTC)
    base = {"provider": provider, "provider_name": name, "last_updated": when, "cached": cached,
            "duration": round(duration, 3), "plugin": plugin or provider}
    try:
        if not isinstance(value, dict):
            raise ValueError(f"queryBalance must return an object, got {js_type(value)}")
        balance = _number(value.get("balance"), "balance")
        used = _number(value.get("usedQuota"), "usedQuota")
        unlimited = value.get("unlimited") is True
        if balance is None and not unlimited and used is None:
            raise ValueError("balance is missing (give usedQuota, or unlimited: true, when there is none)"
                             + _other_names(value))
        currency = value.get("currency")
        if currency is not None and (not isinstance(currency, str) or not currency):
            raise ValueError("currency must be a non-empty string, or null for no unit")
        invalid = value.get("invalid") is True
        why = value.get("invalidMessage")
        return BalanceResult(
            **base, status="success", balance=balance, currency=currency,
            quota=_number(value.get("quota"), "quota"), used_quota=used,
            expires_at=_instant(value.get("expiresAt")), raw_data=value.get("rawData"), unlimited=unlimited,
            invalid=invalid, error_message=(str(why)[:300] if why else "the key or plan is not valid") if invalid else None)
    except ValueError as exc:
        return BalanceResult(**base, status="error", error_type="PARSE_ERROR",
                             error_message=f"bad queryBalance result: {exc}")


def from_error(provider: str, name: str, exc: HostError, *, duration: float,
               plugin: str | None = None) -> BalanceResult:
    """The BalanceResult of a failed query: ``timeout`` for a CallTimeout, ``not_configured``
    when the plugin says a setting is missing (NOT_CONFIGURED: not a failure), else ``error``."""
    # what the plugin threw, as it named it: a TypeError its code raised read "PluginError" (the
    # host's class for any error a plugin threw), where a direct call said TypeError
    thrown = type(exc) is PluginError  # (a subclass, PermissionDenied say, is the host's own reading)
    kind = exc.error_type if isinstance(exc, PluginError) and exc.error_type else exc.name if thrown else type(exc).__name__
    status: Status = ("timeout" if isinstance(exc, CallTimeout) else
                      "not_configured" if kind == "NOT_CONFIGURED" else "error")
    return BalanceResult(
        provider=provider, provider_name=name, status=status,
        last_updated=dt.datetime.now(dt.UTC), error_message=exc.message,
        error_type=kind, duration=round(duration, 3), plugin=plugin or provider)


def balance_limit(config: HostConfig, limits: WorkerLimits) -> float:
    """Seconds a station's balance query runs: its plugin's own call timeout when it has one
    (``limits``, the plugin's: an imported cc-switch script's kept one, or ``[plugins.ID.limits]``
    when not ``[limits]``'s), else ``balances.timeout``."""
    own = limits.call_timeout
    return own if own != config.limits.call_timeout else config.balances.timeout


__all__ = ["balance_limit", "BALANCE_CAPABILITY", "BALANCE_FUNCTION", "BalanceResult", "from_error", "from_reply"]
