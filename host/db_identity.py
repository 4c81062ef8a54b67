"""Whether two PostgreSQL connection strings may reach the same database, read as libpq reads
them (``psycopg.conninfo``: URLs, ``key=value`` strings, ``?host=``/``?dbname=`` query
parameters), so that spelling one database two ways (``localhost`` and ``127.0.0.1``, a port
left out and ``:5432``, ``?dbname=``) does not make it two. Conservative: every name for this
machine (loopback addresses, ``localhost``, its host name, a Unix socket directory, no host)
is one host, and what a connection string leaves to libpq's defaults (``PGHOST``, ``PGPORT``,
``PGDATABASE``, the user name) is filled in the way libpq would, or matches anything when
only a ``service`` file knows it. A check on the strings, not on the servers: another port, or
a name reaching this machine through DNS or an interface address, is left to db_apart.py, which
asks the servers themselves when the db tool first connects."""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from collections.abc import Mapping

from .errors import InvalidConfig
from .policy.config import redact_uri

LOCAL = ""  # the host of every endpoint on this machine
DEFAULT_PORT = 5432
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _host(name: str) -> str:
    """``name`` as compared: LOCAL for this machine, else lower case without a trailing dot."""
    name = name.strip().lower().rstrip(".")
    if not name or name.startswith(("/", "@")) or name in _LOCAL_NAMES or name == socket.gethostname().lower():
        return LOCAL  # no host (the default socket), a socket directory or abstract socket, a loopback name
    try:
        ip = ipaddress.ip_address(name.strip("[]").split("%")[0])
    except ValueError:
        return name
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return LOCAL if ip.is_loopback or ip.is_unspecified else str(ip)


def _endpoints(params: Mapping[str, str], env: Mapping[str, str]) -> set[tuple[str, int | None]]:
    """The (host, port) pairs libpq would try, ``hostaddr`` before ``host``; port None: unknown."""
    service = "service" in params or "PGSERVICE" in env
    hosts = (params.get("hostaddr") or params.get("host") or env.get("PGHOSTADDR") or env.get("PGHOST")
             or ("*" if service else "")).split(",")
    ports = (params.get("port") or env.get("PGPORT") or "").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    out: set[tuple[str, int | None]] = set()
    for host, port in zip(hosts, ports, strict=False):
        try:
            number: int | None = int(port) if port.strip() else (None if service else DEFAULT_PORT)
        except ValueError:
            number = None
        out.add(("*" if host == "*" else _host(host), number))
    return out


def _dbname(params: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    """The database libpq would open: dbname, else PGDATABASE, else the user's name; None: unknown."""
    if name := params.get("dbname") or env.get("PGDATABASE"):
        return name
    if "service" in params or "PGSERVICE" in env:
        return None
    try:
        return params.get("user") or env.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):
        return None


def _parse(conninfo: str, setting: str) -> dict[str, str]:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except ProgrammingError:  # its message may quote the password: not repeated
        raise InvalidConfig(f"{setting}: libpq cannot read {redact_uri(conninfo)} as a connection URL") from None


def may_be_same_database(a: str, b: str, *, settings: tuple[str, str],
                         env: Mapping[str, str] | None = None) -> bool:
    """Whether connection strings ``a`` and ``b`` (of ``settings``, named in errors) may open
    the same database: a (host, port) in common, or unknown, and the same database name, or
    unknown."""
    env = os.environ if env is None else env
    pa, pb = _parse(a, settings[0]), _parse(b, settings[1])
    ea, eb = _endpoints(pa, env), _endpoints(pb, env)
    near = any((ha == hb or "*" in (ha, hb)) and (qa == qb or None in (qa, qb))
               for ha, qa in ea for hb, qb in eb)
    da, db = _dbname(pa, env), _dbname(pb, env)
    return near and (da == db or None in (da, db))


def tcp_endpoints(conninfo: str, setting: str) -> list[tuple[str, int]]:
    """The (host, port) pairs libpq would reach over TCP for ``conninfo`` (``hostaddr`` before
    ``host``, ``?host=``/``?port=`` query parameters and lists included); Unix sockets left out.
    A connection string libpq cannot read, or a port past 65535, is an InvalidConfig naming
    ``setting`` (its password never quoted)."""
    params = _parse(conninfo, setting)
    hosts = (params.get("hostaddr") or params.get("host") or "").split(",")
    ports = (params.get("port") or "").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    out = []
    for host, port in zip(hosts, ports, strict=False):
        host = host.strip().strip("[]")
        if port.strip().isdigit() and not 0 < int(port) < 65536:
            raise InvalidConfig(f"{setting}: port {int(port)} of {redact_uri(conninfo)} is not one from 1 to 65535")
        if host and not host.startswith(("/", "@")):
            out.append((host, int(port) if port.strip().isdigit() else DEFAULT_PORT))
    return out


__all__ = ["may_be_same_database", "tcp_endpoints"]
