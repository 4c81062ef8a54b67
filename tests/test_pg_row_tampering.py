"""Probe (issue 20): a row of the shared tables (plugin_switches, plugin_stations) that is not
what the host writes (edited by hand, or by anyone with the database) is a StateError naming the
table and the row, at start and at a rescan: never an untyped error out of the host."""

from __future__ import annotations

import psycopg
import pytest
from support.plugins import CALC, fresh_state

from host import HostConfig, PluginHost, PoolConfig, StateError
from host.state_config import StateConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize("value", ['{"enabled": ', "[" * 100_000 + "]" * 100_000, '"a string"'])
async def test_a_switch_row_that_is_not_an_object_is_a_state_error_naming_it(
        plugin_dir, tmp_path, shared_state, postgres_url, value, anyio_backend):
    if anyio_backend != "asyncio":
        pytest.skip("the host's start is backend-neutral here; one backend is enough")
    plugin_dir.add("calc.js", CALC)
    config = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)),
                        pool=PoolConfig(min_workers=0), state=StateConfig(database=postgres_url))
    async with PluginHost(config):  # makes the tables
        pass
    with psycopg.connect(postgres_url) as db:
        db.execute("INSERT INTO plugin_switches (key, value, version) VALUES (%s, %s, 99)", ["calc", value])
    with pytest.raises(StateError, match=r"plugin_switches.*'calc'"):
        async with PluginHost(config):
            pass
