"""One boundary for errors: whatever a caller passes, a call ends in a HostError and frees its
worker's slot (issue 15, item 2)."""

from __future__ import annotations

import pytest
from support.servers import served

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
async def test_over_http_an_integer_past_64_bits_is_read_as_json_parse_reads_it(calc, make_host):
    """Over HTTP, JSON reaches the plugin as JSON.parse reads it: 2**64 is a number (it was a
    400, unsendable as a 64-bit integer; from the Python API it still is, above), and the
    plugin keeps serving."""
    async with make_host(pool=ONE) as h, served(h) as (_, session):
        for _ in range(4):
            async with session.post("/api/plugins/calc/call/add", json={"args": [18446744073709551616, 1]}) as r:
                assert r.status == 200 and (await r.json())["result"] == 18446744073709551616.0
        async with session.post("/api/plugins/calc/call/add", json={"args": [1, 2]}) as r:
            assert r.status == 200 and (await r.json())["result"] == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_a_huge_timeout_or_json_nested_too_deep_is_400_json(calc, make_host):
    async with make_host(pool=ONE, execute={"min_workers": 0}) as h, served(h, enable_execute=True) as (_, session):
        for path, body in (("/api/plugins/calc/call/add", b'{"args": [1, 2], "timeout": 1e308}'),
                           ("/execute", b'{"code": "export default () => 1", "timeout": 1e308}'),
                           ("/api/plugins/calc/call/add", b'{"args": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
                           # an event's payload, deep enough for the JSON.parse reading, with a long integer:
                           # a RecursionError out of the handler (500) in my own review
                           ("/api/events/x.y", b"[" * 500 + b"12345678901234567890" + b"]" * 500)):
            async with session.post(path, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and r.content_type == "application/json", await r.text()
                assert (await r.json())["error"]["type"] == "BadRequest"
        async with session.post("/api/plugins/calc/call/add", json={"args": [1, 2]}) as r:
            assert (await r.json())["result"] == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_an_argument_sent_by_name_is_a_400_saying_where_arguments_go(calc, make_host):
    # helper-80's finding: {"a": 1, "b": 2} was a call with no arguments ("takes 2 arguments, 0 given")
    async with make_host(pool=ONE) as h, served(h) as (_, session):
        async with session.post("/api/plugins/calc/call/add", json={"a": 1, "b": 2}) as r:
            said = (await r.json())["error"]
        assert r.status == 400 and said["type"] == "BadRequest", said
        assert "unknown field `a`" in said["message"] and '"args": [...]' in said["message"], said
        async with session.post("/api/plugins/calc/call/add", json={"args": [1, 2], "timeout": 5}) as r:
            assert (await r.json())["result"] == 3


async def test_the_library_refuses_a_timeout_it_cannot_keep(calc, make_host):
    from host import InvalidConfig

    async with make_host(pool=ONE) as h:
        for bad in (1e308, float("inf"), 0, -1, "3"):
            with pytest.raises(InvalidConfig, match="timeout must be a number of seconds"):
                await h.call("calc", "add", 1, 2, timeout=bad)
        assert await h.call("calc", "add", 1, 2, timeout=5) == 3


async def test_a_typo_in_a_log_level_or_a_priority_past_its_range_is_invalid_arguments(calc, make_host):
    # helper-86: h.logs(level="eror") read as info, silently; priority=2**70 was taken
    from pathlib import Path

    import host

    async with make_host(pool=ONE) as h:
        with pytest.raises(InvalidArguments, match=r"level: 'eror' is not one of debug, error"):
            h.logs("calc", level="eror")
        assert h.logs("calc", level="WARNING") == h.logs("calc", level="warning")
        with pytest.raises(InvalidArguments, match="priority"):
            await h.call("calc", "add", 1, 2, priority=2**70)
        assert await h.call("calc", "add", 1, 2, priority=-5) == 3
    assert (Path(host.__file__).parent / "py.typed").is_file()  # PEP 561: the hints are for checkers
