"""Where workers come from: the deno binary, the worker runtime entry, the private socket
directory and the shared DENO_DIR, and the command line each worker is started with."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import os
import re
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import module_cache
from .config import HostConfig, SecurityConfig, WorkerLimits
from .errors import HostError, InvalidConfig, SpawnFailed, StateError
from .event_loop import mark_asyncio
from .process import Reaper
from .process_cgroup import made_elsewhere, pid_namespace
from .security.audit import AuditLog, check_audit_dir
from .security.audit_pg import AuditTable
from .security.permissions import Permissions, Sandbox, reserved_env
from .security.private_files import os_failure, storage_name
from .security.secrets import key_file_path

log = logging.getLogger("host.runtime")
_RUN_PREFIX = "plugin-host-"


def private_run_dir(kind: str) -> str:
    """A new 0700 directory named for this process (``plugin-host-<pid>-<kind>...``) under
    $XDG_RUNTIME_DIR, or the temp directory when that is not one this user can write in (left
    from another user by sudo or su, or never made), after sweeping those of dead hosts there.
    StateError when none can be made."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    prefix = f"{_RUN_PREFIX}{os.getpid()}-{pid_namespace()}-{kind}"
    usable = [d for d in (xdg,) if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)]
    # A socket path must fit AF_UNIX's 107 bytes: under a long XDG_RUNTIME_DIR every worker's
    # spawn failed (146 bytes: each plugin crash-looped, doctor said all was well; helper-100).
    fitting = [d for d in (*usable, tempfile.gettempdir(), "/tmp") if _fits(d, prefix)]
    if not fitting:
        raise StateError(f"no directory for the host's sockets is short enough: a socket path there would pass "
                         f"the {_SUN_PATH_MAX - 1}-byte AF_UNIX limit (set TMPDIR to a short directory)")
    parent = fitting[0]
    if usable and parent != usable[0]:
        log.warning("XDG_RUNTIME_DIR (%s) is too long for the host's sockets (AF_UNIX paths are at most %d bytes): "
                    "they go in %s instead", usable[0], _SUN_PATH_MAX - 1, parent)
    sweep_stale_run_dirs(parent)
    try:
        path = tempfile.mkdtemp(prefix=prefix, dir=parent)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise StateError(f"cannot make the host's private socket directory in {parent}: {exc.strerror or exc} "
                         "(set XDG_RUNTIME_DIR or TMPDIR to a directory this user can write in)") from None
    return path


# The errors of a full, out-of-inodes or read-only file system: the host's state, retried when
# freed (plugins/state_retry.py). Anything else (a path over the AF_UNIX limit, a directory
# that is a file) is this spawn failing: SpawnFailed, counted and backed off by the pool.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def socket_failure(path: str, exc: OSError, plugin: str | None = None) -> HostError:
    """A worker's socket ``path`` could not be made: a StateError for a full or read-only file
    system, SpawnFailed for any other refusal; each names the directory and what to do."""
    where = os.path.dirname(path)
    reason = exc.strerror or str(exc)
    if exc.errno in _DISK_ERRNOS:
        return StateError(f"cannot make a worker socket in {where}: {reason} (free some space or inodes on its "
                          "file system, or set XDG_RUNTIME_DIR or TMPDIR to another directory)")
    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):  # socket() itself refused
        hint = _PROCESS_HINTS[exc.errno]
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        hint = f"{where} is there but is no directory: remove it, and the host makes its directory again"
    elif len(os.fsencode(path)) >= _SUN_PATH_MAX:
        hint = f"its path is {len(os.fsencode(path))} bytes, over the {_SUN_PATH_MAX - 1}-byte AF_UNIX limit: " \
               "set XDG_RUNTIME_DIR or TMPDIR to a shorter directory"
    else:
        hint = "set XDG_RUNTIME_DIR or TMPDIR to a directory this user can write in"
    return SpawnFailed(f"worker could not start: cannot make its socket in {where}: {reason} ({hint})",
                       plugin=plugin)


_SUN_PATH_MAX = 108  # sockaddr_un.sun_path on Linux, its NUL included
_SOCKET_NAME_MAX = 32  # the longest name the host gives a socket in its directory (w<seq>-<12 hex>.sock)


def _fits(parent: str, prefix: str) -> bool:
    """Whether a socket in a directory ``prefix`` + 8 characters under ``parent`` fits AF_UNIX."""
    return len(os.fsencode(os.path.join(parent, prefix + "x" * 8, "x" * _SOCKET_NAME_MAX))) < _SUN_PATH_MAX

_PROCESS_HINTS = {
    errno.EAGAIN: "the user's process limit is reached (ulimit -u, systemd TasksMax)",
    errno.ENOMEM: "the machine is out of memory",
    errno.EMFILE: "the host is out of file descriptors (ulimit -n, systemd LimitNOFILE)",
    errno.ENFILE: "the system is out of file descriptors",
    errno.ENOENT: "the file is gone: a deploy replaced the interpreter or Deno; restart the host",
    errno.EACCES: "the file is not executable by this user",
}


def process_failure(exc: OSError, worker: str, plugin: str, argv: list[str] | None = None,
                    env: dict[str, str] | None = None) -> SpawnFailed:
    """The system refused to start a worker's process (or the reaper before it), as a
    SpawnFailed that says which file and what to do; the pool retries with backoff. A command
    line (``argv`` and ``env``) too long for the system (E2BIG) would be refused again: that one
    is permanent, and says how long it was."""
    what = f" {exc.filename}" if exc.filename else ""
    hint = _PROCESS_HINTS.get(exc.errno or 0, "")
    if exc.errno == errno.E2BIG:
        args = [*(argv or ()), *(f"{k}={v}" for k, v in (env or {}).items())]
        longest = max(args, key=len, default="")
        hint = (f"its command line and environment come to {sum(len(os.fsencode(a)) + 1 for a in args)} bytes, "
                f"the longest argument {len(os.fsencode(longest))} ({longest[:40]!r}...); Linux takes "
                f"{_MAX_ARG_BYTES} bytes an argument and about a quarter of the stack limit in all: narrow the "
                f"plugin's permissions or the environment variables it is granted")
    return SpawnFailed(f"worker {worker} could not start: the system refused to run{what}: "
                       f"{exc.strerror or exc}{f' ({hint})' if hint else ''}", plugin=plugin,
                       permanent=exc.errno == errno.E2BIG)


_MAX_ARG_BYTES = 128 * 1024  # MAX_ARG_STRLEN: one argument (or environment entry), its NUL included


def find_deno(override: str | None = None) -> str:
    """The deno binary: an explicit path, $PLUGIN_HOST_DENO, or the `deno` wheel's binary. A path
    given that is no executable file is an InvalidConfig naming where it was given (before: a
    directory passed the check, root's access() says X_OK for one, and every plugin of the host
    went into error, 'setpriv: failed to execute', nothing naming the setting)."""
    where = "deno_path" if override else "$PLUGIN_HOST_DENO"
    path = override or os.environ.get("PLUGIN_HOST_DENO")
    if path:
        if not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            raise InvalidConfig(f"{where}: {path!r} {what}: give the deno binary's path, or leave it out "
                                "for the `deno` package's")
        if not os.access(path, os.X_OK):
            raise InvalidConfig(f"{where}: {path!r} is not executable (chmod +x it, or give another deno binary)")
        return str(path)
    try:
        import deno  # the PyPI wheel that ships the binary

        path = deno.find_deno_bin()
    except Exception as exc:  # pragma: no cover - broken install
        raise HostError(f"cannot find the deno binary ({exc}); install the `deno` package") from None
    if not os.access(path, os.X_OK):
        raise HostError(f"deno binary {path!r} is not executable")
    return str(path)


def check_runtime_paths(config: HostConfig) -> None:
    """The deno binary and the worker runtime the operator named (``deno_path`` or
    ``$PLUGIN_HOST_DENO``, ``runtime_entry``): InvalidConfig naming the setting when one is wrong
    (the CLI checks them with the rest of its configuration: exit 2)."""
    if config.deno_path or os.environ.get("PLUGIN_HOST_DENO"):
        find_deno(config.deno_path)
    if config.runtime_entry:
        find_runtime_entry(config.runtime_entry)
    if config.security.audit_log:
        check_audit_dir(config.state_path / config.security.audit_log, config.state_path)


# Every worker's V8 flags besides its heap cap. No Sparkplug: V8's baseline compiler compiles
# the runtime's start-up code and maps its own code into each worker, 0.2-0.4 MB of idle RSS.
# Warm calls were as fast without it and long loops no slower (Maglev and TurboFan still
# optimise what runs hot); code run cold for ~10^4 steps took up to ~0.7 ms longer once.
V8_FLAGS = ("--no-sparkplug",)

# Beside the runtime entry: maps the specifiers the runtime provides to plugins ("@plugin-host/kit").
IMPORT_MAP = "import_map.json"


def find_runtime_entry(override: str | None = None) -> Path:
    """worker_runtime/worker.ts: inside the installed wheel, or beside the source tree."""
    if override:
        entry = Path(override).resolve()
        if not entry.is_file():  # before: every worker failed 'Module not found', not naming the setting
            raise InvalidConfig(f"runtime_entry: {override!r} is not a file: give the path of the worker "
                                "runtime's worker.ts, or leave it out for the one the host ships")
        return entry
    here = Path(__file__).resolve().parent
    for candidate in (here / "worker_runtime" / "worker.ts", here.parent / "worker_runtime" / "worker.ts"):
        if candidate.is_file():
            return candidate
    raise HostError("worker_runtime/worker.ts not found next to the host package")


def _slug(plugin_id: str, length: int) -> str:
    """The readable part of a plugin's origin: lower case, runs of anything else folded to "-"."""
    return re.sub(r"[^a-z0-9-]+", "-", plugin_id.lower()).strip("-")[:length] or "plugin"


def _location(plugin_id: str) -> str:
    """A per-plugin origin so localStorage, Cache API and KV are never shared (Deno 2.9 keys these
    by --location): a readable slug, then 128 bits of the id's sha256 (a DNS label of at most 63
    characters). Before, 32 bits: "vault" and an id whose slug folds to it ("vault--._") with a
    hash matching in those bits, found by brute force in minutes, shared vault's localStorage."""
    return f"http://{_slug(plugin_id, 30)}-{hashlib.sha256(plugin_id.encode()).hexdigest()[:32]}.plugin.invalid/"


def _origin_key(location: str) -> str:
    """The directory name Deno keys an origin's storage by: the sha256 of it, no final slash."""
    return hashlib.sha256(location.rstrip("/").encode()).hexdigest()


def move_web_storage(deno_dir: Path, plugin_id: str) -> None:
    """A plugin's localStorage and Cache API files kept under its origin of before (a slug of 40
    characters and 32 bits of its id's hash) moved to its origin now, once: what it stored stays
    its own."""
    old = _origin_key(f"http://{_slug(plugin_id, 40)}-{hashlib.sha256(plugin_id.encode()).hexdigest()[:8]}"
                      ".plugin.invalid/")
    data = deno_dir / "location_data"
    for before, now in zip((data / old, data / "web_cache" / old), web_storage_dirs(deno_dir, plugin_id), strict=True):
        with contextlib.suppress(OSError):  # nothing there, or moved already: nothing to do
            if before.is_dir() and not now.exists():
                os.rename(before, now)


BLOCK = 4096  # bytes: what a file or directory takes at least (tree_bytes)


def web_storage_dirs(deno_dir: Path, plugin_id: str) -> tuple[Path, Path]:
    """Where Deno keeps a plugin's localStorage and its Cache API entries: under DENO_DIR, keyed
    by the sha256 of its origin (``_location`` without the final slash), written with no write
    grant, so only the host can bound them (the Cache API has no quota of its own)."""
    key = _origin_key(_location(plugin_id))
    return deno_dir / "location_data" / key, deno_dir / "location_data" / "web_cache" / key


def tree_bytes(root: Path, stop_at: int | None = None) -> int:
    """Bytes the files and directories under ``root`` take on disk, each at least one 4 KiB block
    (an empty one still takes an inode and its directory entry); what vanishes meanwhile counts
    nothing. The walk stops once the total passes ``stop_at`` (then at most stop_at / 4 KiB
    entries are looked at)."""
    total = 0
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += max(os.lstat(os.path.join(top, name)).st_blocks * 512, BLOCK)
            if stop_at is not None and total > stop_at:
                return total
    return total


def sweep_stale_run_dirs(parent: str) -> int:
    """Remove socket directories left by hosts that died (e.g. SIGKILL); returns how many."""
    removed = 0
    try:
        entries = os.listdir(parent)
    except OSError:
        return 0
    for name in entries:
        if not name.startswith(_RUN_PREFIX):
            continue
        pid_part = name[len(_RUN_PREFIX) :].split("-", 1)[0]
        if not pid_part.isdigit() or made_elsewhere(name[len(_RUN_PREFIX) :]) or _pid_alive(int(pid_part)):
            continue
        path = os.path.join(parent, name)
        try:
            if os.stat(path).st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (dead, not reaped yet by a parent, or by a container's PID 1
    that reaps nothing) holds none of its directories any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # after the name, which may hold ")"
    except (OSError, IndexError):  # no /proc: as kill() said
        return True


class EgressRoute(Protocol):
    """The host's egress proxy as workers see it (host/security/egress.py)."""

    address: str  # the loopback address it listens on, kept out of the deny list

    def url_for(self, plugin_id: str) -> str: ...


@dataclass
class Runtime:
    """Shared by every worker of one host; owns the private socket directory."""

    deno: str
    entry: Path
    deno_dir: Path
    run_dir: Path
    security: SecurityConfig = field(default_factory=SecurityConfig)
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))
    egress: EgressRoute | None = None  # set while the egress proxy runs
    state_dir: Path | None = None  # default: the parent of deno_dir
    # Paths no worker's file grant may reach, with what each is (see permissions.Sandbox).
    protected: tuple[tuple[Path, str], ...] = ()
    # host:port addresses every worker is denied, private network allowed or not: the host's
    # own listening addresses (its HTTP API).
    reserved_addresses: list[str] = field(default_factory=list)
    reaper: Reaper = field(default_factory=Reaper)  # kills what workers started if the host dies
    # what loading found in each plugin (plugins/manifest_cache.py), and the slots for loading
    manifests: Any = None
    loading: Any = None
    _seq: itertools.count = field(default_factory=itertools.count)
    _web_storage_moved: set[str] = field(default_factory=set)  # plugin ids move_web_storage looked at
    # each plugin's share of this host's event loop for decoding frames (transport.DecodeShare),
    # held by its live workers (worker.py): per host, as the loop is
    decode_shares: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)

    def move_web_storage(self, plugin_id: str) -> None:
        """``move_web_storage`` at a plugin's first spawn on this host, not at each one."""
        if plugin_id not in self._web_storage_moved:
            self._web_storage_moved.add(plugin_id)
            move_web_storage(self.deno_dir, plugin_id)

    @classmethod
    def create(cls, config: HostConfig, *, redact: Callable[[str], str] | None = None) -> Runtime:
        """``redact``: masks secrets in audit lines (a second line of defence: callers record
        none)."""
        mark_asyncio()  # under asyncio.run too, what the host starts from loop callbacks works (event_loop.py)
        deno = find_deno(config.deno_path)
        entry = find_runtime_entry(config.runtime_entry)
        state = config.state_path
        deno_dir = state / "deno"
        try:
            deno_dir.mkdir(parents=True, exist_ok=True)
            module_cache.guard(deno_dir)
        except OSError as exc:
            raise os_failure(exc.filename or deno_dir, exc, "make Deno's module cache directory") from None
        run_dir = Path(private_run_dir(""))
        sec = config.security
        table = AuditTable(config.state.database) if config.state.database and sec.audit_log else None
        audit = AuditLog(state / sec.audit_log if sec.audit_log else None, redact=redact,
                         max_bytes=sec.audit_max_bytes, keep=sec.audit_keep, table=table, own_dir=state)
        protected = [(state, "the host's state directory"), (run_dir, "the host's worker socket directory"),
                     *((d, "a plugins directory") for d in config.plugin_dirs),
                     (key_file_path(config), "the host's secret key file"),
                     (Path("/proc"), "/proc (every process's memory and environment)"),
                     (Path("/sys"), "/sys")]
        return cls(deno=deno, entry=entry, deno_dir=deno_dir, run_dir=run_dir, security=sec, audit=audit,
                   state_dir=state, protected=tuple(protected))

    def data_dir(self, name: str) -> Path:
        """The directory of one plugin's own files (``name``: its id) under the state directory:
        relative file grants resolve there, and its workers run there."""
        return (self.state_dir or self.deno_dir.parent) / "data" / storage_name(name)

    def sandbox(self, data_dir: Path, own_root: str | Path | None = None) -> Sandbox:
        """What a worker with this data directory (and code at ``own_root``) may be granted."""
        return Sandbox(data_dir=data_dir, own_root=Path(own_root) if own_root else None,
                       protected=self.protected, secret_env=(self.security.secret_key_env,))

    def close(self) -> None:
        if self.manifests is not None:
            self.manifests.flush()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.audit.close()
        self.reaper.close()

    def socket_path(self) -> str:
        """A fresh socket path in the private directory (made again if something removed it).
        The name is unguessable, so nothing can be planted ahead of the next worker's bind."""
        if not self.run_dir.is_dir():
            self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(self.run_dir / f"w{next(self._seq)}-{secrets.token_hex(6)}.sock")

    def argv(
        self,
        *,
        plugin_id: str,
        permissions: Permissions,
        base_dir: Path,
        read_paths: list[str],
        limits: WorkerLimits,
        socket_path: str,
        inspect: str | None = None,
    ) -> list[str]:
        return self.command(self.flags(
            plugin_id=plugin_id, permissions=permissions, base_dir=base_dir, read_paths=read_paths,
            limits=limits, socket_path=socket_path, inspect=inspect,
        ))

    def command(self, flags: list[str]) -> list[str]:
        """The command line of a worker run with ``flags``."""
        return [self.deno, "run", *flags, str(self.entry)]

    @staticmethod
    def bootstrap(socket_path: str, token: str) -> bytes:
        """What the runtime entry reads on stdin: its socket and one-time token (never on the
        command line, where plugin code could read them in Deno.args)."""
        return f"{socket_path}\n{token}\n".encode()

    def flags(self, *, plugin_id: str, permissions: Permissions, base_dir: Path, read_paths: list[str],
              limits: WorkerLimits, socket_path: str, inspect: str | None = None) -> list[str]:
        """The ``deno run`` flags of one worker (what the audit log records at each spawn).
        ``base_dir``: its data directory; file grants are checked again here (InvalidConfig)."""
        permissions = self.sandbox(base_dir, read_paths[0] if read_paths else None).resolve(permissions)
        keep = (self.egress.address,) if self.egress is not None and self.proxied(permissions) else ()
        flags = [
            "--no-prompt", "--no-remote", "--no-npm", "--no-config", "--no-lock", "--cached-only",
            f"--location={_location(plugin_id)}",
            f"--v8-flags=--max-old-space-size={limits.heap_mb}",
            *(f"--v8-flags={flag}" for flag in V8_FLAGS),  # Deno takes each --v8-flags given
            *permissions.deno_flags(base_dir=base_dir, socket_path=socket_path, read_extra=read_paths,
                                    https_only=self.security.https_only, keep_reachable=keep,
                                    always_deny=self.reserved_addresses),
        ]
        import_map = self.entry.parent / IMPORT_MAP
        if import_map.is_file():  # "@plugin-host/kit" and the like (worker_runtime/kit.ts)
            flags.append(f"--import-map={import_map}")
        if inspect:  # "--inspect-brk=ADDRESS" (HostConfig.inspect_flag), or an address
            flags.append(inspect if inspect.startswith("--inspect") else f"--inspect={inspect}")
        return flags

    def proxied(self, permissions: Permissions) -> bool:
        """Whether a worker with ``permissions`` sends its fetch traffic through the egress proxy."""
        return self.egress is not None and permissions.has_net

    def env(self, permissions: Permissions, plugin_id: str | None = None) -> dict[str, str]:
        """A scrubbed environment: only what Deno needs, plus variables the plugin was granted;
        ``plugin_id`` names the worker to the egress proxy when it runs."""
        env = {
            "DENO_DIR": str(self.deno_dir),
            "DENO_NO_UPDATE_CHECK": "1",
            "NO_COLOR": "1",
            "PATH": "/usr/bin:/bin",
        }
        if isinstance(permissions.env, list):
            for name in permissions.env:
                if name in os.environ and not reserved_env(name, (self.security.secret_key_env,)):
                    env[name] = os.environ[name]
        if self.egress is not None and plugin_id is not None and self.proxied(permissions):
            url = self.egress.url_for(plugin_id)  # fetch() follows these; no --allow-env needed
            env.update(HTTP_PROXY=url, HTTPS_PROXY=url, http_proxy=url, https_proxy=url)
            env.pop("NO_PROXY", None)
            env.pop("no_proxy", None)
        return env
