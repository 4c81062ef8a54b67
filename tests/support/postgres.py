"""A real PostgreSQL server for tests: ``initdb`` into a temp dir, ``postgres`` on a free
loopback port with its unix socket in that dir, password auth (so URLs carry a secret to keep
out of errors), stopped and removed at the end. Debian's ``postgresql`` package provides the
binaries (``make test`` installs it). initdb and postgres refuse to run as root, so as root
they run as the package's ``postgres`` user, in a temp dir that user owns."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .processes import free_port

PR_SET_PDEATHSIG = 1


def binaries() -> Path:
    """The newest installed server's bin directory (/usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    return Path(found[-1]).parent


def _die_with_parent() -> None:
    """The server goes (immediate shutdown) if the test process dies without stopping it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


class Postgres:
    """A running server: ``url(db)`` for a database in it, ``admin()`` a connection to create some,
    ``restart()`` to stop it (fast shutdown: sessions are ended) and start it again on its port."""

    def __init__(self, proc: subprocess.Popen, port: int, password: str, root: Path,
                 start: Callable[[], subprocess.Popen]) -> None:
        self.proc, self.port, self.password, self.root = proc, port, password, root
        self._start = start

    def stop(self) -> None:
        """Fast shutdown (SIGINT), as ``pg_ctl stop -m fast``: open sessions are ended."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def start(self) -> None:
        self.proc = self._start()
        _wait_ready(self, self.root / "postgres.log")

    def restart(self) -> None:
        """As ``pg_ctl restart -m fast``: every open connection is ended, then it serves again."""
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=5)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A postgres of its own on a free loopback port, stopped (and its files removed) at the end."""
    bin_dir = binaries()
    as_user: dict = {}
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))  # not under pytest's root-only tmp dirs
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")  # created by Debian's package
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        os.chown(root, pw.pw_uid, pw.pw_gid)
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, as_user["user"], as_user["group"])
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    data = root / "data"
    init = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--no-instructions"],
        capture_output=True, text=True, env=env, timeout=60, **as_user)
    pwfile.unlink()
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    port = free_port()
    log = root / "postgres.log"

    def start() -> subprocess.Popen:
        with log.open("ab") as out:
            return subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "synchronous_commit=off", "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
                stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent, **as_user)
    server = Postgres(start(), port, password, root, start)
    try:
        _wait_ready(server, log)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: Postgres, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            server.admin().close()
            return
        except psycopg.OperationalError:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                server.proc.kill()
                server.proc.wait(10)
                pytest.fail(f"postgres did not start on port {server.port}: {log.read_text()[-2000:]}")
            time.sleep(0.05)


@contextmanager
def fresh_database(server: Postgres) -> Iterator[str]:
    """A new empty database in ``server`` for one test (dropped after it): its URL."""
    name = "t_" + secrets.token_hex(6)
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.url(name)
    finally:
        with server.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def set_read_only(server: Postgres, url: str, on: bool) -> None:
    """New sessions of ``url``'s database take no writes (or take them again) and its current
    ones are ended: a failover to a read-only standby (or its promotion) as a host sees it."""
    database = url.rsplit("/", 1)[1]
    with server.admin() as admin:
        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = {'on' if on else 'off'}")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [database])
