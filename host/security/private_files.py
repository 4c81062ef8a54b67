"""Files only the host's user may read: one atomic 0600 write for the config store, the secret
key file and ``config export --out``; the names of each plugin's own files; the sqlite files of
the state directory (``PrivateDb``), and the check of the state directory at start. Every
failure of the state directory is a StateError naming the file and what to do."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import StateError

log = logging.getLogger("host.state")
MIN_FREE_BYTES = 16 * 1024 * 1024  # less free space in the state directory refuses the start
LOCK_WAIT = 5.0  # seconds a state file's lock is waited for (locked): its holders hold it for a write

_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def storage_name(plugin_id: str) -> str:
    """A file name for what belongs to one plugin (its database, its data directory): the id
    itself when it is a plain name, else a sanitised stem plus a hash of the id. Plain ids
    never contain ``~``, so two plugins never share a name."""
    if _SAFE_ID.fullmatch(plugin_id):
        return plugin_id
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", plugin_id)[:64].lstrip(".")
    return f"{stem}~{hashlib.sha256(plugin_id.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def write_private(path: str | Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, mode 0600, atomically: a temp file in the same directory,
    synced, then moved into place, so nobody reads a half-written file and a full disk (which
    some file systems report only at fsync) leaves the old file whole. ``exclusive``: only if
    ``path`` does not exist yet (linked into place, like O_CREAT|O_EXCL; when another process
    made it first, theirs is kept)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as f:  # unbuffered: no write left for close() to fail
            view = memoryview(data)
            while view:
                view = view[f.write(view):]
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(tmp).unlink(missing_ok=True)  # exclusive: the link is the file now


STATE_DIR = "state_dir (--state-dir)"
PLUGINS_DIR = "plugins_dir (--plugins)"


def no_space_hint(path: str | Path) -> str:
    """What to do about ENOSPC at ``path``: its file system may have blocks left and no inodes
    (df -h shows room; "free some space" sent the operator the wrong way)."""
    where = Path(path)
    for candidate in (where, *where.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        if st.f_files and st.f_favail == 0:
            return "its file system has no free inodes left (df -i): remove some files there"
        break
    return "free some space on its file system"


def os_failure(path: str | Path, exc: OSError, doing: str, setting: str = STATE_DIR) -> StateError:
    """A StateError for ``exc`` met while ``doing`` something with ``path``, saying what to do;
    ``setting`` names the directory it is in (a file of the plugin directory: PLUGINS_DIR)."""
    hint = {errno.ENOSPC: no_space_hint(path),
            errno.EDQUOT: "raise the disk quota or free some space",
            errno.EFBIG: "the file-size limit (ulimit -f) was reached: raise it",
            errno.EROFS: f"its file system is read-only: set {setting} to a writable directory",
            errno.EACCES: f"the host's user may not write there: fix its permissions or set another {setting}",
            errno.EPERM: f"the host's user may not write there: fix its permissions or set another {setting}",
            errno.ENOENT: "it was removed while the host runs: the host makes it again on the next write",
            errno.EEXIST: "something that is not a directory is in the way (a file, or a symlink to nowhere): "
                          "remove it or point it at a directory",
            errno.ENOTDIR: f"a part of the path is a file, not a directory: remove it or set another {setting}",
            errno.ELOOP: "a symlink loop is in the way: remove it",
            errno.EISDIR: f"a directory is in the way: move it away, or set another {setting}",
            }.get(exc.errno or 0, f"check the directory {setting} names")
    return StateError(f"cannot {doing} {path}: {exc.strerror or exc} ({hint})")


def not_private(st: os.stat_result, *, deny: int, fix: str) -> str | None:
    """Why a file or directory the host trusts (its ``st``) is open to other local users, with
    ``fix`` (say ``chmod 700 <path>``) when it is the mode; None when it is the host user's
    alone: owned by this user, no mode bit of ``deny``. Such a user could read it or plant files."""
    if st.st_uid != os.getuid():
        return (f"not owned by the user running the host (owner uid {st.st_uid}, host uid {os.getuid()}): "
                "`chown` it to that user")
    if bad := st.st_mode & deny:
        how = " and ".join(word for bits, word in ((0o044, "readable"), (0o022, "writable")) if bad & bits)
        return f"{how or 'open'} by group or others (mode {stat.S_IMODE(st.st_mode):04o}): `{fix}`"
    return None


def check_state_dir(path: Path, *, min_free: int = MIN_FREE_BYTES) -> None:
    """Make the state directory (0700) and prove it usable at start: the host user's alone (no
    other user may plant a file the host trusts: switches, stations, databases, keys), writable
    (a file made and removed) and with ``min_free`` bytes free, else StateError saying which and
    what to do."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if why := not_private(os.stat(path), deny=0o022, fix=f"chmod 700 {path}"):
            raise StateError(f"the state directory {path} is {why}, or set state_dir (--state-dir) to a directory "
                             "of your own; as it is, another local user could plant files the host trusts")
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
        st = os.statvfs(path)
    except OSError as exc:
        raise os_failure(path, exc, "use the state directory") from None
    free = st.f_bavail * st.f_frsize
    if free < min_free:
        raise StateError(f"the state directory {path} has {free // 1024} KiB free, less than the "
                         f"{min_free // (1024 * 1024)} MiB the host needs: free some space or set state_dir "
                         "(--state-dir) elsewhere")


def set_aside(path: Path) -> Path:
    """Move a damaged file (and its sqlite -wal/-shm) out of the way, kept for inspection;
    returns where it went."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def open_private_db(path: Path, schema: str, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A sqlite database only this user can read (the directory 0700, the file created 0600
    before sqlite opens it; its -wal/-shm files get the same mode), in WAL mode, with
    ``schema`` applied."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(schema)
    except BaseException:
        db.close()
        raise
    return db


class PrivateDb:
    """One sqlite file of the state directory, opened at first use, and opened again when the
    file was removed or replaced underneath (the state directory deleted while the host runs):
    a write never goes to a file nobody can read any more. ``damaged_ok``: a file that is not a
    database is moved aside (``set_aside``, logged) and a new one started (a cache, a history);
    otherwise it is a StateError. Every failure is a StateError naming the file."""

    def __init__(self, path: Path, schema: str, *, timeout: float = 5.0, damaged_ok: bool = False) -> None:
        self.path, self.schema, self.timeout, self.damaged_ok = path, schema, timeout, damaged_ok
        self._db: sqlite3.Connection | None = None
        self._ino: tuple[int, int] | None = None

    def conn(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.path)
            same = self._ino == (st.st_dev, st.st_ino)
        except FileNotFoundError:
            same = False
        if self._db is not None and same:
            return self._db
        self.close()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not (self.damaged_ok and _damaged(exc)):
                raise self.failure(exc, "open") from None
            aside = set_aside(self.path)
            log.warning("%s was not a usable database (%s): moved to %s, starting a new one", self.path, exc, aside)
            self._db = self._open()
        except OSError as exc:
            raise os_failure(self.path, exc, "open") from None
        st = os.stat(self.path)
        self._ino = (st.st_dev, st.st_ino)
        return self._db

    def _open(self) -> sqlite3.Connection:
        return open_private_db(self.path, self.schema, timeout=self.timeout)

    def failure(self, exc: Exception, doing: str) -> StateError:
        """``exc`` (sqlite or the OS) met while ``doing`` something with this file, as a StateError."""
        if isinstance(exc, OSError):
            return os_failure(self.path, exc, doing)
        if _damaged(exc):
            return StateError(f"cannot {doing} {self.path}: it is not a usable sqlite database ({exc}); "
                              "move it aside (the host starts a new one)")
        return StateError(f"cannot {doing} {self.path}: {exc}")

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db, self._ino = None, None


def _damaged(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


@contextlib.contextmanager
def locked(path: Path, wait: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock (``<path>.lock``) across processes: the CLI beside a running server.
    Its holders hold it for a small file's write; one held past ``wait`` seconds (LOCK_WAIT) is
    a StateError naming it and its holder. Before, the wait had no end: a `python -m host`
    command or a second serve stopped (Ctrl-Z, SIGSTOP) or hung while holding it froze a server's
    event loop, every call and /healthz, until it let go."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # named itself: a lock file that is a directory was "cannot write config.json"
        raise os_failure(f"{path}.lock", exc, "take the lock") from None
    name = f"{path}.lock"
    try:
        start = time.monotonic()
        deadline, pause = start + (LOCK_WAIT if wait is None else wait), 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _STUCK.pop(name, None)
                break
            except BlockingIOError:
                now = time.monotonic()
                stuck = name in _STUCK and now - start >= STUCK_GRACE
                holder = _lock_holder(fd) if stuck or now >= deadline else ""
                if (stuck and holder and _STUCK[name] == holder) or now >= deadline:  # a holder we can name
                    # the holder already outlasted a whole wait: the writes queued behind that one
                    # fail after a moment (a write holds it for milliseconds), not each after a wait
                    # of its own (ten of them: the last answered at 50 s)
                    _STUCK[name] = holder
                    raise StateError(f"{name} is held by another process{holder} for over "
                                     f"{LOCK_WAIT if wait is None else wait:g} s (a `python -m host` command or "
                                     "another serve on this state directory, stopped or hung?): nothing was "
                                     "written; try again once it lets go") from None
                time.sleep(pause)
                pause = min(2 * pause, 0.05)
        yield
    finally:
        os.close(fd)


# Lock file -> " (pid N)" of a holder that outlasted a wait, until the lock is taken again.
_STUCK: dict[str, str] = {}
STUCK_GRACE = 0.25  # seconds a write waits for a lock whose holder outlasted a whole wait before


def _lock_holder(fd: int) -> str:
    """`` (pid N)``: the process /proc/locks says holds the flock on ``fd``'s file, or ""."""
    try:
        ino = str(os.fstat(fd).st_ino)
        with open("/proc/locks") as f:
            for line in f:  # "1: FLOCK  ADVISORY  WRITE 4567 00:2f:123456 0 EOF"; waiters have "->"
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == ino:
                    return f" (pid {parts[4]})"
    except OSError:
        pass
    return ""
