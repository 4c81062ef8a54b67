"""``python -m host list|info|status|enable|disable`` and ``config reset``: the plugins as an
operator runs them. A change goes through a server running on the same state directory when
there is one (it applies it at once); otherwise it is stored where that server will read it.
``list`` and ``info`` show the plugins as that server has them; with none, as a host started for
the command does (said on a terminal's stderr)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec

from .cli_output import UsageError, first_line, print_json, table
from .config import HostConfig
from .control import RemoteError, control_client
from .info import PluginInfo
from .plugins.host_lists import switch_store
from .plugins.lifecycle import SERVING
from .plugins.switches import Switches
from .plugins.usage_scripts import discover_sources

if TYPE_CHECKING:
    from .cli_output import MakeHost, Started

NO_SERVER = 3  # `status` when no server serves the state directory


def register(sub: argparse._SubParsersAction, config_sub: argparse._SubParsersAction,
             common: argparse.ArgumentParser, started: Started, make_host: MakeHost) -> None:

    async def shown(args: argparse.Namespace, config: HostConfig, one: str | None = None) -> list[PluginInfo]:
        """The plugins (or ``one``) as the server serving the state directory has them: a host
        started here would show its own workers and states, not the server's (a plugin in error
        there, running here)."""
        async with control_client(config.state_path) as server:
            if server is not None:
                doc = await server.request("GET", "/api/plugins" if one is None else f"/api/plugins/{quote(one)}")
                try:
                    return msgspec.convert(doc if one is None else [doc], list[PluginInfo], strict=False)
                except msgspec.ValidationError as exc:
                    raise RemoteError(f"the server's plugin list could not be read ({exc}): is it of another "
                                      "version?", type="ControlError", status=0) from None
        if sys.stderr.isatty():  # said to the operator at a terminal, not to a script reading stderr
            print(f"(no server serves {config.state_path}: these are the states of a host started for this "
                  "command)", file=sys.stderr)
        async with started(make_host(config), args) as host:
            return host.plugins() if one is None else [host.plugin(one)]  # PluginNotFound: exit 1

    async def list_(args: argparse.Namespace, config: HostConfig) -> int:
        infos = await shown(args, config)
        infos = [i for i in infos if (not args.state or i.state in args.state)
                 and (not args.capability or args.capability in i.capabilities)]
        if args.json:
            print_json(infos)
            return 0
        rows = [["ID", "STATE", "VERSION", "WORKERS", "EXPORTS", "ERROR"]]
        rows += [[i.id, i.state, i.version or "-", str(len(i.workers)), ",".join(i.exports) or "-",
                  first_line(i.error or "")] for i in infos]
        sys.stdout.write(table(rows, right=(3,)))
        return 0

    async def info(args: argparse.Namespace, config: HostConfig) -> int:
        [found] = await shown(args, config, args.id)
        print_json(found)
        return 0 if found.state in SERVING else 1

    async def status(args: argparse.Namespace, config: HostConfig) -> int:
        async with control_client(config.state_path) as server:
            health = await server.request("GET", "/healthz", accept=(503,)) if server is not None else None
        if health is None:
            print(f"no server is serving {config.state_path} (start one: python -m host serve)", file=sys.stderr)
            return NO_SERVER
        if args.json:
            print_json(health)
        else:
            state = "draining" if health["draining"] else "ready" if health["ready"] else "starting"
            print(f"server: {state}, {len(health['plugins'])} plugin(s)")
            rows = [["ID", "STATE"], *([pid, st] for pid, st in sorted(health["plugins"].items()))]
            sys.stdout.write(table(rows))
        return 0 if health["ready"] else 1

    def switch(enabled: bool) -> Callable[[argparse.Namespace, HostConfig], object]:
        async def run(args: argparse.Namespace, config: HostConfig) -> int:
            action = "enable" if enabled else "disable"
            async with control_client(config.state_path) as server:
                if server is not None:
                    print_json(await server.request("POST", f"/api/plugins/{quote(args.id)}/{action}"))
                    return 0
            if args.id not in {s.id for s in discover_sources(config)}:
                raise UsageError(f"no plugin {args.id!r} in {', '.join(map(str, config.plugin_dirs))}")
            switches, store = Switches(config), switch_store(config)
            try:  # the file, or the [state] database's table (read first: the entry is merged)
                await store.verify()
                switches.open(store)
                await switches.set(args.id, enabled, "cli")
            finally:
                store.close()
            print(f"{args.id}: {action}d (no server runs on {config.state_path}: it applies at the next start)")
            return 0
        return run

    async def reset(args: argparse.Namespace, config: HostConfig) -> int:
        async with control_client(config.state_path) as server:
            if server is not None:
                print_json(await server.request("DELETE", f"/api/plugins/{quote(args.id)}/config"))
                return 0
        async with started(make_host(config), args) as host:
            print_json(await host.reset_config(args.id, by="cli"))
        return 0

    s = sub.add_parser("list", help="list plugins and their state", parents=[common])
    s.add_argument("--json", action="store_true")
    s.add_argument("--state", action="append", metavar="STATE",
                   help="only plugins in this state (running, disabled, error, ...); repeatable")
    s.add_argument("--capability", metavar="NAME", help="only plugins with this capability (balance, an event)")
    s.set_defaults(run=list_)
    s = sub.add_parser("info", help="one plugin as JSON: state, version, exports, permissions, workers, counters",
                       parents=[common])
    s.add_argument("id", help="ID or ID@VERSION")
    s.set_defaults(run=info)
    s = sub.add_parser("status", help="the running server's state and its plugins' (exit 1 if not ready, "
                       f"{NO_SERVER} if no server serves the state directory)", parents=[common])
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=status)
    for name, enabled, what in (("enable", True, "start a plugin and keep it enabled across restarts"),
                                ("disable", False, "stop a plugin and keep it disabled across restarts")):
        s = sub.add_parser(name, help=what, parents=[common])
        s.add_argument("id")
        s.set_defaults(run=switch(enabled))
    c = config_sub.add_parser("reset", help="forget a plugin's stored config (host.toml's stays) and restart it",
                              parents=[common])
    c.add_argument("id")
    c.set_defaults(run=reset)


__all__ = ["register"]
