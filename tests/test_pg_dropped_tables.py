"""The ``[state] database``'s tables dropped under a running host (by hand, a restore of an older
dump): the next statement that misses one creates the schema again and is tried once more, so
plugin storage, config sets and the balance history work again without a restart (before: 502,
503 and a logged failure on every use until the host restarted). On the real postgres of
tests/support/postgres.py."""

from __future__ import annotations

import logging

import psycopg
import pytest

from host import PoolConfig
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

KEEPER = """
export const metadata = { id: "keeper", name: "keeper", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"], configSchema: { n: { type: "number" } } };
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
export async function get(key, ctx) { return (await ctx.storage.get(key)) ?? null; }
export async function queryBalance(config) { return { balance: config.n ?? 0, currency: "USD" }; }
"""
TABLES = ("plugin_storage", "plugin_config", "plugin_switches", "balance_points", "balance_alerts")


async def test_tables_dropped_while_serving_are_created_again_at_their_next_use(
        make_host, plugin_dir, postgres_url, caplog):
    plugin_dir.add("keeper.js", KEEPER)
    async with make_host(state=StateConfig(database=postgres_url), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("keeper", "put", "a", 1) is True
        await h.set_config("keeper", {"n": 1})
        await h.query_balances(refresh=True)
        assert len(await h.balance_history("keeper")) == 1
        with psycopg.connect(postgres_url, autocommit=True) as db:
            for table in TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
        with caplog.at_level(logging.WARNING, "host.state"):
            assert await h.call("keeper", "put", "b", 2) is True
            assert await h.call("keeper", "get", "b") == 2
            await h.set_config("keeper", {"n": 2})
            assert h.get_config("keeper") == {"n": 2}
            [answer] = await h.query_balances(refresh=True)
            assert answer.status == "success" and answer.balance == 2
            assert [p.balance for p in await h.balance_history("keeper")] == [2.0]
            await h.disable("keeper")
            assert h.plugin("keeper").state == "disabled"
            await h.enable("keeper")
            assert await h.call("keeper", "get", "b") == 2
        again = [r.getMessage() for r in caplog.records if "creating the tables again" in r.getMessage()]
        assert again and all("***" in m or "@" not in m for m in again)
    with psycopg.connect(postgres_url) as db:
        assert {t for (t,) in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")} >= set(TABLES)


async def test_a_store_made_again_empty_gets_back_what_the_host_held_not_adopted(
        make_host, plugin_dir, postgres_url, caplog):
    """helper-100: the host's tables gone (dropped, a failover to an empty replica) were made again
    at the next rescan and adopted as they were: every stored config gone, and a plugin the operator
    had disabled running again, with one warning. The rows the host held are written back, and it
    says so as an error; a row written since by a host stays as written."""
    plugin_dir.add("keeper.js", KEEPER)
    plugin_dir.add("other.js", KEEPER.replace('id: "keeper"', 'id: "other"').replace('name: "keeper"', 'name: "other"'),
                   auto_metadata=False)
    async with make_host(state=StateConfig(database=postgres_url), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        await h.set_config("keeper", {"n": 1})
        await h.disable("other")
        with psycopg.connect(postgres_url, autocommit=True) as db:
            for table in ("plugin_config", "plugin_switches"):
                db.execute(f"DROP TABLE {table}")
        with caplog.at_level(logging.WARNING, "host.state"):
            await h.rescan()
            await h.rescan()
        assert h.get_config("keeper") == {"n": 1}  # before: {}
        assert h.plugin("other").state == "disabled"  # before: running
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "made again" in r.getMessage()]
        assert any("plugin_switches" in m and "other" in m for m in said), said
        assert any("plugin_config" in m and "keeper" in m for m in said), said
    with psycopg.connect(postgres_url) as db:
        assert {k for (k,) in db.execute("SELECT key FROM plugin_switches")} >= {"other"}
