"""The services a host offers to plugins over host calls: a cache, persistent storage, a
channel between workers and a log line. See docs/protocol.md, "Host calls"."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import protocol as p
from .channel_relay import ChannelRelay
from .db_tool import DbTool
from .errors import (
    InvalidHostCall,
    PayloadTooLarge,
    ResourceLimitExceeded,
    StorageError,
    StorageFull,
    UnknownHostCall,
    js_type,
)
from .execute_config import ExecuteConfig
from .execute_tools import ToolRegistry
from .logs import CONSOLE_LEVELS
from .plugin_storage import ENTRY_OVERHEAD, PluginStorage, SqliteStorage
from .plugin_storage_pg import PostgresStorage
from .security.private_files import storage_name
from .worker import Worker

Scope = tuple[str, str]  # ("plugin", id) for a plugin's workers; ("execute", "") for execute's
log = logging.getLogger("host.services")




class ServiceLimits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Bounds on what one plugin may keep in the host. (The total of its persistent storage is
    ``WorkerLimits.storage_max_bytes``, settable per plugin.)"""

    cache_max_entries: int = 10_000        # per plugin; the least recently used go first
    cache_max_bytes: int = 64 * 1024 * 1024  # per plugin, keys plus values as msgpack
    cache_default_ttl: float | None = None   # seconds, when cache.set gives none; None: no expiry
    max_key_bytes: int = 1024              # cache and storage keys, channel event names (UTF-8)
    max_value_bytes: int = 1024 * 1024     # one cache or storage value, a channel event's data, as msgpack
    storage_timeout: float = 5.0           # seconds sqlite waits for a database locked elsewhere
    max_subscriptions: int = 1000          # event names one worker listens to (channel.on)


def scope_of(worker: Worker) -> Scope:
    """Whose cache and channel a worker shares: its plugin's, or all execute workers'."""
    spec = worker.spec
    return ("execute", "") if spec.role == "execute" else ("plugin", spec.plugin_id)


class _Cache:
    """One plugin's in-memory cache: LRU over entries and bytes, with per-entry expiry."""

    __slots__ = ("_items", "bytes", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._items: OrderedDict[str, tuple[float, int, bytes]] = OrderedDict()  # expiry, size, value
        self.bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[2]

    def set(self, key: str, size: int, blob: bytes, expires: float) -> None:
        self._drop(key)
        self._items[key] = (expires, size, blob)
        self.bytes += size
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            _, (_, dropped, _) = self._items.popitem(last=False)
            self.bytes -= dropped

    def delete(self, key: str) -> bool:
        item = self._items.get(key)
        self._drop(key)
        return item is not None and item[0] > time.monotonic()

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]


_Op = Callable[[Worker, p.HostCall], Awaitable[Any]]


class HostServices:
    """Answers workers' host calls. Cache and channel live in memory, per plugin (all execute
    workers share one scope); storage is one sqlite file per plugin under
    ``<state_dir>/storage``, or ``storage`` (a shared PostgreSQL table). With ``channel`` a
    ``redis://`` URI, a plugin's channel events also go to and come from other hosts
    (channel_relay.py). The worker sends a HostError's class name and message to the
    plugin; any other exception (a bug of ours) it logs and reports as HostCallError."""

    def __init__(self, state_dir: str | os.PathLike[str], limits: ServiceLimits | None = None, *,
                 database: str | None = None, channel: str | None = None,
                 execute: ExecuteConfig | None = None) -> None:
        self.limits = limits or ServiceLimits()
        self.storage_dir = Path(state_dir) / "storage"
        # [state] database: plugin storage shared by every host naming it; else a file per plugin
        self.storage: PluginStorage = (PostgresStorage(database, self.limits.storage_timeout) if database
                                       else SqliteStorage(self.storage_dir, self.limits.storage_timeout))
        self._caches: dict[Scope, _Cache] = {}
        self._subs: dict[Scope, dict[str, set[Worker]]] = {}
        self._listening: dict[Worker, set[str]] = {}  # the events each worker listens to; its exit unsubscribes it
        self._ops: dict[str, _Op] = {
            "cache.get": self._cache_get, "cache.set": self._cache_set,
            "cache.delete": self._cache_delete,
            "storage.get": self._storage_get, "storage.set": self._storage_set,
            "storage.delete": self._storage_delete, "storage.keys": self._storage_keys,
            "channel.emit": self._channel_emit, "channel.on": self._channel_on,
            "channel.off": self._channel_off,
            "log": self._log,
            "db.select": self._db, "db.query": self._db, "db.begin": self._db,
            "db.commit": self._db, "db.rollback": self._db,
            "tool.call": self._tool,
        }
        xc = execute
        self.db: DbTool | None = (None if xc is None or xc.database is None else  # [execute] database
            DbTool(xc.database, max_rows=xc.db_max_rows, timeout=xc.db_timeout, writes=xc.db_writes,
                   max_connections=xc.db_max_connections, tx_timeout=xc.db_tx_timeout, state_dir=Path(state_dir),
                   state=self.storage.db if isinstance(self.storage, PostgresStorage) else None))
        self.tools: ToolRegistry | None = None  # execute's tools, the operator's among them
        self.relay = (ChannelRelay(channel, self._from_other_host,
                                   lambda plugin: bool(self._subs.get(("plugin", plugin))))
                      if channel and channel.startswith(("redis://", "rediss://")) else None)

    def open(self, tg: TaskGroup) -> None:
        """Start what runs beside the calls: the execute db tool, the channel relay."""
        if self.db is not None:
            self.db.open(tg)
        if self.relay is not None:
            self.relay.open(tg)

    async def handle(self, worker: Worker, msg: p.HostCall) -> Any:
        """Serve one host call (Worker's ``host_call`` hook)."""
        op = self._ops.get(msg.op)
        if op is None:
            raise UnknownHostCall(
                f"host call {msg.op!r} is not available; the host offers {', '.join(sorted(self._ops))}",
                plugin=worker.spec.plugin_id)
        return await op(worker, msg)

    async def _db(self, worker: Worker, msg: p.HostCall) -> Any:
        """The execute db tool: ``db.query`` (``db.select``, its old name) takes a query,
        ``db.begin`` nothing, ``db.commit`` / ``db.rollback`` a transaction id."""
        tools = worker.tools_of(msg.call)
        if self.db is None or worker.spec.role != "execute" or not tools & {"db", "db:write"}:
            raise InvalidHostCall("db: the db tool serves execute code that asked for it (tools: [\"db\"]), "
                                  "and only when [execute] database is set")
        owner, deadline = (worker, msg.call), worker.deadline_of(msg.call)
        if msg.op == "db.begin":
            self._args(msg, 0, 0, "no arguments")
            return await self.db.begin(tools=tools, owner=owner, deadline=deadline)
        (arg,) = self._args(msg, 1, 1, "a transaction id" if msg.op in ("db.commit", "db.rollback") else "a query")
        if msg.op in ("db.commit", "db.rollback"):
            return await self.db.end(arg, commit=msg.op == "db.commit", owner=owner, deadline=deadline)
        return await self.db.query(arg, tools=tools, owner=owner, deadline=deadline)

    async def _tool(self, worker: Worker, msg: p.HostCall) -> Any:
        """An operator's execute tool (``[execute.tools.NAME]``): see host/execute_tools.py."""
        if self.tools is None:
            raise InvalidHostCall("tool.call: no execute tools are registered ([execute.tools] in host.toml)")
        return await self.tools.call(worker, msg)

    def forget(self, worker: Worker) -> None:
        """Drop a worker that exited from every channel subscription."""
        for event in self._listening.pop(worker, ()):
            self._unsubscribe(worker, event)

    def _unsubscribe(self, worker: Worker, event: str) -> None:
        events = self._subs.get(scope_of(worker), {})
        subs = events.get(event)
        if subs is not None:
            subs.discard(worker)
            if not subs:
                del events[event]

    def close(self) -> None:
        """Close every storage database (after the workers are gone)."""
        self.storage.close()
        if self.db is not None:
            self.db.close()
        if self.relay is not None:
            self.relay.close()

    # ------------------------------------------------------------------ arguments

    def _args(self, msg: p.HostCall, least: int, most: int, usage: str) -> list[Any]:
        if not least <= len(msg.args) <= most:
            raise InvalidHostCall(f"{msg.op} takes {usage}, got {len(msg.args)} argument(s)")
        return msg.args + [None] * (most - len(msg.args))

    def _key(self, op: str, key: Any, what: str = "key") -> str:
        if not isinstance(key, str):
            raise InvalidHostCall(f"{op}: the {what} must be a string, not {js_type(key)}")
        size = len(key.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_key_bytes:
            raise PayloadTooLarge(
                f"{op}: {what} of {size} bytes exceeds the {self.limits.max_key_bytes}-byte maximum")
        return key

    def _pack(self, op: str, value: Any) -> bytes:
        blob = msgspec.msgpack.encode(value)
        if len(blob) > self.limits.max_value_bytes:
            raise PayloadTooLarge(
                f"{op}: value of {len(blob)} bytes exceeds the {self.limits.max_value_bytes}-byte maximum")
        return blob

    # ------------------------------------------------------------------ cache

    def _cache(self, worker: Worker) -> _Cache:
        scope = scope_of(worker)
        cache = self._caches.get(scope)
        if cache is None:
            cache = self._caches[scope] = _Cache(self.limits.cache_max_entries, self.limits.cache_max_bytes)
        return cache

    async def _cache_get(self, worker: Worker, msg: p.HostCall) -> Any:
        (key,) = self._args(msg, 1, 1, "(key)")
        blob = self._cache(worker).get(self._key(msg.op, key))
        return None if blob is None else msgspec.Raw(blob)  # sent as stored, never decoded

    async def _cache_set(self, worker: Worker, msg: p.HostCall) -> None:
        key, value, ttl = self._args(msg, 2, 3, "(key, value, ttl?)")
        key = self._key(msg.op, key)
        if ttl is None:
            ttl = self.limits.cache_default_ttl
        elif isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidHostCall(f"{msg.op}: ttl must be a positive number of seconds")
        blob = self._pack(msg.op, value)
        expires = math.inf if ttl is None else time.monotonic() + ttl
        self._cache(worker).set(key, len(blob) + len(key.encode("utf-8", "surrogatepass")), blob, expires)

    async def _cache_delete(self, worker: Worker, msg: p.HostCall) -> bool:
        (key,) = self._args(msg, 1, 1, "(key)")
        return self._cache(worker).delete(self._key(msg.op, key))

    # ------------------------------------------------------------------ storage

    def _storage_key(self, op: str, key: Any) -> str:
        """A storage key, one rule whatever the state database: no NUL, which PostgreSQL's text
        cannot hold (sqlite's can: a plugin would work on one and fail on the other)."""
        key = self._key(op, key)
        if "\x00" in key:
            raise InvalidHostCall(f"{op}: a storage key cannot hold NUL (U+0000)")
        return key

    def _plugin(self, worker: Worker, op: str) -> str:
        kind, plugin_id = scope_of(worker)
        if kind != "plugin":
            raise StorageError(f"{op}: storage belongs to installed plugins; execute code has none")
        return plugin_id

    async def _storage_get(self, worker: Worker, msg: p.HostCall) -> Any:
        (key,) = self._args(msg, 1, 1, "(key)")
        key = self._storage_key(msg.op, key)
        blob = await self.storage.get(self._plugin(worker, msg.op), key, deadline=worker.deadline_of(msg.call))
        if blob is None:
            return None
        try:  # spliced into the reply as it is: one whole value, else the worker cannot read its frame
            msgspec.msgpack.decode(blob)
        except (msgspec.DecodeError, RecursionError):
            raise StorageError(f"{msg.op}: the value stored under {key!r} is not one MessagePack value (written "
                               "by hand into the storage?); ctx.storage.set or delete replaces it") from None
        return msgspec.Raw(blob)

    async def _storage_set(self, worker: Worker, msg: p.HostCall) -> None:
        key, value = self._args(msg, 2, 2, "(key, value)")
        key = self._storage_key(msg.op, key)
        blob = self._pack(msg.op, value)
        plugin = self._plugin(worker, msg.op)
        where = f"[plugins.{worker.spec.plugin_id}.limits] in host.toml"
        await self.storage.put(plugin, key, blob, worker.spec.limits.storage_max_bytes, where,
                               deadline=worker.deadline_of(msg.call))

    async def _storage_delete(self, worker: Worker, msg: p.HostCall) -> bool:
        (key,) = self._args(msg, 1, 1, "(key)")
        return await self.storage.delete(self._plugin(worker, msg.op), self._storage_key(msg.op, key),
                                         deadline=worker.deadline_of(msg.call))

    async def _storage_keys(self, worker: Worker, msg: p.HostCall) -> msgspec.Raw:
        """Every key, as one answer of at most ``max_value_bytes`` (a value's bound: a worker
        may leave ``max_host_calls`` answers unread, each held until it reads), refused before
        the keys are read past it; held encoded, not as a list of Python strings."""
        self._args(msg, 0, 0, "no arguments")
        limit = self.limits.max_value_bytes
        keys = await self.storage.keys(self._plugin(worker, msg.op), deadline=worker.deadline_of(msg.call),
                                       max_bytes=limit)
        blob = msgspec.msgpack.encode(keys)
        if len(blob) > limit:  # keys added since they were counted (another process)
            raise PayloadTooLarge(f"{msg.op}: the plugin's keys take {len(blob)} bytes, more than the {limit} one "
                                  "answer may carry; keep the keys it needs to list under one key of its own")
        return msgspec.Raw(blob)

    # ------------------------------------------------------------------ channel

    async def _channel_on(self, worker: Worker, msg: p.HostCall) -> None:
        (event,) = self._args(msg, 1, 1, "(event)")
        event = self._key(msg.op, event, "event name")
        if not worker.alive:
            return
        listening = self._listening.get(worker)
        if listening is None:
            listening = self._listening[worker] = set()
            worker.add_exit_hook(self.forget)
        if event not in listening and len(listening) >= self.limits.max_subscriptions:
            # each one is host memory (a plugin's runtime keeps no count if its code writes the
            # host calls itself): what it listens to is capped here
            raise ResourceLimitExceeded(
                f"{msg.op}: this worker listens to {len(listening)} events already, the most the host allows "
                "(channel.off one it no longer needs)", name="ResourceLimitExceeded", error_type="SANDBOX_LIMIT",
                plugin=worker.spec.plugin_id)
        listening.add(event)
        self._subs.setdefault(scope_of(worker), {}).setdefault(event, set()).add(worker)

    async def _channel_off(self, worker: Worker, msg: p.HostCall) -> None:
        (event,) = self._args(msg, 1, 1, "(event)")
        event = self._key(msg.op, event, "event name")
        self._listening.get(worker, set()).discard(event)
        self._unsubscribe(worker, event)

    async def _channel_emit(self, worker: Worker, msg: p.HostCall) -> int:
        """Deliver to every other subscribed worker of the scope (star topology), and a
        plugin's to the other hosts (never waited for); returns how many of this host's
        workers it reached."""
        event, data = self._args(msg, 1, 2, "(event, data?)")
        event = self._key(msg.op, event, "event name")
        # a value's bound: each target holds the event until it reads it, and the emitter may
        # have max_host_calls emits waiting on targets that read nothing (60 of 15 MiB: 919 MiB)
        data = msgspec.Raw(self._pack(msg.op, data))
        scope = scope_of(worker)
        if self.relay is not None and scope[0] == "plugin":
            self.relay.publish(scope[1], event, data, worker.spec.limits.max_frame)
        return await self._fanout(scope, event, data, worker)

    async def _from_other_host(self, plugin: str, event: str, data: Any) -> int:
        """An event another host's worker of ``plugin`` emitted (channel_relay.py)."""
        if len(event.encode("utf-8", "surrogatepass")) > self.limits.max_key_bytes:
            return 0
        return await self._fanout(("plugin", plugin), event, data, None)

    async def _fanout(self, scope: Scope, event: str, data: Any, sender: Worker | None) -> int:
        targets = [w for w in self._subs.get(scope, {}).get(event, ()) if w is not sender]
        if not targets:
            return 0
        try:  # encoded once; each target checks the frame against its own limit
            frame = p.encode(p.Deliver(event=event, data=data), max(t.spec.limits.max_frame for t in targets))
        except PayloadTooLarge:  # too large for every target
            return 0
        delivered = 0

        async def one(target: Worker) -> None:
            nonlocal delivered
            if await target.deliver(frame):
                delivered += 1

        async with anyio.create_task_group() as tg:
            for target in targets:
                tg.start_soon(one, target)
        return delivered

    # ------------------------------------------------------------------ log

    async def _log(self, worker: Worker, msg: p.HostCall) -> None:
        level, message = self._args(msg, 2, 2, "(level, message)")
        if not isinstance(level, str) or not isinstance(message, str):
            raise InvalidHostCall(f"{msg.op}: level and message must be strings")
        worker.record_log(p.Log(level=level if level in CONSOLE_LEVELS else "log", message=message,
                                id=msg.call, ts=time.time() * 1000))


__all__ = ["ENTRY_OVERHEAD", "HostServices", "ServiceLimits", "StorageFull", "scope_of", "storage_name"]
