"""The balance plugins added after the first six (plugins/<id>/: litellm, sub2api, zhipu, minimax,
kimi, novita, stepfun), copied as they are, against local fakes of their providers' documented
answers: the success and every field of its BalanceResult, the request (path, auth header), a
401, the refusals these providers answer with HTTP 200, a malformed answer (PARSE_ERROR naming
the field), each provider's variants and traps, nothing sent while unconfigured, and the key
kept out of every result. The helpers (and the common checks, for the providers that take a
Bearer key) are test_providers.py's."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from test_providers import (
    KEY,
    MASK,
    ONE,
    PLUGINS,
    Provider,
    call_fails,
    check_provider,
    echo_key_401,
    fields,
    paths,
    provider_host,
    query,
)

from host import PluginSettings
from host.balances.result import BalanceResult

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the plugins are what is tested here, not the host's backends


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as JavaScript's toISOString() writes them."""
    t = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Case:
    p: Provider
    auth: str                                   # the Authorization header it must send
    unlimited: bool                             # the success's `unlimited`
    refusals: list[tuple[Any, str, str]]        # (an answer with HTTP 200, its error type, words of its message)
    base: str = ""                              # baseUrl's path on the fake (Kimi's "/coding")
    bearer: bool = True                         # whether test_providers' check_provider applies

    @property
    def id(self) -> str:
        return self.p.id


# -- LiteLLM: GET /key/info -----------------------------------------------------------------------
LITELLM_INFO = {
    "key_name": "sk-...abcd", "key_alias": "my-laptop", "soft_budget_cooldown": False, "spend": 3.2145,
    "expires": "2026-12-31T00:00:00+00:00", "models": ["gpt-4o", "claude-sonnet-4"], "aliases": {}, "config": {},
    "user_id": "user-123", "team_id": None, "metadata": {}, "blocked": None, "tpm_limit": None, "rpm_limit": None,
    "max_budget": 10.0, "budget_duration": "30d", "budget_reset_at": "2026-10-01T00:00:00+00:00",
    "budget_id": None, "created_at": "2026-09-01T08:00:00+00:00", "litellm_budget_table": None}
LITELLM_BODY = {"key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", "info": LITELLM_INFO}
LITELLM = Case(
    Provider("litellm", "/key/info", {"/key/info": LITELLM_BODY},
             {"balance": 6.7855, "currency": "USD", "quota": 10.0, "used_quota": 3.2145,
              "expires_at": "2026-12-31T00:00:00+00:00"},
             raw=LITELLM_INFO, missing={"key": "x", "info": {"max_budget": 10.0}}, missing_field="info.spend"),
    f"Bearer {KEY}", False,
    [({"error": {"message": "Authentication Error, Invalid proxy server token passed. Received API Key = sk-...8aSP",
                 "type": "token_not_found_in_db", "param": "key", "code": "401"}}, "AUTH_ERROR", "Invalid proxy server"),
     ({"error": {"message": "Database not connected. Connect a database to your proxy",
                 "type": "internal_server_error", "param": None, "code": "500"}}, "PROVIDER_ERROR", "Database not connected"),
     ({"key": "x", "info": {**LITELLM_INFO, "blocked": True}}, "AUTH_ERROR", "this key is blocked")])

# -- sub2api: GET /v1/usage -----------------------------------------------------------------------
SUB2API_BODY = {
    "mode": "quota_limited", "isValid": True, "status": "active",
    "quota": {"limit": 10.0, "used": 3.2, "remaining": 6.8, "unit": "USD"}, "remaining": 6.8, "unit": "USD",
    "rate_limits": [
        {"window": "5h", "limit": 5.0, "used": 1.2, "remaining": 3.8,
         "window_start": "2026-09-20T11:00:00Z", "reset_at": "2026-09-20T16:00:00Z"},
        {"window": "1d", "limit": 20.0, "used": 4.0, "remaining": 16.0,
         "window_start": "2026-09-20T00:00:00Z", "reset_at": "2026-09-21T00:00:00Z"},
        {"window": "7d", "limit": 80.0, "used": 22.5, "remaining": 57.5,
         "window_start": "2026-09-15T00:00:00Z", "reset_at": "2026-09-22T00:00:00Z"}],
    "expires_at": "2026-10-01T00:00:00Z", "days_until_expiry": 12,
    "usage": {"today": {"requests": 12, "total_tokens": 1500, "cost": 0.12, "actual_cost": 0.12},
              "total": {"requests": 340, "total_tokens": 130000, "cost": 3.2, "actual_cost": 3.2},
              "average_duration_ms": 2300, "rpm": 1, "tpm": 800},
    "model_stats": []}
SUB2API = Case(
    Provider("sub2api", "/v1/usage", {"/v1/usage": SUB2API_BODY},
             {"balance": 6.8, "currency": "USD", "quota": 10.0, "used_quota": 3.2, "expires_at": "2026-10-01T00:00:00Z"},
             raw=SUB2API_BODY, missing={"mode": "unrestricted", "isValid": True, "planName": "钱包余额", "unit": "USD"},
             missing_field="remaining"),
    f"Bearer {KEY}", False,
    [({"code": "INVALID_API_KEY", "message": "Invalid API key"}, "AUTH_ERROR", "INVALID_API_KEY: Invalid API key"),
     ({"mode": "quota_limited", "isValid": False, "status": "disabled"}, "AUTH_ERROR", "not valid (status disabled)"),
     ({"type": "error", "error": {"type": "api_error", "message": "Failed to get user info"}},
      "PROVIDER_ERROR", "Failed to get user info")])

# -- Zhipu: GET /api/monitor/usage/quota/limit, the key without "Bearer " ---------------------------
ZHIPU_PATH = "/api/monitor/usage/quota/limit"
Z5H, ZWEEK, ZMONTH = 1787771961795, 1788142864978, 1789611664999
ZHIPU_DATA = {"level": "max", "limits": [
    {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 1, "nextResetTime": Z5H},
    {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 23, "nextResetTime": ZWEEK},
    {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 4000, "currentValue": 1, "remaining": 3999,
     "percentage": 1, "nextResetTime": ZMONTH, "usageDetails": [{"modelCode": "search-prime", "usage": 1}]}]}
ZHIPU_BODY = {"code": 200, "msg": "Operation successful", "success": True, "data": ZHIPU_DATA}
ZHIPU_WINDOWS = [
    {"name": "5 hours", "type": "TOKENS_LIMIT", "headline": True, "usedPercent": 1, "remainingPercent": 99,
     "resetsAt": iso_ms(Z5H)},
    {"name": "1 week", "type": "TOKENS_LIMIT", "headline": False, "usedPercent": 23, "remainingPercent": 77,
     "resetsAt": iso_ms(ZWEEK)},
    {"name": "1 month", "type": "TIME_LIMIT", "headline": False, "usedPercent": 1, "remainingPercent": 99,
     "limit": 4000, "used": 1, "remaining": 3999, "resetsAt": iso_ms(ZMONTH)}]
ZHIPU = Case(
    Provider("zhipu", ZHIPU_PATH, {ZHIPU_PATH: ZHIPU_BODY},
             {"balance": 99.0, "currency": "%", "quota": 100.0, "used_quota": 1.0, "expires_at": None},
             raw={"plan": "max", "windows": ZHIPU_WINDOWS, "answer": ZHIPU_DATA},
             missing={"code": 200, "success": True, "data": {"level": "max", "limits": [  # (absent: 0 % used)
                 {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": "n/a", "nextResetTime": Z5H}]}},
             missing_field="data.limits[0].percentage",
             headers={"Accept-Language": "en-US,en", "Content-Type": "application/json"}),
    KEY, False,
    [({"code": 1001, "success": False, "msg": "Authorization Token Missing"}, "AUTH_ERROR", "Authorization Token Missing"),
     ({"code": 401, "msg": "Unauthorized", "success": False, "data": None}, "AUTH_ERROR", "code 401: Unauthorized"),
     ({"code": 500, "msg": "This account has no active coding plan", "success": False}, "PROVIDER_ERROR",
      "no GLM Coding Plan on this key"),
     ({"code": 500, "msg": "系统繁忙", "success": False}, "PROVIDER_ERROR", "code 500: 系统繁忙")],
    bearer=False)

# -- MiniMax: GET /v1/api/openplatform/coding_plan/remains -----------------------------------------
MINIMAX_PATH = "/v1/api/openplatform/coding_plan/remains"
GENERAL = {"start_time": 1785164400000, "end_time": 1785182400000, "remains_time": 1877492,
           "current_interval_total_count": 0, "current_interval_usage_count": 0, "model_name": "general",
           "current_weekly_total_count": 0, "current_weekly_usage_count": 0,
           "weekly_start_time": 1785110400000, "weekly_end_time": 1785715200000, "weekly_remains_time": 534677492,
           "current_interval_status": 1, "current_interval_remaining_percent": 99,
           "current_weekly_status": 1, "current_weekly_remaining_percent": 99}
VIDEO = {"start_time": 1785110400000, "end_time": 1785196800000, "remains_time": 16277492,
         "current_interval_total_count": 3, "current_interval_usage_count": 0, "model_name": "video",
         "current_weekly_total_count": 21, "current_weekly_usage_count": 0,
         "weekly_start_time": 1785110400000, "weekly_end_time": 1785715200000, "weekly_remains_time": 534677492,
         "current_interval_status": 3, "current_interval_remaining_percent": 100,
         "current_weekly_status": 3, "current_weekly_remaining_percent": 100}
OK = {"status_code": 0, "status_msg": "success"}
MINIMAX_BODY = {"model_remains": [GENERAL, VIDEO], "base_resp": OK}


def mm_window(model: str, name: str, headline: bool, active: bool, left: float, reset: int) -> dict[str, Any]:
    return {"model": model, "name": name, "headline": headline, "active": active, "remainingPercent": left,
            "usedPercent": 100 - left, "resetsAt": iso_ms(reset)}


MINIMAX = Case(
    Provider("minimax", MINIMAX_PATH, {MINIMAX_PATH: MINIMAX_BODY},
             {"balance": 99.0, "currency": "%", "quota": 100.0, "used_quota": 1.0, "expires_at": None},
             raw={"plan": "general", "answer": MINIMAX_BODY, "windows": [
                 mm_window("general", "interval", True, True, 99, 1785182400000),
                 mm_window("general", "weekly", False, True, 99, 1785715200000),
                 mm_window("video", "interval", False, False, 100, 1785196800000),
                 mm_window("video", "weekly", False, False, 100, 1785715200000)]},
             missing={"model_remains": [{"model_name": "general", "current_interval_total_count": 0,
                                         "current_interval_usage_count": 0}], "base_resp": OK},
             missing_field="model_remains[0].current_interval_remaining_percent",
             openai_base="/anthropic", headers={"Content-Type": "application/json"}),
    f"Bearer {KEY}", False,
    [({"base_resp": {"status_code": 2049, "status_msg": "invalid api key"}}, "AUTH_ERROR", "status 2049: invalid api key"),
     ({"base_resp": {"status_code": 1004, "status_msg": "login fail: Please carry the API secret key in the "
                     "'Authorization' field of the request header"}}, "AUTH_ERROR", "status 1004: login fail"),
     ({"base_resp": {"status_code": 1002, "status_msg": "rate limit exceeded(RPM)"}}, "RATE_LIMIT", "status 1002"),
     ({"model_remains": None, "base_resp": {"status_code": 1013, "status_msg": "internal service error"}},
      "PROVIDER_ERROR", "status 1013: internal service error")])

# -- Kimi For Coding: GET /coding/v1/usages ----------------------------------------------------------
KIMI_PATH = "/coding/v1/usages"
KIMI_BODY = {
    "usage": {"limit": "100", "used": "15", "remaining": "85", "resetTime": "2026-09-30T10:10:16.485718Z"},
    "limits": [{"window": {"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"},
                "detail": {"limit": "100", "used": "20", "remaining": "80", "resetTime": "2026-09-24T15:10:16.485718Z"}}],
    "usages": {"limit_5h": {"used_ratio": 0, "reset_time": "2026-09-24T15:10:15Z"},
               "limit_7d": {"used_ratio": 0, "reset_time": "2026-09-30T10:10:15Z"}},
    "booster_wallet": {"balance": "0"}, "parallel": {"limit": 4}, "subType": "INDIVIDUAL",
    "user": {"userId": "u1", "region": "REGION_OVERSEA", "membership": {"level": "LEVEL_BASIC"}, "businessId": ""}}
KIMI = Case(
    Provider("kimi", KIMI_PATH, {KIMI_PATH: KIMI_BODY},
             {"balance": 80.0, "currency": None, "quota": 100.0, "used_quota": 20.0, "expires_at": None},
             raw={"plan": "LEVEL_BASIC", "answer": KIMI_BODY, "windows": [
                 {"name": "5 hours", "headline": True, "limit": 100, "used": 20, "remaining": 80,
                  "resetsAt": "2026-09-24T15:10:16.485718Z"},
                 {"name": "weekly", "headline": False, "limit": 100, "used": 15, "remaining": 85,
                  "resetsAt": "2026-09-30T10:10:16.485718Z"}]},
             missing={"usage": {"used": "5"}}, missing_field="usage.limit", openai_base="/coding/v1",
             headers={"Accept": "application/json"}),
    f"Bearer {KEY}", False,
    [({"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}, "AUTH_ERROR",
      "Invalid Authentication"),
     ({"error": {"message": "The engine is currently overloaded, please try again later",
                 "type": "engine_overloaded_error"}}, "PROVIDER_ERROR", "currently overloaded")],
    base="/coding")

# -- Novita: GET /openapi/v1/billing/balance/detail, amounts in 1/10,000 USD -----------------------
NOVITA_PATH = "/openapi/v1/billing/balance/detail"
NOVITA_BODY = {"availableBalance": "1000000", "cashBalance": "800000", "creditLimit": "200000",
               "pendingCharges": "0", "outstandingInvoices": "0"}
NOVITA = Case(
    Provider("novita", NOVITA_PATH, {NOVITA_PATH: NOVITA_BODY},
             {"balance": 100.0, "currency": "USD", "quota": None, "used_quota": None, "expires_at": None},
             raw=NOVITA_BODY, missing={"cashBalance": "800000", "creditLimit": "0"}, missing_field="availableBalance",
             openai_base="/v3/openai", headers={"Content-Type": "application/json"}),
    f"Bearer {KEY}", False,
    [({"code": 401, "reason": "INVALID_API_KEY", "message": "invalid api-key"}, "AUTH_ERROR",
      "INVALID_API_KEY: invalid api-key"),
     ({"code": 500, "reason": "INTERNAL_SERVER_ERROR", "message": "internal error"}, "PROVIDER_ERROR",
      "INTERNAL_SERVER_ERROR: internal error")])

# -- StepFun: GET /v1/accounts ------------------------------------------------------------------------
STEPFUN_BODY = {"object": "account", "type": "prepaid", "balance": 128.0, "total_cash_balance": 100.0,
                "total_voucher_balance": 28.0}
STEPFUN = Case(
    Provider("stepfun", "/v1/accounts", {"/v1/accounts": STEPFUN_BODY},
             {"balance": 128.0, "currency": "CNY", "quota": None, "used_quota": None, "expires_at": None},
             raw=STEPFUN_BODY, missing={"object": "account", "type": "prepaid"}, missing_field="balance"),
    f"Bearer {KEY}", False,
    [({"error": {"message": "Incorrect API key provided", "type": "invalid_api_key"}}, "AUTH_ERROR",
      "Incorrect API key provided"),
     ({"error": {"message": "server is busy", "type": "server_error"}}, "PROVIDER_ERROR", "server is busy")])

CASES = [LITELLM, SUB2API, ZHIPU, MINIMAX, KIMI, NOVITA, STEPFUN]


def host_for(c: Case, plugin_dir, make_host, fake, **config: Any):
    """test_providers' provider_host, with baseUrl at the case's path on the fake."""
    if c.base:
        config.setdefault("baseUrl", fake.url + c.base)
    return provider_host(c.p, plugin_dir, make_host, fake, **config)


def leaks(r: Any) -> bool:
    """Whether the key shows anywhere in a result."""
    return KEY in msgspec.json.encode(r).decode()


async def expect_error(h, fake, c: Case, body: Any, error_type: str, said: str, status: int = 200) -> BalanceResult:
    fake.json("GET", c.p.path, body, status=status)
    r = await query(h)
    assert (r.status, r.error_type, r.balance, r.quota, r.used_quota, r.raw_data) == (
        "error", error_type, None, None, None, None), r
    assert said in (r.error_message or ""), r.error_message
    assert not leaks(r)
    return r


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_the_documented_answer_the_request_and_the_refusals(c: Case, plugin_dir, make_host, fake_http):
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        if c.bearer:  # test_providers' checks: 429, 500, HTML, an OpenAI base URL, validateConfig, ...
            await check_provider(h, fake_http, c.p)

        r = await query(h)
        assert (r.provider, r.status, r.error_type, r.error_message) == (c.id, "success", None, None), r
        assert fields(r) == pytest.approx(c.p.expected)
        assert (r.unlimited, r.cached) == (c.unlimited, False)
        assert r.raw_data == c.p.raw
        assert paths(fake_http) == c.p.request_paths()
        for method, _, headers in fake_http.requests:
            assert (method, headers["Authorization"]) == ("GET", c.auth)
            assert {k: headers.get(k) for k in c.p.headers} == c.p.headers
        results = [r]

        fake_http.route("GET", c.p.path, echo_key_401)
        r = await query(h)
        assert (r.status, r.error_type, r.balance) == ("error", "AUTH_ERROR", None), r
        assert "answered 401" in r.error_message and MASK in r.error_message
        results.append(r)

        for body, error_type, said in c.refusals:
            results.append(await expect_error(h, fake_http, c, body, error_type, said))

        results.append(await expect_error(h, fake_http, c, c.p.missing, "PARSE_ERROR", c.p.missing_field))
        for r in results:
            assert not leaks(r), r


async def test_zhipu_sends_the_key_without_bearer_and_reads_the_shortest_token_window(plugin_dir, make_host, fake_http):
    c = ZHIPU
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        assert h.plugin(c.id).permissions["net"] == [f"127.0.0.1:{fake_http.port}"]
        # the coding base URLs, as configured for a coding tool, name the same endpoint
        for suffix in ("/api/anthropic", "/api/coding/paas/v4/", ""):
            fake_http.requests.clear()
            got = await h.call(c.id, "queryBalance", {**config, "baseUrl": fake_http.url + suffix})
            assert (got["balance"], got["currency"]) == (99, "%") and paths(fake_http) == [ZHIPU_PATH]
            [(_, _, headers)] = fake_http.requests
            assert headers["Authorization"] == KEY and "Bearer" not in headers["Authorization"]

        # the weekly window listed first, the 5-hour one still the headline (not sorted by reset)
        limits = ZHIPU_DATA["limits"]
        fake_http.json("GET", ZHIPU_PATH, {**ZHIPU_BODY, "data": {"level": "pro", "limits": [limits[2], limits[1], limits[0]]}})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got["usedQuota"]) == (99, 100, 1)
        assert [w["headline"] for w in got["rawData"]["windows"]] == [False, False, True]

        # an old plan (one 5-hour window, no reset at 0 %), a newer CREDIT_LIMIT row, a level object
        fake_http.json("GET", ZHIPU_PATH, {**ZHIPU_BODY, "data": {"level": {"name": "lite"}, "limits": [
            {"type": "CREDIT_LIMIT", "unit": 3, "number": 5, "usage": 800, "currentValue": 200, "percentage": 25}]}})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["usedQuota"], got["rawData"]["plan"]) == (75, 25, "lite")
        assert got["rawData"]["windows"] == [{"name": "5 hours", "type": "CREDIT_LIMIT", "headline": True,
                                              "usedPercent": 25, "remainingPercent": 75, "limit": 800, "used": 200,
                                              "remaining": 600, "resetsAt": None}]

        # a window with no percentage yet: unused, as Zhipu's own quota HUD and cc-switch read it
        # (before: PARSE_ERROR, the whole query failed)
        fresh = {k: v for k, v in limits[0].items() if k != "percentage"}
        fake_http.json("GET", ZHIPU_PATH, {**ZHIPU_BODY, "data": {"level": "max", "limits": [fresh, limits[1]]}})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got["usedQuota"]) == (100, 100, 0)

        # no token window at all: not a number to show
        fake_http.json("GET", ZHIPU_PATH, {**ZHIPU_BODY, "data": {"level": "lite", "limits": [limits[2]]}})
        e = await call_fails(h, c.id, config)
        assert e.error_type == "PROVIDER_ERROR" and "no token window" in e.message

        fake_http.json("GET", ZHIPU_PATH, {"error": "forbidden"}, status=403)
        e = await call_fails(h, c.id, config)
        assert (e.error_type, e.details) == ("AUTH_ERROR", {"status": 403}) and KEY not in e.message
        fake_http.json("GET", ZHIPU_PATH, {"error": "boom"}, status=500)
        assert (await call_fails(h, c.id, config)).error_type == "PROVIDER_ERROR"
        assert list((await h.check_health()).values()) == [True]


async def test_minimax_older_count_plans_and_windows_without_a_limit(plugin_dir, make_host, fake_http):
    c = MINIMAX
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        # an older plan: counts only, and current_interval_usage_count is what REMAINS
        old = {"model_name": "MiniMax-M2", "start_time": 1762400000000, "end_time": 1762418000000,
               "remains_time": 4161372, "current_interval_total_count": 1500, "current_interval_usage_count": 1459}
        fake_http.json("GET", MINIMAX_PATH, {"model_remains": [{"model_name": "speech-02"}, old], "base_resp": OK})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["currency"], got["quota"], got["usedQuota"], got.get("unlimited")) == (
            1459, "prompts", 1500, 41, None)
        assert got["rawData"]["plan"] == "MiniMax-M2"
        assert got["rawData"]["windows"] == [{
            "model": "MiniMax-M2", "name": "interval", "headline": True, "active": True, "remainingPercent": None,
            "usedPercent": None, "limit": 1500, "used": 41, "remaining": 1459, "resetsAt": iso_ms(1762418000000)}]

        # no 5-hour limit on this plan (status 3): the week is the headline
        weekly_only = {**GENERAL, "current_interval_status": 3, "current_interval_remaining_percent": 100,
                       "current_weekly_remaining_percent": 64}
        fake_http.json("GET", MINIMAX_PATH, {"model_remains": [VIDEO, weekly_only], "base_resp": OK})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got["usedQuota"], got["currency"]) == (64, 100, 36, "%")
        assert [(w["model"], w["name"]) for w in got["rawData"]["windows"] if w["headline"]] == [("general", "weekly")]

        # neither: unlimited, no number
        fake_http.json("GET", MINIMAX_PATH, {"model_remains": [{**weekly_only, "current_weekly_status": 3}],
                                             "base_resp": OK})
        r = await query(h)
        assert (r.status, r.unlimited, r.balance, r.quota, r.used_quota, r.currency) == (
            "success", True, None, None, None, None)

        # a plan key of the other region, an empty plan list, a real 401
        fake_http.json("GET", MINIMAX_PATH, {"model_remains": [], "base_resp": OK})
        e = await call_fails(h, c.id, config)
        assert e.error_type == "PROVIDER_ERROR" and "model_remains is empty" in e.message
        fake_http.json("GET", MINIMAX_PATH, {"base_resp": {"status_code": 1004, "status_msg": "login fail"}}, status=401)
        assert (await call_fails(h, c.id, config)).error_type == "AUTH_ERROR"


async def test_kimi_reads_counts_with_zeros_left_out_and_falls_back_to_the_week(plugin_dir, make_host, fake_http):
    c = KIMI
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        # proto3: a count of 0 is left out ("used" of a fresh window, "remaining" of a spent one)
        fake_http.json("GET", KIMI_PATH, {
            "usage": {"limit": 100, "remaining": 100, "resetTime": "2026-09-30T10:10:16Z"},
            "limits": [{"window": {"duration": 7, "timeUnit": "TIME_UNIT_DAY"}, "detail": {"limit": "700", "used": "3"}},
                       {"window": {"duration": 5, "timeUnit": "TIME_UNIT_HOUR"}, "detail": {"limit": "50", "used": "50"}}]})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got["usedQuota"], got["currency"]) == (0, 50, 50, None)
        assert got["rawData"]["windows"] == [
            {"name": "7 days", "headline": False, "limit": 700, "used": 3, "remaining": 697, "resetsAt": None},
            {"name": "5 hours", "headline": True, "limit": 50, "used": 50, "remaining": 0, "resetsAt": None},
            {"name": "weekly", "headline": False, "limit": 100, "used": 0, "remaining": 100,
             "resetsAt": "2026-09-30T10:10:16Z"}]
        assert got["rawData"]["plan"] is None

        # no rolling window: the weekly quota is the headline
        fake_http.json("GET", KIMI_PATH, {"usage": {"limit": "2048", "used": "48"}})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got["usedQuota"]) == (2000, 2048, 48)

        # not a Kimi For Coding key: 404, said so
        fake_http.json("GET", KIMI_PATH, {"error": {"message": "not found"}}, status=404)
        e = await call_fails(h, c.id, config)
        assert (e.error_type, e.details) == ("PROVIDER_ERROR", {"status": 404})
        assert "only available for a Kimi For Coding key" in e.message


async def test_litellm_unlimited_keys_budget_tables_and_old_token_fields(plugin_dir, make_host, fake_http):
    c = LITELLM
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        # no budget: unlimited, what was spent still shown, no expiry
        fake_http.json("GET", "/key/info", {"key": "x", "info": {**LITELLM_INFO, "max_budget": None, "expires": None}})
        r = await query(h)
        assert (r.status, r.unlimited, r.balance, r.quota, r.used_quota, r.expires_at) == (
            "success", True, None, None, pytest.approx(3.2145), None)

        # the budget of the key's budget table
        fake_http.json("GET", "/key/info", {"key": "x", "info": {
            **LITELLM_INFO, "max_budget": None, "budget_id": "b1", "litellm_budget_table": {"max_budget": 5.0}}})
        got = await h.call(c.id, "queryBalance", config)
        assert (got["balance"], got["quota"], got.get("unlimited")) == (pytest.approx(1.7855), 5.0, None)

        # an older proxy that still sends the token (once the key itself): never passed on
        fake_http.json("GET", "/key/info", {"key": KEY, "info": {**LITELLM_INFO, "token": KEY}})
        r = await query(h)
        assert r.status == "success" and "token" not in r.raw_data and not leaks(r)

        # an OpenAI-style base URL names the same endpoint
        fake_http.requests.clear()
        await h.call(c.id, "queryBalance", {**config, "baseUrl": fake_http.url + "/v1/"})
        assert paths(fake_http) == ["/key/info"]


SUB_WALLET = {"mode": "unrestricted", "isValid": True, "planName": "钱包余额", "remaining": 66.28, "unit": "USD",
              "balance": 66.28, "usage": {}}
SUB_SUBSCRIPTION = {"mode": "unrestricted", "isValid": True, "planName": "Claude Pro 拼车", "unit": "USD", "remaining": 4.0,
                    "subscription": {"daily_usage_usd": 1.0, "weekly_usage_usd": 5.0, "monthly_usage_usd": 12.5,
                                     "daily_limit_usd": 5.0, "weekly_limit_usd": 25.0, "monthly_limit_usd": None,
                                     "weekly_window_start": "2026-09-15T00:00:00Z",
                                     "expires_at": "2026-10-20T00:00:00Z"}}


@pytest.mark.parametrize(("answer", "expected"), [
    (SUB_WALLET, (66.28, None, None, False, None)),
    (SUB_SUBSCRIPTION, (4.0, 5.0, 1.0, False, "2026-10-20T00:00:00Z")),
    ({**SUB_SUBSCRIPTION, "remaining": -1, "subscription": {"expires_at": None}}, (None, None, None, True, None)),
    ({"isValid": True, "planName": "钱包余额", "remaining": 12.34, "unit": "USD"}, (12.34, None, None, False, None)),
    ({"mode": "quota_limited", "isValid": True, "status": "active", "rate_limits": SUB2API_BODY["rate_limits"]},
     (3.8, 5.0, 1.2, False, None)),
    ({"mode": "quota_limited", "isValid": True, "status": "active", "expires_at": "2026-10-01T00:00:00Z"},
     (None, None, None, True, "2026-10-01T00:00:00Z")),
    ({**SUB2API_BODY, "status": "quota_exhausted", "quota": {"limit": 10.0, "used": 10.0, "remaining": 0.0}},
     (0.0, 10.0, 10.0, False, "2026-10-01T00:00:00Z")),
], ids=["wallet", "subscription", "subscription-unlimited", "legacy", "rate-limits-only", "no-limits", "exhausted"])
async def test_sub2api_modes(answer, expected, plugin_dir, make_host, fake_http):
    c = SUB2API
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        fake_http.json("GET", "/v1/usage", answer)
        r = await query(h)
        assert r.status == "success", r.error_message
        assert (r.balance, r.quota, r.used_quota, r.unlimited, r.expires_at) == pytest.approx(expected)
        assert (r.currency, r.raw_data) == ("USD", answer)


async def test_sub2api_older_relays_billing_refusals_are_not_a_bad_key(plugin_dir, make_host, fake_http):
    c = SUB2API
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        fake_http.json("GET", "/v1/usage", {"code": "INSUFFICIENT_BALANCE", "message": "Insufficient account balance"},
                       status=403)
        e = await call_fails(h, c.id, config)
        assert (e.error_type, e.details) == ("PROVIDER_ERROR", {"status": 403, "code": "INSUFFICIENT_BALANCE"}) and "the wallet is empty" in e.message
        fake_http.json("GET", "/v1/usage", {"code": "USAGE_LIMIT_EXCEEDED", "message": "Daily usage limit exceeded"},
                       status=429)
        e = await call_fails(h, c.id, config)
        assert (e.error_type, e.details) == ("PROVIDER_ERROR", {"status": 429, "code": "USAGE_LIMIT_EXCEEDED"}) and "usage limit is used up" in e.message
        fake_http.json("GET", "/v1/usage", {"code": "API_KEY_DISABLED", "message": "API key is disabled"}, status=401)
        assert (await call_fails(h, c.id, config)).error_type == "AUTH_ERROR"


async def test_novita_says_which_keys_may_read_the_balance(plugin_dir, make_host, fake_http):
    c = NOVITA
    async with host_for(c, plugin_dir, make_host, fake_http) as h:
        config = dict(h.pool(c.id).spec.config)
        fake_http.json("GET", NOVITA_PATH, {"code": 403, "reason": "PERMISSION_DENIED", "message": "no permission"},
                       status=403)
        e = await call_fails(h, c.id, config)
        assert (e.error_type, e.details) == ("AUTH_ERROR", {"status": 403})
        assert "the Balance permission: Owner, Admin or Billing" in e.message
        fake_http.json("GET", NOVITA_PATH, {**NOVITA_BODY, "availableBalance": "12345"})
        assert (await h.call(c.id, "queryBalance", config))["balance"] == pytest.approx(1.2345)


async def test_stepfun_currency_option(plugin_dir, make_host, fake_http):
    c = STEPFUN
    async with host_for(c, plugin_dir, make_host, fake_http, currency="USD") as h:
        r = await query(h)
        assert (r.status, r.balance, r.currency) == ("success", 128.0, "USD")


async def test_unconfigured_plugins_are_not_configured_and_send_nothing(plugin_dir, make_host, fake_http):
    """No key (and for the self-hosted LiteLLM and sub2api, no server): NOT_CONFIGURED, nothing
    asked. Each is pointed at the fake where it has a baseUrl, so a request would show."""
    settings = {}
    for c in CASES:
        shutil.copytree(PLUGINS / c.id, plugin_dir.root / c.id)
        settings[c.id] = PluginSettings(config={"baseUrl": fake_http.url + c.base}, allow_private_network=True)
    async with make_host(pool=ONE, plugins=settings) as h:
        results = await h.query_balances(refresh=True, timeout=10.0)
        assert [(r.provider, r.status, r.error_type, r.error_message) for r in results] == sorted(
            (c.id, "not_configured", "NOT_CONFIGURED", f"{c.id}: apiKey is not configured") for c in CASES)
        assert set((await h.check_health()).values()) == {False}
        for c in CASES:
            assert h.plugin(c.id).error == "healthCheck: apiKey is not configured"
            assert (await h.call(c.id, "validateConfig", {"apiKey": KEY})) == (
                {"valid": False, "message": "baseUrl is not configured"} if c.id in ("litellm", "sub2api") else True)
    assert fake_http.requests == []


@pytest.mark.parametrize("pid", ["litellm", "sub2api"])
async def test_self_hosted_without_a_server_send_nothing(pid, plugin_dir, make_host, fake_http):
    shutil.copytree(PLUGINS / pid, plugin_dir.root / pid)
    settings = PluginSettings(config={"apiKey": KEY}, allow_private_network=True)
    async with make_host(pool=ONE, plugins={pid: settings}) as h:
        assert h.plugin(pid).permissions.get("net", []) == []
        [r] = await h.query_balances(refresh=True, timeout=10.0)
        assert (r.status, r.error_type, r.error_message) == ("not_configured", "NOT_CONFIGURED",
                                                             f"{pid}: baseUrl is not configured")
        assert not leaks(r)
        assert list((await h.check_health()).values()) == [False]
        assert h.plugin(pid).error == "healthCheck: baseUrl is not configured"
    assert fake_http.requests == []
