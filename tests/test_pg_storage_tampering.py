"""Plugin storage rows written by hand (or by a co-tenant with access to the ``[state]
database``) whose value is not one MessagePack value: ``ctx.storage.get`` of that key is a
StorageError the plugin can catch, naming the key, and the worker lives (before: the value was
spliced into the reply as it was, and the worker, unable to read its frame, exited). On the real
postgres of tests/support/postgres.py."""

from __future__ import annotations

import psycopg
import pytest

from host import PoolConfig
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

KEEPER = """
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
export async function get(key, ctx) {
  try { return { value: (await ctx.storage.get(key)) ?? null }; } catch (e) { return { error: e.name, message: e.message }; }
}
export function pid() { return Deno.pid; }
"""


@pytest.mark.parametrize("blob", [b"\xc1", b"\x92\x01", b"\x01\x02", b"", b"\x91" * 100_000])
async def test_a_stored_value_that_is_not_msgpack_is_a_storage_error_not_a_crash(
        make_host, plugin_dir, postgres_url, blob):
    plugin_dir.add("keeper.js", KEEPER)
    async with make_host(state=StateConfig(database=postgres_url), pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert await h.call("keeper", "put", "k", {"n": 1}) is True
        pid = await h.call("keeper", "pid")
        with psycopg.connect(postgres_url) as db:
            db.execute("UPDATE plugin_storage SET value = %s WHERE plugin = 'keeper' AND key = 'k'", [blob])
        got = await h.call("keeper", "get", "k")
        assert got["error"] == "StorageError" and "'k'" in got["message"], got
        assert await h.call("keeper", "pid") == pid  # the same worker: it did not exit
        assert await h.call("keeper", "put", "k", [2]) is True
        assert await h.call("keeper", "get", "k") == {"value": [2]}
