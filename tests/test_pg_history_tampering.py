"""Rows written by hand (or by a co-tenant with access to the ``[state] database``) into the
balance history: a point whose time no datetime can hold (Infinity, NaN, 1e300) is skipped as an
alert row of another version is (nor counted in the limit), never an OverflowError out of ``balance_history``. On the real
postgres of tests/support/postgres.py."""

from __future__ import annotations

import psycopg
import pytest

from host import PoolConfig
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

STATION = """
export const metadata = { id: "alpha", name: "alpha", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"] };
export async function queryBalance() { return { balance: 42, currency: "USD" }; }
"""


async def test_history_rows_with_times_no_datetime_holds_are_skipped(make_host, plugin_dir, postgres_url):
    plugin_dir.add("alpha.js", STATION)
    async with make_host(state=StateConfig(database=postgres_url), pool=PoolConfig(min_workers=1)) as h:
        await h.query_balances(refresh=True)
        with psycopg.connect(postgres_url) as db:
            for t in ("Infinity", "-Infinity", "NaN", "1e300", "-1e300"):
                db.execute("INSERT INTO balance_points (provider, time, balance) VALUES ('alpha', %s, 1)", [t])
        points = await h.balance_history("alpha")
        assert [(p.provider, p.balance, p.currency) for p in points] == [("alpha", 42.0, "USD")]
        assert [p.balance for p in await h.balance_history()] == [42.0]
        assert [p.balance for p in await h.balance_history("alpha", limit=1)] == [42.0]  # not taken by them
