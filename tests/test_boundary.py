"""One boundary for errors: whatever a caller passes, a call ends in a HostError and frees its
worker's slot (issue 15, item 2)."""

from __future__ import annotations

import pytest
from conftest import served

from host import InvalidArguments, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1, object(), {"f": print}, complex(1, 2)],
                         ids=["2**64", "-2**63-1", "object", "function", "complex"])
async def test_arguments_that_cannot_be_sent_are_a_typed_error_and_free_the_slot(calc, make_host, bad):
    async with make_host(pool=ONE) as h:
        for _ in range(5):  # more than the worker's one slot: none may stay taken
            with pytest.raises(InvalidArguments, match="cannot be sent to the plugin"):
                await h.call("calc", "add", bad, 1, timeout=2)
        assert await h.call("calc", "add", 1, 2, timeout=2) == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_over_http_an_unsendable_integer_is_400_and_the_plugin_keeps_serving(calc, make_host):
    async with make_host(pool=ONE) as h, served(h) as (_, session):
        for _ in range(4):
            async with session.post("/api/plugins/calc/call/add", json={"args": [18446744073709551616, 1]}) as r:
                assert r.status == 400 and (await r.json())["error"]["type"] == "InvalidArguments"
        async with session.post("/api/plugins/calc/call/add", json={"args": [1, 2]}) as r:
            assert r.status == 200 and (await r.json())["result"] == 3
