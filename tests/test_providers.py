"""The shipped balance plugins (plugins/<id>/, copied as they are) against local fakes of their
providers: the balance and every field of it, the request (path, auth headers), each failure
as its error type (401, 429 with Retry-After, 500, a body that is not JSON, a field missing,
no answer in time), the key kept out of every result, the net grant following the configured
baseUrl, validateConfig and healthCheck. One host per provider: the fake's routes are switched
between modes and every query bypasses the result cache."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from aiohttp import web
from support.plugins import PluginDir

from host import (
    BalancesConfig,
    BreakerConfig,
    InvalidConfig,
    PluginError,
    PluginHost,
    PluginSettings,
    PoolConfig,
)
from host.balances.result import BalanceResult
from host.testing import FakeHttp

pytestmark = pytest.mark.anyio

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
KEY = "sk-test-5f0c2d9e8b7a41c6"
ONE = PoolConfig(min_workers=1, max_workers=1)
MASK = "********"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the plugins are what is tested here, not the host's backends


@dataclass
class Provider:
    id: str
    path: str                              # the balance endpoint, where the failure modes play
    routes: dict[str, Any]                 # path -> the provider's answer, for a success
    expected: dict[str, Any]               # the BalanceResult fields of that success
    raw: Any                               # its rawData
    missing: Any                           # a 200 answer without the balance field ...
    missing_field: str                     # ... that the PARSE_ERROR names
    openai_base: str = "/v1"               # the suffix of the OpenAI-style baseUrl it accepts
    key: str = "apiKey"
    config: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # beyond Authorization

    def request_paths(self) -> list[str]:
        return sorted(self.routes)


SUBSCRIPTION = "/v1/dashboard/billing/subscription"
USAGE = "/v1/dashboard/billing/usage"
CREDIT_GRANTS = "/v1/dashboard/billing/credit_grants"
SUB = {"object": "billing_subscription", "has_payment_method": True, "hard_limit_usd": 120.0,
       "soft_limit_usd": 100.0, "system_hard_limit_usd": 120.0, "access_until": 1735689600}
SPENT = {"object": "list", "total_usage": 1234.5}
OPENAI = Provider(
    "openai_billing", SUBSCRIPTION, {SUBSCRIPTION: SUB, USAGE: SPENT},
    {"balance": 107.655, "currency": "USD", "quota": 120.0, "used_quota": 12.345,
     "expires_at": "2025-01-01T00:00:00.000Z"},
    raw={"subscription": SUB, "usage": SPENT},
    missing={k: v for k, v in SUB.items() if k != "hard_limit_usd"}, missing_field="hard_limit_usd")

SELF = {"success": True, "message": "", "data": {"id": 1, "username": "alice", "quota": 500000000,
                                                 "used_quota": 1250000, "request_count": 42, "group": "default"}}
NEWAPI = Provider(
    "newapi", "/api/user/self", {"/api/user/self": SELF},
    {"balance": 1000.0, "currency": "USD", "quota": 1002.5, "used_quota": 2.5, "expires_at": None},
    raw=SELF["data"], missing={"success": True, "message": "", "data": {"id": 1, "used_quota": 5}},
    missing_field="data.quota", key="accessToken", config={"userId": "1"}, headers={"New-Api-User": "1"})

DEEPSEEK_BODY = {"is_available": True, "balance_infos": [
    {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"},
    {"currency": "USD", "total_balance": "5.50", "granted_balance": "0.00", "topped_up_balance": "5.50"}]}
DEEPSEEK = Provider(
    "deepseek", "/user/balance", {"/user/balance": DEEPSEEK_BODY},
    {"balance": 110.0, "currency": "CNY", "quota": None, "used_quota": None, "expires_at": None},
    raw=DEEPSEEK_BODY, missing={"is_available": True, "balance_infos": [{"currency": "CNY"}]},
    missing_field="balance_infos[0].total_balance")

CREDITS, KEY_INFO = "/api/v1/credits", "/api/v1/key"
CREDITS_BODY = {"data": {"total_credits": 100.5, "total_usage": 25.75}}
# GET /api/v1/key as documented (https://openrouter.ai/docs/api/api-reference/api-keys/get-current-key):
# a key without a limit; usage is its spend since it was made, usage_* that of the current UTC period
KEY_BODY = {"data": {
    "label": "sk-or-v1-au7...890", "limit": None, "limit_remaining": None, "limit_reset": None,
    "include_byok_in_limit": False, "usage": 25.75, "usage_daily": 1.25, "usage_weekly": 6.5, "usage_monthly": 20.0,
    "byok_usage": 0, "byok_usage_daily": 0, "byok_usage_weekly": 0, "byok_usage_monthly": 0,
    "is_free_tier": False, "is_management_key": False, "is_provisioning_key": False, "expires_at": None,
    "creator_user_id": "user_2dHFtVWx2n56w6HkM0000000000",
    "rate_limit": {"requests": 1000, "interval": "1h", "note": "This field is deprecated and safe to ignore."}}}
OPENROUTER = Provider(
    "openrouter", CREDITS, {CREDITS: CREDITS_BODY, KEY_INFO: KEY_BODY},
    {"balance": 74.75, "currency": "USD", "quota": 100.5, "used_quota": 25.75, "expires_at": None},
    raw={"credits": CREDITS_BODY["data"], "key": KEY_BODY["data"]},
    missing={"data": {"total_usage": 1.0}}, missing_field="data.total_credits", openai_base="/api/v1")

SF_BODY = {"code": 20000, "message": "OK", "status": True, "data": {
    "id": "userid", "name": "username", "email": "a@b.c", "balance": "0.88", "chargeBalance": "88.00",
    "totalBalance": "88.88", "status": "normal"}}
SILICONFLOW = Provider(
    "siliconflow", "/v1/user/info", {"/v1/user/info": SF_BODY},
    {"balance": 88.88, "currency": "CNY", "quota": None, "used_quota": None, "expires_at": None},
    raw=SF_BODY["data"], missing={"code": 20000, "status": True, "data": {"balance": "0.88"}},
    missing_field="data.totalBalance")

MOONSHOT_BODY = {"code": 0, "data": {"available_balance": 49.58894, "voucher_balance": 46.58893,
                                     "cash_balance": 3.00001}, "scode": "0x0", "status": True}
MOONSHOT = Provider(
    "moonshot", "/v1/users/me/balance", {"/v1/users/me/balance": MOONSHOT_BODY},
    {"balance": 49.58894, "currency": "CNY", "quota": None, "used_quota": None, "expires_at": None},
    raw=MOONSHOT_BODY["data"], missing={"code": 0, "status": True, "data": {"cash_balance": 1.0}},
    missing_field="data.available_balance")

PROVIDERS = [OPENAI, NEWAPI, DEEPSEEK, OPENROUTER, SILICONFLOW, MOONSHOT]


def echo_key_401(request: web.Request) -> web.Response:
    """A 401 that quotes the credential back, as some providers do: the host must mask it."""
    return web.json_response({"error": {"message": "Incorrect API key provided: "
                                        + request.headers.get("Authorization", "")}}, status=401)


def html_200(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")


def fields(r: BalanceResult) -> dict[str, Any]:
    return {"balance": r.balance, "currency": r.currency, "quota": r.quota, "used_quota": r.used_quota,
            "expires_at": r.expires_at}


def paths(fake: FakeHttp) -> list[str]:
    return sorted(urlsplit(q).path for _, q, _ in fake.requests)


def serve(fake: FakeHttp, routes: dict[str, Any]) -> None:
    for path, body in routes.items():
        fake.json("GET", path, body)


@asynccontextmanager
async def provider_host(p: Provider, plugin_dir: PluginDir, make_host: Callable[..., Any],
                        fake: FakeHttp, **config: Any) -> AsyncIterator[PluginHost]:
    """A host running the shipped plugin ``p`` configured for ``fake``, asking it at every query
    (no balances.min_interval: the tests switch the fake's answers between queries)."""
    shutil.copytree(PLUGINS / p.id, plugin_dir.root / p.id)
    serve(fake, p.routes)
    settings = PluginSettings(config={p.key: KEY, "baseUrl": fake.url, **p.config, **config},
                              allow_private_network=True, breaker=BreakerConfig(enabled=False))
    async with make_host(pool=ONE, plugins={p.id: settings}, balances=BalancesConfig(min_interval=0)) as h:
        assert h.plugin(p.id).state == "running", h.plugin(p.id).error
        yield h


async def query(h: PluginHost, timeout: float = 10.0) -> BalanceResult:
    [r] = await h.query_balances(refresh=True, timeout=timeout)
    return r


async def check_provider(h: PluginHost, fake: FakeHttp, p: Provider) -> dict[str, Any]:
    """Everything every provider plugin must do; returns the config the plugin runs with. The
    fake's routes are left answering successfully."""
    config = dict(h.pool(p.id).spec.config)
    assert h.plugin(p.id).permissions["net"] == [f"127.0.0.1:{fake.port}"]

    r = await query(h)
    assert (r.provider, r.status, r.error_message, r.error_type) == (p.id, "success", None, None)
    assert fields(r) == pytest.approx(p.expected)
    assert r.raw_data == p.raw
    assert paths(fake) == p.request_paths()
    for _, _, headers in fake.requests:
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert {k: headers.get(k) for k in p.headers} == p.headers

    # an OpenAI-style base URL ("https://api.x.com/v1/") names the same endpoints
    fake.requests.clear()
    got = await h.call(p.id, "queryBalance", {**config, "baseUrl": f"{fake.url}{p.openai_base}/"})
    assert got["balance"] == pytest.approx(p.expected["balance"]) and paths(fake) == p.request_paths()

    results = [r]
    modes: list[tuple[Callable[[web.Request], web.Response], str, str]] = [
        (echo_key_401, "AUTH_ERROR", "answered 401"),
        (lambda _: web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "30"}),
         "RATE_LIMIT", "answered 429"),
        (lambda _: web.json_response({"error": "upstream exploded"}, status=500), "PROVIDER_ERROR", "answered 500"),
        (html_200, "PARSE_ERROR", "502 Bad Gateway"),
        (lambda _: web.json_response(p.missing), "PARSE_ERROR", p.missing_field),
    ]
    for handler, error_type, said in modes:
        fake.route("GET", p.path, handler)
        r = await query(h)
        assert (r.status, r.error_type, r.balance) == ("error", error_type, None), r
        assert said in (r.error_message or ""), r.error_message
        results.append(r)
    assert MASK in results[1].error_message  # the key the fake quoted back was there, masked
    for r in results:
        assert KEY not in msgspec.json.encode(r).decode()

    fake.route("GET", p.path, lambda _: web.json_response({}, status=429, headers={"Retry-After": "30"}))
    with pytest.raises(PluginError) as e:
        await h.call(p.id, "queryBalance", config)
    assert (e.value.error_type, e.value.details) == ("RATE_LIMIT", {"status": 429, "retryAfter": 30})

    fake.requests.clear()
    for values, replace, said in [({"baseUrl": "ftp://files.example"}, False, "baseUrl must be an http(s) URL"),
                                  ({"baseUrl": "not a url"}, False, "baseUrl is not a URL"),
                                  ({"baseUrl": fake.url, **p.config}, True, f"{p.key} is not configured"),
                                  ({p.key: f"{KEY} {KEY}"}, False, f"{p.key} must not contain whitespace")]:
        with pytest.raises(InvalidConfig) as e:
            await h.set_config(p.id, values, replace=replace)
        assert said in str(e.value) and KEY not in str(e.value)
    assert h.pool(p.id).spec.config == config and fake.requests == []  # nothing applied, nothing asked

    assert list((await h.check_health()).values()) == [True]
    serve(fake, p.routes)
    fake.requests.clear()
    return config


async def check_times_out(h: PluginHost, fake: FakeHttp, p: Provider) -> None:
    """A provider that does not answer: status timeout within the query's deadline."""
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    fake.route("GET", p.path, never)
    t0 = time.monotonic()
    r = await query(h, timeout=1.0)
    assert (r.status, r.error_type) == ("timeout", "CallTimeout") and time.monotonic() - t0 < 4
    assert KEY not in msgspec.json.encode(r).decode()


async def call_fails(h: PluginHost, pid: str, config: dict[str, Any]) -> PluginError:
    with pytest.raises(PluginError) as e:
        await h.call(pid, "queryBalance", config)
    return e.value


async def test_openai_billing_reads_errors_answered_with_200(plugin_dir, make_host, fake_http):
    """Relays that answer a failure as HTTP 200 with an OpenAI error object: typed, not PARSE_ERROR."""
    p = OPENAI
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        for error, expected in [
            ({"message": "Incorrect API key provided: sk-***", "type": "invalid_request_error",
              "code": "invalid_api_key"}, "AUTH_ERROR"),
            ({"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"},
             "RATE_LIMIT"),
            ({"message": "当前分组上游负载已饱和", "type": "new_api_error"}, "PROVIDER_ERROR"),
        ]:
            fake_http.json("GET", SUBSCRIPTION, {"error": error})
            r = await query(h)
            assert (r.status, r.error_type) == ("error", expected), (error, r.error_message)
            assert error["message"] in r.error_message


async def test_openai_billing_usage_window_relay_prefix_and_legacy_credit_grants(plugin_dir, make_host, fake_http):
    p = OPENAI
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)

        await query(h)
        [usage] = [q for _, q, _ in fake_http.requests if q.startswith(USAGE + "?")]
        window = {k: dt.date.fromisoformat(v) for k, [v] in parse_qs(urlsplit(usage).query).items()}
        today = dt.datetime.now(dt.UTC).date()  # the request was made today, or yesterday at midnight
        assert window["end_date"] in (today, today + dt.timedelta(days=1))
        assert window["end_date"] - window["start_date"] == dt.timedelta(days=100)

        # a relay under a path prefix keeps it; no access_until is no expiry
        serve(fake_http, {"/openai" + SUBSCRIPTION: {**SUB, "access_until": 0}, "/openai" + USAGE: SPENT})
        got = await h.call(p.id, "queryBalance", {**config, "baseUrl": fake_http.url + "/openai"})
        assert (got["balance"], got["expiresAt"]) == (pytest.approx(107.655), None)

        # no subscription endpoint (404): the older credit_grants
        fake_http.json("GET", SUBSCRIPTION, {"error": {"message": "Not Found"}}, status=404)
        grants = {"object": "credit_summary", "total_granted": 18.0, "total_used": 2.5, "total_available": 15.5}
        fake_http.json("GET", CREDIT_GRANTS, grants)
        fake_http.requests.clear()
        r = await query(h)
        assert r.status == "success" and fields(r) == {"balance": 15.5, "currency": "USD", "quota": 18.0,
                                                       "used_quota": 2.5, "expires_at": None}
        assert r.raw_data == {"creditGrants": grants} and paths(fake_http) == [CREDIT_GRANTS, SUBSCRIPTION]
        fake_http.json("GET", CREDIT_GRANTS, {}, status=404)  # neither: the 404 is the provider's error
        assert (await query(h)).error_type == "PROVIDER_ERROR"

        serve(fake_http, p.routes)
        await check_times_out(h, fake_http, p)


async def test_newapi_refusals_by_message_and_numeric_user_id(plugin_dir, make_host, fake_http):
    p = NEWAPI
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)

        for message, error_type in [("无权进行此操作，access token 无效", "AUTH_ERROR"),
                                    ("Unauthorized, access token is invalid", "AUTH_ERROR"),
                                    ("无权进行此操作，未提供 New-Api-User", "AUTH_ERROR"),
                                    ("数据库错误，请稍后重试", "PROVIDER_ERROR")]:
            fake_http.json("GET", p.path, {"success": False, "message": message})
            r = await query(h)
            assert (r.status, r.error_type) == ("error", error_type) and message in r.error_message, message
        with pytest.raises(InvalidConfig, match="userId must be the user's numeric id"):
            await h.set_config(p.id, {"userId": "alice"})
        serve(fake_http, p.routes)
        assert (await h.call(p.id, "queryBalance", config))["usedQuota"] == 2.5
        await check_times_out(h, fake_http, p)


TOKEN_USAGE = {"code": True, "message": "ok", "data": {
    "object": "token_usage", "name": "Default Token", "total_granted": 1000000, "total_used": 12345,
    "total_available": 987655, "unlimited_quota": False, "model_limits": {}, "model_limits_enabled": False,
    "expires_at": 1798761600}}
NEWAPI_KEY = Provider(
    "newapi", "/api/usage/token", {"/api/usage/token": TOKEN_USAGE},
    {"balance": 1.97531, "currency": "USD", "quota": 2.0, "used_quota": 0.02469,
     "expires_at": "2027-01-01T00:00:00+00:00"},
    raw=TOKEN_USAGE["data"], missing={"code": True, "message": "ok", "data": {"total_used": 5}},
    missing_field="data.total_available")


async def test_newapi_reads_one_sk_key_by_its_own_path(plugin_dir, make_host, fake_http):
    """The documented key path (/api/usage/token with an sk- key), for users who have no access
    token: its own quota, an unlimited key shown as such, refusals typed."""
    p = NEWAPI_KEY
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        r = await query(h)
        assert r.status == "success", r.error_message
        assert (r.balance, r.quota, r.used_quota, r.currency, r.expires_at) == (
            1.97531, 2.0, 0.02469, "USD", "2027-01-01T00:00:00+00:00")
        (_, _path, headers), = [x for x in fake_http.requests if x[1].startswith("/api/usage/token")]
        assert headers["Authorization"] == f"Bearer {KEY}" and "New-Api-User" not in headers
        unlimited = {**TOKEN_USAGE, "data": {**TOKEN_USAGE["data"], "unlimited_quota": True, "total_available": 0}}
        fake_http.json("GET", p.path, unlimited)
        r = await query(h)
        assert (r.status, r.unlimited, r.balance, r.quota) == ("success", True, None, None)
        fake_http.json("GET", p.path, {"success": False, "message": "token not found"}, status=401)
        assert (await query(h)).error_type == "AUTH_ERROR"
        fake_http.json("GET", p.path, {"code": False, "message": "令牌已过期"})
        r = await query(h)
        assert (r.error_type, "令牌已过期" in r.error_message) == ("AUTH_ERROR", True)
        with pytest.raises(InvalidConfig, match="apiKey must not contain whitespace"):
            await h.set_config(p.id, {"apiKey": "sk- 1"})


async def test_deepseek_picks_the_configured_currency(plugin_dir, make_host, fake_http):
    p = DEEPSEEK
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)

        got = await h.call(p.id, "queryBalance", {**config, "currency": "usd"})
        assert (got["balance"], got["currency"], got["rawData"]) == (5.5, "USD", DEEPSEEK_BODY)
        e = await call_fails(h, p.id, {**config, "currency": "EUR"})
        assert e.error_type == "PROVIDER_ERROR" and "no balance in EUR (the account holds CNY, USD)" in e.message
        fake_http.json("GET", p.path, {"is_available": True, "balance_infos": []})  # (not available: an empty account)
        e = await call_fails(h, p.id, config)
        assert e.error_type == "PARSE_ERROR" and "balance_infos is missing or empty" in e.message
        await check_times_out(h, fake_http, p)


async def test_openrouter_falls_back_to_the_keys_own_limit_on_403(plugin_dir, make_host, fake_http):
    p = OPENROUTER
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)

        # the key's answer is context only: its failure alone does not fail the query
        fake_http.json("GET", KEY_INFO, {"error": "boom"}, status=500)
        r = await query(h)
        assert r.status == "success" and r.balance == pytest.approx(74.75)
        assert r.raw_data == {"credits": CREDITS_BODY["data"], "key": None}

        limited = {"data": {**KEY_BODY["data"], "limit": 50.0, "usage": 12.5, "limit_remaining": 37.5}}
        fake_http.json("GET", KEY_INFO, limited)
        fake_http.json("GET", CREDITS, {"error": {"message": "Forbidden"}}, status=403)
        r = await query(h)
        assert r.status == "success" and fields(r) == {"balance": 37.5, "currency": "USD", "quota": 50.0,
                                                       "used_quota": 12.5, "expires_at": None}
        assert r.raw_data == {"credits": None, "key": limited["data"]}

        fake_http.json("GET", CREDITS, {"error": {"message": "bad key"}}, status=401)  # no fallback on 401
        assert (await query(h)).error_type == "AUTH_ERROR"
        e = await call_fails(h, p.id, config)
        assert e.details == {"status": 401}

        fake_http.json("GET", CREDITS, {"error": {"message": "Forbidden"}}, status=403)
        fake_http.json("GET", KEY_INFO, KEY_BODY)  # no limit (most keys): the balance is unknowable with it
        r = await query(h)  # before: AUTH_ERROR, a working key called bad
        assert r.status == "success" and fields(r) == {"balance": None, "currency": "USD", "quota": None,
                                                       "used_quota": KEY_BODY["data"]["usage"], "expires_at": None}
        assert any("has no limit of its own" in e.message for e in h.logs(p.id, level="warning"))

        serve(fake_http, p.routes)
        await check_times_out(h, fake_http, p)


@pytest.mark.parametrize(("p", "failure", "said"), [
    (SILICONFLOW, {"code": 30001, "message": "account suspended", "status": False, "data": None},
     "code 30001: account suspended"),
    (MOONSHOT, {"code": 5, "error": {"message": "user not found"}, "status": False}, "code 5: user not found"),
], ids=["siliconflow", "moonshot"])
async def test_error_code_in_a_200_and_the_currency_option(p, failure, said, plugin_dir, make_host, fake_http):
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)

        assert (await h.call(p.id, "queryBalance", {**config, "currency": "USD"}))["currency"] == "USD"
        fake_http.json("GET", p.path, failure)
        e = await call_fails(h, p.id, config)
        assert e.error_type == "PROVIDER_ERROR" and said in e.message
        serve(fake_http, p.routes)
        await check_times_out(h, fake_http, p)


async def test_siliconflow_says_the_china_balance_api_was_retired(plugin_dir, make_host, fake_http):
    """The China /v1/user/info was retired on 2026-08-14: its 404 says so and what to set instead."""
    p = SILICONFLOW
    async with provider_host(p, plugin_dir, make_host, fake_http) as h:
        config = await check_provider(h, fake_http, p)
        for status in (404, 410):
            fake_http.json("GET", p.path, {"code": 404, "message": "Not Found"}, status=status)
            e = await call_fails(h, p.id, config)
            assert (e.error_type, e.details) == ("PROVIDER_ERROR", {"status": status})
            assert "retired the China balance API on 2026-08-14" in e.message
            assert "baseUrl = https://api.siliconflow.com and currency = USD" in e.message


async def test_unconfigured_plugins_are_not_configured_and_send_nothing(plugin_dir, make_host, fake_http):
    """As `make run` serves them: no key. Each is pointed at the fake, so a request would show."""
    settings = {}
    for p in PROVIDERS:
        shutil.copytree(PLUGINS / p.id, plugin_dir.root / p.id)
        config = {"baseUrl": fake_http.url, **p.config}
        settings[p.id] = PluginSettings(config=config, allow_private_network=True)
    async with make_host(pool=ONE, plugins=settings) as h:
        results = await h.query_balances(refresh=True, timeout=10.0)
        assert [(r.provider, r.status, r.error_type) for r in results] == sorted(
            (p.id, "not_configured", "NOT_CONFIGURED") for p in PROVIDERS)
        for r, p in zip(results, sorted(PROVIDERS, key=lambda p: p.id), strict=True):
            assert r.error_message == f"{p.id}: {p.key} is not configured"
        assert set((await h.check_health()).values()) == {False}
        for p in PROVIDERS:
            info = h.plugin(p.id)
            assert (info.state, info.error) == ("degraded", f"healthCheck: {p.key} is not configured")
    assert fake_http.requests == []
