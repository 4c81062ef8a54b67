"""Label cardinality of /metrics: only the functions a plugin exports get a ``function`` label of
their own. A call refused before its function is looked up (a caller's short timeout, a disabled
plugin, a rate limit, an open breaker) used to keep the caller's name: made-up names, one series
each (a counter, a 16-bucket histogram), held for the host's life, every one in each scrape."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.servers import served

from host import PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120), pytest.mark.parametrize("anyio_backend", ["asyncio"])]

NAMES = 200


def function_labels(text: str) -> set[str]:
    return {s.labels["function"] for family in text_string_to_metric_families(text)
            for s in family.samples if "function" in s.labels}


async def test_made_up_function_names_never_become_metric_labels(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h, served(h) as (_, http):
        async with http.post("/api/plugins/calc/call/sleep", json={"args": [2000], "timeout": 0.05}) as r:
            assert r.status == 504  # an exported function keeps its label, whatever the outcome
        for i in range(NAMES):  # past the caller's own deadline before the function is looked up
            async with http.post(f"/api/plugins/calc/call/made-up-{i}", json={"args": [], "timeout": 1e-6}) as r:
                assert r.status == 504
        async with http.post("/api/plugins/calc/disable") as r:
            assert r.status == 200
        for i in range(NAMES):  # the plugin is disabled: refused before the function is looked up
            async with http.post(f"/api/plugins/calc/call/disabled-{i}", json={"args": []}) as r:
                assert r.status == 503
        async with http.get("/metrics") as r:
            text = await r.text()
    assert function_labels(text) == {"sleep", "(unknown)"}  # before: 401 functions
    assert "made-up-" not in text and "disabled-" not in text
    assert len(text) < 50_000  # before: ~750 KB
