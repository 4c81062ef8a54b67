"""Files only the host's user may read: one atomic 0600 write for the config store, the secret
key file and ``config export --out``; the names of each plugin's own files."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def storage_name(plugin_id: str) -> str:
    """A file name for what belongs to one plugin (its database, its data directory): the id
    itself when it is a plain name, else a sanitised stem plus a hash of the id. Plain ids
    never contain ``~``, so two plugins never share a name."""
    if _SAFE_ID.fullmatch(plugin_id):
        return plugin_id
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", plugin_id)[:64].lstrip(".")
    return f"{stem}~{hashlib.sha256(plugin_id.encode()).hexdigest()[:16]}"


def write_private(path: str | Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, mode 0600, atomically: a temp file in the same directory
    moved into place, so nobody reads a half-written file. ``exclusive``: only if ``path`` does
    not exist yet (synced, then linked into place, like O_CREAT|O_EXCL; when another process
    made it first, theirs is kept)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if exclusive:
                f.flush()
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
