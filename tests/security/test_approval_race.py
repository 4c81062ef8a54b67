"""First sight is decided where the approvals are kept, not on a host's copy of them: a host
(a ``serve --processes`` sibling, a machine on the same ``[state] database``) that has not read
the approvals since another approved a plugin must not record its own version of that plugin
as "seen for the first time", which would approve whatever it declares."""

from __future__ import annotations

import json

import psycopg
import pytest
from support.plugins import PluginDir, fresh_state

from host import HostConfig, PluginHost, PoolConfig
from host.config import ReloadConfig
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PLAIN = """
export const metadata = { id: "p", name: "p", version: "1.0.0", apiVersion: "1.0" };
export function hi() { return "v1"; }
"""
WIDER = """
export const metadata = { id: "p", name: "p", version: "2.0.0", apiVersion: "1.0",
                          permissions: { net: ["evil.example"] } };
export function hi() { return "v2"; }
"""
BROKEN = "export const metadata = {"


def host(root: PluginDir, state_dir, database: str | None) -> PluginHost:
    return PluginHost(HostConfig(plugins_dir=str(root.root), state_dir=str(state_dir),
                                 pool=PoolConfig(min_workers=0, max_workers=1),
                                 reload=ReloadConfig(enabled=False), state=StateConfig(database=database)))


def approval(state_dir, database: str | None) -> dict:
    if database is None:
        return json.loads((state_dir / "approvals.json").read_text())["p"]
    with psycopg.connect(database) as db:
        (text,) = db.execute("SELECT value FROM plugin_approvals WHERE key = 'p'").fetchone()
    return json.loads(text)


@pytest.mark.parametrize("shared", ["state_dir", "database"])
async def test_a_host_with_a_stale_copy_does_not_approve_a_wider_version_as_first_seen(
        tmp_path, state_dir, shared_state, shared, request):
    database = request.getfixturevalue("postgres_url") if shared == "database" else None
    here, there = PluginDir(tmp_path / "here"), PluginDir(tmp_path / "there")
    here.add("p.js", BROKEN)  # b knows the plugin but never reached its approval
    here.add("q.js", "export function hi() { return 1; }")  # b has read the approvals (for q)
    there.add("p.js", PLAIN)
    async with host(here, state_dir, database) as b:
        async with host(there, fresh_state(tmp_path / "a", shared_state) if database else state_dir, database) as a:
            assert await a.call("p", "hi") == "v1"  # a sees p first: approved as it is
        assert approval(state_dir, database)["permissions"] == {}
        here.add("p.js", WIDER)
        assert await b.reload("p") is False  # held: it asks for more than a approved
        info = {i.id: i for i in b.plugins()}["p"]
        assert info.state == "pending" and "evil.example" in info.error
    assert approval(state_dir, database)["permissions"] == {} and approval(state_dir, database)["version"] == "1.0.0"
