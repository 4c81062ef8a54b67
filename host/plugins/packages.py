"""Installing, updating and removing plugin packages (``install``, ``update``, ``uninstall``).

A package is verified (package_archive.verify) before a byte of it is unpacked, unpacked into a
staging directory inside the plugin directory (``.install-*``: the same file system, and hidden
from discovery), its metadata read the way discovery reads it (a worker with no permissions,
the manifest validated), and only then moved into place with one rename. An update swaps the
new directory with the old one (renameat2 RENAME_EXCHANGE) under the registry's lock, then
reloads the plugin as hot reload does: the old pool serves until the new one runs; a version
that asks for more grants waits for approval while the old one keeps serving; a version that
fails to start is swapped back. What was installed is kept in ``<state_dir>/packages.json``:
``uninstall`` removes only what ``install`` put there, never a shipped plugin.

With a server on the state directory the CLI goes through it (the control socket); without one,
``PackageAdmin`` works on the directories alone and the next start loads the result."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HostError, PluginNotFound
from ..runtime import Runtime
from ..security.private_files import locked, no_space_hint, write_private
from .discovery import ENTRY_NAMES, PluginSource, inspect, load_manifest, source_for
from .lifecycle import SERVING
from .manifest import ID_RE
from .package_archive import FILE_SUFFIXES, Package, PackageRefused, UnpackFailed, Verdict, unpack, verify
from .reload import fingerprint
from .switches import SWITCHES_FILE
from .usage_scripts import discover_sources

if TYPE_CHECKING:
    from ..config import HostConfig
    from .registry import Registry

log = logging.getLogger("host.packages")
PACKAGES_FILE = "packages.json"
STAGING_PREFIX = ".install-"
STALE_STAGING = 3600.0  # seconds after which a staging directory left by a crash is removed


class PackageAdmin:
    """``install``/``update``/``uninstall`` for a host (``registry`` given: a running host, whose
    plugins follow at once) or for the CLI with no server (``registry`` None: files only)."""

    def __init__(self, config: HostConfig, registry: Registry | None = None) -> None:
        self.config = config
        self._reg = registry
        self.path = config.state_path / PACKAGES_FILE

    # ------------------------------------------------------------------ the record

    def installed(self) -> dict[str, dict[str, Any]]:
        """Installed packages by plugin id: path, kind, version, sha256, verified_by, signer, at, by."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PackageRefused(f"{self.path}: unreadable ({exc}); restore it or remove it (the installed "
                                 "plugins stay, but uninstall and update no longer know them)") from None
        return data if isinstance(data, dict) else {}

    def _save(self, records: dict[str, dict[str, Any]]) -> None:
        write_private(self.path, json.dumps(records, indent=2, sort_keys=True).encode())

    # ------------------------------------------------------------------ operations

    async def install(self, package: Package, *, by: str, replace: bool = False) -> dict[str, Any]:
        """Verify, unpack, validate and move the package into the first plugin directory; a
        running host loads it at once. An id that exists is refused unless ``replace`` (then
        this is ``update``)."""
        def may_take(pid: str) -> None:  # before the module runs under that id (its storage origin)
            if replace and pid in self.installed():
                return
            if taken := [s for s in discover_sources(self.config) if s.id == pid]:
                raise PackageRefused(f"{pid} is installed already ({taken[0].root}): use `update {pid} "
                                     f"{package.name}` (or install --force)", plugin=pid, status=409)

        async with self._staged(package, by, may_take) as (staged, manifest, verdict):
            pid = manifest["id"]
            if replace and pid in self.installed():
                return await self._swap(pid, staged, manifest, verdict, by)
            with locked(self.path):
                may_take(pid)  # again: another install may have come first
                target = self.config.plugin_dirs[0] / staged.name
                if staged.is_dir():
                    os.rename(staged, target)  # refuses a non-empty directory there
                else:
                    os.link(staged, target)  # refuses any file there
                records = self.installed()
                records[pid] = self._entry(target, manifest, verdict, by)
                try:
                    self._save(records)
                except OSError as exc:  # a full disk: take the files back out, or the id is stranded
                    if target.is_dir():
                        os.rename(target, staged)
                    else:
                        os.unlink(target)
                    raise _unrecorded(pid, exc) from None
        self._audit("package_install", pid, manifest, verdict, by)
        if self._reg is not None and self._reg.running:
            await self._reg.rescan()
        return self._report(pid, "installed")

    async def update(self, plugin_id: str, package: Package, *, by: str) -> dict[str, Any]:
        """Replace an installed package with a new version of it (same checks as install)."""
        if self.installed().get(plugin_id) is None:
            try:
                self._not_installed(plugin_id)
            except HostError as exc:
                self._record_audit("package_refused", package=package.name, reason=str(exc)[:500], by=by)
                raise

        def same(pid: str) -> None:
            if pid != plugin_id:
                raise PackageRefused(f"{package.name} holds plugin {pid!r}, not {plugin_id!r}", plugin=plugin_id)

        async with self._staged(package, by, same) as (staged, manifest, verdict):
            return await self._swap(plugin_id, staged, manifest, verdict, by)

    async def uninstall(self, plugin_id: str, *, by: str, purge: bool = False) -> dict[str, Any]:
        """Remove an installed package's files (a running host stops its workers); its stored
        config and storage stay unless ``purge``."""
        with locked(self.path):
            records = self.installed()
            entry = records.get(plugin_id)
            if entry is None:
                self._not_installed(plugin_id)
            path = Path(entry["path"])
            trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path.parent))
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, trash / path.name)  # gone from discovery in one step
            del records[plugin_id]
            self._save(records)
        shutil.rmtree(trash, ignore_errors=True)
        if self._reg is not None and self._reg.running:
            await self._reg.rescan()  # "removed from disk": its workers stop, calls in flight finish
        if purge:
            await self._purge(plugin_id)
        self._record_audit("package_uninstall", plugin=plugin_id, version=entry.get("version"), by=by, purge=purge)
        return {"id": plugin_id, "action": "uninstalled", "version": entry.get("version"), "purged": purge}

    # ------------------------------------------------------------------ steps

    @contextlib.asynccontextmanager
    async def _staged(self, package: Package, by: str, check: Callable[[str], None]
                      ) -> AsyncIterator[tuple[Path, dict[str, Any], Verdict]]:
        """The package verified, unpacked in a staging directory and its metadata read: (the
        plugin's staged file or directory, named by its id; its metadata; how it was verified).
        ``check(id)`` refuses an id before the module runs under it. The staging directory is
        removed whatever happens; a refusal is audited."""
        home = self.config.plugin_dirs[0]
        stage: Path | None = None
        try:
            verdict = verify(package, self.config.packages)
            try:
                home.mkdir(parents=True, exist_ok=True)
                _sweep_stale(home)
                stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=home))
                unpacked = stage / ".unpacked"  # no plugin id starts with a dot: never the staged name
                unpacked.mkdir()
                unpack(package, unpacked, self.config.packages)
            except (OSError, UnpackFailed) as exc:  # a full disk: the place is at fault, not the package
                raise _cannot_unpack(package.name, home, exc) from None
            try:
                staged, manifest = await self._validate(unpacked, stage, package.name, check)
            except HostError as exc:  # named by the package, not the staging directory
                text = exc.message.replace(f"{unpacked}/", f"{package.name}!/").replace(f"{stage}/", f"{package.name}!/")
                raise PackageRefused(text, plugin=exc.plugin, status=getattr(exc, "status", 400)) from None
            yield staged, manifest, verdict
        except HostError as exc:  # every refusal, the checks' and the install's, is audited
            self._record_audit("package_refused", package=package.name, reason=str(exc)[:500], by=by)
            raise
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

    async def _validate(self, unpacked: Path, stage: Path, name: str,
                        check: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
        """Find the plugin in what was unpacked (one top directory, or the files themselves; a
        directory with an entry module, or a single module file), read its metadata as discovery
        does, and name it by its id. Its id is read first under a throwaway one (its own data
        directory and storage origin, removed after), so that a package claiming another
        plugin's id never runs under it. Returns the staged plugin and its metadata."""
        entries = [p for p in unpacked.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        modules = [p for p in root.iterdir() if p.is_file() and p.suffix in FILE_SUFFIXES]
        entry = next((root / n for n in ENTRY_NAMES if (root / n).is_file()), None)
        if entry is None and root is unpacked and len(modules) == 1 and len(entries) == 1:
            entry = modules[0]  # a single module file
        if entry is None:
            raise PackageRefused(f"{name}: no plugin in it: a directory with {', '.join(ENTRY_NAMES)}, or a "
                                 "single .js/.ts module")
        single = entry.parent == unpacked and len(entries) == 1 and entry.name not in ENTRY_NAMES
        runtime, own = self._runtime()
        try:
            probe = PluginSource(id=f"package-{secrets.token_hex(6)}", module=entry, root=entry if single else root)
            try:
                meta, _ = await inspect(probe, runtime, self.config.limits)
            finally:
                shutil.rmtree(runtime.data_dir(probe.id), ignore_errors=True)
            pid = meta.get("id") if isinstance(meta, dict) else None
            if not isinstance(pid, str) or not ID_RE.match(pid):
                raise PackageRefused(f"{name}: {entry.name}: metadata.id must be a plugin id (letters, digits, "
                                     f"_ and -), got {pid!r}")
            check(pid)
            staged = stage / (f"{pid}{entry.suffix}" if single else pid)
            os.rename(entry if single else root, staged)
            found = source_for(staged)  # read back as discovery will read it in the plugins directory
            if found is None or found.id != pid or found.version_hint is not None:
                raise PackageRefused(f"{name}: a plugin named {staged.name!r} would be read back as "
                                     f"{found.id if found else 'no plugin'!r}, not {pid!r}: choose another "
                                     "metadata.id", plugin=pid)
            module = staged if single else staged / entry.name
            source = PluginSource(id=pid, module=module, root=staged)
            manifest, _ = await load_manifest(source, runtime, self.config.limits_for(pid),
                                              https_only=self.config.security.https_only)
            sec = self.config.security
            if sec.strict == "refuse" and (findings := manifest.findings(max_net_hosts=sec.max_net_hosts)):
                raise PackageRefused(f"{name}: refused by security.strict = \"refuse\": {'; '.join(findings)}",
                                     plugin=pid)
        finally:
            if own:
                runtime.close()
        return staged, {"id": manifest.id, "version": manifest.version, "name": manifest.name}

    async def _swap(self, pid: str, staged: Path, manifest: dict[str, Any], verdict: Verdict,
                    by: str) -> dict[str, Any]:
        """Put ``staged`` where the installed package is, as one rename; a running plugin is
        reloaded (the old pool serves until the new one runs) and swapped back if the new
        version fails to start."""
        reg = self._reg if self._reg is not None and self._reg.running else None
        # Under the registry's lock: no rescan sees the new files before this reload does.
        async with reg.lock if reg is not None else contextlib.nullcontext():
            with locked(self.path):
                records = self.installed()
                target = Path(records[pid]["path"])
                if staged.is_dir() != target.is_dir():
                    raise PackageRefused(f"{pid} is installed as a {'directory' if target.is_dir() else 'single file'}"
                                         f" and the new package is not: uninstall {pid}, then install it", plugin=pid)
                if staged.is_dir():
                    _exchange(staged, target)  # the old version is now at ``staged``
                else:
                    old = staged.with_name(staged.name + ".old")
                    os.link(target, old)
                    os.replace(staged, target)
                    os.replace(old, staged)
                previous, records[pid] = records[pid], self._entry(target, manifest, verdict, by)
                try:
                    self._save(records)
                except OSError as exc:  # the old version goes back in place: files and record agree
                    if staged.is_dir():
                        _exchange(staged, target)
                    else:
                        os.replace(staged, target)
                    raise _unrecorded(pid, exc) from None
            action, detail = "updated", None
            if reg is not None:
                action, detail = await self._reload(reg, pid, staged, target, previous)
        self._audit("package_update", pid, manifest, verdict, by, outcome=action)
        return self._report(pid, action, detail)

    async def _reload(self, reg: Registry, pid: str, old: Path, target: Path,
                      previous: dict[str, Any]) -> tuple[str, str | None]:
        """Reload the updated plugin (the caller holds the registry's lock): "updated", or
        "pending_approval" with what it waits for; a new version that fails to start has the old
        files (at ``old``) and record (``previous``) put back, and is refused."""
        try:
            record = reg.record(pid)
        except PluginNotFound:
            record = None
        if record is None or record.state not in SERVING:
            return "updated", None  # not serving: the next rescan (or enable) reads it
        if await reg.reload_record(record):
            return "updated", None
        if record.pending:
            return "pending_approval", (f"the new version asks for {', '.join(record.pending)}; the old "
                                        f"version keeps serving until `python -m host approve {pid}`")
        why = record.reload_error or "the new version failed to start"
        if target.is_dir():  # the old files back
            _exchange(old, target)
        else:
            os.replace(old, target)
        record.fingerprint = fingerprint(target)  # what serves is what is on disk: nothing to reload
        with locked(self.path):
            records = self.installed()
            records[pid] = previous
            self._save(records)
        raise PackageRefused(f"{pid}: the new version failed to start ({why}); the old version keeps serving "
                             "and its files are back", plugin=pid, status=409)

    async def _purge(self, pid: str) -> None:
        """Forget the plugin's stored config and switches, and remove its storage."""
        from .config_store import open_configs
        from .settings import ConfigStore

        own = self._reg is None or self._reg.store is None
        store = open_configs(self.config.state_path, self.config.state.database, None) if own else self._reg.store
        try:
            await store.remove(pid)
        finally:
            if own:
                store.close()
        ConfigStore(self.config.state_path, None, SWITCHES_FILE).remove(pid)
        runtime, own = self._runtime()
        try:
            shutil.rmtree(runtime.data_dir(pid), ignore_errors=True)
        finally:
            if own:
                runtime.close()

    # ------------------------------------------------------------------ helpers

    def _runtime(self) -> tuple[Runtime, bool]:
        """The running host's runtime, or one of our own (True: close it)."""
        if self._reg is not None and self._reg.runtime is not None:
            return self._reg.runtime, False
        return Runtime.create(self.config), True

    def _not_installed(self, pid: str) -> None:
        found = [s for s in discover_sources(self.config) if s.id == pid]
        if found:
            raise PackageRefused(f"{pid} was not installed with `install` (it is {found[0].root}: shipped, or "
                                 "placed there by hand): remove or replace its files yourself", plugin=pid)
        raise PluginNotFound(f"no installed package {pid!r} (installed: "
                             f"{', '.join(sorted(self.installed())) or 'none'})", plugin=pid)

    def _entry(self, target: Path, manifest: dict[str, Any], verdict: Verdict, by: str) -> dict[str, Any]:
        return {"path": str(target), "kind": "directory" if target.is_dir() else "file",
                "version": manifest["version"], "sha256": verdict.sha256, "verified_by": verdict.verified_by,
                "signer": verdict.signer, "at": round(time.time(), 3), "by": by}

    def _report(self, pid: str, action: str, detail: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": pid, "action": action, **self.installed().get(pid, {})}
        if self._reg is not None and self._reg.running:
            with contextlib.suppress(PluginNotFound):
                record = self._reg.record(pid)
                out.update(state=record.state, error=record.error)
        if detail:
            out["detail"] = detail
        return out

    def _audit(self, event: str, pid: str, manifest: dict[str, Any], verdict: Verdict, by: str,
               **extra: Any) -> None:
        self._record_audit(event, plugin=pid, version=manifest["version"], sha256=verdict.sha256,
                           verified_by=verdict.verified_by, signer=verdict.signer, by=by, **extra)

    def _record_audit(self, event: str, **fields: Any) -> None:
        if self._reg is not None and self._reg.runtime is not None:
            self._reg.runtime.audit.record(event, **fields)
            return
        from ..security.audit import AuditLog

        sec = self.config.security
        if sec.audit_log:
            audit = AuditLog(self.config.state_path / sec.audit_log, max_bytes=sec.audit_max_bytes, keep=sec.audit_keep,
                             own_dir=self.config.state_path)
            audit.record(event, **fields)
            audit.close()


def _sweep_stale(home: Path) -> None:
    """Remove the staging directories a crashed install left (older than STALE_STAGING)."""
    for old in home.glob(STAGING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - old.lstat().st_mtime > STALE_STAGING:
                shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _cannot_unpack(name: str, home: Path, exc: OSError | UnpackFailed) -> PackageRefused:
    why = exc.message if isinstance(exc, UnpackFailed) else exc.strerror or str(exc)
    hint = f" ({no_space_hint(home)})" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return PackageRefused(f"{name}: cannot unpack into the plugin directory {home}: {why}{hint}; nothing was "
                          "installed", status=503)


def _unrecorded(pid: str, exc: OSError) -> PackageRefused:
    return PackageRefused(f"{pid}: the package could not be recorded in packages.json in the state directory "
                          f"({exc.strerror or exc}); nothing was changed", plugin=pid, status=503)


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE): nobody sees neither.
    Where the call is missing, two renames (a moment with no plugin there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (22, 38):  # EINVAL, ENOSYS: the file system or kernel cannot; fall back
            raise OSError(err, os.strerror(err), str(b))
    side = a.with_name(a.name + ".swap")
    os.rename(b, side)
    os.rename(a, b)
    os.rename(side, a)


__all__ = ["PACKAGES_FILE", "PackageAdmin"]
