"""Files only the host's user may read: one atomic 0600 write for the config store, the secret
key file and ``config export --out``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
