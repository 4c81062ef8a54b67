"""The policy sections of the host configuration (``[policy]`` and each plugin's): rate
limits, retries, the circuit breaker, the result cache, and the storage they share (memory or
Redis), with the checks ``HostConfig`` runs on them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import limits
import msgspec
from msgspec import Meta

from ..config_types import MAX_SECONDS, Amount, Count, Delay, Fraction, Seconds
from ..errors import InvalidConfig

RETRYABLE = ["NETWORK_ERROR", "RATE_LIMIT", "TIMEOUT", "WORKER_CRASHED"]


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Moving-window quotas on calls to one plugin. ``limit`` uses the ``limits`` notation, several
    separated by ``;``: "10/second; 300/minute" allows bursts of 10 within 300 a minute."""

    limit: str | None = None     # None: unlimited
    # "wait": queue up to max_wait; "reject": RateLimited at once; "degrade": as reject, but a
    # balance query answers the station's last balance, marked stale with its age (balances/degrade.py)
    strategy: Literal["wait", "reject", "degrade"] = "wait"
    max_wait: Delay = 1.0        # seconds a call may wait for a slot (also bounded by its timeout)


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Retries of a failed call. Off by default (``max_attempts=1``): retrying a function that is
    not idempotent may do its work twice, so a plugin opts in."""

    max_attempts: Count = 1       # attempts in all, the first included
    backoff: Delay = 0.1         # delay before the second attempt, times multiplier after each
    multiplier: Annotated[float, Meta(ge=1, le=1000)] = 2.0
    backoff_max: Delay = 5.0
    jitter: Fraction = 0.5         # each delay is shortened by a random fraction up to this
    attempt_timeout: Seconds | None = None  # cap per attempt (the call's timeout bounds them all)
    retry_on: list[str] = msgspec.field(default_factory=lambda: list(RETRYABLE))


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Circuit breaker: open after ``failure_threshold`` consecutive failures, or when at least
    ``failure_rate`` of at least ``min_calls`` calls in the last ``window`` seconds failed; while
    open calls fail at once with CircuitOpen; after ``cooldown`` one probe call goes through."""

    enabled: bool = True
    failure_threshold: Amount = 5  # 0: no consecutive-failure trigger
    failure_rate: Fraction = 0.5   # 0: no failure-rate trigger
    min_calls: Count = 20
    window: Seconds = 60.0
    cooldown: Delay = 30.0


CACHE_ALL = "*"
NEVER_CACHED = frozenset({"healthCheck", "validateConfig", "onEvent"})  # host-driven: must run


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Result cache of one plugin: successful results of the ``functions`` listed, keyed by
    function, arguments, config and plugin version. Off by default; when on, only
    ``queryBalance`` unless ``functions`` names others (``"*"``: every function except the
    host-driven ``healthCheck``, ``validateConfig`` and ``onEvent``), since caching a function
    with side effects would skip its work."""

    enabled: bool = False
    ttl: Seconds = 60.0           # seconds a result is fresh
    stale_ttl: Delay = 0.0       # then served stale this long while refreshed in the background; 0: no
    max_entries: Count = 1000     # per plugin; the least recently used go first
    max_value_bytes: Count = 1024 * 1024  # larger results (as msgpack) are not cached
    persist: bool = False        # also keep entries in <state_dir>/cache.sqlite3, loaded at start
    functions: list[str] = msgspec.field(default_factory=lambda: ["queryBalance"])

    def applies(self, fn: str) -> bool:
        """Whether calls of ``fn`` are cached."""
        if not self.enabled:
            return False
        return fn in self.functions or (CACHE_ALL in self.functions and fn not in NEVER_CACHED)


class PolicyConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Call policies (``[policy]``): the defaults of every plugin, plus a host-wide quota."""

    storage: str = "memory://"   # rate-limit counters: memory:// (per host) or redis://host:port/db
    global_limit: str | None = None  # quota over the calls to all plugins together
    max_concurrent_calls: Count | None = None  # calls admitted at once over all plugins; None: no cap
    max_concurrent: Amount = 0     # each plugin's default cap on calls admitted at once; 0: no cap
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    cache_storage: str = "memory://"  # result cache: memory:// (per host) or redis://host:port/db


# The most calls one quota counts in its window: the memory storage keeps that many hit times
# per plugin (8 bytes each). Before, "99999999999999999999999/second" was taken and every call
# of the plugin failed with an OverflowError (no HostError); "0/second" failed from the second.
MAX_QUOTA = 1_000_000


def check_limit(limit: str | None, where: str) -> None:
    if limit is None:
        return
    try:
        items = limits.parse_many(limit)
        if not items:
            raise ValueError("empty")
    except ValueError:
        raise InvalidConfig(f"{where}: {limit!r} is not a rate limit such as '10/second; 300/minute'") from None
    for item in items:
        if not 1 <= item.amount <= MAX_QUOTA:
            raise InvalidConfig(f"{where}: {limit!r}: a quota counts 1 to {MAX_QUOTA:,} calls in its window, "
                                f"not {item.amount} (to stop the calls, disable the plugin; for more, a "
                                "shorter window)")
        if item.get_expiry() > MAX_SECONDS:
            raise InvalidConfig(f"{where}: {limit!r}: a window of at most {MAX_SECONDS:g} seconds")


STORAGE_SCHEMES = ("memory", "redis", "rediss")


def check_storage(uri: str, where: str) -> None:
    """A storage URI for rate-limit counters or the result cache: ``memory://`` (this host
    only) or ``redis://[:password@]host:port/db`` (shared by every host pointing at it)."""
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise InvalidConfig(f"{where}: {redact_uri(uri)!r} is not a storage URI such as 'memory://' "
                            "or 'redis://127.0.0.1:6379/0'")
    if scheme == "memory":
        return
    check_userinfo(uri, where)
    try:
        import redis  # the client is only needed for a redis URI (its absence is said where it is used)
    except ImportError:
        return
    try:  # the client's own reading of the URI and its options; no connection is made
        redis.ConnectionPool.from_url(uri).make_connection()
    except (ValueError, TypeError) as exc:  # before: a traceback at start (cache, channels)
        raise InvalidConfig(f"{where}: {redact_uri(uri)!r}: {exc}") from None


def check_userinfo(uri: str, where: str, *, libpq: bool = False) -> None:
    """InvalidConfig when ``uri``'s user or password holds a character that is not percent-encoded
    and that its driver reads as the end of it: a second "@" (libpq ends the password at the
    first), or (redis, not ``libpq``, which reads up to the "@") a "/", "?" or "#" (a URL parser
    ends the host there). The drivers then named a piece of the password as a host or a port
    ("failed to resolve host 'pw#6@127.0.0.1'", "Port could not be cast to integer value as
    'rpw'"), in errors, logs and doctor's output. The message never shows the value."""
    rest = uri.partition("://")[2]
    at = rest.rfind("@")
    if at < 0:
        return
    end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    if libpq:
        end = at
    if at > end:
        ch = rest[end]
        raise InvalidConfig(f"{where}: an \"@\" after a {ch!r}: a password holding \"/\", \"?\" or \"#\" must "
                            "write it percent-encoded (%2F, %3F, %23); the value is not shown, it holds a password")
    if rest[:at].count("@"):
        raise InvalidConfig(f"{where}: more than one \"@\": a user or password holding \"@\" must write it "
                            "percent-encoded (%40); the value is not shown, it holds a password")


def redact_uri(uri: str) -> str:
    """The URI with its credentials replaced by ``***`` and its query and fragment left out (a
    password may be given as ``?password=...``; libpq and redis accept it there), for errors and
    logs."""
    scheme, sep, rest = uri.partition("://")
    if not sep and ("=" in uri or "@" in uri):  # a libpq "host=... password=..." string: all of it hidden
        return "***"
    # Parsers disagree on where the user-info ends (libpq: at the "@", even past a "/", "?" or
    # "#" in the password), so all before the last "@" is hidden; an "@" past the first "?" or
    # "#" may be in a password or in the query: then nothing but the scheme is shown.
    query = re.search(r"[?#]", rest)
    end = query.start() if query else len(rest)
    at = rest.rfind("@")
    shown = rest[:end] if at < 0 else "***@" + rest[at + 1:end] if at < end else "***"
    return f"{scheme}{sep}{shown}{'?***' if query else ''}"


def uri_secrets(uri: str) -> list[str]:
    """The password in ``uri``, in its user-info or its query (``password``, ``sslpassword``),
    as given and decoded: what must be scrubbed from a driver's error text."""
    from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit

    found: list[str] = []
    try:
        parts = urlsplit(uri)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=False):
            if key.lower() in ("password", "sslpassword", "passfile") and value:
                found += [value, quote_plus(value)]
    except ValueError:
        pass
    return sorted({s for s in found if s}, key=len, reverse=True)


def storage_failure(uri: str, exc: Exception, *, modules: tuple[str, ...] = ("redis",),
                    also: tuple[type[Exception], ...] = ()) -> str | None:
    """"<uri> failed: <error>: <its first line>" when ``exc`` is the storage at ``uri`` failing
    (an error of its client's ``modules``, an OSError, or one of ``also``), else None. The URI
    is given with its password redacted."""
    if not (type(exc).__module__.startswith(modules) or isinstance(exc, (OSError, *also))):
        return None
    text = str(exc)
    said = f"{redact_uri(uri)} failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    if type(exc).__name__ == "AuthenticationError" or text.startswith(("NOAUTH", "WRONGPASS", "invalid username")):
        said += " (the Redis asks for a password: give it in the URL, redis://:PASSWORD@host:port, or "                 "redis://USER:PASSWORD@host:port, percent-encoded)"
    return said


def check_policy(rate: RateLimitConfig | None, where: str) -> None:
    """What the field types of ``[policy]`` or of one plugin's sections cannot say: the rate
    limit's notation (None: not given there)."""
    if rate is not None:
        check_limit(rate.limit, f"{where}.rate_limit.limit")


__all__ = ["CACHE_ALL", "NEVER_CACHED", "RETRYABLE", "STORAGE_SCHEMES", "BreakerConfig", "CacheConfig", "PolicyConfig",
           "RateLimitConfig", "RetryConfig", "check_policy", "check_storage", "redact_uri", "storage_failure"]
