"""A plugin's declared permissions and the Deno flags they become (nothing by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from .errors import InvalidConfig

Grant = list[str] | bool
KINDS = ("net", "read", "write", "env", "run", "ffi", "sys")
_PATH_KINDS = ("read", "write", "ffi")


class Permissions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """``true`` grants the whole kind; a list grants those entries; the default grants nothing."""

    net: Grant = []
    read: Grant = []
    write: Grant = []
    env: Grant = []
    run: Grant = []
    ffi: Grant = []
    sys: Grant = []

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
        return tuple(
            getattr(self, k) if isinstance(getattr(self, k), bool) else tuple(sorted(getattr(self, k)))
            for k in KINDS
        )

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
        return flags
