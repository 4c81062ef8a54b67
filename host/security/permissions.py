"""A plugin's declared permissions and the Deno flags they become (nothing by default)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InvalidConfig
from .permission_names import KINDS, kind_hint

Grant = list[str] | bool
_PATH_KINDS = ("read", "write", "ffi")
# Never in a grant: control characters (a NUL ends a path in every system call; a newline or an
# escape sequence forges what the log and the approval prompt show) and the bidirectional
# controls that reorder or hide the text around them (Trojan Source). Manifests' text too.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# Denied to every worker with network access unless its permissions say allowPrivateNetwork:
# Deno checks the deny list against the resolved address at connect time, so an allowed host
# name that resolves (or redirects) to one of these is refused (Deno 2.9 checks --deny-net against the resolved address).
PRIVATE_NETWORKS = (
    "0.0.0.0/8",        # "this network": 0.0.0.0 reaches loopback on Linux
    "127.0.0.0/8",      # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",    # CGNAT (RFC 6598)
    "169.254.0.0/16",   # link-local, cloud metadata at 169.254.169.254
    "[::]", "[::1]",    # IPv6 unspecified and loopback
)
# Deno 2.9 accepts IPv6 addresses but no IPv6 CIDR in --deny-net ("invalid host: '[fc00::]/7'"),
# so unique-local (fc00::/7) and link-local (fe80::/10) IPv6 ranges cannot be denied this way:
# the machine's own addresses in them are denied one by one (local_addresses), other machines'
# only by the egress proxy.

# What grants may list, for manifests and /execute alike: they become one command-line argument
# per kind, which Linux caps at 128 KiB (and all of them with the environment at ARG_MAX, 2 MiB
# here); past it the spawn failed with E2BIG, retried until the call's deadline. One entry is a
# path (PATH_MAX) or a host name (253 characters, 63 a label, or Deno refuses to start).
MAX_ENTRY_CHARS, MAX_HOST_CHARS, MAX_LABEL_CHARS = 4096, 253, 63
MAX_GRANT_ENTRIES, MAX_GRANT_BYTES = 512, 64 * 1024  # every kind together

# Environment variables a worker never gets, whatever its grant: the host's own settings and
# secrets (PLUGIN_HOST_SECRET_KEY, PLUGIN_HOST_ADMIN_TOKEN, ...) and Deno's (DENO_DIR is set by
# the host; DENO_PERMISSION_BROKER_PATH would make Deno ignore every permission flag).
RESERVED_ENV_PREFIXES = ("PLUGIN_HOST_", "DENO_")
# systemd's, for the service's main process alone (sd_notify.py): with them a plugin could say the
# host is ready, stopping, or alive when it is not
RESERVED_ENV_NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

_LOCAL_TTL = 5.0  # seconds the machine's addresses are reused before being read again
_local_cache: tuple[float, frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]] = (-_LOCAL_TTL, frozenset())


def local_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of this machine's interfaces (Linux: /proc/net/fib_trie for IPv4, every
    local one including secondaries; /proc/net/if_inet6 for IPv6), read again when older than
    a few seconds so that an address added while the host runs is covered by the next spawn."""
    global _local_cache
    now = time.monotonic()
    if now - _local_cache[0] < _LOCAL_TTL:
        return _local_cache[1]
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    try:
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                text = line.strip()
                if text.startswith(("|--", "+--")):
                    last = text[3:].strip().split("/")[0]
                elif text.startswith("/32 host LOCAL") and last:
                    found.add(ipaddress.IPv4Address(last))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError, IndexError):
        pass
    _local_cache = (now, frozenset(found))
    return _local_cache[1]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What the egress proxy refuses to connect to: PRIVATE_NETWORKS, plus the IPv6 ranges Deno's
# --deny-net cannot express.
_BLOCKED = (*(ipaddress.ip_network(n.strip("[]")) for n in PRIVATE_NETWORKS),
            ipaddress.ip_network("fc00::/7"), ipaddress.ip_network("fe80::/10"))
_EMBEDS_V4 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))  # compat, NAT64


def is_internal(ip: IPAddress) -> bool:
    """Loopback, private, CGNAT, link-local/metadata or unspecified, also when an IPv6
    address carries such an IPv4 one (mapped, compatible, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = ip.ipv4_mapped or ip.sixtofour
        if v4 is None and any(ip in n for n in _EMBEDS_V4):
            v4 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if v4 is not None and is_internal(v4):
            return True
    return any(ip in n for n in _BLOCKED) or ip in local_addresses()  # `in` is False across IP versions


def _covers(kind: str, allowed: str, entry: str) -> bool:
    """An override's entry ``allowed`` lets a declared ``entry`` through."""
    if allowed == entry:
        return True
    if kind == "net":
        host, _ = split_host_port(entry)
        allowed_host, allowed_port = split_host_port(allowed)
        return allowed_port is None and allowed_host == host
    if kind in _PATH_KINDS:  # as the sandbox will read them: "a/../secret" is not under "a"
        allowed, entry = os.path.normpath(allowed), os.path.normpath(entry)
        return entry == allowed or entry.startswith(allowed.rstrip("/") + "/")
    return False


class Permissions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """``true`` grants the whole kind; a list grants those entries; the default grants nothing."""

    net: Grant = []
    read: Grant = []
    write: Grant = []
    env: Grant = []
    run: Grant = []
    ffi: Grant = []
    sys: Grant = []
    # Lift the deny list of PRIVATE_NETWORKS (local development and tests against a local server).
    allow_private_network: bool = msgspec.field(default=False, name="allowPrivateNetwork")

    def __post_init__(self) -> None:
        lists = [(kind, g) for kind in KINDS if isinstance(g := getattr(self, kind), list)]
        if (n := sum(len(g) for _, g in lists)) > MAX_GRANT_ENTRIES:
            raise InvalidConfig(f"permissions.{max(lists, key=lambda kg: len(kg[1]))[0]}: {n} entries in all, "
                                f"more than the {MAX_GRANT_ENTRIES} the grants may list")
        self._check_entries(lists)
        if (size := sum(len(e.encode("utf-8", "surrogatepass")) + 1 for _, g in lists for e in g)) > MAX_GRANT_BYTES:
            raise InvalidConfig(f"permissions: the entries come to {size} bytes, more than the {MAX_GRANT_BYTES} "
                                "the grants may hold (a worker's command line carries them)")

    @staticmethod
    def _check_entries(lists: list[tuple[str, list[str]]]) -> None:
        for kind, grant in lists:
            for entry in grant:
                if len(entry) > MAX_ENTRY_CHARS or (kind == "net" and _long_host(entry)):
                    cap = f"{MAX_HOST_CHARS} characters (a label {MAX_LABEL_CHARS})" if kind == "net" \
                        else f"{MAX_ENTRY_CHARS} characters"
                    raise InvalidConfig(f"permissions.{kind}: entry {entry[:40]!r}{'...' * (len(entry) > 40)} "
                                        f"({len(entry)} characters) is longer than an entry may be: {cap}")
                if (found := CONTROL.search(entry) or BIDI.search(entry)) is not None:
                    what = "bidirectional control" if BIDI.match(found.group()) else "control"
                    raise InvalidConfig(f"permissions.{kind}: entry {entry!r} contains the {what} "
                                        f"character U+{ord(found.group()):04X}")
                if not entry or "," in entry or entry.strip() != entry:
                    raise InvalidConfig(f"permissions.{kind}: invalid entry {entry!r}")
                if entry in ("inherit", "*"):
                    raise InvalidConfig(
                        f"permissions.{kind}: {entry!r} is not allowed; list what is needed"
                    )

    @classmethod
    def parse(cls, raw: Any, *, where: str = "permissions") -> Permissions:
        """Validate a manifest's ``permissions`` value; errors name the field."""
        if isinstance(raw, Permissions):
            return raw
        if raw is None or raw == "none":
            return cls()
        if raw == "inherit":
            raise InvalidConfig(f'{where}: "inherit" is not allowed; list what is needed')
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise InvalidConfig(f"{where}: {exc}{kind_hint(str(exc))}") from None

    @classmethod
    def merge(cls, *parts: Any, where: str = "permissions") -> Permissions:
        """The Isolate engine's permission merge: each part parsed (``"none"`` and None add nothing, ``"inherit"``
        is refused), lists joined without duplicates in first-seen order, ``true`` (a whole
        kind) absorbing any list, and allowPrivateNetwork set if any part sets it."""
        merged: dict[str, Any] = {}
        private = False
        for i, raw in enumerate(parts):
            part = cls.parse(raw, where=f"{where}[{i}]")
            private = private or part.allow_private_network
            for kind in KINDS:
                grant, have = getattr(part, kind), merged.get(kind, [])
                if grant is True or have is True:
                    merged[kind] = True
                elif isinstance(grant, list):
                    merged[kind] = have + [e for e in grant if e not in have]
        return cls(**merged, allow_private_network=private)

    def narrowed(self, override: Mapping[str, Any]) -> Permissions:
        """What is left of these grants under the operator's override (``[plugins.ID.permissions]``,
        ``{kind: true | false | [entries]}``): a kind it names keeps only what both allow (a net
        entry without a port covers the host's every port; a path covers what is under it); a
        kind it does not name is unchanged. The override never adds anything."""
        out: dict[str, Any] = {}
        for kind in KINDS:
            mine, theirs = getattr(self, kind), override.get(kind, True)
            if theirs is True:
                out[kind] = mine
            elif not theirs:  # false, [] or null: revoked
                out[kind] = []
            elif mine is True:
                out[kind] = list(theirs)
            else:
                out[kind] = [e for e in mine if any(_covers(kind, t, e) for t in theirs)]
        return msgspec.structs.replace(self, **out)

    @property
    def has_net(self) -> bool:
        """Any network granted: only then do the deny list and the egress proxy apply."""
        return self.net not in ([], False)

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) in ([], False) for k in KINDS)

    def key(self) -> tuple:
        """Hashable identity, for pooling workers by permission set."""
        grants = (getattr(self, k) for k in KINDS)
        return (*(g if isinstance(g, bool) else tuple(sorted(g)) for g in grants), self.allow_private_network)

    def net_grant(self, *, https_only: bool = False) -> Grant:
        """The net grant as Deno gets it. ``https_only`` narrows host names given without a port
        to port 443 and refuses anything it cannot narrow (InvalidConfig)."""
        if not https_only or not self.has_net:
            return self.net
        if self.net is True:
            raise InvalidConfig("permissions.net: true cannot be narrowed to HTTPS (security.https_only); "
                                "list the hosts")
        out = []
        for entry in self.net:
            port = split_host_port(entry)[1]
            if port is None:
                out.append(f"{entry}:443")
            elif port == "443":
                out.append(entry)
            else:
                raise InvalidConfig(f"permissions.net: {entry!r} is not port 443 (security.https_only)")
        return out

    def deno_flags(self, *, base_dir: Path, socket_path: str, read_extra: list[str],
                   https_only: bool = False, keep_reachable: tuple[str, ...] = (),
                   always_deny: Iterable[str] = ()) -> list[str]:
        """Flags for ``deno run``: the grants, plus the worker's own socket and module.
        ``keep_reachable``: loopback addresses (the host's egress proxy) left out of the deny list;
        ``always_deny``: ``host:port`` entries denied even with allowPrivateNetwork (the host's
        own listening addresses)."""
        flags: list[str] = []
        for kind in KINDS:
            grant = self.net_grant(https_only=https_only) if kind == "net" else getattr(self, kind)
            entries: list[str] = []
            if kind in _PATH_KINDS and isinstance(grant, list):
                entries = [str((base_dir / e).resolve()) for e in grant]
            elif isinstance(grant, list):
                entries = list(grant)
            if kind == "read":
                entries = [socket_path, *read_extra, *entries]
            elif kind == "write":
                entries = [socket_path, *entries]
            elif kind == "net":
                entries = [f"unix:{socket_path}", *entries]
            if grant is True:
                flags.append(f"--allow-{kind}")
            elif entries:
                flags.append(f"--allow-{kind}=" + ",".join(entries))
        if self.has_net:
            deny = [] if self.allow_private_network else deny_list(keep_reachable)
            deny += [d for d in always_deny if d not in deny]
            if deny:
                flags.append("--deny-net=" + ",".join(deny))
        return flags

    def findings(self, *, max_net_hosts: int = 10) -> list[str]:
        """What strict mode objects to: grants of a whole kind, wildcards and ranges, long host
        lists, loopback or private hosts, and any process or native-library grant."""
        out: list[str] = []
        for kind in ("net", "read", "write", "env", "sys"):
            if getattr(self, kind) is True:
                out.append(f"{kind}: true grants every {_WHAT[kind]}; list what is needed")
        for kind in ("run", "ffi"):
            if getattr(self, kind) not in ([], False):
                out.append(f"{kind}: {_WHAT[kind]} run outside the sandbox")
        if isinstance(self.sys, list) and self.sys:
            out.append(f"sys: {self.sys} reveals information about the machine")
        for kind in KINDS:
            grant = getattr(self, kind)
            for entry in grant if isinstance(grant, list) else []:
                if "*" in entry or (kind == "net" and "/" in entry):
                    out.append(f"{kind}: {entry!r} is a wildcard or range")
        if isinstance(self.net, list):
            if len(self.net) > max_net_hosts:
                out.append(f"net: {len(self.net)} hosts, more than {max_net_hosts}")
            for entry in self.net:
                if internal_host(split_host_port(entry)[0]):
                    out.append(f"net: {entry!r} is a loopback or private address")
        if self.allow_private_network:
            out.append("allowPrivateNetwork: loopback, private and metadata addresses are reachable")
        return out


_WHAT = {"net": "host", "read": "file", "write": "file", "env": "environment variable",
         "sys": "system information API", "run": "the processes it starts", "ffi": "native libraries"}


def _long_host(entry: str) -> bool:
    """A net entry whose host name is longer than a DNS name (or one of its labels) may be."""
    host = split_host_port(entry)[0]
    return not host.startswith("[") and (len(host) > MAX_HOST_CHARS or any(
        len(label) > MAX_LABEL_CHARS for label in host.split(".")))


def split_host_port(entry: str) -> tuple[str, str | None]:
    """``host[:port]`` with IPv6 in brackets: ("api.x.com", "443"), ("[::1]", None)."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, port
    return entry, None


def internal_host(host: str) -> bool:
    """A host named in a grant that points inside: ``localhost`` names, or an address or range
    the standard library calls private, loopback, link-local or unspecified, or CGNAT. (Wider
    than ``is_internal``, which decides connections: a finding only warns.)"""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        network = ipaddress.ip_network(name, strict=False)
    except ValueError:
        return False
    addr = network.network_address
    return addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_unspecified or (
        addr in ipaddress.ip_network("100.64.0.0/10"))


def deny_list(keep_reachable: tuple[str, ...] = ()) -> list[str]:
    """PRIVATE_NETWORKS with each address in ``keep_reachable`` cut out of its range (the
    egress proxy must stay reachable while the rest of loopback stays denied), plus every
    address of this machine's own interfaces outside those ranges (a service bound to 0.0.0.0
    answers on them too)."""
    out: list[str] = []
    for entry in PRIVATE_NETWORKS:
        if entry.startswith("["):
            if entry.strip("[]") not in keep_reachable:
                out.append(entry)
            continue
        nets = [ipaddress.ip_network(entry)]
        for keep in keep_reachable:
            try:
                addr = ipaddress.ip_network(keep)
            except ValueError:
                continue
            if addr.version != 4:
                continue
            nets = [part for n in nets for part in
                    (n.address_exclude(addr) if addr.subnet_of(n) else [n])]
        out.extend(str(n) for n in sorted(nets))
    blocked = [ipaddress.ip_network(n.strip("[]")) for n in PRIVATE_NETWORKS]
    for ip in sorted(local_addresses(), key=lambda a: (a.version, int(a))):
        if str(ip) not in keep_reachable and not any(ip in n for n in blocked):
            out.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return out


# ------------------------------------------------------------------------------ file grants


@dataclass(frozen=True)
class Sandbox:
    """Where one worker's file grants may reach. Relative entries resolve inside ``data_dir``
    (the plugin's own directory under the state directory, also its working directory);
    nothing may cover, or lie inside, a ``protected`` path (the host's state, its sockets, the
    plugin directories, /proc), except the plugin's own data directory and, for reading, its
    own code. Entries are checked as written and with symlinks followed (Deno checks the path
    as written, the kernel follows the links)."""

    data_dir: Path
    own_root: Path | None = None
    protected: tuple[tuple[Path, str], ...] = ()
    secret_env: tuple[str, ...] = ()

    def resolve(self, perms: Permissions, *, where: str = "permissions") -> Permissions:
        """``perms`` with every file entry absolute; InvalidConfig naming the field for any
        entry (or whole-kind grant) that would reach something protected, and for an
        environment variable the host never passes on."""
        changes: dict[str, Any] = {}
        for kind in _PATH_KINDS:
            grant = getattr(perms, kind)
            if grant is True and kind != "ffi":
                what = self.protected[0][1] if self.protected else "every file"
                raise InvalidConfig(f"{where}.{kind}: true would cover {what} and every plugin's files; "
                                    f"list the paths the plugin needs")
            if isinstance(grant, list) and grant:
                changes[kind] = [self._entry(kind, e, where) for e in grant]
        if isinstance(perms.env, list):
            for name in perms.env:
                if reserved_env(name, self.secret_env):
                    raise InvalidConfig(
                        f"{where}.env: {name!r} is one of the host's own settings "
                        f"({', '.join([*(p + '*' for p in RESERVED_ENV_PREFIXES), *RESERVED_ENV_NAMES])}); "
                        f"a plugin never gets it")
        return msgspec.structs.replace(perms, **changes) if changes else perms

    def _entry(self, kind: str, entry: str, where: str) -> str:
        data = os.path.normpath(self.data_dir)
        if os.path.isabs(entry):
            path = os.path.normpath(entry)
        else:
            path = os.path.normpath(os.path.join(data, entry))
            if not _within(path, data):
                raise InvalidConfig(f"{where}.{kind}: {entry!r} leads out of the plugin's data directory "
                                    f"({data}), where relative paths resolve")
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError) as exc:  # Permissions refuses a NUL; this is a second line
            raise InvalidConfig(f"{where}.{kind}: {entry!r} cannot be resolved ({exc})") from None
        for candidate in dict.fromkeys((path, real)):
            if _within(candidate, data):
                continue
            if kind == "read" and self.own_root is not None and _within(candidate, str(self.own_root)):
                continue
            if kind != "read" and self.own_root is not None and _overlaps(candidate, str(self.own_root)):
                raise InvalidConfig(f"{where}.{kind}: {entry!r} reaches the plugin's own code "
                                    f"({self.own_root}); a plugin may never change it")
            for protected, what in self.protected:
                if _overlaps(candidate, str(protected)):
                    how = "is" if candidate == str(protected) else (
                        "covers" if _within(str(protected), candidate) else "lies inside")
                    raise InvalidConfig(f"{where}.{kind}: {entry!r} {how} {what} ({protected}); "
                                        f"no grant may reach it")
        return path


def reserved_env(name: str, extra: Iterable[str] = ()) -> bool:
    """An environment variable a worker never gets (RESERVED_ENV_PREFIXES, RESERVED_ENV_NAMES, or ``extra``)."""
    return name.startswith(RESERVED_ENV_PREFIXES) or name in RESERVED_ENV_NAMES or name in extra


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _overlaps(a: str, b: str) -> bool:
    return _within(a, b) or _within(b, a)


def reserved_entries(host: str, port: int) -> list[str]:
    """``--deny-net`` entries for a ``host:port`` a listener of the host uses: a wildcard host
    stands for every address of this machine (and loopback), a name for what it resolves to."""
    if host in ("", "0.0.0.0", "::", "[::]", "*"):
        ips = {*local_addresses(), ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"),
               ipaddress.IPv4Address("0.0.0.0")}
    else:
        try:
            ips = {ipaddress.ip_address(host.strip("[]"))}
        except ValueError:
            try:
                ips = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, port)}
            except (OSError, ValueError):
                ips = set()
    out = []
    for ip in sorted(ips, key=lambda a: (a.version, int(a))):
        out.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if ipaddress.IPv4Address("127.0.0.1") in ips or ipaddress.IPv6Address("::1") in ips:
        out.append(f"0.0.0.0:{port}")  # 0.0.0.0 reaches loopback on Linux
    return list(dict.fromkeys(out))


def beyond(asked: Permissions, allowed: Permissions) -> list[str]:
    """What ``asked`` grants that ``allowed`` does not, as ``kind: entry`` lines (entries
    compared as written; allowPrivateNetwork too)."""
    out: list[str] = []
    for kind in KINDS:
        new, old = getattr(asked, kind), getattr(allowed, kind)
        if old is True or new in ([], False):
            continue
        if new is True:
            out.append(f"{kind}: true")
        else:
            out.extend(f"{kind}: {entry}" for entry in new if entry not in old)
    if asked.allow_private_network and not allowed.allow_private_network:
        out.append("allowPrivateNetwork: true")
    return out
