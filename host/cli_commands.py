"""CLI commands that need no PluginHost of their own (cli.py wires them): approving a plugin's
new grants, and importing the usage scripts a user has in cc-switch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import quote

import anyio

from .balances.ccswitch import DEFAULT_DB, Found, read
from .balances.station_files import station_names
from .cli_output import table
from .config import HostConfig
from .control import control_client
from .errors import HostError
from .plugins.discovery import USAGE_SUFFIX, load_manifest
from .plugins.usage_scripts import discover_sources
from .runtime import Runtime
from .security.approvals import declared, open_approvals
from .security.private_files import os_failure, write_private


async def approve(args: argparse.Namespace, config: HostConfig) -> int:
    """Approve what the plugin's newest version declares: through the server running on this
    state directory (it applies it at once), else read in a worker with no permissions (no
    host is started) and recorded for the next start."""
    async with control_client(config.state_path) as server:
        if server is not None:
            waiting = (await server.request("GET", f"/api/plugins/{quote(args.id)}"))["pending_approval"]
            if not waiting:
                print(f"{args.id}: nothing to approve (no version asks for a grant beyond the approved ones)")
                return 0
            info = await server.request("POST", f"/api/plugins/{quote(args.id)}/approve", {"grants": waiting})
            print(f"{args.id}@{info['version']}: approved {', '.join(waiting)}; the server runs it ({info['state']})")
            return 0
    runtime = Runtime.create(config)
    try:
        sources = [s for s in discover_sources(config) if s.id == args.id]
        if not sources:
            raise HostError(f"no plugin {args.id!r} in {', '.join(str(d) for d in config.plugin_dirs)}")
        loaded = [await load_manifest(s, runtime, config.limits_for(s.id)) for s in sources]
        manifest = max((m for m, _ in loaded), key=lambda m: m.semver)
        store = open_approvals(config.state_path, config.state.database, runtime.audit)
        try:
            asked = declared(manifest)
            added = await store.beyond(args.id, asked)
            if added == []:
                print(f"{args.id}: nothing to approve (version {manifest.version} asks for no grant beyond "
                      "the approved ones)")
                return 0
            added = await store.approve(args.id, asked, version=manifest.version, by="cli")
        finally:
            store.close()
    finally:
        runtime.close()
    print(f"{args.id}@{manifest.version}: approved {', '.join(added) or 'its grants'}")
    return 0


def import_plan(args: argparse.Namespace, config: HostConfig) -> list[Found]:
    """The cc-switch usage scripts to import: printed as a plan (which values are set, never
    them), and unless ``--dry-run`` written as ``<id>.usage.js`` in the first plugin directory.
    A script whose file exists with other text is left alone (said so)."""
    target = config.plugin_dirs[0]
    scripts = config.state_path / "usage_scripts"
    others = {s.id for s in discover_sources(config) if scripts not in s.module.parents}  # plugins, not scripts
    others |= station_names(config)  # a station's name is taken too: its config is kept under it
    found = read(args.db or DEFAULT_DB, taken=others)
    rows, todo = [["PLUGIN", "CC-SWITCH PROVIDER", "APP", "TEMPLATE", "VALUES", "ACTION"]], []
    for f in found:
        path = target / f"{f.id}{USAGE_SUFFIX}"
        if not path.exists():
            action = "create"
        elif path.read_text(encoding="utf-8", errors="replace") == f.script:
            action = "already imported"
        else:
            action = "keep (a different script has this name)"
        rows.append([f.id, f.name, f.app, f.template or "-", ", ".join(sorted(f.values)) or "none", action])
        if action == "create":
            todo.append(f)
    sys.stdout.write(table(rows) if found else "no cc-switch provider has an enabled usage script\n")
    if args.dry_run:
        print(f"dry run: nothing written ({len(todo)} to create in {target})")
        return []
    written: list[Path] = []
    path = target
    try:  # all or none, each whole: a script cut short by a full disk would be kept as "a different script"
        target.mkdir(parents=True, exist_ok=True)
        for f in todo:
            path = target / f"{f.id}{USAGE_SUFFIX}"
            write_private(path, f.script.encode("utf-8"), exclusive=True)
            written.append(path)
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        raise os_failure(path, exc, "write") from None
    return todo


async def store_through_server(server, todo: list[Found], wait: float = 15.0) -> None:
    """Store the imported values through a running server, once its rescan has loaded each."""
    for f in todo:
        with anyio.fail_after(wait):
            while True:
                try:
                    await server.request("GET", f"/api/plugins/{quote(f.id)}")
                    break
                except HostError:
                    await anyio.sleep(0.2)
        if f.values:
            await server.request("PUT", f"/api/plugins/{quote(f.id)}/config", f.values)


__all__ = ["approve", "import_plan", "store_through_server"]
