"""Where the plugin config and secret store lives: ``<state_dir>/config.json`` by default
(settings.ConfigStore), or with ``[state] database = "postgresql://..."`` a table that every host
sharing the database reads and writes, so a config set through one host is served by all.

Both behind one small async interface (the registry, the config API and the station API use
it). Reads (``get``, ``names``) answer from memory; writes and ``refresh`` go to the store.
Secret fields are sealed with the host's key before they are stored, in the file as in the
table: every host sharing a database must hold the same key (``security.secret_key_env``, or
the same ``secret_key_file`` copied to each host), or its ``verify`` fails at start."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from ..errors import SecretsError, StateError
from ..pg_documents import PgDocuments
from ..pg_session import STATE_TIMEOUT, PgSession
from ..security.secrets import Cipher, is_sealed
from .settings import ConfigStore, seal_configs, secret_keys, unsealed

T = TypeVar("T")
log = logging.getLogger("host.state")
TABLE = "plugin_config"
# One value sealed with the key of the first host that stored a secret in the database: another
# host must open it before it stores one (and at its start), so all secrets there share one key.
CHECK_TABLE = "plugin_secret_check"
CHECK_SCHEMA = f"CREATE TABLE IF NOT EXISTS {CHECK_TABLE} (id INT PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL)"
CHECK = "plugin-host secret key check/1"


class Configs(Protocol):
    """The config store: ``{key (plugin id or station:name): {field: value}}``, secrets sealed."""

    def get(self, plugin: str) -> dict[str, Any] | None: ...
    def names(self) -> list[str]: ...
    def damaged(self) -> dict[str, str]: ...
    @property
    def stamp(self) -> object: ...
    @property
    def where(self) -> str: ...
    async def insert(self, key: str, values: dict[str, Any]) -> bool: ...
    async def merge(self, key: str, fields: dict[str, Any]) -> None: ...
    async def swap(self, key: str, values: dict[str, Any], secret: Collection[str],
                   base: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]: ...
    async def swap_many(self, configs: Mapping[str, dict[str, Any]], secret: Mapping[str, Collection[str]],
                        bases: Mapping[str, dict[str, Any] | None]) -> tuple[bool, dict[str, dict[str, Any] | None]]: ...
    @property
    def has_sealed(self) -> bool: ...
    async def verify(self) -> None: ...
    async def refresh(self) -> set[str]: ...
    async def set(self, plugin: str, values: dict[str, Any], secret: Collection[str] = ()) -> None: ...
    async def set_many(self, configs: Mapping[str, dict[str, Any]],
                       secret: Mapping[str, Collection[str]] | None = None) -> None: ...
    async def remove(self, plugin: str) -> None: ...
    async def migrate(self, secret: Mapping[str, Collection[str]]) -> list[str]: ...
    def close(self) -> None: ...


def open_configs(state_dir: str | Path, database: str | None, box: Cipher | None, *,
                 filename: str = "config.json", table: str = TABLE, what: str = "the config store",
                 per_key: bool | None = None) -> Configs:
    """The config store ``[state]`` names: the table in ``database``, else config.json. The
    same two kinds hold the added stations and the plugin switches (``filename`` / ``table``;
    no secrets, ``box`` None). ``per_key`` (the plugins' config table, the added stations'): a
    damaged row stays with its key (``get`` raises for it, ``damaged`` says why); else it fails
    the read, as a damaged file does (the switches: whether a plugin may run at all)."""
    if database:
        return PostgresConfigs(database, box, table=table, what=what,
                               per_key=table == TABLE if per_key is None else per_key)
    return FileConfigs(ConfigStore(state_dir, box, filename))


async def unchanged() -> set[str]:
    """A store that nothing else writes: its ``refresh``."""
    return set()


class FileConfigs:
    """config.json (settings.ConfigStore) behind the async interface: small local file writes,
    made in a worker thread one at a time, so that waiting for the file's lock (another process
    writing it, or one stopped while it held it: up to LOCK_WAIT) holds no request but the
    writer's. Before, each waiting write held the event loop: four of them, /healthz 20 s."""

    def __init__(self, store: ConfigStore) -> None:
        self.file = store
        self._turn: anyio.Lock | None = None  # made in the event loop, at the first write

    def _lock(self) -> anyio.Lock:
        """Held by a write (in its thread) and by a refresh, which would otherwise put back, between
        a write's read of the file and its assignment, what the file held before it."""
        if self._turn is None:
            self._turn = anyio.Lock()
        return self._turn

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock():
            return await anyio.to_thread.run_sync(fn, *args)

    def get(self, plugin: str) -> dict[str, Any] | None:
        return self.file.get(plugin)

    def names(self) -> list[str]:
        return self.file.names()

    def damaged(self) -> dict[str, str]:
        return {}  # a damaged file fails its read whole

    @property
    def stamp(self) -> object:
        """Changes with every change to what ``get`` sees."""
        return self.file.stamp

    @property
    def where(self) -> str:
        return str(self.file.path)

    async def insert(self, key: str, values: dict[str, Any]) -> bool:
        """Store ``values`` under a new ``key``; False (nothing written) if any process has it."""
        return await self._off_loop(self.file.insert, key, values)

    async def merge(self, key: str, fields: dict[str, Any]) -> None:
        """Set ``fields`` of ``key``'s entry, its others kept (as last read)."""
        await self._off_loop(lambda: self.file.set(key, {**(self.file.get(key) or {}), **fields}))

    async def swap(self, key: str, values: dict[str, Any], secret: Collection[str],
                   base: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        return await self._off_loop(self.file.swap, key, values, secret, base)

    async def swap_many(self, configs: Mapping[str, dict[str, Any]], secret: Mapping[str, Collection[str]],
                        bases: Mapping[str, dict[str, Any] | None]) -> tuple[bool, dict[str, dict[str, Any] | None]]:
        return await self._off_loop(self.file.swap_many, configs, secret, bases)

    @property
    def has_sealed(self) -> bool:
        return self.file.has_sealed

    async def verify(self) -> None:
        self.file.verify()

    async def refresh(self) -> set[str]:
        async with self._lock():
            return self.file.refresh()

    async def set(self, plugin: str, values: dict[str, Any], secret: Collection[str] = ()) -> None:
        await self._off_loop(self.file.set, plugin, values, secret)

    async def set_many(self, configs: Mapping[str, dict[str, Any]],
                       secret: Mapping[str, Collection[str]] | None = None) -> None:
        await self._off_loop(self.file.set_many, configs, secret)

    async def remove(self, plugin: str) -> None:
        await self._off_loop(self.file.remove, plugin)

    async def migrate(self, secret: Mapping[str, Collection[str]]) -> list[str]:
        return await self._off_loop(self.file.migrate, secret)

    def close(self) -> None:
        pass


class PostgresConfigs:
    """The config store in one table, ``plugin_config (key, value, version)`` (pg_documents.py):
    a row per key, its value the JSON of the fields (secrets sealed). ``refresh`` polls the
    table's mark and reads it again only when another host moved it. Sealing the plaintext secrets of an old
    store (``migrate``) is a compare and swap on the row's version, so it never overwrites a
    config another host stored meanwhile."""

    def __init__(self, url: str, box: Cipher | None, timeout: float = STATE_TIMEOUT, *, table: str = TABLE,
                 what: str = "the config store", per_key: bool = False) -> None:
        schema = PgDocuments.schema(table) + ((CHECK_SCHEMA,) if box is not None else ())
        self.db = PgSession(url, timeout, schema, what=f"{what} ([state] database)")
        self.docs = PgDocuments(self.db, table)
        self._what = what
        self._box = box
        self._checked = False  # the key check has its row: a missing key file is an error, not a new key
        self._key_ok = False  # this host opened the key check, or stored it
        self._changes = 0  # stamp: counts the changes to _data
        self._data: dict[str, dict[str, Any]] = {}
        self._damaged: dict[str, str] = {}  # rows that are no JSON object: why, by key (get raises it)
        self._per_key = per_key  # else a damaged row fails the whole read
        self._versions: dict[str, int] = {}
        self._mark: tuple[int, int] | None = None  # (highest version, rows) when last read
        self._generation: str | None = None  # the table's, when last read (pg_documents.GENERATION)

    def get(self, plugin: str) -> dict[str, Any] | None:
        """``plugin``'s stored config; a StateError naming its row if that row is damaged (the
        plugin alone is in error: the others' rows serve, and a reset deletes the row)."""
        if plugin in self._damaged:
            raise StateError(f"{self._damaged[plugin]} (`python -m host config reset {plugin}` deletes it)")
        return self._data.get(plugin)

    def names(self) -> list[str]:
        return list(self._data)

    def damaged(self) -> dict[str, str]:
        """The keys whose rows are damaged, with why (``names`` leaves them out)."""
        return dict(self._damaged)

    @property
    def stamp(self) -> object:
        return self._changes

    @property
    def where(self) -> str:
        return f"[state] database, table {self.docs.table}"

    @property
    def has_sealed(self) -> bool:
        return self._checked or any(is_sealed(v) for values in self._data.values() for v in values.values())

    async def insert(self, key: str, values: dict[str, Any]) -> bool:
        """Store ``values`` under a new ``key``: False (nothing written) if the table has it,
        whichever host wrote it (the row's primary key decides)."""
        value = json.loads(json.dumps(values))
        version, before, after = await self.db.run(
            lambda c: self.docs.write(c, lambda: self.docs.insert(c, key, value)))
        if version is not None:
            self._data[key], self._versions[key] = value, version
            self._damaged.pop(key, None)
            self._changes += 1
        self._wrote(before, after)
        return version is not None

    async def merge(self, key: str, fields: dict[str, Any]) -> None:
        """Set ``fields`` of ``key``'s row, its others as the table holds them now (read and
        written under the table's lock: another host's fields set meanwhile are kept). Held here:
        the row as last read with ``fields`` set, so that the next ``refresh`` still reports
        what another host changed in it."""
        fields = json.loads(json.dumps(fields))
        version, before, after = await self.db.run(lambda c: self.docs.write(
            c, lambda: self.docs.put(c, key, {**(self.docs.get(c, key) or {}), **fields})))
        self._data[key], self._versions[key] = {**(self._data.get(key) or {}), **fields}, version
        self._damaged.pop(key, None)
        self._changes += 1
        self._wrote(before, after)

    async def swap(self, key: str, values: dict[str, Any], secret: Collection[str],
                   base: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        """``swap_many`` of one row."""
        done, now = await self.swap_many({key: values}, {key: secret}, {key: base})
        return done, now[key]

    async def swap_many(self, configs: Mapping[str, dict[str, Any]], secret: Mapping[str, Collection[str]],
                        bases: Mapping[str, dict[str, Any] | None]) -> tuple[bool, dict[str, dict[str, Any] | None]]:
        """Store ``configs`` (their ``secret`` fields sealed) if every row still holds its
        ``bases[key]`` (None: no row), checked and written in one transaction under the table's
        lock, so that a config merged into a copy another host changed meanwhile never replaces
        that host's fields: (True, what was stored); else nothing is written and (False, what
        the rows hold now)."""
        sealed = {k: json.loads(json.dumps(v)) for k, v in seal_configs(self._box, configs, secret).items()}

        def body(c: Any) -> tuple[dict[str, int] | None, dict[str, dict[str, Any] | None]]:
            now = {k: self.docs.get(c, k) for k in sealed}
            if any((now[k] or {}) != (bases.get(k) or {}) for k in sealed):
                return None, now
            return {k: self.docs.put(c, k, v) for k, v in sealed.items()}, dict(sealed)
        (versions, now), before, after = await self.db.run(
            lambda c: self._checked_write(c, lambda: body(c), sealed.values()))
        self._key_checked(sealed.values())
        if versions is not None:
            self._data.update(sealed)
            self._versions.update(versions)
            for key in sealed:
                self._damaged.pop(key, None)
            self._changes += 1
        self._wrote(before, after)
        return versions is not None, now

    async def verify(self) -> None:
        """Read the table, and open every sealed value once: a host holding another key than
        the one the table's secrets were sealed with fails its start (SecretsError)."""
        self._data, self._versions, self._mark, self._damaged = self._whole(await self.db.run(self.docs.read))
        self._generation = await self.db.run(self.docs.generation)
        self._changes += 1
        if self._box is not None:
            row = await self.db.run(lambda c: self.db.one(c, f"SELECT value FROM {CHECK_TABLE} WHERE id = 1", []))
            if row is not None:
                self._checked = True  # a host without the key file must not make a new one
                self._open_check(row["value"])
                self._key_ok = True
            for plugin, values in self._data.items():
                self._box.reveal(values, plugin=plugin)
            if row is None and self.has_sealed:  # sealed before the key check existed, with this key
                await self.db.run(lambda c: self.db.tx(c, lambda: self._key_check(c)))
                self._key_ok = self._checked = True

    def _whole(self, read: tuple[Any, Any, Any, dict[str, str]]) -> tuple[Any, Any, Any, dict[str, str]]:
        """``docs.read``'s answer, unless it found a damaged row where none may be (not per key)."""
        if read[3] and not self._per_key:
            raise StateError(next(iter(read[3].values())))
        return read

    def _key_check(self, conn: Any) -> None:
        """In a write that stores sealed values, under the table's lock: open the key check, or
        store it sealed with this host's key if no host did. So every secret in the table is
        sealed with one key: a host holding another key than the first one's that stored a
        secret fails (SecretsError naming its key's setting) and writes nothing."""
        if self._box is None or self._key_ok:
            return
        row = self.db.one(conn, f"SELECT value FROM {CHECK_TABLE} WHERE id = 1", [])
        if row is None:
            self.db.backend.run(conn, f"INSERT INTO {CHECK_TABLE} (id, value) VALUES (1, %s)",
                                [self._box.seal(CHECK)], 0)
        else:
            self._open_check(row["value"])

    def _open_check(self, value: Any) -> None:
        assert self._box is not None
        what = f"[state] database, table {CHECK_TABLE} (sealed with the key every host sharing it must hold)"
        if not is_sealed(value) or self._box.open(value, what=what) != CHECK:
            raise SecretsError(f"{what}: its row is not a key check a host wrote; delete it to store a new one")

    def _checked_write(self, conn: Any, body: Callable[[], T],
                       values: Collection[dict[str, Any]]) -> tuple[T, tuple[int, int], tuple[int, int]]:
        """``docs.write`` of ``body``, after the key check if ``values`` (what it stores) hold a
        sealed value."""
        sealed = any(is_sealed(v) for fields in values for v in fields.values())
        return self.docs.write(conn, lambda: (self._key_check(conn) if sealed else None, body())[1])

    def _key_checked(self, values: Collection[dict[str, Any]]) -> None:
        """A write of ``values`` committed: if it held a sealed value, it passed the key check."""
        if self._box is not None and any(is_sealed(v) for fields in values for v in fields.values()):
            self._key_ok = self._checked = True

    async def refresh(self) -> set[str]:
        """The keys whose config another host changed since the last read (read again)."""
        if await self.db.run(self.docs.mark) == self._mark:
            return set()
        generation = await self.db.run(self.docs.generation)
        # a known generation changed or gone (one appearing where there was none is adopted: a
        # table from before the row, given it by a host's start)
        if isinstance(self._generation, str) and generation != self._generation and self._data:
            await self._write_back()
        self._generation = generation
        before, damaged = self._data, self._damaged
        self._data, self._versions, self._mark, self._damaged = self._whole(await self.db.run(self.docs.read))
        self._changes += 1
        return {p for p in {*before, *self._data, *damaged, *self._damaged}
                if (before.get(p), damaged.get(p)) != (self._data.get(p), self._damaged.get(p))}

    async def _write_back(self) -> None:
        """The table was made again since this host read it (helper-100: its tables dropped, or
        an empty replica after a failover, and every config was gone and every plugin the
        operator had disabled ran again, with one warning): what this host held is written back,
        each row only where the new table has none (a host's write since is newer)."""
        held = dict(self._data)
        written, _, _ = await self.db.run(lambda c: self._checked_write(
            c, lambda: {k: self.docs.insert(c, k, v) for k, v in held.items()}, held.values()))
        self._key_checked(held.values())
        back = sorted(k for k, v in written.items() if v is not None)
        log.error("%s: the table %s was made again since this host read it (dropped, or a database restored "
                  "without it): the %d entries this host held and the table lacked are written back (%s); restore "
                  "the database if another host held newer ones", self._what, self.docs.table, len(back),
                  ", ".join(back[:20]) + (" ..." if len(back) > 20 else ""))

    async def set(self, plugin: str, values: dict[str, Any], secret: Collection[str] = ()) -> None:
        await self.set_many({plugin: values}, {plugin: secret})

    async def set_many(self, configs: Mapping[str, dict[str, Any]],
                       secret: Mapping[str, Collection[str]] | None = None) -> None:
        """Store several configs in one transaction: all of them or none (the others kept)."""
        sealed = {k: json.loads(json.dumps(v)) for k, v in seal_configs(self._box, configs, secret).items()}
        versions, before, after = await self.db.run(
            lambda c: self._checked_write(c, lambda: {k: self.docs.put(c, k, v) for k, v in sealed.items()},
                                          sealed.values()))
        self._key_checked(sealed.values())
        self._data.update(sealed)
        self._versions.update(versions)
        for key in sealed:
            self._damaged.pop(key, None)
        self._changes += 1
        self._wrote(before, after)

    async def remove(self, plugin: str) -> None:
        _, before, after = await self.db.run(lambda c: self.docs.write(c, lambda: self.docs.delete(c, plugin)))
        self._data.pop(plugin, None)
        self._damaged.pop(plugin, None)
        self._versions.pop(plugin, None)
        self._changes += 1
        self._wrote(before, after)

    async def migrate(self, secret: Mapping[str, Collection[str]]) -> list[str]:
        stale = unsealed(self._data, secret)
        if not stale:
            return []
        sealed = seal_configs(self._box, {p: self._data[p] for p in stale}, secret)

        swapped, before, after = await self.db.run(lambda c: self._checked_write(
            c, lambda: {p: self.docs.swap(c, p, v, self._versions[p]) for p, v in sealed.items()}, sealed.values()))
        self._key_checked(sealed.values())
        done = sorted(p for p, v in swapped.items() if v is not None)
        for p in done:
            self._data[p], self._versions[p] = sealed[p], swapped[p]
        self._changes += 1
        self._wrote(before, after)
        return done

    def _wrote(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        """After a write: the mark it left, if no other host wrote since the last read (else the
        next refresh reads the table, and reports their changes)."""
        self._mark = after if before == self._mark else None

    def close(self) -> None:
        self.db.close()


__all__ = ["Configs", "FileConfigs", "PostgresConfigs", "open_configs", "unchanged"]


async def seal_stored_secrets(store: Configs | None, records: Iterable[Any]) -> None:
    """Encrypt the secrets a config.json from before encryption at rest holds in plaintext, as
    ``records``' configSchemas mark them (host.toml's ``plugins.<id>.config`` is not rewritten)."""
    assert store is not None
    keys = {r.id: secret_keys(r.manifest.config_schema) for r in records if r.manifest is not None}
    if sealed := await store.migrate(keys):
        log.info("config.json: encrypted the plaintext secrets of %s", ", ".join(sealed))
