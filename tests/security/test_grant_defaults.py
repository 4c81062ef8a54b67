"""A net grant written as ``"{config.KEY}"`` resolves, when the operator set no value, to the
host of the configSchema's default: the plugin's author controls that default, so a new version
whose default resolves to a host never approved waits for the operator like any other new
grant, while a value the operator sets is the operator's choice and needs no approval (B7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host import PluginSettings, PoolConfig
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)
MANUAL = ReloadConfig(enabled=False)  # reloads happen when the test calls reload()


def relay(patch: int, default: str) -> str:
    return f"""
export const metadata = {{ id: "relay", name: "relay", version: "1.0.{patch}", apiVersion: "1.0",
  permissions: {{ net: ["{{config.baseUrl}}"] }},
  configSchema: {{ baseUrl: {{ type: "string", default: "{default}" }} }} }};
export function which() {{ return {patch}; }}
"""


def allow_net(pid: int) -> str:
    """The ``--allow-net`` flag the worker with ``pid`` runs with."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(a for a in args if a.startswith("--allow-net="))


async def test_a_new_default_that_widens_a_resolved_grant_waits_for_approval(plugin_dir, make_host, state_dir):
    path = plugin_dir.add("relay.js", relay(0, "https://api.good.example"))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=MANUAL) as h:
        assert h.plugin("relay").permissions == {"net": ["api.good.example"]}
        # Another default on the approved host (a new path) asks for nothing new.
        path.write_text(relay(1, "https://api.good.example/v2"))
        assert await h.reload("relay") is True
        assert h.plugin("relay").pending_approval == [] and await h.call("relay", "which") == 1
        # Only the default changes, to a host nobody approved: the new version waits.
        path.write_text(relay(2, "https://exfil.attacker.example"))
        assert await h.reload("relay") is False
        info = h.plugin("relay")
        assert info.pending_approval == ["net: exfil.attacker.example"]
        assert info.state == "running" and info.version == "1.0.1"  # the approved version serves on
        assert info.permissions == {"net": ["api.good.example"]}
        assert await h.call("relay", "which") == 1
        assert "exfil" not in allow_net(h.plugin("relay").workers[0].pid)
        assert await h.approve("relay", by="test", grants=["net: exfil.attacker.example"]) is True
        assert await h.call("relay", "which") == 2
        assert h.plugin("relay").permissions == {"net": ["exfil.attacker.example"]}
        assert allow_net(h.plugin("relay").workers[0].pid).endswith(",exfil.attacker.example")
    # Edited while the host was down: at the next start the plugin waits in `pending`.
    path.write_text(relay(3, "https://other.attacker.example:8443/"))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=MANUAL) as h:
        info = h.plugin("relay")
        assert info.state == "pending" and info.workers == []
        assert info.pending_approval == ["net: other.attacker.example:8443"]
        assert "approve relay" in info.error


async def test_a_value_the_operator_sets_needs_no_approval(plugin_dir, make_host, state_dir):
    plugin_dir.add("relay.js", relay(0, "https://api.good.example"))
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=MANUAL) as h:
        # config set / PUT config: the operator points the plugin at another host.
        await h.set_config("relay", {"baseUrl": "https://mine.example:8443/v1"})
        info = h.plugin("relay")
        assert info.state == "running" and info.pending_approval == []
        assert info.permissions == {"net": ["mine.example:8443"]}
        assert allow_net(info.workers[0].pid).endswith(",mine.example:8443")
    # host.toml's [plugins.relay.config] likewise (another state directory: approved as the
    # plugin declares itself, then started with the operator's value).
    async with make_host(pool=ONE, reload=MANUAL) as h:
        assert h.plugin("relay").permissions == {"net": ["api.good.example"]}
    settings = {"relay": PluginSettings(config={"baseUrl": "https://toml.example"})}
    async with make_host(pool=ONE, reload=MANUAL, plugins=settings) as h:
        info = h.plugin("relay")
        assert info.state == "running" and info.pending_approval == []
        assert info.permissions == {"net": ["toml.example"]}
