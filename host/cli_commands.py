"""CLI commands that need no PluginHost of their own (cli.py wires them): approving a plugin's
new grants. (Importing cc-switch's usage queries: cli_ccswitch.py.)"""

from __future__ import annotations

import argparse
from urllib.parse import quote

from .config import HostConfig
from .control import control_client
from .errors import HostError
from .plugins.discovery import load_manifest
from .plugins.usage_scripts import discover_sources
from .runtime import Runtime
from .security.approvals import declared, open_approvals


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


__all__ = ["approve"]
