"""The shipped balance plugins against what their providers really send, where it differs from
the plain success test_providers.py and test_providers_more.py play: the sentinel one-api and
new-api answer for an unlimited key, OpenRouter's key limit that resets every period, the
currency of a region that the answer does not name, and DeepSeek's currency entries in no fixed
order. Each case cites the provider's documentation, the code that answers it or a report of
the answer seen."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from test_providers import (
    CREDITS,
    CREDITS_BODY,
    DEEPSEEK,
    KEY_BODY,
    KEY_INFO,
    NEWAPI,
    ONE,
    OPENAI,
    OPENROUTER,
    PLUGINS,
    SUB,
    SUBSCRIPTION,
    USAGE,
    provider_host,
    query,
)

from host import InvalidConfig, PluginSettings

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


async def test_openai_billing_in_tokens_is_a_balance_however_many_tokens(plugin_dir, make_host, fake_http):
    """A new-api site showing quota as TOKENS answers hard_limit_usd as its raw token count
    (controller/billing.go): 150,000,000 tokens (about $300) were read as the unlimited sentinel,
    which is exactly 100,000,000, not anything from it up."""
    tokens = {**SUB, "hard_limit_usd": 150000000, "soft_limit_usd": 150000000,
              "system_hard_limit_usd": 150000000, "access_until": 0}
    async with provider_host(OPENAI, plugin_dir, make_host, fake_http, currency="TOKENS") as h:
        fake_http.json("GET", SUBSCRIPTION, tokens)
        fake_http.json("GET", USAGE, {"object": "list", "total_usage": 1e9})  # in hundredths, as USD cents
        r = await query(h)
    assert r.status == "success", r.error_message
    assert (r.unlimited, r.balance, r.quota, r.used_quota, r.currency) == (False, 140000000, 150000000, 1e7, "TOKENS")


@pytest.mark.parametrize(("key", "expected"), [
    # a monthly limit: usage (25.75 since the key was made) is not what counts against it
    ({"limit": 50.0, "limit_remaining": 30.0, "limit_reset": "monthly", "expires_at": "2027-12-31T23:59:59Z"},
     (30.0, 50.0, 20.0, "2027-12-31T23:59:59Z")),
    # no limit_remaining given: this period's usage (usage_weekly), BYOK included as the key says
    ({"limit": 10.0, "limit_reset": "weekly", "include_byok_in_limit": True, "byok_usage_weekly": 1.5},
     (2.0, 10.0, 8.0, None)),
    # a limit that never resets: usage since the key was made is what counts
    ({"limit": 40.0, "limit_remaining": 14.25}, (14.25, 40.0, 25.75, None)),
], ids=["monthly", "weekly-without-remaining", "no-reset"])
async def test_openrouter_key_limit_counts_this_periods_spend(key: dict[str, Any], expected, plugin_dir, make_host,
                                                               fake_http):
    """An inference key gets 403 from /credits (it needs a management key), so the key's own
    limit is the balance: usedQuota is what counts against that limit now, and expiresAt the
    key's expires_at (https://openrouter.ai/docs/api/api-reference/api-keys/get-current-key)."""
    async with provider_host(OPENROUTER, plugin_dir, make_host, fake_http) as h:
        fake_http.json("GET", CREDITS, {"error": {"message": "Forbidden", "code": 403}}, status=403)
        data = {**KEY_BODY["data"], **key}
        fake_http.json("GET", KEY_INFO, {"data": data})
        r = await query(h)
        assert r.status == "success", r.error_message
        assert (r.balance, r.quota, r.used_quota, r.expires_at) == pytest.approx(expected)
        assert (r.currency, r.raw_data) == ("USD", {"credits": None, "key": data})


async def test_openrouter_credits_carry_the_keys_expiry(plugin_dir, make_host, fake_http):
    async with provider_host(OPENROUTER, plugin_dir, make_host, fake_http) as h:
        fake_http.json("GET", KEY_INFO, {"data": {**KEY_BODY["data"], "expires_at": "2027-01-31T00:00:00Z"}})
        r = await query(h)
        assert (r.status, r.balance, r.expires_at) == ("success", pytest.approx(74.75), "2027-01-31T00:00:00Z")
        assert r.raw_data["credits"] == CREDITS_BODY["data"]


PROBE = """
import * as target from "./target.ts";
export const metadata = { id: "probe", name: "probe", version: "1.0.0", apiVersion: "1.0" };
/** The target plugin's queryBalance given ``body`` for whatever it asks: no request is sent. */
export async function run(config, body) {
  const urls = [];
  const ctx = { timeout: 5000, signal: new AbortController().signal, log() {},
                fetchJson: async (url) => { urls.push(String(url)); return body; } };
  const r = await target.queryBalance({ apiKey: "sk-probe", ...config }, ctx);
  return { balance: r.balance, currency: r.currency, urls };
}
"""
MOONSHOT_ANSWER = {"code": 0, "data": {"available_balance": 49.58894, "voucher_balance": 46.58893,
                                       "cash_balance": 3.00001}, "scode": "0x0", "status": True}
SILICONFLOW_ANSWER = {"code": 20000, "message": "OK", "status": True, "data": {
    "id": "userid", "name": "username", "email": "a@b.c", "balance": "0.88", "chargeBalance": "88.00",
    "totalBalance": "88.88", "status": "normal"}}
STEPFUN_ANSWER = {"object": "account", "type": "prepaid", "balance": 0.00, "total_cash_balance": 0.00,
                  "total_voucher_balance": 26.00}


@pytest.mark.parametrize(("pid", "answer", "config", "expected"), [
    ("moonshot", MOONSHOT_ANSWER, {"baseUrl": "https://api.moonshot.ai/v1"},
     ("USD", "https://api.moonshot.ai/v1/users/me/balance")),
    ("moonshot", MOONSHOT_ANSWER, {}, ("CNY", "https://api.moonshot.cn/v1/users/me/balance")),
    ("moonshot", MOONSHOT_ANSWER, {"baseUrl": "https://api.moonshot.ai", "currency": "CNY"},
     ("CNY", "https://api.moonshot.ai/v1/users/me/balance")),
    ("siliconflow", SILICONFLOW_ANSWER, {"baseUrl": "https://api.siliconflow.com/v1"},
     ("USD", "https://api.siliconflow.com/v1/user/info")),
    ("siliconflow", SILICONFLOW_ANSWER, {}, ("CNY", "https://api.siliconflow.cn/v1/user/info")),
    ("stepfun", STEPFUN_ANSWER, {"baseUrl": "https://api.stepfun.ai/v1"}, ("USD", "https://api.stepfun.ai/v1/accounts")),
    ("stepfun", STEPFUN_ANSWER, {}, ("CNY", "https://api.stepfun.com/v1/accounts")),
], ids=["moonshot-ai", "moonshot-cn", "moonshot-configured", "siliconflow-com", "siliconflow-cn", "stepfun-ai",
        "stepfun-com"])
async def test_the_currency_follows_the_providers_region(pid, answer, config, expected, plugin_dir, make_host):
    """These answers name no currency: it is the region's, told only by the real host name
    (Moonshot documents available_balance in USD on api.moonshot.ai and in CNY on
    api.moonshot.cn; SiliconFlow's api.siliconflow.com and StepFun's api.stepfun.ai are their
    international, USD, sites). A fake on 127.0.0.1 cannot carry such a name and no test may
    ask the real one, so a probe plugin runs the shipped module with the documented answer in
    place of the request: the URL it would ask is checked, and nothing leaves the machine."""
    plugin_dir.add("probe/mod.ts", PROBE)
    shutil.copy(PLUGINS / pid / "mod.ts", plugin_dir.root / "probe" / "target.ts")
    async with make_host(pool=ONE, plugins={"probe": PluginSettings(config={})}) as h:
        assert h.plugin("probe").permissions.get("net", []) == []
        got = await h.call("probe", "run", config, answer)
        currency, url = expected
        assert (got["currency"], got["urls"]) == (currency, [url])


def deepseek_entry(currency: str, total: str) -> dict[str, str]:
    return {"currency": currency, "total_balance": total, "granted_balance": "0.00", "topped_up_balance": total}


@pytest.mark.parametrize(("infos", "expected"), [
    ([deepseek_entry("USD", "0.00"), deepseek_entry("CNY", "71.46")], (71.46, "CNY")),
    ([deepseek_entry("CNY", "71.46"), deepseek_entry("USD", "0.00")], (71.46, "CNY")),
    ([deepseek_entry("CNY", "0.00"), deepseek_entry("USD", "5.00")], (5.0, "USD")),
    ([deepseek_entry("USD", "5.50"), deepseek_entry("CNY", "110.00")], (110.0, "CNY")),
    ([deepseek_entry("USD", "0.00"), deepseek_entry("CNY", "0.00")], (0.0, "CNY")),
], ids=["usd-empty-first", "cny-first", "only-usd-funded", "both-funded", "both-empty"])
async def test_deepseek_shows_the_same_funded_currency_whatever_the_order(infos, expected, plugin_dir, make_host,
                                                                          fake_http):
    """DeepSeek answers one balance_infos entry per currency and does not keep their order (a
    CNY 81.69 and USD 0.00 account came back USD first every other time:
    https://github.com/wssfk12138/dsh-damage-pulse/issues/2, steipete/CodexBar#873): without a
    configured currency the funded entry is shown, CNY before USD when both are."""
    async with provider_host(DEEPSEEK, plugin_dir, make_host, fake_http) as h:
        answer = {"is_available": True, "balance_infos": infos}
        fake_http.json("GET", "/user/balance", answer)
        r = await query(h)
        assert (r.status, r.balance, r.currency, r.raw_data) == ("success", *expected, answer), r.error_message


async def test_a_deepseek_account_with_no_balance_entry_and_not_available_is_shown_empty_not_unparsed(
        plugin_dir, make_host, fake_http):
    """{"is_available": false, "balance_infos": []}: an account that never topped up (public
    DeepSeek clients' fixtures read it as unavailable, insufficient balance) was a PARSE_ERROR
    "balance_infos is missing or empty", as if the answer were garbled (helper-112's finding).
    It is a balance of 0, marked invalid with DeepSeek's word for why; an empty list on an
    available account stays a PARSE_ERROR."""
    async with provider_host(DEEPSEEK, plugin_dir, make_host, fake_http) as h:
        answer = {"is_available": False, "balance_infos": []}
        fake_http.json("GET", "/user/balance", answer)
        r = await query(h)
        assert (r.status, r.balance, r.invalid, r.raw_data) == ("success", 0, True, answer), r.error_message
        assert "is_available false" in r.error_message, r.error_message


async def test_a_new_api_site_with_its_own_quota_per_unit_is_read_in_its_units(plugin_dir, make_host, fake_http):
    """New API's QuotaPerUnit is a site setting (500,000 a dollar by default; common.QuotaPerUnit),
    and a site may reckon its quota in CNY: the plugin divided by 500,000 and said USD whatever
    the site set, so such a site showed a wrong balance (helper-112's finding). quotaPerUnit
    and currency, in the station's config, say the site's; the defaults stay."""
    async with provider_host(NEWAPI, plugin_dir, make_host, fake_http, quotaPerUnit=1_000_000, currency="CNY") as h:
        r = await query(h)
        assert (r.status, r.balance, r.currency, r.quota, r.used_quota) == (
            "success", 500.0, "CNY", 501.25, 1.25), r.error_message
        with pytest.raises(InvalidConfig, match=r"config\.quotaPerUnit"):
            await h.set_config("newapi", {"quotaPerUnit": 0})


async def test_openai_billing_names_the_relays_display_currency(plugin_dir, make_host, fake_http):
    """new-api answers the *_usd fields in its quota display unit (controller/billing.go:
    `case QuotaDisplayTypeCNY: amount = amount / QuotaPerUnit * USDExchangeRate`), which the
    answer does not name: a site that shows CNY is read in CNY when the station says so."""
    async with provider_host(OPENAI, plugin_dir, make_host, fake_http, currency="CNY") as h:
        r = await query(h)
        assert (r.status, r.balance, r.currency) == ("success", pytest.approx(107.655), "CNY"), r.error_message
