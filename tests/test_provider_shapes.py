"""The shipped balance plugins against what their providers really send, where it differs from
the plain success test_providers.py and test_providers_more.py play: the sentinel one-api and
new-api answer for an unlimited key, OpenRouter's key limit that resets every period, and the
currency of a region that the answer does not name. Each case cites the provider's documentation
or the code that answers it."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from test_providers import CREDITS, KEY, KEY_INFO, ONE, OPENAI, OPENROUTER, PLUGINS, SUB, SUBSCRIPTION, USAGE, provider_host, query

from host import PluginSettings

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the plugins are what is tested here, not the host's backends


async def test_openai_billing_reads_the_unlimited_sentinel_as_unlimited(plugin_dir, make_host, fake_http):
    """one-api and new-api (controller/billing.go, GetSubscription) answer a key with unlimited
    quota with hard_limit_usd = soft_limit_usd = system_hard_limit_usd = 100000000: no limit,
    not a balance of a hundred million dollars."""
    unlimited = {**SUB, "hard_limit_usd": 100000000, "soft_limit_usd": 100000000,
                 "system_hard_limit_usd": 100000000, "access_until": 0}
    async with provider_host(OPENAI, plugin_dir, make_host, fake_http) as h:
        fake_http.json("GET", SUBSCRIPTION, unlimited)
        fake_http.json("GET", USAGE, {"object": "list", "total_usage": 250.0})  # $2.50, in cents
        r = await query(h)
        assert r.status == "success", r.error_message
        assert (r.unlimited, r.balance, r.quota, r.used_quota, r.currency, r.expires_at) == (
            True, None, None, 2.5, "USD", None)
        assert r.raw_data == {"subscription": unlimited, "usage": {"object": "list", "total_usage": 250.0}}
