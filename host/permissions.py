"""A plugin's declared permissions and the Deno flags they become (nothing by default)."""

from __future__ import annotations

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
        if raw is None or raw == "none":
            return cls()
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise InvalidConfig(f"{where}: {exc}") from None

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) in ([], False) for k in KINDS)

    def key(self) -> tuple:
        """Hashable identity, for pooling workers by permission set."""
        grants = (getattr(self, k) for k in KINDS)
        return (*(g if isinstance(g, bool) else tuple(sorted(g)) for g in grants), self.allow_private_network)

    def deno_flags(self, *, base_dir: Path, socket_path: str, read_extra: list[str]) -> list[str]:
        """Flags for ``deno run``: the grants, plus the worker's own socket and module."""
        flags: list[str] = []
        for kind in KINDS:
            grant = getattr(self, kind)
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
        if self.net not in ([], False) and not self.allow_private_network:
            flags.append("--deny-net=" + ",".join(PRIVATE_NETWORKS))
        return flags
