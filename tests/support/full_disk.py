"""A file system that fills up: a tmpfs of a few MiB mounted over a directory of one serve
process only (a mount namespace of its own, ``unshare -rm``: as root or as a user with user
namespaces, and nothing is left mounted when the process ends; ``held`` keeps it for several
commands). The test reaches the file system through ``/proc/<pid>/root`` to fill it to the last
bytes or inodes and to free it again. Where mount namespaces are not allowed, the test skips."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_MOUNT = ('mount -t tmpfs -o "size=$1,mode=700" tmpfs "$2" && mkdir -m 700 "$2/state" '
          '&& { [ -z "$3" ] || ln -s "$3" "$2/state/deno"; } && shift 3 && exec "$@"')


@functools.cache
def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    out = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return out.returncode == 0


class SmallDisk:
    """A tmpfs of ``size`` (``"24m"``, ``"2m,nr_inodes=64"``) at ``mount`` for the process
    started with ``wrap``, with a state directory ``state`` in it; ``deno``: a DENO_DIR to link
    in (a warm cache), or None to keep Deno's cache on the small file system too."""

    def __init__(self, mount: Path, size: str, *, deno: Path | None = None) -> None:
        if not _unshare_works():
            pytest.skip("no mount namespaces here (unshare -rm failed)")
        mount.mkdir(parents=True, exist_ok=True)
        if deno is not None:
            deno.mkdir(parents=True, exist_ok=True)
        self.mount, self.state = mount, mount / "state"
        self.wrap = ("unshare", "-rm", "sh", "-c", _MOUNT, "small-disk", size, str(mount), str(deno or ""))
        self.pid: int | None = None  # the process that mounted it (serve): set by the test

    def path(self, rel: str = "") -> Path:
        """``rel`` on the small file system, as the test process reaches it (open files there with
        ``open``; sqlite resolves the /proc link and would write under the mount instead)."""
        assert self.pid is not None, "set .pid to the serve process first"
        return Path(f"/proc/{self.pid}/root{self.mount}") / rel

    def fill(self, leave: int = 0) -> None:
        """Fill the file system with a file of its own until a write fails with ENOSPC, then give
        back ``leave`` bytes (rounded to pages): the next bigger write fails."""
        filler = self.path(".filler")
        with open(filler, "ab", buffering=0) as f:
            for size in (1 << 20, 1 << 16, 1 << 12):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
            if leave:
                f.truncate(max(0, f.tell() - leave))
        assert os.statvfs(self.path()).f_bavail * os.statvfs(self.path()).f_frsize <= leave + 4096

    def fill_inodes(self) -> None:
        """Use up the file system's inodes (``nr_inodes`` in ``size``) with empty files: making a
        file, directory or socket then fails with ENOSPC though bytes are free. Again: the ones
        freed since."""
        many = self.path(".inodes")
        with contextlib.suppress(FileExistsError):
            many.mkdir()
        for n in range(len(os.listdir(many)), 1 << 20):  # again: what was freed since
            try:
                (many / str(n)).touch(exist_ok=False)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return

    def free(self) -> None:
        """Give all the filler's room (and inodes) back."""
        self.path(".filler").unlink(missing_ok=True)
        shutil.rmtree(self.path(".inodes"), ignore_errors=True)

    @contextmanager
    def held(self) -> Iterator[SmallDisk]:
        """The file system mounted for a process of its own (``sleep``) while the block runs, for
        commands started in it with ``run`` (each a CLI invocation, say)."""
        proc = subprocess.Popen([*self.wrap, "sleep", "300"])
        self.pid = proc.pid
        try:
            deadline = time.monotonic() + 10
            while not self.path("state").is_dir():
                assert proc.poll() is None and time.monotonic() < deadline, "the small disk was not mounted"
                time.sleep(0.01)
            yield self
        finally:
            proc.kill()
            proc.wait()

    @property
    def inside(self) -> tuple[str, ...]:
        """The ``wrap`` of a command run in the namespace of ``held`` (serve_process's too): the
        file system outlives it, for the test to look at what it left."""
        return ("nsenter", "-t", str(self.pid), "-U", "-m", "--preserve-credentials")

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """``python -m host ARGS`` inside the mount namespace of ``held``, its output captured."""
        return subprocess.run([*self.inside, sys.executable, "-m", "host", *args], capture_output=True, text=True,
                              timeout=60, cwd=cwd)

