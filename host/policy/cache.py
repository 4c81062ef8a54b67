"""The result cache: successful call results kept per plugin and function, keyed by the
function, its arguments, the plugin's config and its version.

Two storages, named by URI like the rate limits':

- ``memory://``: this host only; least recently used entries go first once a plugin has
  ``max_entries``. With ``persist`` set, entries are also written to
  ``<state_dir>/cache.sqlite3`` and loaded again when the host starts (warm-up).
- ``redis://host:port/db``: shared by every host pointing at the same server. Entries expire
  in redis itself; a sorted set per plugin keeps them to ``max_entries`` (least recently
  used first). The redis client is synchronous and runs in a worker thread, so the cache
  works under asyncio and trio alike. A redis failure is logged and the call goes to the
  plugin: the cache only ever saves work.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ..config import CacheConfig, redact_uri, storage_failure
from ..errors import InvalidConfig
from ..logs import Throttle
from ..outage import Outage, Skipped
from .cache_file import CacheFile

log = logging.getLogger("host.cache")
_warn = Throttle(log)  # a redis that is down fails every call alike: say it every 10 s

FRESH, STALE = "fresh", "stale"
# An entry stored more than this ahead of the clock is not served: the wall clock was set back
# since (or the host that stored it in redis runs ahead), so its age cannot be told; hosts kept
# in time by NTP are within milliseconds of each other.
CLOCK_SLACK = 1.0
_encoder = msgspec.msgpack.Encoder()
_key_encoder = msgspec.msgpack.Encoder(order="sorted")  # dicts hash the same in any key order
_decoder = msgspec.msgpack.Decoder()


class CacheEntry(msgspec.Struct, array_like=True):
    """One cached result: the value as msgpack and its times (unix seconds)."""

    value: bytes
    stored_at: float
    expires: float       # fresh until then
    stale_until: float   # then served stale (and refreshed) until this; equal to expires: never

    def state(self, now: float) -> str | None:
        """FRESH, STALE, or None once it may no longer be served (or its age is unknown: stored
        ahead of ``now``; before, a clock set back an hour served it for that hour more)."""
        if now < self.stored_at - CLOCK_SLACK:
            return None
        if now < self.expires:
            return FRESH
        if now < self.stale_until:
            return STALE
        return None

    def result(self) -> Any:
        """A fresh copy of the cached value: callers may change what they get."""
        return _decoder.decode(self.value)


def cache_key(*parts: Any) -> bytes:
    """The key of a call's result: the parts encoded (dicts in sorted key order), or a hash of
    that encoding when it is long, so that a large argument does not become a large key. The
    two never meet: an encoding starts with msgpack's array header, a hash with ``#``."""
    raw = _key_encoder.encode(parts)
    return raw if len(raw) <= 128 else b"#" + hashlib.blake2b(raw, digest_size=20).digest()


def _hex(key: bytes) -> str:
    """A key as text, for redis: always a hash, so every key has the same short form."""
    return hashlib.blake2b(key, digest_size=20).hexdigest()


def digest(*parts: Any) -> str:
    """A stable hash of msgpack-encodable parts (config dicts hash the same in any key order)."""
    return hashlib.blake2b(_key_encoder.encode(parts), digest_size=20).hexdigest()


def make_entry(value: Any, config: CacheConfig) -> CacheEntry | None:
    """The entry for ``value``, or None when it is larger than ``max_value_bytes`` (or cannot
    be encoded)."""
    try:
        raw = _encoder.encode(value)
    except (TypeError, ValueError):
        return None
    if len(raw) > config.max_value_bytes:
        return None
    now = time.time()
    return CacheEntry(raw, now, now + config.ttl, now + config.ttl + config.stale_ttl)


class ResultCache:
    """Cached results of every plugin. ``get``/``put``/``clear`` are awaitable for redis; the
    memory storage never blocks."""

    def __init__(self, uri: str = "memory://", state_dir: str | Path | None = None) -> None:
        self.uri = uri
        self._redis: Any = None
        self._memory: dict[str, OrderedDict[bytes, CacheEntry]] = {}
        self._outage = Outage()  # redis did not answer: misses without asking it for a while
        if uri.startswith(("redis://", "rediss://")):
            try:
                import redis  # only needed for a shared cache
            except ImportError:
                raise InvalidConfig("policy.cache_storage: redis:// needs the redis client: "
                                    "pip install 'plugin-host[redis]'") from None
            self._redis = redis.Redis.from_url(uri, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._file = CacheFile(Path(state_dir) / "cache.sqlite3") if state_dir is not None else None

    @property
    def shared(self) -> bool:
        return self._redis is not None

    # ------------------------------------------------------------------ persistence (memory)

    def warm_up(self) -> int:
        """Load the persisted entries that may still be served; returns how many. Only for
        ``memory://`` with a state directory (redis keeps its own)."""
        rows = self._file.load() if self._file is not None and self._redis is None else []
        for plugin, key, value, stored_at, expires, stale_until in rows:
            self._memory.setdefault(plugin, OrderedDict())[bytes(key)] = CacheEntry(
                bytes(value), stored_at, expires, stale_until)
        return len(rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._redis is not None:
            self._redis.close()

    # ------------------------------------------------------------------ operations

    async def get(self, plugin: str, key: bytes, deadline: float | None = None) -> CacheEntry | None:
        """The entry if it may still be served (fresh or stale), else None; a shared storage
        that has not answered by ``deadline`` (monotonic) is a miss."""
        if self._redis is not None:
            return await self._redis_op(self._redis_get, plugin, key, deadline=deadline)
        return self.get_local(plugin, key)

    def get_local(self, plugin: str, key: bytes) -> CacheEntry | None:
        """``get`` for the memory storage, which never blocks."""
        entries = self._memory.get(plugin)
        entry = entries.get(key) if entries else None
        if entry is None:
            return None
        if entry.state(time.time()) is None:
            del entries[key]  # type: ignore[union-attr]
            if self._file is not None:
                self._file.delete(plugin, [key])  # if there is such a file (never made here)
            return None
        entries.move_to_end(key)  # type: ignore[union-attr]
        return entry

    async def put(self, plugin: str, key: bytes, entry: CacheEntry, config: CacheConfig,
                  deadline: float | None = None) -> None:
        if self._redis is not None:
            await self._redis_op(self._redis_put, plugin, key, entry, config.max_entries, deadline=deadline)
        else:
            self.put_local(plugin, key, entry, config)

    def put_local(self, plugin: str, key: bytes, entry: CacheEntry, config: CacheConfig) -> None:
        """``put`` for the memory storage, which never blocks."""
        entries = self._memory.get(plugin)
        if entries is None:
            entries = self._memory[plugin] = OrderedDict()
        elif key in entries:
            entries.move_to_end(key)
        entries[key] = entry
        evicted = []
        while len(entries) > config.max_entries:
            evicted.append(entries.popitem(last=False)[0])
        if config.persist and self._file is not None:  # without persist the file has none of the new entries
            self._file.store(plugin, (key, entry.value, entry.stored_at, entry.expires, entry.stale_until), evicted)

    async def clear(self, plugin: str | None = None) -> int:
        """Drop the entries of ``plugin`` (every plugin's when None); returns how many."""
        if self._redis is not None:
            return int(await self._redis_op(self._redis_clear, plugin) or 0)
        plugins = [plugin] if plugin is not None else list(self._memory)
        n = 0
        for pid in plugins:
            n += len(self._memory.pop(pid, {}))
        if self._file is not None:
            await self._file.clear(plugin)
        return n

    def size(self, plugin: str) -> int | None:
        """Entries held for ``plugin`` (None for redis, which is not asked on every snapshot)."""
        return None if self._redis is not None else len(self._memory.get(plugin, ()))

    # ------------------------------------------------------------------ redis

    _PREFIX = "plugin-host:cache:"

    async def _redis_op(self, fn: Any, *args: Any, deadline: float | None = None) -> Any:
        """``fn(*args)`` in a worker thread, given up at ``deadline`` (the thread is left to
        finish within the client's socket timeout): a miss, never a failure or a wait past the
        call's own deadline; for a while after redis did not answer, a miss without asking it
        (host/outage.py)."""
        try:
            with anyio.fail_after(None if deadline is None else max(deadline - time.monotonic(), 0.0)):
                return await self._outage.run(fn, *args)
        except Skipped:
            return None
        except TimeoutError:
            _warn.warning(self.uri, "result cache at %s did not answer before the call's deadline; "
                          "served as a miss", redact_uri(self.uri))
            return None
        except Exception as exc:  # redis down, or its answer unusable: a miss, never a failure
            failure = storage_failure(self.uri, exc, also=(msgspec.DecodeError,))
            if failure is None:
                raise
            _warn.warning(self.uri, "result cache at %s", failure)
            return None

    def _redis_get(self, plugin: str, key: bytes) -> CacheEntry | None:
        member = _hex(key)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(f"{self._PREFIX}{plugin}:{member}")
        pipe.zadd(f"{self._PREFIX}{plugin}", {member: time.time()}, xx=True)
        raw, _ = pipe.execute()
        if raw is None:
            return None
        entry = msgspec.msgpack.decode(raw, type=CacheEntry)
        return None if entry.state(time.time()) is None else entry

    def _redis_put(self, plugin: str, key: bytes, entry: CacheEntry, max_entries: int) -> None:
        lru = f"{self._PREFIX}{plugin}"
        ttl_ms = max(int((entry.stale_until - time.time()) * 1000), 1)
        member = _hex(key)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(f"{self._PREFIX}{plugin}:{member}", msgspec.msgpack.encode(entry), px=ttl_ms)
        pipe.zadd(lru, {member: time.time()})
        pipe.zcard(lru)
        size = pipe.execute()[-1]
        if size > max_entries:
            old = [m.decode() for m, _ in self._redis.zpopmin(lru, size - max_entries)]
            if old:
                self._redis.delete(*(f"{self._PREFIX}{plugin}:{k}" for k in old))

    def _redis_clear(self, plugin: str | None) -> int:
        lrus = [f"{self._PREFIX}{plugin}"] if plugin is not None else [
            k.decode() for k in self._redis.scan_iter(match=f"{self._PREFIX}*") if b":" not in
            k[len(self._PREFIX):]]
        n = 0
        for lru in lrus:
            keys = [m.decode() for m in self._redis.zrange(lru, 0, -1)]
            if keys:
                n += self._redis.delete(*(f"{lru}:{k}" for k in keys))
            self._redis.delete(lru)
        return n


__all__ = ["CacheEntry", "ResultCache", "cache_key", "digest", "make_entry"]
