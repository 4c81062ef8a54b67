"""BalanceResult: what ``query_balances`` returns for each relay station.

A balance plugin's ``queryBalance(config, context)`` returns ``{ balance, currency, quota?,
usedQuota?, expiresAt?, rawData? }``; the host fills in the rest. Field names are camelCase
on the wire (JSON, msgpack), snake_case in Python."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

import msgspec

from ..errors import CallTimeout, HostError, PluginError

BALANCE_CAPABILITY = "balance"
BALANCE_FUNCTION = "queryBalance"
Status = Literal["success", "error", "timeout"]


class BalanceResult(msgspec.Struct, rename="camel", omit_defaults=False):
    provider: str                       # the plugin id
    provider_name: str                  # its metadata name
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
    cached: bool = False                # served from the result cache
    duration: float = 0.0               # milliseconds this query took


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {type(value).__name__} {value!r:.40}")
    return float(value)


def from_reply(provider: str, name: str, value: Any, *, stored_at: float, cached: bool,
               duration: float) -> BalanceResult:
    """The BalanceResult for a plugin's answer; an answer of the wrong shape is an error
    result (PARSE_ERROR) naming the field, never an exception."""
    when = dt.datetime.fromtimestamp(stored_at, dt.UTC)
    base = {"provider": provider, "provider_name": name, "last_updated": when, "cached": cached,
            "duration": round(duration, 3)}
    try:
        if not isinstance(value, dict):
            raise ValueError(f"queryBalance must return an object, got {type(value).__name__}")
        balance = _number(value.get("balance"), "balance")
        if balance is None:
            raise ValueError("balance is missing")
        currency = value.get("currency")
        if not isinstance(currency, str) or not currency:
            raise ValueError("currency must be a non-empty string")
        expires = value.get("expiresAt")
        if expires is not None and not isinstance(expires, str):
            raise ValueError("expiresAt must be a string (ISO 8601)")
        return BalanceResult(
            **base, status="success", balance=balance, currency=currency,
            quota=_number(value.get("quota"), "quota"),
            used_quota=_number(value.get("usedQuota"), "usedQuota"),
            expires_at=expires, raw_data=value.get("rawData"))
    except ValueError as exc:
        return BalanceResult(**base, status="error", error_type="PARSE_ERROR",
                             error_message=f"bad queryBalance result: {exc}")


def from_error(provider: str, name: str, exc: HostError, *, duration: float) -> BalanceResult:
    """The BalanceResult of a failed query: ``timeout`` for a CallTimeout, else ``error``."""
    timed_out = isinstance(exc, CallTimeout)
    kind = exc.error_type if isinstance(exc, PluginError) and exc.error_type else type(exc).__name__
    return BalanceResult(
        provider=provider, provider_name=name, status="timeout" if timed_out else "error",
        last_updated=dt.datetime.now(dt.UTC), error_message=exc.message,
        error_type=kind, duration=round(duration, 3))


__all__ = ["BALANCE_CAPABILITY", "BALANCE_FUNCTION", "BalanceResult", "from_error", "from_reply"]
