"""Finding plugins on disk (single ``.js``/``.ts`` files and directories with an entry module,
optionally named ``id@version``) and reading a plugin's metadata without trusting it: the
module is loaded in a worker with no permissions, never in the host."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..arity import rest_warnings
from ..config import WorkerLimits
from ..errors import HostError, InvalidConfig, PluginUnavailable
from ..runtime import Runtime
from ..worker import Worker, WorkerSpec, one_off
from .dev import ENTRY_NAMES, SUFFIXES
from .manifest import Manifest, parse_manifest, unheard
from .manifest_cache import CACHE_FILE, LoadSlots, ManifestCache, content_digest, runtime_key
from .manifest_hints import unrun_hooks

USAGE_SUFFIX = ".usage.js"  # a cc-switch usage script, not a module (see usage_scripts.py)
log = logging.getLogger("host.plugins")
_VERSIONED = re.compile(r"^(?P<id>[^@]+)@(?P<version>\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?)\Z")


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin lives. ``root`` is what its workers may read: the file, or its directory.
    ``version_hint`` is the version in an ``id@version`` name, which the metadata must match."""

    id: str
    module: Path
    root: Path
    version_hint: str | None = None
    dev: bool = False  # from host.toml's dev_plugins: its id is the name given there
    usage_script: str | None = None  # a cc-switch usage script's module: where the script is (file or host.toml)
    entry: Path | None = None  # the name it was found under in a plugins directory, when that leads elsewhere

    @property
    def base_dir(self) -> Path:
        return self.root if self.root.is_dir() else self.root.parent

    def moved(self) -> PluginSource | None:
        """The same plugin (id and version) where the name it was found under leads now, when that
        is elsewhere: a link swapped to a new release, which is reloaded as a file changed in place
        is (its old version serving until the new one does, and on if the new one fails)."""
        if self.entry is None or not os.path.lexists(self.entry):
            return None
        try:
            now = source_for(self.entry)
        except (OSError, RuntimeError, ValueError):
            return None
        if now is None or now.module == self.module or (now.id, now.version_hint) != (self.id, self.version_hint):
            return None
        return now

    def gone(self) -> bool:
        """Whether the plugin is no longer there: its module is gone, or the name it was found
        under (a symlink, as docs/security.md installs a plugin kept elsewhere) is gone or leads
        elsewhere now. Its target stays, so a removed or swapped link left the old code serving
        until the host restarted (helper-95)."""
        if not self.module.exists():
            return True
        if self.entry is None:
            return False
        try:
            return self.entry.resolve() != self.root
        except (OSError, RuntimeError):  # a loop now
            return True


def _split_name(name: str) -> tuple[str, str | None]:
    m = _VERSIONED.match(name)
    return (m.group("id"), m.group("version")) if m else (name, None)


def source_for(path: Path) -> PluginSource | None:
    """The plugin at ``path`` (file or directory), or None if it is not one."""
    found, path = path, path.resolve()
    via = found if found != path else None
    if path.name.startswith((".", "_")) or (via is not None and found.name not in (".", "..")
                                            and found.name.startswith((".", "_"))):  # a hidden link: a swap's temporary
        return None
    if path.is_dir():
        for name in ENTRY_NAMES:
            entry = path / name
            if entry.is_file():
                pid, version = _split_name(path.name)
                return PluginSource(id=pid, module=entry, root=path, version_hint=version, entry=via)
        return None
    if path.is_file() and _module_name(path):
        pid, version = _split_name(path.stem)
        return PluginSource(id=pid, module=path, root=path, version_hint=version, entry=via)
    return None


def check_plugin_dirs(dirs: list[Path]) -> None:
    """At start: a plugins directory that is a file is an InvalidConfig (nothing would ever be
    found there); one that does not exist yet is warned about (a plugin put there once it is
    made is loaded at the next rescan)."""
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise InvalidConfig(f"plugins directory {d} is not a directory (plugins_dir, or --plugins)")
        if not d.exists() and str(d) not in _said:  # once (the CLI checks before the host does)
            _said.add(str(d))
            log.warning("plugins directory %s does not exist: no plugin is served from it until it is made "
                        "(plugins_dir, or --plugins)", d)


def discover(dirs: list[Path]) -> list[PluginSource]:
    """Every plugin in ``dirs``, sorted by id; the first directory wins on a duplicate name."""
    found: dict[tuple[str, str | None], PluginSource] = {}
    for path, src, why in _scan(dirs):
        if why is not None:
            left_out_once(path, why)
        elif src is not None and (first := found.get((src.id, src.version_hint))) is not None:
            left_out_once(path, taken_by(src, first.module))
        elif src is not None:
            found[(src.id, src.version_hint)] = src
    return sorted(found.values(), key=lambda s: (s.id, s.version_hint or ""))


def left_out(dirs: list[Path]) -> list[str]:
    """``path: why`` for each entry of ``dirs`` named as a plugin that cannot be loaded (what
    ``discover`` warns about when it meets them): for ``doctor``, which said all was well."""
    return [f"{shown_path(path)}: {why}" for path, _, why in _scan(dirs) if why is not None]


def _scan(dirs: list[Path]) -> Iterator[tuple[Path, PluginSource | None, str | None]]:
    """Each entry of ``dirs``: its plugin (None: not one), or why it is left out (a directory or
    entry that cannot be read, a plugin's name on what cannot be loaded)."""
    for d in dirs:
        try:
            children = sorted(d.iterdir()) if d.is_dir() else []
        except OSError as exc:  # unreadable: its plugins are not found (as for a directory gone)
            yield d, None, _unreadable(exc)
            continue
        if children:  # there (again): its going is warned about anew
            _vanished.discard(str(d))
            with contextlib.suppress(OSError):
                _devices[str(d)] = d.stat().st_dev  # (remounted elsewhere with plugins: that one now)
        for child in children:
            if not _text(child.name) and not child.name.startswith((".", "_")):
                # helper-111: its id and paths reached every listing, /healthz and /metrics, which
                # could not encode them (500)
                yield child, None, "its name is not UTF-8 text: rename it"
                continue
            try:
                src = source_for(child)
            except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, say: that entry alone
                yield child, None, _unreadable(exc)
                continue
            if src is not None and not all(_text(str(p)) for p in (src.id, src.module, src.root)):
                yield child, None, "it leads to a name that is not UTF-8 text: rename it"  # a link (helper-116)
                continue
            yield child, src, _not_loadable(child) if src is None else None


def _not_loadable(path: Path) -> str | None:
    """Why ``path``, named as a plugin module (or a plugin directory holding an entry module),
    is not one that can be loaded; None when it is not named as one. Such a path was left out
    without a word: a plugin dropped in as a FIFO or a link to nothing was simply never there."""
    if path.name.startswith((".", "_")):
        return None
    if path.is_dir():
        for name in ENTRY_NAMES:
            if os.path.lexists(path / name) and not (path / name).is_file():
                return f"its {name} is not a regular file (a FIFO, a device, or a link to nothing)"
        return None
    if _module_name(path) and not path.is_file():
        return "not a regular file (a FIFO, a device, or a link to nothing)"
    if path.suffix in NEAR_SUFFIXES and path.is_file() and not path.stem.endswith((".test", "_test")):
        # helper-113: a plugin written as .mts or .tsx was never listed, with no word
        return f"a plugin module is named {', '.join(SUFFIXES)} (or is a directory's {' / '.join(ENTRY_NAMES)}): rename it"
    return None


NEAR_SUFFIXES = (".mts", ".cts", ".tsx", ".jsx", ".cjs")  # module files that are not taken as plugins


def _module_name(path: Path) -> bool:
    """Whether ``path`` is named as a plugin module (not a declaration, usage script or test)."""
    return (path.suffix in SUFFIXES and not path.name.endswith((".d.ts", USAGE_SUFFIX))
            and not path.stem.endswith((".test", "_test")))


_said: set[str] = set()  # entries already warned about (every rescan meets them again)
_vanished: set[str] = set()  # plugin directories found gone (warned once until they are back)
_devices: dict[str, int] = {}  # the file system each plugins directory was found on, with plugins


def _device(d: Path) -> int | None:
    try:
        return d.stat().st_dev
    except OSError:
        return None


def in_vanished_dir(source: PluginSource, dirs: list[Path]) -> bool:
    """``source`` lies in one of ``dirs`` that is gone as a whole (a deploy swapping the
    directory by renames; a lost mount, which leaves an empty directory of another file system
    in its place): its plugins keep serving the code they loaded, rather
    than every plugin stopping at once, and the operator is warned once. A plugin removed from
    a directory that is there still stops."""
    for d in dirs:
        where = {os.path.abspath(d), os.path.realpath(d)}
        if not any(str(source.entry or source.module).startswith(w.rstrip("/") + "/") for w in where):
            continue
        dev = _device(d) if d.is_dir() else None
        if dev is not None and _devices.get(str(d), dev) == dev:  # there, on the file system it was on
            return False
        if str(d) not in _vanished:
            _vanished.add(str(d))
            log.warning("plugins directory %s is gone (or its file system unmounted): its plugins keep serving what "
                        "they loaded until it is back (check the mount or the deploy that moved it; plugins_dir / "
                        "--plugins)", d)
        return True
    return False


def _unreadable(exc: BaseException) -> str:
    """Why an entry of a plugins directory that cannot be read is left out."""
    return f"it cannot be read ({type(exc).__name__}: {str(exc)[:200]})"


def _text(name: str) -> bool:
    """Whether a file name is text (not bytes that are not UTF-8, which Python holds as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: Path) -> str:
    """``path`` as a log line can hold it: bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def taken_by(src: PluginSource, module: Path) -> str:
    """Why ``src`` is left out: another file or directory is the plugin of its name."""
    return f"the plugin {src.id!r} is {module} (a file and a directory of one name?): rename one"


def left_out_once(path: Path, why: str) -> None:
    """Warn once that ``path`` in a plugins directory is left out of the plugins, and why."""
    if str(path) in _said or len(_said) > 1000:
        return
    _said.add(str(path))
    log.warning("%s: left out of the plugins, %s; fix or remove it", shown_path(path), why)


def check_confined(source: PluginSource) -> None:
    """Refuse a plugin directory holding a symlink that leads outside it (InvalidConfig).
    Deno checks permissions against the path as written, without following links, so a link
    inside the readable directory would hand the plugin whatever it points at."""
    root = source.root
    if not root.is_dir():
        return
    real_root = os.path.realpath(root)
    for parent, dirs, files in os.walk(root):  # does not descend into linked directories
        for name in dirs + files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                continue
            target = os.path.realpath(path)
            if os.path.commonpath([real_root, target]) != real_root:
                rel = os.path.relpath(path, root)
                raise InvalidConfig(f"{source.module}: symlink {rel!r} leads outside the plugin directory",
                                    plugin=source.id)


def check_apart(source: PluginSource, protected: tuple[tuple[Path, str], ...]) -> None:
    """Refuse a plugin whose directory (which its workers may read) holds a place no plugin may
    reach: the state directory (its secret key, stored configs), the worker socket directory, a
    plugins directory (other plugins' code); or lies in /proc or /sys."""
    root = os.path.realpath(source.root)
    for path, what in protected:
        real = os.path.realpath(path)
        inside = os.path.commonpath([root, real]) == real
        holds = os.path.commonpath([root, real]) == root
        # Inside the state directory is where the host keeps usage scripts it generates: such a
        # root grants its own files only. Inside /proc or /sys it would grant what they show.
        if (holds and root != real) if what == "a plugins directory" else (
                holds or (inside and real in ("/proc", "/sys"))):
            raise InvalidConfig(f"{source.module}: its directory {root} would let the plugin read {what} "
                                f"({real}); move the plugin or the state directory apart", plugin=source.id)


def _open_cache(runtime: Runtime) -> None:
    if runtime.manifests is None and runtime.state_dir is not None:
        runtime.manifests = ManifestCache(runtime.state_dir / CACHE_FILE, runtime_key(runtime.deno, runtime.entry))
        runtime.loading = LoadSlots()


def cached(source: PluginSource, runtime: Runtime) -> bool:
    """Whether loading ``source`` takes no worker: the manifest cache holds these very files."""
    _open_cache(runtime)
    return (runtime.manifests is not None
            and runtime.manifests.get(str(source.module), content_digest(source.root)) is not None)


def _confined_digest(source: PluginSource, protected: tuple[tuple[Path, str], ...]) -> str | None:
    """``check_confined``, ``check_apart``, then the files' ``content_digest``: both walks of the
    plugin's files in one thread hop."""
    check_confined(source)
    check_apart(source, protected)
    return content_digest(source.root)


async def inspect(source: PluginSource, runtime: Runtime, limits: WorkerLimits,
                  check: Callable[[Any, list[str]], object] | None = None) -> tuple[Any, list[str]]:
    """Load the module in a worker with no permissions (unless the manifest cache holds these
    very files); return its metadata and the names of its exported functions. Raises what
    loading raised (e.g. PluginUnavailable for a SyntaxError) as a HostError, or InvalidConfig
    for a symlink out of its directory. What the worker found is kept in the manifest cache only
    once ``check`` passed it (``parse_manifest``; nothing kept without one): a module's metadata
    is its own to make, 1.6 million strings that fail the check included (helper-114: kept, they
    held ~115 MiB of host memory a module and 11 MB of the cache file, across restarts)."""
    digest = await anyio.to_thread.run_sync(_confined_digest, source, runtime.protected)  # off the event loop
    _open_cache(runtime)
    if runtime.manifests is not None and (found := runtime.manifests.get(str(source.module), digest)):
        return found
    spec = WorkerSpec(plugin_id=source.id, module=source.module, base_dir=runtime.data_dir(source.id),
                      read_paths=[str(source.root)], limits=limits, reading=True)
    async def read(worker: Worker) -> tuple[Any, list[str]]:
        for said in rest_warnings(worker.signatures, worker.metadata, source.module):  # once per content read
            log.warning("plugin %s: %s", source.id, said)
        return worker.metadata, list(worker.exports)

    async with runtime.loading.take() if runtime.loading is not None else contextlib.nullcontext():
        metadata, exports = await one_off(spec, runtime, read)
    if check is not None:
        check(metadata, exports)
        if runtime.manifests is not None and await anyio.to_thread.run_sync(content_digest, source.root) == digest:
            runtime.manifests.put(str(source.module), digest, metadata, exports)
    return metadata, exports


async def load_manifest(source: PluginSource, runtime: Runtime, limits: WorkerLimits, *,
                        https_only: bool = False) -> tuple[Manifest, list[str]]:
    """The plugin's validated manifest and exported functions, as the host loads them: read in
    a worker with no permissions (``inspect``), checked (errors name the file and the field),
    its file and env grants refused where no plugin may reach (the host's state, sockets and
    plugin directories, its secrets), and its net grant narrowed to HTTPS when ``https_only``
    (InvalidConfig if it cannot be).

    Loading is where a plugin's own content meets the host, so whatever it raises is this
    plugin's failure: any exception other than a HostError (a bug of ours a file found) is
    logged with its traceback, once per attempt, and raised as PluginUnavailable naming the
    file, so that one plugin never stops the host or the others from loading."""
    try:
        return await _load_manifest(source, runtime, limits, https_only=https_only)
    except HostError:
        raise
    except Exception as exc:
        log.error("plugin %s: loading %s failed unexpectedly", source.id, source.module, exc_info=True)
        raise PluginUnavailable(f"{source.module}: cannot be loaded: {type(exc).__name__}: {exc} "
                                "(the host's log has the traceback)", plugin=source.id) from exc


async def _load_manifest(source: PluginSource, runtime: Runtime, limits: WorkerLimits, *,
                         https_only: bool) -> tuple[Manifest, list[str]]:
    found: list[Manifest] = []

    def parsed(meta: Any, exports: list[str]) -> None:
        found.append(parse_manifest(meta, exports, path=str(source.module), expected_id=source.id,
                                    expected_version=source.version_hint,
                                    id_from="its name in dev_plugins" if source.dev else "the file or directory name"))

    meta, exports = await inspect(source, runtime, limits, check=parsed)
    if not found:  # a cached entry: checked again, the cache skips a spawn, never a check
        parsed(meta, exports)
    manifest = found[0]
    runtime.sandbox(runtime.data_dir(source.id), source.root).resolve(
        manifest.grants, where=f"{source.module}: metadata.permissions")
    manifest.grants.net_grant(https_only=https_only)
    for said in unrun_hooks(exports, str(source.module)) + unheard(manifest, exports, str(source.module)):
        log.warning("plugin %s: %s", source.id, said)
    return manifest, exports
