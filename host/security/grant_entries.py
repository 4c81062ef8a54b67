"""Grant entries as Deno reads its ``--allow-*`` flags: what it refuses is said in the author's terms.

Deno 2.9 refuses a worker whose flags hold an entry it cannot read ("URLs are not supported,
only domains and IPs", "invalid port", "ipv6 addresses must be enclosed in square brackets",
"unknown sys descriptor", "invalid env var name"), and the worker exits before it says hello: a
manifest with such an entry would load and then crash every worker it starts. Measured net forms
(deno 2.9.8): a host name with an optional
leading ``*.`` (labels of letters, digits, ``-`` and ``_``; a trailing dot), an IPv4 address or
range (``10.0.0.0/8``), an IPv6 address in brackets, each with an optional ``:PORT`` (0-65535).
A port with no host (``:80``) Deno takes too, as this machine's port: connecting to 127.0.0.1,
localhost and 0.0.0.0 on it, and listening on it on every interface; refused here with why.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from .permissions import Permissions

_LABELS = re.compile(r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")
MAX_PORT = 65535
# --allow-sys names Deno 2.9.8 accepts (each tried; "cpu", "geteuid" are refused)
SYS_NAMES = ("hostname", "osRelease", "osUptime", "loadavg", "networkInterfaces", "systemMemoryInfo", "uid",
             "gid", "cpus", "homedir", "getegid", "username", "statfs", "getPriority", "setPriority", "userInfo",
             "inspector")


def problems(perms: Permissions, *, skip: Iterable[str] = ()) -> Iterator[tuple[str, str, str]]:
    """(kind, entry, why) for each entry of ``perms`` Deno would refuse, ``skip`` left out (a
    manifest's ``{config.KEY}`` net entries, resolved later)."""
    skip = frozenset(skip)
    for kind in ("net", "sys", "env"):
        grant = getattr(perms, kind)
        for entry in grant if isinstance(grant, list) else ():
            if entry not in skip and (why := entry_problem(kind, entry)) is not None:
                yield kind, entry, why


def entry_problem(kind: str, entry: str) -> str | None:
    """Why Deno would refuse ``entry`` in ``--allow-KIND``, with what to write instead; None if it reads it."""
    if kind == "net":
        return net_entry_problem(entry)
    if kind == "sys" and entry not in SYS_NAMES:
        return f"is not a name Deno knows; one of {', '.join(SYS_NAMES)}"
    if kind == "env" and "=" in entry:
        return "is not a variable name: name the variable alone (its value comes from the environment)"
    return None


def net_entry_problem(entry: str) -> str | None:
    """Why Deno would refuse ``entry`` in ``--allow-net``, with what to write instead; None if it
    reads it. (Length, control characters, ``*`` and ``inherit`` are Permissions' checks.)"""
    if "://" in entry:
        try:
            parts = urlsplit(entry)
            host = parts.hostname or ""
            port = parts.port
        except ValueError:
            host, port = "", None
        named = f"{host}:{port}" if host and port else host
        return (f"is a URL; name its host: {named!r}" if named
                else "is a URL; a net grant names a host (api.example.com, or api.example.com:8443)")
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return "is not an IPv6 address in brackets ([2001:db8::1], or [2001:db8::1]:443)"
        if rest and not rest.startswith(":"):
            return "has something after the brackets other than :PORT ([2001:db8::1]:443)"
        return _port_problem(rest[1:]) if rest else None
    if entry.count(":") > 1:
        bare = entry.split("/", 1)[0]
        return f"is an IPv6 address without brackets: write '[{bare}]' ('[{bare}]:443' for one port)"
    host, sep, port = entry.partition(":")
    if sep and (why := _port_problem(port)) is not None:
        return why
    if sep and not host:  # measured (deno 2.9.8): ":80" is this machine's port 80, listening on every interface too
        return (f"names no host: Deno reads it as this machine's port {port} (127.0.0.1, localhost, 0.0.0.0), "
                f"listening on it on every interface included; name the host ('api.example.com:{port}')")
    if "/" in host:
        try:
            ipaddress.IPv4Network(host, strict=False)
            return None
        except ValueError:
            pass
        head = host.split("/", 1)[0]
        if _LABELS.match(head):
            return f"has a path; a grant names only the host: {head!r}"
        return "is neither a host name nor an IPv4 range (10.0.0.0/8)"
    if not host or not _LABELS.match(host):
        try:
            idna = host.encode("idna").decode("ascii")
        except UnicodeError:
            idna = ""
        if idna and idna != host and _LABELS.match(idna):
            return f"is an international name; write its IDNA form: {idna + sep + port!r}"
        return "is not a host name (letters, digits, '-', '_', one '.' between labels; '*.' in front for subdomains)"
    return None


def _port_problem(port: str) -> str | None:
    if port.isascii() and port.isdigit() and int(port) <= MAX_PORT:
        return None
    return "has a port that is not a number from 0 to 65535"
