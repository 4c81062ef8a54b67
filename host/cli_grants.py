"""``python -m host grants ID [--narrow KIND=VALUE ...] [--reset]``: the operator's grant override
of a plugin (plugins/overrides.py) from the shell. It narrows what the manifest declares (and
what host.toml's ``[plugins.ID.permissions]`` left), never widens; it is kept across restarts and
audited. Like ``config reset``, a change goes through a server running on the same state
directory when there is one (its workers restart with the grants left), else through a host
started for the command."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .cli_output import UsageError, print_json
from .config import HostConfig
from .control import control_client

if TYPE_CHECKING:
    from .cli_output import MakeHost, Started

KINDS = ("net", "read", "write", "env", "run", "ffi", "sys")


def parse_narrowing(items: list[str]) -> dict[str, Any]:
    """``["net=api.a.com,api.b.com", "env=false"]`` as an override: KIND=true|false|ENTRY[,ENTRY...]
    (an empty list, ``KIND=``, allows none of that kind). UsageError names the item at fault."""
    out: dict[str, Any] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        if not sep or kind not in KINDS:
            raise UsageError(f"--narrow {item!r}: expected KIND=true|false|ENTRY,ENTRY... with KIND one of "
                             f"{', '.join(KINDS)}")
        if kind in out:
            raise UsageError(f"--narrow: {kind} is given twice")
        low = value.strip().lower()
        out[kind] = True if low == "true" else False if low == "false" else \
            [v.strip() for v in value.split(",") if v.strip()]
    return out


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, started: Started,
             make_host: MakeHost) -> None:

    async def grants(args: argparse.Namespace, config: HostConfig) -> int:
        if args.reset and args.narrow:
            raise UsageError("give --narrow or --reset, not both")
        change = args.reset or bool(args.narrow)
        override = None if args.reset else parse_narrowing(args.narrow or [])
        path = f"/api/plugins/{quote(args.id)}/permissions"
        async with control_client(config.state_path) as server:
            if server is not None:
                if not change:
                    print_json(await server.request("GET", path))
                else:
                    print_json(await server.request("DELETE" if args.reset else "PUT", path, override))
                return 0
        async with started(make_host(config), args) as host:
            if change:
                print_json(await host.grant_overrides.set(args.id, override, by="cli"))
            else:
                print_json(host.grant_overrides.get(args.id))
        return 0

    s = sub.add_parser("grants", help="show or narrow what a plugin's workers may do (the operator's grant "
                       "override; it never widens the manifest's grants)", parents=[common])
    s.add_argument("id")
    s.add_argument("--narrow", action="append", metavar="KIND=VALUE",
                   help="narrow one kind: true, false, or ENTRY,ENTRY... within what the manifest declares "
                        f"(KIND: {', '.join(KINDS)}); repeatable; replaces the override as a whole")
    s.add_argument("--reset", action="store_true", help="remove the override (host.toml's narrowing stays)")
    s.set_defaults(run=grants)


__all__ = ["parse_narrowing", "register"]
