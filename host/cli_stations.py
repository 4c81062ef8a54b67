"""``python -m host balances stations|add|set|rm|test``: relay stations from the shell. When a
server runs on the same state directory the command goes through it (its control socket), so
the change applies at once; otherwise a host of the command's own does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from .cli_output import UsageError, assignments, first_line, json_text, print_json, table
from .config import HostConfig
from .control import control_client
from .plugins.usage_scripts import Unreadable, read_script

if TYPE_CHECKING:
    from .cli_output import MakeHost, Started
    from .plugin_host import PluginHost



class Stations(Protocol):
    """The station calls, in-process (``host.stations``) or through a running server."""

    async def list(self) -> list[dict[str, Any]]: ...
    async def schema(self, plugin: str) -> dict[str, Any]: ...
    async def add(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def set(self, name: str, values: dict[str, Any], replace: bool) -> dict[str, Any]: ...
    async def remove(self, name: str) -> dict[str, Any]: ...
    async def test(self, name: str) -> dict[str, Any]: ...


class _Local:
    def __init__(self, host: PluginHost) -> None:
        self.host = host

    async def list(self) -> list[dict[str, Any]]:
        return self.host.stations.list()

    async def schema(self, plugin: str) -> dict[str, Any]:
        return self.host.config_schema(plugin)

    async def add(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.host.stations.add(body["name"], plugin=body.get("plugin"), script=body.get("script"),
                                            title=body.get("title"), low_balance=body.get("lowBalance"),
                                            config=body.get("config"))

    async def set(self, name: str, values: dict[str, Any], replace: bool) -> dict[str, Any]:
        return await self.host.stations.set_config(name, values, replace=replace)

    async def remove(self, name: str) -> dict[str, Any]:
        return await self.host.stations.remove(name)

    async def test(self, name: str) -> dict[str, Any]:
        return await self.host.stations.test(name)


class _Remote:
    def __init__(self, server: Any) -> None:
        self.server = server

    async def list(self) -> list[dict[str, Any]]:
        return await self.server.request("GET", "/api/stations")

    async def schema(self, plugin: str) -> dict[str, Any]:
        return await self.server.request("GET", f"/api/plugins/{quote(plugin)}/schema")

    async def add(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.server.request("POST", "/api/stations", body)

    async def set(self, name: str, values: dict[str, Any], replace: bool) -> dict[str, Any]:
        return await self.server.request("PUT", f"/api/stations/{quote(name)}/config" + ("?replace=1" if replace else ""),
                                         values)

    async def remove(self, name: str) -> dict[str, Any]:
        return await self.server.request("DELETE", f"/api/stations/{quote(name)}")

    async def test(self, name: str) -> dict[str, Any]:
        return await self.server.request("POST", f"/api/stations/{quote(name)}/test")


def register(balances: argparse.ArgumentParser, common: argparse.ArgumentParser, started: Started,
             make_host: MakeHost) -> None:
    """The station subcommands of ``balances`` (which alone still prints the balances table)."""

    @asynccontextmanager
    async def stations(args: argparse.Namespace, config: HostConfig) -> AsyncIterator[Stations]:
        async with control_client(config.state_path) as server:
            if server is not None:
                yield _Remote(server)
                return
            async with started(make_host(config), args) as host:
                yield _Local(host)

    async def values_for(s: Stations, args: argparse.Namespace, plugin: str | None) -> dict[str, Any]:
        if not args.values and not args.from_env:
            return {}
        schema = await s.schema(plugin) if plugin else {}
        return assignments(args, schema)

    async def list_(args: argparse.Namespace, config: HostConfig) -> int:
        async with stations(args, config) as s:
            items = await s.list()
        if args.json:
            print_json(items)
        elif not items:
            print("no stations: add one with `python -m host balances add NAME --plugin ID KEY=VALUE ...`",
                  file=sys.stderr)
        else:
            rows = [["STATION", "TITLE", "KIND", "PLUGIN", "ORIGIN", "LOW BALANCE", "ERROR"]]
            rows += [[i["name"], i["title"], i["kind"], i["plugin"], i["origin"],
                      "-" if i["lowBalance"] is None else f"{i['lowBalance']:g}", first_line(i["error"] or "", 60)]
                     for i in items]
            sys.stdout.write(table(rows))
        return 0

    async def add(args: argparse.Namespace, config: HostConfig) -> int:
        script = None
        if args.script is not None:
            try:  # as a plugin directory's script is read: UTF-8, or UTF-16 with its BOM
                script = read_script(Path("/dev/stdin" if args.script == "-" else args.script))
            except Unreadable as exc:
                raise UsageError(f"the usage script: {exc}") from None
        async with stations(args, config) as s:
            body = {"name": args.name, "plugin": args.plugin, "script": script, "title": args.title,
                    "lowBalance": args.low_balance, "config": await values_for(s, args, args.plugin)}
            print_json(await s.add({k: v for k, v in body.items() if v is not None}))  # secrets masked
        return 0

    async def set_(args: argparse.Namespace, config: HostConfig) -> int:
        async with stations(args, config) as s:
            station = next((i for i in await s.list() if i["name"] == args.name), None)
            if station is None:
                raise UsageError(f"no station named {args.name!r}; `python -m host balances stations` lists them")
            values = await values_for(s, args, station["plugin"] if station["kind"] == "plugin" else None)
            if not values and not args.replace:
                raise UsageError("nothing to set: give KEY=VALUE or --from-env KEY=VAR")
            print_json(await s.set(args.name, values, args.replace))
        return 0

    async def remove(args: argparse.Namespace, config: HostConfig) -> int:
        async with stations(args, config) as s:
            print_json(await s.remove(args.name))
        return 0

    async def test(args: argparse.Namespace, config: HostConfig) -> int:
        async with stations(args, config) as s:
            report = await s.test(args.name)
        if args.json:
            print_json(report)
        else:
            r = report["result"]
            kind = r.get("errorType") or ("invalid" if r.get("invalid") else r["status"])
            state = "ok" if report["ok"] else f"{kind}: {r.get('errorMessage')}"
            amount = "" if r.get("balance") is None else f" {r['balance']:g} {r.get('currency') or ''}".rstrip()
            out = [f"station {report['station']}: {state}{amount}"]
            out += [f"  request  {line.split('fetchJson ', 1)[-1]}" for line in report["requests"]]
            out += ["  answer shape:", *("    " + line for line in json_text(report["shape"]).splitlines())]
            sys.stdout.write("\n".join(out) + "\n")
        return 0 if report["ok"] else 1

    sub = balances.add_subparsers(dest="balances_command", metavar="{stations,add,set,rm,test}")
    c = sub.add_parser("stations", help="list the relay stations (host.toml's and added ones)", parents=[common])
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=list_)

    def config_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("values", nargs="*", metavar="KEY=VALUE",
                       help="the station's config: baseUrl=https://relay.example (VALUE read as JSON if it is)")
        c.add_argument("--from-env", action="append", metavar="KEY=VAR",
                       help="take KEY's value from $VAR (for keys: not on the command line); repeatable")

    c = sub.add_parser("add", help="add a station: a provider plugin and its config, or a usage script",
                       parents=[common])
    c.add_argument("name", help="the station's name: its key in balances, history and alerts")
    kind = c.add_mutually_exclusive_group(required=True)
    kind.add_argument("--plugin", metavar="ID", help="the balance plugin that serves it (newapi, deepseek, ...)")
    kind.add_argument("--script", metavar="FILE", help="a cc-switch usage script (- reads stdin)")
    c.add_argument("--title", help="its display name")
    c.add_argument("--low-balance", type=float, metavar="N", help="alert when its balance falls below N")
    config_args(c)
    c.set_defaults(run=add)

    c = sub.add_parser("set", help="change a station's config (restarts its provider's workers)", parents=[common])
    c.add_argument("name")
    config_args(c)
    c.add_argument("--replace", action="store_true", help="replace the stored config (default: merge)")
    c.set_defaults(run=set_)

    c = sub.add_parser("rm", help="remove an added station (its history stays)", parents=[common])
    c.add_argument("name")
    c.set_defaults(run=remove)

    c = sub.add_parser("test", help="ask one station now: the request made and the answer's shape, secrets "
                       "masked (exit 1 if it fails)", parents=[common])
    c.add_argument("name")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=test)


__all__ = ["register"]
