"""cc-switch usage scripts read exactly as cc-switch reads them (issue 17, fidelity): the whole
program evaluated for its completion value, placeholders usable anywhere in the script (as string
values, never as code), the script evaluated again at every query, the first plan the headline,
amounts as cc-switch shows them (used only, unlimited, no unit). Real workers against a local fake
of each provider's documented answer."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from host import BalancesConfig, BreakerConfig, PluginSettings, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(fake, **values) -> PluginSettings:
    return PluginSettings(config={"baseUrl": fake.url, **values}, allow_private_network=True,
                          breaker=BreakerConfig(enabled=False))


# The shapes people publish: statements before the object, a comment after the final ";", a
# "use strict" first line (cc-switch's template style), and MiniMax's coding-plan answer with a
# 5-hour and a weekly window.
MINIMAX_CODING_PLAN = '''"use strict";
// MiniMax coding plan: the 5-hour window first, then the week
var WINDOW = "5h";
const scale = 1;
({
  request: {
    url: "{{baseUrl}}/v1/api/openplatform/coding_plan/remains",
    method: "GET",
    headers: { "Authorization": "Bearer {{apiKey}}", "Content-Type": "application/json" }
  },
  extractor: function (response) {
    if (response.base_resp && response.base_resp.status_code !== 0) {
      return { isValid: false, invalidMessage: response.base_resp.status_msg };
    }
    var m = response.model_remains[0];
    return [
      { planName: WINDOW, remaining: m.current_interval_usage_count * scale,
        total: m.current_interval_total_count, used: m.current_interval_total_count - m.current_interval_usage_count,
        unit: "requests" },
      { planName: "week", remaining: m.current_weekly_usage_count, total: m.current_weekly_total_count,
        unit: "requests" }
    ];
  }
});
// end of template
'''

# Zhipu's coding plan reports percentages: the headline is the first window, not a sum.
ZHIPU = '''({
  request: { url: "{{baseUrl}}/api/monitor/usage/quota/limit", method: "GET",
             headers: { "Authorization": "{{apiKey}}" } },
  extractor: function (response) {
    return response.data.limits.map(function (l) {
      return { planName: l.type, remaining: 100 - l.percentage, used: l.percentage, total: 100, unit: "%" };
    });
  }
});'''

# Code that computes with a placeholder: the value must be there when it runs.
COMPUTED = '''const base = "{{baseUrl}}".replace(/\\/v1$/, "");
const since = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
({
  request: { url: base + "/v1/usage?since=" + since + "&t=" + Date.now(), method: "GET",
             headers: { "Authorization": `Bearer {{apiKey}}` } },
  extractor: function (response) {
    return { planName: "user {{userId}}", remaining: response.left, unit: "USD" };
  }
})'''

USED_ONLY = '''({
  request: { url: "{{baseUrl}}/used", method: "GET", headers: { "x-key": "{{apiKey}}" } },
  extractor: function (r) { return { planName: "pay as you go", used: r.spent }; }
})'''

UNLIMITED = '''({
  request: { url: "{{baseUrl}}/api/usage/token", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) {
    return { planName: r.data.name, remaining: r.data.unlimited_quota ? -1 : r.data.total_available / 500000,
             used: r.data.total_used / 500000 };
  }
})'''

# What cc-switch refuses (no method, an object body, amounts as strings): accepted, with a warning.
LENIENT = '''({
  request: { url: "{{baseUrl}}/lenient", body: { key: "{{apiKey}}" } },
  extractor: function (r) { return { remaining: r.amount, unit: "CNY" }; }
})'''

EMPTY = '''({
  request: { url: "{{baseUrl}}/empty", method: "GET", headers: { "x-key": "{{apiKey}}" } },
  extractor: function (r) { return []; }
})'''

# Every kind of literal a key can land in, and a placeholder written as code.
KEYS = '''const asCode = {{apiKey}};
({
  request: {
    url: "{{baseUrl}}/keys?k={{apiKey}}",
    method: "POST",
    headers: { "x-double": "{{apiKey}}", "x-single": '{{apiKey}}', "x-template": `{{apiKey}}` },
    body: '{"key": "{{apiKey}}"}'
  },
  extractor: function (r) {
    return { remaining: 1, unit: "USD", extra: JSON.stringify([asCode, typeof asCode, r.seen]) };
  }
})'''

HOSTILE_KEY = 'sk-"dq\'sq`bt${globalThis.pwned = 1}\\back\\\\slash&x=1#f'


@pytest.fixture
def scripts(plugin_dir, fake_http):
    f = fake_http
    for name, text in (("minimax", MINIMAX_CODING_PLAN), ("zhipu", ZHIPU), ("computed", COMPUTED),
                       ("usedonly", USED_ONLY), ("unlimited", UNLIMITED), ("lenient", LENIENT), ("empty", EMPTY),
                       ("keys", KEYS)):
        (plugin_dir.root / f"{name}.usage.js").write_text(text)
    f.json("GET", "/v1/api/openplatform/coding_plan/remains", {
        "base_resp": {"status_code": 0, "status_msg": "success"},
        "model_remains": [{"model_name": "MiniMax-M2", "current_interval_total_count": 1500,
                           "current_interval_usage_count": 1320, "remains_time": 7_200_000,
                           "current_weekly_total_count": 15000, "current_weekly_usage_count": 14100}]})
    f.json("GET", "/api/monitor/usage/quota/limit", {"code": 200, "data": {"limits": [
        {"type": "TOKENS_LIMIT", "percentage": 23}, {"type": "TIME_LIMIT", "percentage": 41}]}})
    f.json("GET", "/v1/usage", {"left": 42.5})
    f.json("GET", "/used", {"spent": 3.25})
    f.json("GET", "/api/usage/token", {"code": True, "data": {
        "name": "relay-key", "unlimited_quota": True, "total_available": 0, "total_used": 1_000_000}})
    f.json("POST", "/lenient", {"amount": "1,234.50"})
    f.json("GET", "/empty", {})

    async def keys(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"seen": [request.query["k"], request.headers["x-double"],
                                           request.headers["x-single"], request.headers["x-template"], body["key"]]})

    f.route("POST", "/keys", keys)
    return plugin_dir


def plugins_for(fake) -> dict:
    return {
        "minimax": settings(fake, apiKey="mm"), "zhipu": settings(fake, apiKey="zp"),
        "computed": PluginSettings(config={"baseUrl": fake.url + "/v1", "apiKey": "c", "userId": "42"},
                                   allow_private_network=True, breaker=BreakerConfig(enabled=False)),
        "usedonly": settings(fake, apiKey="u"), "unlimited": settings(fake, apiKey="sk-relay"),
        "lenient": settings(fake, apiKey="l"), "empty": settings(fake, apiKey="e"),
        "keys": settings(fake, apiKey=HOSTILE_KEY),
    }


async def test_scripts_are_read_as_cc_switch_reads_them(scripts, make_host, fake_http):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins_for(fake_http),
                         balances=BalancesConfig(min_interval=0)) as h:  # each refresh asks the stations
        states = {i.id: (i.state, i.error) for i in h.plugins()}
        first = {b.provider: b for b in await h.query_balances(refresh=True)}
        second = {b.provider: b for b in await h.query_balances(refresh=True)}
        lenient_log = [e.message for e in h.logs("lenient", level="warning")]
        history = await h.balance_history("unlimited")
    assert all(state == "running" for state, _ in states.values()), states

    b = first["minimax"]  # the 5-hour window is the headline, not 1,320 + 14,100
    assert (b.status, b.balance, b.quota, b.used_quota, b.currency) == ("success", 1320.0, 1500.0, 180.0, "requests")
    assert [p["planName"] for p in b.raw_data["plans"]] == ["5h", "week"]
    b = first["zhipu"]  # 77 %, not 77 + 59
    assert (b.balance, b.used_quota, b.currency) == (77.0, 23.0, "%")

    b = first["computed"]  # "{{baseUrl}}" was the value when the code ran; so was {{userId}}
    assert b.status == "success" and b.balance == 42.5, b.error_message
    assert b.raw_data["plans"][0]["planName"] == "user 42"
    paths = [path for _, path, _ in fake_http.requests if path.startswith("/v1/usage")]
    assert len(paths) == 2 and all(p.startswith("/v1/usage?since=") for p in paths)  # not /v1/v1/usage
    assert paths[0] != paths[1]  # evaluated again at each query: Date.now() moved

    b = first["usedonly"]  # used but no remaining: shown, as cc-switch shows it
    assert (b.status, b.balance, b.used_quota, b.currency) == ("success", None, 3.25, None)
    b = first["unlimited"]  # -1: unlimited, never a balance of -1
    assert (b.status, b.unlimited, b.balance, b.used_quota) == ("success", True, None, 2.0)
    assert history == []  # no point recorded for a station without a balance

    b = first["lenient"]
    assert (b.status, b.balance, b.currency) == ("success", 1234.5, "CNY")
    said = " ".join(lenient_log)
    assert "request.method is missing" in said and "request.body is not a string" in said
    assert "remaining is a string" in said and "cc-switch would refuse it" in said

    b = first["empty"]
    assert (b.status, b.error_type) == ("error", "PARSE_ERROR") and "empty list" in b.error_message

    b = second["keys"]  # the key arrived intact in every literal, and as a string where it was code
    assert b.status == "success", b.error_message
    as_code, kind, seen = json.loads(b.raw_data["plans"][0]["extra"])
    assert (as_code, kind) == (HOSTILE_KEY, "string")
    assert seen == [HOSTILE_KEY] * 5  # the URL query (one parameter), three headers, the JSON body
    assert not any("x=1" in path.split("?k=", 1)[1].split("&")[1:] for _, path, _ in fake_http.requests
                   if path.startswith("/keys"))


async def test_a_placeholder_may_not_choose_the_host(plugin_dir, make_host):
    (plugin_dir.root / "hosty.usage.js").write_text(
        'var h = "{{apiKey}}"; ({ request: { url: "https://" + h + ".example.com/x" }, '
        'extractor: function (r) { return r; } })')
    (plugin_dir.root / "fixed.usage.js").write_text(
        '// a station at a fixed address\n({ request: { url: "https://api.example.com/v1/usage?u={{userId}}", '
        'method: "GET" }, extractor: function (r) { return { remaining: 1 }; } });')
    async with make_host() as h:
        infos = {i.id: i for i in h.plugins()}
    assert infos["hosty"].state == "error" and "may not name the host" in infos["hosty"].error
    assert infos["fixed"].state == "running" and infos["fixed"].permissions["net"] == ["api.example.com"]


def test_a_reply_may_give_expiry_as_a_date_or_epoch_and_no_unit_or_balance_when_it_says_why():
    import datetime as dt

    from host.balances.result import from_reply

    def reply(**value):
        return from_reply("p", "P", value, stored_at=0.0, cached=False, duration=1.0)

    when = "2026-12-31T00:00:00+00:00"
    stamp = dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    for given in (when, stamp, stamp.timestamp(), stamp.timestamp() * 1000, stamp.replace(tzinfo=None)):
        b = reply(balance=1, currency="USD", expiresAt=given)
        assert (b.status, b.expires_at[:19]) == ("success", when[:19]), given
    assert reply(balance=1, currency="USD", expiresAt=[1]).error_type == "PARSE_ERROR"
    assert (reply(balance=1).status, reply(balance=1).currency) == ("success", None)  # no unit
    assert reply(balance=1, currency="").error_type == "PARSE_ERROR"
    assert (reply(usedQuota=3).status, reply(usedQuota=3).balance) == ("success", None)
    assert reply(unlimited=True).unlimited is True
    b = reply(currency="USD")
    assert b.status == "error" and "balance is missing" in b.error_message
    # a provider plugin answering in cc-switch's names (helper-80's finding): told the host's names
    b = reply(remaining=5, unit="USD")
    assert b.status == "error" and b.error_message.endswith(
        "; remaining is this host's balance, unit is this host's currency: rename them"), b.error_message
    b = reply(remaining=5, credit=3, usage={"tokens": 1})  # one name a field; an object is no usedQuota
    assert b.error_message.endswith("; remaining is this host's balance: rename it"), b.error_message


SPACED = '''({
  request: { url: "{{baseUrl}}/spaced", method: "GET", body: "{}",
             headers: { "x-spaced": "{{ apiKey }}", "x-key": "{{apiKey}}" } },
  extractor: async function (r) { return { remaining: NaN, used: r.used, unit: "USD" }; }
})'''


async def test_what_cc_switch_does_with_spaces_a_get_body_and_nan(plugin_dir, make_host, fake_http):
    (plugin_dir.root / "spaced.usage.js").write_text(SPACED)
    fake_http.json("GET", "/spaced", {"used": 4.5})
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         plugins={"spaced": settings(fake_http, apiKey="k-1")}) as h:
        (b,) = await h.query_balances(refresh=True)
        said = " ".join(e.message for e in h.logs("spaced", level="warning"))
    assert (b.status, b.balance, b.used_quota) == ("success", None, 4.5), b.error_message  # NaN: no amount
    (_, _, headers), = [r for r in fake_http.requests if r[1] == "/spaced"]
    assert headers["x-spaced"] == "{{ apiKey }}" and headers["x-key"] == "k-1"  # only the exact form is filled
    assert "request.body on a GET request is not sent" in said and "remaining is NaN" in said
    # neither is one cc-switch refuses (helper-112: the warnings said so): it sends the body, nulls the NaN
    assert "would refuse" not in said and "cc-switch sends it" in said, said
    assert "the extractor is async" in said and "does not await" in said, said  # its card would be empty


ISVALID = '''({
  request: { url: "{{baseUrl}}/PATH", method: "GET" },
  extractor: function (r) { return [{ isValid: r.valid, remaining: 3, unit: "USD" }, { isValid: "yes", remaining: 1 }]; }
})'''


async def test_an_is_valid_that_is_not_a_boolean_is_refused_as_cc_switch_refuses_it(plugin_dir, make_host, fake_http):
    """cc-switch's validate_single_usage refuses an isValid that is not a boolean or null ("isValid
    must be boolean or null"); here "false" was truthy: a key the script reported invalid was a
    valid balance of 3 (helper-112's finding)."""
    for name, valid in (("stringly", "false"), ("good", True)):
        (plugin_dir.root / f"{name}.usage.js").write_text(ISVALID.replace("PATH", name))
        fake_http.json("GET", f"/{name}", {"valid": valid})
    async with make_host(plugins={k: settings(fake_http, apiKey="k-1") for k in ("stringly", "good")}) as h:
        got = {b.provider: b for b in await h.query_balances(refresh=True)}
        said = " ".join(e.message for e in h.logs("good", level="warning"))
    refused, good = got["stringly"], got["good"]
    assert (refused.status, refused.error_type) == ("error", "PARSE_ERROR"), refused
    assert "isValid of plan 1 must be true, false or null, got 'false'" in refused.error_message, refused.error_message
    assert (good.status, good.balance) == ("success", 3), good.error_message
    assert "isValid of plan 2 is 'yes', not true, false or null" in said, said


# cc-switch's card shows usageDataList[0], valid or not (UsageFooter.tsx): an expired first plan
# is the headline, its remaining amount in red; a script whose isValid defaults to false (a
# relay-pool template people publish) still shows the amount.
FIRST_EXPIRED = '''({
  request: { url: "{{baseUrl}}/plans", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) {
    return r.plans.map(function (p) {
      return { planName: p.name, isValid: p.active, invalidMessage: p.active ? null : "expired",
               remaining: p.remaining, total: p.limit, unit: "USD" };
    });
  }
})'''
DEFAULTS_INVALID = '''({
  request: { url: "{{baseUrl}}/v1/usage", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (response) {
    return { isValid: response?.is_active ?? response?.isValid ?? false,
             remaining: response?.remaining ?? response?.balance, unit: response?.unit ?? "USD" };
  }
})'''
NO_AMOUNT = '''({
  request: { url: "{{baseUrl}}/self", method: "GET" },
  extractor: function (r) { return { isValid: false, invalidMessage: r.message }; }
})'''


async def test_an_invalid_headline_keeps_its_amount_as_cc_switch_shows_it(plugin_dir, make_host, fake_http):
    from host.cli_output import balances_table

    for name, text in (("firstexpired", FIRST_EXPIRED), ("defaultsinvalid", DEFAULTS_INVALID), ("noamount", NO_AMOUNT)):
        (plugin_dir.root / f"{name}.usage.js").write_text(text)
    fake_http.json("GET", "/plans", {"plans": [{"name": "trial", "active": False, "remaining": 0.5, "limit": 5},
                                               {"name": "monthly", "active": True, "remaining": 42, "limit": 100}]})
    fake_http.json("GET", "/v1/usage", {"remaining": 9.9, "unit": "USD"})
    fake_http.json("GET", "/self", {"success": False, "message": "access token invalid"})
    plugins = {n: settings(fake_http, apiKey="k") for n in ("firstexpired", "defaultsinvalid", "noamount")}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        by = {b.provider: b for b in await h.query_balances(refresh=True)}
        history = await h.balance_history()
        alerts = await h.balance_alerts()

    b = by["firstexpired"]  # the first plan, not the first valid one
    assert (b.status, b.invalid, b.balance, b.quota, b.currency) == ("success", True, 0.5, 5.0, "USD"), b
    assert b.error_message == "expired" and b.raw_data["headline"] == 0 and len(b.raw_data["plans"]) == 2
    b = by["defaultsinvalid"]
    assert (b.status, b.invalid, b.balance, b.error_message) == ("success", True, 9.9, "the key is not valid")
    b = by["noamount"]  # nothing to show: the key is refused
    assert (b.status, b.error_type, b.error_message) == ("error", "AUTH_ERROR", "usage script noamount: access token invalid")
    assert not any(r.usable for r in by.values())
    assert history == []  # an invalid answer is no balance to go by
    assert sorted((a.provider, a.kind) for a in alerts) == [
        ("defaultsinvalid", "failing"), ("firstexpired", "failing"), ("noamount", "failing")]
    table = balances_table([by["firstexpired"]])
    assert "invalid" in table and "0.50" in table and "expired" in table


# A placeholder inside a regular expression literal: cc-switch splices the text in wherever it
# stands (usage_script.rs build_script_with_vars), so the regex matches the key; the extractor
# masks the key in what the station echoes, and tells whether the user id is the one asked.
IN_REGEX = r'''const echoed = /{{apiKey}}/g;
({
  request: { url: "{{baseUrl}}/echo", method: "GET", headers: { "x-key": "{{apiKey}}" } },
  extractor: function (r) {
    return { remaining: r.left, unit: "USD", planName: r.note.replace(echoed, "***"),
             extra: String(/^user-[{{userId}}]+$/.test(r.user)) + " " + String(/^{{userId}}\/x$/.test(r.path)) };
  }
})'''


async def test_a_placeholder_in_a_regex_literal_matches_the_value_as_cc_switch_fills_it(plugin_dir, make_host,
                                                                                       fake_http):
    key = "sk-a.b+c/d(e)"  # regex syntax and a "/" in it: matched as itself, never ending the literal
    (plugin_dir.root / "inregex.usage.js").write_text(IN_REGEX)
    fake_http.json("GET", "/echo", {"left": 3.5, "note": f"key {key} or sk-aXb+c/d(e)", "user": "user-7-7",
                                    "path": "7-7/x"})
    plugins = {"inregex": settings(fake_http, apiKey=key, userId="7-7")}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        (b,) = await h.query_balances(refresh=True)
    # before: /{{apiKey}}/ stayed as written, matched nothing, and the key was shown
    assert (b.status, b.balance) == ("success", 3.5), b.error_message
    assert b.raw_data["plans"][0]["planName"] == "key *** or sk-aXb+c/d(e)"  # '.' and '+' as themselves
    assert b.raw_data["plans"][0]["extra"] == "true true"  # '-' in a class is no range; '/' is escaped
