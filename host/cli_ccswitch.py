"""``python -m host import-cc-switch``: the usage queries of cc-switch's providers (balances/ccswitch.py)
as this host's plugins and stations. First a plan (which values were found, never them; what is
not imported and why), then, unless ``--dry-run``: each script's call timeout kept, the scripts
written as ``<id>.usage.js`` (all or none), and their values and the built-in queries' stations
stored, through the server running on the state directory if there is one, else through a host
of the command's own."""

from __future__ import annotations

import argparse
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio

from .balances.ccswitch import DEFAULT_DB, Found, Skipped, read, safe_id
from .balances.ccswitch_link import shown
from .balances.station_files import station_plugins
from .balances.stations import MAX_TITLE
from .cli_output import table
from .config import HostConfig
from .control import control_client
from .errors import HostError
from .logs import escape
from .plugins.discovery import USAGE_SUFFIX
from .plugins.host_lists import switch_store
from .plugins.manifest import url_host
from .plugins.usage_scripts import discover_sources
from .security.permissions import BIDI, CONTROL, internal_host, split_host_port
from .security.private_files import PLUGINS_DIR, os_failure, write_private

if TYPE_CHECKING:
    from .cli_output import MakeHost, Started

KEPT_BY = "import-cc-switch"


@dataclass
class Plan:
    """What an import does: the scripts to write, the stations to add, what it leaves out."""

    target: Path
    scripts: list[Found] = field(default_factory=list)
    stations: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def todo(self) -> list[Found]:
        return self.scripts + self.stations


def _name(f: Found, used: set[str], plugins: set[str], stations: dict[str, str | None], target: Path) -> str:
    """The plugin id (a script) or station name (a built-in query) ``f`` gets: its provider's
    name made safe, else numbered; a built-in query's is the station of the same plugin it
    got before, if there is one (imported again: already imported)."""
    base, n = safe_id(f.name, f.id), 2
    candidate = base
    while True:
        free = candidate not in used and candidate not in plugins
        if f.script is not None:
            free = free and candidate not in stations
        else:
            free = free and stations.get(candidate, f.plugin) == f.plugin and not \
                (target / f"{candidate}{USAGE_SUFFIX}").exists()
        if free:
            used.add(candidate)
            return candidate
        candidate, n = f"{base}-{n}", n + 1


_URL = re.compile(r"https?://[^\s\"'`{}]{1,300}")


def _inside(f: Found) -> str | None:
    """A loopback or private host ``f``'s query may reach (its baseUrl, or a URL its script
    writes out), or None."""
    urls = [f.values.get("baseUrl")] + (_URL.findall(f.script[:65536]) if f.script else [])
    return next((h for u in urls if (h := url_host(u)) and internal_host(_as_resolved(split_host_port(h)[0]))), None)


def _as_resolved(host: str) -> str:
    """``host`` as the C resolver reads an IPv4 shorthand ("127.1", "0x7f.1", "2130706433" are
    127.0.0.1), else as it is."""
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return host


def import_plan(args: argparse.Namespace, config: HostConfig) -> Plan:
    """Read the cc-switch file, name what it becomes, and print the plan."""
    target = config.plugin_dirs[0]
    scripts_dir = config.state_path / "usage_scripts"
    plugins = {s.id for s in discover_sources(config) if scripts_dir not in s.module.parents}  # not scripts
    stations = station_plugins(config)  # a station's name is taken too: its config is kept under it
    scan = read(args.db or DEFAULT_DB)
    plan, used = Plan(target, skipped=list(scan.skipped)), set[str]()
    # names escaped: an export may come from anywhere, and a name may hold a terminal escape sequence
    rows = [["NAME", "CC-SWITCH PROVIDER", "APP", "TEMPLATE", "IMPORTED AS", "VALUES", "ACTION"]]
    notes: list[str] = []
    for f in scan.found:
        if f.plugin is not None and f.plugin not in plugins:
            plan.skipped.append(Skipped(f.name, f.app, f.template, f"cc-switch runs its built-in {f.plugin} query; "
                                        f"the {f.plugin} plugin is not installed here (`python -m host install "
                                        f"plugins/{f.plugin}` from the project's plugins directory)"))
            continue
        f.id = _name(f, used, plugins, stations, target)
        if f.script is None:
            kind = f"station of {f.plugin}"
            action = "already imported" if stations.get(f.id) == f.plugin else "create station"
            if action != "already imported":
                plan.stations.append(f)
        else:
            kind = "usage script" + (f", {f.timeout:g} s" if f.timeout is not None else "")
            path = target / f"{f.id}{USAGE_SUFFIX}"
            if not path.exists():
                action = "create"
                plan.scripts.append(f)
            elif path.read_text(encoding="utf-8", errors="replace") == f.script:
                action = "already imported"
            else:
                action = "keep (a different script has this name)"
        rows.append([f.id, escape(f.name), escape(f.app), escape(f.template or "-"), kind,
                     ", ".join(sorted(f.values)) or "none", action])
        if f.note:
            notes.append(f"{f.id}: {f.note.replace('ID', f.id)}")
        if (where := _inside(f)) and not config.allow_private_network_for(pid := f.plugin or f.id):
            notes.append(f"{f.id}: its station is at {escape(where)}, a loopback or private address, which cc-switch "
                         f"reaches and this host refuses until the operator allows it: [plugins.{pid}] "
                         f"allow_private_network = true in host.toml, or the dashboard's offer "
                         f"(POST /api/plugins/{pid}/private-network)")
        if f.interval is not None:
            notes.append(f"{f.id}: cc-switch queried it by itself every {f.interval} min (autoQueryInterval); "
                         "not carried over: this host asks a station when asked (the dashboard, "
                         "GET /api/balances, `balances`), at most once per [balances] min_interval; "
                         "to keep it fresh, ask on a timer (e.g. `python -m host balances --refresh` from cron)")
    out = table(rows) if len(rows) > 1 else "no cc-switch provider has a usage query to import\n"
    out += "".join(f"note: {n}\n" for n in notes)
    if plan.skipped:
        out += f"not imported ({len(plan.skipped)}):\n" + "".join(
            f"  {escape(s.name)} ({escape(s.app)}, {escape(s.template or 'script')}): {escape(s.reason)}\n"
            for s in plan.skipped)
    source = args.db or DEFAULT_DB
    sys.stdout.write(f"{scan.kind}: {escape(shown(source)) if isinstance(source, str) else source}\n{out}")
    return plan


def _title(name: str) -> str:
    """The provider's name as a station's display name (at most MAX_TITLE characters, no control
    or bidi characters, which a station's name refuses)."""
    return BIDI.sub("", CONTROL.sub(" ", name)).strip()[:MAX_TITLE] or "cc-switch provider"


async def _keep_timeouts(config: HostConfig, scripts: list[Found]) -> None:
    """Each script's own timeout as its plugin's call timeout, kept beside the plugin switches
    (before the script is written: its first load already has it)."""
    timed = [f for f in scripts if f.timeout is not None]
    if not timed:
        return
    store = switch_store(config)
    try:
        await store.verify()
        for f in timed:
            await store.merge(f.id, {"call_timeout": f.timeout, "call_timeout_by": KEPT_BY})
    finally:
        store.close()


def _write(plan: Plan) -> None:
    """The scripts, all or none, each whole: a script cut short by a full disk would be kept as
    "a different script"."""
    written: list[Path] = []
    path = plan.target
    try:
        plan.target.mkdir(parents=True, exist_ok=True)
        for f in plan.scripts:
            path = plan.target / f"{f.id}{USAGE_SUFFIX}"
            assert f.script is not None
            write_private(path, f.script.encode("utf-8"), exclusive=True)
            written.append(path)
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        raise os_failure(path, exc, "write", PLUGINS_DIR) from None


async def _through_server(server, plan: Plan, wait: float = 15.0) -> None:
    """Store the scripts' values through a running server once its rescan has loaded each, and
    add the stations."""
    for f in plan.scripts:
        with anyio.fail_after(wait):
            while True:  # found, and read (its configSchema checks the values): not still starting
                try:
                    info = await server.request("GET", f"/api/plugins/{quote(f.id)}")
                    if not isinstance(info, dict) or info.get("state") not in ("discovered", "loading", "loaded"):
                        break
                except HostError:
                    pass
                await anyio.sleep(0.2)
        if f.values:
            await server.request("PUT", f"/api/plugins/{quote(f.id)}/config", f.values)
    for f in plan.stations:
        await server.request("POST", "/api/stations", {"name": f.id, "plugin": f.plugin, "title": _title(f.name),
                                                       "config": f.values})


async def import_cc_switch(args: argparse.Namespace, config: HostConfig, started: Started,
                           make_host: MakeHost) -> int:
    plan = import_plan(args, config)
    if args.dry_run:
        print(f"dry run: nothing written ({len(plan.scripts)} script(s) to create in {plan.target}, "
              f"{len(plan.stations)} station(s) to add)")
        return 0
    if not plan.todo:
        return 0
    await _keep_timeouts(config, plan.scripts)
    _write(plan)
    async with control_client(config.state_path) as server:
        if server is not None:
            await _through_server(server, plan)
        else:
            async with started(make_host(config), args) as host:
                for f in plan.scripts:
                    if f.values:
                        await host.set_config(f.id, f.values)
                for f in plan.stations:
                    await host.stations.add(f.id, plugin=f.plugin, title=_title(f.name), config=f.values)
    print(f"imported {len(plan.todo)}: {', '.join(f.id for f in plan.todo)}")
    return 0


__all__ = ["Plan", "import_cc_switch", "import_plan"]
