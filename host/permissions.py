"""A plugin's declared permissions and the Deno flags they become (nothing by default)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import msgspec

from .errors import InvalidConfig

Grant = list[str] | bool
KINDS = ("net", "read", "write", "env", "run", "ffi", "sys")
_PATH_KINDS = ("read", "write", "ffi")

# Denied to every worker with network access unless its permissions say allowPrivateNetwork:
# Deno checks the deny list against the resolved address at connect time, so an allowed host
# name that resolves (or redirects) to one of these is refused (DENO_FACTS.md, Q2).
PRIVATE_NETWORKS = (
    "0.0.0.0/8",        # "this network": 0.0.0.0 reaches loopback on Linux
    "127.0.0.0/8",      # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",    # CGNAT (RFC 6598)
    "169.254.0.0/16",   # link-local, cloud metadata at 169.254.169.254
    "[::]", "[::1]",    # IPv6 unspecified and loopback
)
# Deno 2.9 accepts IPv6 addresses but no IPv6 CIDR in --deny-net ("invalid host: '[fc00::]/7'"),
# so unique-local (fc00::/7) and link-local (fe80::/10) IPv6 ranges cannot be denied this way.

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
    return any(ip in n for n in _BLOCKED)  # `in` is False across IP versions


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
        for kind in KINDS:
            grant = getattr(self, kind)
            if isinstance(grant, list):
                for entry in grant:
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
            raise InvalidConfig(f"{where}: {exc}") from None

    @classmethod
    def merge(cls, *parts: Any, where: str = "permissions") -> Permissions:
        """Seed 001's merge: each part parsed (``"none"`` and None add nothing, ``"inherit"``
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
                   https_only: bool = False, keep_reachable: tuple[str, ...] = ()) -> list[str]:
        """Flags for ``deno run``: the grants, plus the worker's own socket and module.
        ``keep_reachable``: loopback addresses (the host's egress proxy) left out of the deny list."""
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
        if self.has_net and not self.allow_private_network:
            flags.append("--deny-net=" + ",".join(deny_list(keep_reachable)))
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
        for kind in KINDS:
            grant = getattr(self, kind)
            for entry in grant if isinstance(grant, list) else []:
                if "*" in entry or (kind == "net" and "/" in entry):
                    out.append(f"{kind}: {entry!r} is a wildcard or range")
        if isinstance(self.net, list):
            if len(self.net) > max_net_hosts:
                out.append(f"net: {len(self.net)} hosts, more than {max_net_hosts}")
            for entry in self.net:
                if _is_internal(split_host_port(entry)[0]):
                    out.append(f"net: {entry!r} is a loopback or private address")
        if self.allow_private_network:
            out.append("allowPrivateNetwork: loopback, private and metadata addresses are reachable")
        return out


_WHAT = {"net": "host", "read": "file", "write": "file", "env": "environment variable",
         "sys": "system information API", "run": "the processes it starts", "ffi": "native libraries"}


def split_host_port(entry: str) -> tuple[str, str | None]:
    """``host[:port]`` with IPv6 in brackets: ("api.x.com", "443"), ("[::1]", None)."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, port
    return entry, None


def _is_internal(host: str) -> bool:
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
    egress proxy must stay reachable while the rest of loopback stays denied)."""
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
    return out
