"""Approvals in PostgreSQL (``[state] database``), shared by two hosts with their own state
directories over one plugin directory: a plugin seen for the first time is approved once for
both; a version asking for more waits on both; approved through one host, it starts on the
other at that host's next rescan; the CLI approves in the database too. On the real postgres of tests/support/postgres.py."""

from __future__ import annotations

import json

import psycopg
import pytest
from support.plugins import fresh_state
from support.servers import run_cli

from host import PoolConfig
from host.config import ReloadConfig
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)
STILL = ReloadConfig(enabled=False)  # rescans only when the test asks


def version(n: int, net: list[str]) -> str:
    return f"""
export const metadata = {{ id: "grower", name: "grower", version: "1.0.{n}", apiVersion: "1.0",
  permissions: {{ net: {json.dumps(net)} }} }};
export function which() {{ return {n}; }}
"""


def approvals(url: str) -> dict[str, dict]:
    with psycopg.connect(url) as db:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM plugin_approvals").fetchall()}


async def test_an_approval_through_one_host_starts_the_version_on_the_other(
        make_host, plugin_dir, tmp_path, shared_state, postgres_url):
    path = plugin_dir.add("grower/mod.js", version(1, ["api.example.com"]))
    state = StateConfig(database=postgres_url)
    a_dir, b_dir = (fresh_state(tmp_path / n, shared_state) for n in "ab")
    async with make_host(state_dir=str(a_dir), state=state, pool=ONE, reload=STILL) as a, \
            make_host(state_dir=str(b_dir), state=state, pool=ONE, reload=STILL) as b:
        assert (await a.call("grower", "which"), await b.call("grower", "which")) == (1, 1)
        first = approvals(postgres_url)
        assert first["grower"]["by"] == "first load" and first["grower"]["permissions"]["net"] == ["api.example.com"]
        path.write_text(version(2, ["api.example.com", "exfil.example.net"]))
        await a.rescan()
        await b.rescan()
        for h in (a, b):
            info = h.plugin("grower")
            assert (info.version, info.pending_approval) == ("1.0.1", ["net: exfil.example.net"])
        assert await a.approve("grower", by="test") is True
        assert await a.call("grower", "which") == 2
        assert await b.call("grower", "which") == 1  # b has not looked yet
        await b.rescan()  # b sees the approval: the waiting version starts
        assert await b.call("grower", "which") == 2
        assert b.plugin("grower").pending_approval == []
    stored = approvals(postgres_url)
    assert stored["grower"]["by"] == "test"
    assert stored["grower"]["permissions"]["net"] == ["api.example.com", "exfil.example.net"]
    assert not (a_dir / "approvals.json").exists() and not (b_dir / "approvals.json").exists()
    # the CLI with no server running approves in the database too
    path.write_text(version(3, ["api.example.com", "exfil.example.net", "third.example.org"]))
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{postgres_url}"\n')
    out = run_cli("--plugins", str(plugin_dir.root), "--state-dir", str(b_dir), "--config", "host.toml",
                  "approve", "grower", cwd=tmp_path)
    assert out.returncode == 0 and "approved net: third.example.org" in out.stdout, out.stderr
    assert approvals(postgres_url)["grower"]["by"] == "cli" and not (b_dir / "approvals.json").exists()


async def test_an_unreadable_approval_row_is_a_state_error_naming_it(make_host, plugin_dir, postgres_url):
    plugin_dir.add("grower/mod.js", version(1, ["api.example.com"]))
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE, reload=STILL):
        pass  # approved at first load: the table and its row exist
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE plugin_approvals SET value = %s", [json.dumps({"permissions": {"net": 7}})])
    async with make_host(state=state, pool=ONE, reload=STILL) as h:
        info = h.plugin("grower")
    assert info.state == "error" and "plugin_approvals" in (info.error or "") and "'grower'" in (info.error or "")


@pytest.mark.parametrize("damage", ["not json", json.dumps({"permissions": {"net": 7}})])
async def test_a_damaged_approval_row_stays_with_its_plugin_until_approved(make_host, plugin_dir, postgres_url,
                                                                           damage):
    """Before: one unreadable row failed the approvals of every plugin on every host sharing
    them. It is never taken for a plugin seen for the first time (which would approve whatever
    it asks now)."""
    plugin_dir.add("grower/mod.js", version(1, ["api.example.com"]))
    plugin_dir.add("calm/mod.js", version(1, ["calm.example.com"]).replace('"grower"', '"calm"'))
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE, reload=STILL):
        pass  # both approved at first load
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE plugin_approvals SET value = %s WHERE key = 'grower'", [damage])
    async with make_host(state=state, pool=ONE, reload=STILL) as h:
        assert h.plugin("calm").state == "running"
        info = h.plugin("grower")
        assert info.state == "error" and "table plugin_approvals" in info.error and "'grower'" in info.error
        assert "delete that row" in info.error
        with psycopg.connect(postgres_url) as db:
            db.execute("DELETE FROM plugin_approvals WHERE key = 'grower'")
        await h.rescan()
        await h.enable("grower")  # what the error says: seen anew, approved as it is now
        assert h.plugin("grower").state == "running"
    assert approvals(postgres_url)["grower"]["permissions"]["net"] == ["api.example.com"]
