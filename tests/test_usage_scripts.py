"""cc-switch usage scripts run unchanged as balance plugins, through real workers against local
fakes: seven scripts of different shapes, from files and from host.toml, placeholders filled
in values (never in code), and the request held to the host in request.url."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web

from host import (
    BreakerConfig,
    HostConfig,
    InvalidConfig,
    PluginError,
    PluginSettings,
    PoolConfig,
    UsageScriptConfig,
)
from host.plugins.discovery import source_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # scripts run in workers alike under either backend: one is enough here

NEW_API = """({
  request: {
    url: "{{baseUrl}}/api/user/self",
    method: "GET",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer {{accessToken}}",
      "New-Api-User": "{{userId}}"
    }
  },
  extractor: function (response) {
    if (response.success && response.data) {
      return {
        planName: response.data.group || "default",
        remaining: response.data.quota / 500000,
        used: response.data.used_quota / 500000,
        total: (response.data.quota + response.data.used_quota) / 500000,
        unit: "USD"
      };
    }
    return { isValid: false, invalidMessage: response.message || "query failed" };
  }
})"""

DEEPSEEK = """({
  request: {
    url: "{{baseUrl}}/user/balance",
    method: "GET",
    headers: { "Authorization": "Bearer {{apiKey}}", "Accept": "application/json" }
  },
  extractor: function (response) {
    const info = response.balance_infos && response.balance_infos[0];
    return {
      isValid: response.is_available,
      invalidMessage: "insufficient balance",
      remaining: parseFloat(info.total_balance),
      unit: info.currency
    };
  }
})"""

LITELLM = """({
  request: {
    url: "{{baseUrl}}/key/info?key={{apiKey}}",
    method: "GET",
    headers: { "Authorization": "Bearer {{apiKey}}" }
  },
  extractor: function (response) {
    const info = response.info;
    return {
      planName: info.key_alias,
      remaining: info.max_budget - info.spend,
      total: info.max_budget,
      used: info.spend,
      unit: "USD",
      extra: "resets " + info.budget_reset_at
    };
  }
});"""

MINIMAX = """({
  request: {
    url: "{{baseUrl}}/v1/query/balance",
    method: "POST",
    headers: { "Authorization": "Bearer {{apiKey}}", "Content-Type": "application/json" },
    body: JSON.stringify({ group_id: "{{userId}}", detail: true })
  },
  extractor: function (response) {
    if (response.base_resp.status_code !== 0) {
      return { isValid: false, invalidMessage: response.base_resp.status_msg };
    }
    const amount = response.data.account.balance_info.available_amount;
    return { remaining: amount, unit: response.data.account.balance_info.currency, planName: "MiniMax" };
  }
})"""

PLANS = """({
  request: { url: "{{baseUrl}}/v1/plans", headers: { "x-api-key": "{{apiKey}}" } },
  extractor: function (response) {
    return response.plans.map(function (p) {
      return { planName: p.name, remaining: p.left, total: p.size, used: p.size - p.left, unit: "USD",
               isValid: p.active };
    });
  }
})"""

THROWS = """({
  request: { url: "{{baseUrl}}/v1/usage", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (response) { return { remaining: response.data.quota.remaining }; }
})"""

QUOTING = """({
  request: {
    url: "{{baseUrl}}/v1/echo?k={{apiKey}}",
    method: "POST",
    headers: { "Authorization": "Bearer {{apiKey}}" },
    body: '{"key": "{{apiKey}}", "note": "literal"}'
  },
  extractor: function (response) { return { remaining: response.balance, unit: "USD", extra: response.sawKey }; }
})"""

# A key that would break out of a string if it were spliced into the code as text.
HOSTILE_KEY = 'sk-"quote\\back\\\\slash\'single"}); Deno.exit(3); ({"x":"&y=1#frag'


def settings(fake, **values) -> PluginSettings:
    return PluginSettings(config={"baseUrl": fake.url, **values}, allow_private_network=True,
                          breaker=BreakerConfig(enabled=False))


@pytest.fixture
def stations(plugin_dir, fake_http):
    """Six scripts as NAME.usage.js files beside a plain plugin; a seventh comes from host.toml."""
    for name, script in (("newapi", NEW_API), ("deepseek", DEEPSEEK), ("litellm", LITELLM),
                         ("minimax", MINIMAX), ("plans", PLANS), ("throws", THROWS)):
        (plugin_dir.root / f"{name}.usage.js").write_text(script)
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }")
    f = fake_http
    f.json("GET", "/api/user/self", {"success": True, "message": "", "data": {
        "id": 7, "username": "alice", "quota": 25_000_000, "used_quota": 5_000_000, "group": "vip"}})
    f.json("GET", "/user/balance", {"is_available": True, "balance_infos": [
        {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"}]})
    f.json("GET", "/key/info", {"key": "hashed", "info": {
        "key_alias": "team-a", "spend": 12.5, "max_budget": 100.0, "budget_reset_at": "2026-12-01"}})

    async def minimax(request: web.Request) -> web.Response:
        body = await request.json()
        assert body == {"group_id": "grp-42", "detail": True}, body
        return web.json_response({"base_resp": {"status_code": 0, "status_msg": "success"}, "data": {
            "account": {"balance_info": {"available_amount": "123.45", "currency": "CNY",
                                         "details": {"cash": "100.00", "voucher": "23.45"}}}}})

    f.route("POST", "/v1/query/balance", minimax)
    f.json("GET", "/v1/plans", {"plans": [{"name": "Pro", "left": 12.5, "size": 20, "active": True},
                                          {"name": "Bonus", "left": 5, "size": 5, "active": True},
                                          {"name": "Expired", "left": 99, "size": 99, "active": False}]})
    f.json("GET", "/v1/usage", {"data": {}})

    async def echo(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"balance": 3.5, "sawKey": [request.query["k"], request.headers["Authorization"],
                                                             body["key"], body["note"]]})

    f.route("POST", "/v1/echo", echo)
    return plugin_dir


def config_for(fake) -> HostConfig:
    return dict(
        pool=PoolConfig(min_workers=1, max_workers=1),
        usage_scripts={"quoting": UsageScriptConfig(script=QUOTING, name="Quoting Relay")},
        plugins={
            "newapi": settings(fake, accessToken="tok-123", userId="7"),
            "deepseek": settings(fake, apiKey="sk-deep"),
            "litellm": settings(fake, apiKey="sk-lite&admin=1"),
            "minimax": settings(fake, apiKey="mm-key", userId="grp-42"),
            "plans": settings(fake, apiKey="pl-key"),
            "throws": settings(fake, apiKey="th-key"),
            "quoting": settings(fake, apiKey=HOSTILE_KEY),
        })


async def test_seven_scripts_of_different_shapes_become_balances(stations, make_host, fake_http):
    async with make_host(**config_for(fake_http)) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        states = {i.id: i.state for i in h.plugins()}
    assert set(results) == {"newapi", "deepseek", "litellm", "minimax", "plans", "throws", "quoting"}
    assert states["calc"] == "running" and all(states[p] == "running" for p in results)

    b = results["newapi"]  # quota units of 500000 per USD
    assert (b.status, b.balance, b.used_quota, b.quota, b.currency) == ("success", 50.0, 10.0, 60.0, "USD")
    assert b.raw_data["plans"][0]["planName"] == "vip"
    b = results["deepseek"]
    assert (b.status, b.balance, b.currency) == ("success", 110.0, "CNY")
    b = results["litellm"]
    assert (b.balance, b.quota, b.used_quota) == (87.5, 100.0, 12.5)
    assert b.raw_data["plans"][0]["extra"] == "resets 2026-12-01"
    b = results["minimax"]  # nested, a numeric string
    assert (b.status, b.balance, b.currency) == ("success", 123.45, "CNY")
    b = results["plans"]  # as cc-switch shows it: the first plan is the headline, every plan listed
    assert (b.balance, b.quota, b.used_quota) == (12.5, 20.0, 7.5)
    assert [p["planName"] for p in b.raw_data["plans"]] == ["Pro", "Bonus", "Expired"]
    b = results["throws"]
    assert (b.status, b.error_type) == ("error", "PARSE_ERROR")
    assert "the extractor threw: TypeError" in b.error_message
    b = results["quoting"]  # the hostile key stayed one value everywhere, and ran no code
    assert b.status == "success" and b.provider_name == "Quoting Relay", b.error_message
    # each arrived whole (an answer echoing the key is shown with the key masked)
    assert b.raw_data["plans"][0]["extra"] == ["********", "Bearer ********", "********", "literal"]

    sent = {path.split("?")[0]: (path, headers) for _, path, headers in fake_http.requests}
    _, headers = sent["/api/user/self"]
    assert headers["Authorization"] == "Bearer tok-123" and headers["New-Api-User"] == "7"
    path, _ = sent["/key/info"]
    assert path == "/key/info?key=sk-lite%26admin%3D1"  # a value in the URL cannot add a parameter
    assert sent["/v1/plans"][1]["x-api-key"] == "pl-key"


async def test_the_grant_is_the_host_of_request_url(stations, make_host, fake_http, local_server):
    sneaky = """({
  request: { url: "{{baseUrl}}/user/balance", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: async function (response) {
    const r = await fetch("http://127.0.0.1:PORT/exfiltrate");
    return { remaining: 1 };
  }
})""".replace("PORT", str(local_server.port))
    fixed = """({
  request: { url: "BASE/user/balance", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (response) { return { remaining: 2, unit: "CNY" }; }
})""".replace("BASE", fake_http.url)
    cfg = config_for(fake_http)
    cfg["usage_scripts"] = {"sneaky": UsageScriptConfig(script=sneaky), "fixed": UsageScriptConfig(script=fixed)}
    cfg["plugins"] |= {"sneaky": settings(fake_http, apiKey="k1"), "fixed": settings(fake_http, apiKey="k2")}
    async with make_host(**cfg) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        grants = {pid: h.plugin(pid).permissions["net"] for pid in ("sneaky", "fixed", "deepseek")}
    host = f"127.0.0.1:{fake_http.port}"
    assert grants == {"sneaky": [host], "fixed": [host], "deepseek": [host]}
    assert results["fixed"].status == "success" and results["fixed"].balance == 2.0
    b = results["sneaky"]
    assert b.status == "error" and "NotCapable" in b.error_message, b
    assert local_server.requests == []  # the extractor's own fetch went nowhere


async def test_missing_values_invalid_keys_and_provider_failures(stations, make_host, fake_http):
    fake_http.json("GET", "/api/user/self", {"success": False, "message": "access token invalid"})
    fake_http.json("GET", "/user/balance", {"error": "bad key"}, status=401)
    fake_http.json("GET", "/v1/plans", {"error": "busy"}, status=429, headers={"Retry-After": "30"})
    cfg = config_for(fake_http)
    cfg["plugins"]["litellm"] = settings(fake_http)  # no apiKey
    async with make_host(**cfg) as h:
        results = {b.provider: b for b in await h.query_balances(refresh=True)}
        degraded = await h.check_health()
    assert (results["newapi"].error_type, results["newapi"].error_message.endswith("access token invalid")) == (
        "AUTH_ERROR", True)
    assert results["deepseek"].error_type == "AUTH_ERROR"
    assert results["plans"].error_type == "RATE_LIMIT"
    assert (results["litellm"].status, "apiKey not configured" in results["litellm"].error_message) == (
        "not_configured", True)
    assert not any(path.startswith("/key/info") for _, path, _ in fake_http.requests)
    assert degraded["litellm@1.0.0"] is False and degraded["deepseek@1.0.0"] is True


async def test_a_script_that_is_not_one_leaves_its_plugin_in_error(plugin_dir, make_host):
    (plugin_dir.root / "broken.usage.js").write_text("({ request: { url: 42 }, extractor: 1 })")
    (plugin_dir.root / "hosty.usage.js").write_text(
        '({ request: { url: "https://{{userId}}.example.com/x" }, extractor: function (r) { return r; } })')
    async with make_host() as h:
        infos = {i.id: i for i in h.plugins()}
    assert infos["broken"].state == "error" and "request.url must be a string" in infos["broken"].error
    assert infos["hosty"].state == "error" and "may not name the host" in infos["hosty"].error


@pytest.mark.timeout(60)
async def test_a_syntax_error_names_the_line_and_column_of_the_script_not_the_generated_module(plugin_dir, make_host):
    """V8's eval says what is wrong but not where: a script with a missing comma (line 5) or a
    curly quote pasted from a web page (line 3) was refused "at .../usage_scripts/ID/mod.js:201:21",
    a line of the generated module its user never wrote. The script's own file, line and column
    are named, and a character JavaScript cannot read there is named with its code point."""
    comma = ('({\r\n  request: {\r\n    url: "{{baseUrl}}/user/balance",\r\n    method: "GET"\r\n'
             '    headers: { "Authorization": "Bearer {{apiKey}}" }\r\n  },\r\n'
             '  extractor: function (r) { return { remaining: r.balance, unit: "USD" }; }\r\n})\r\n')
    quote = ('// pasted from a blog post\n({\n  request: { url: "{{baseUrl}}/b", method: "GET",\n'
             '    headers: { \u201cAuthorization\u201d: "Bearer {{apiKey}}" } },\n'
             '  extractor: function (r) { return { remaining: r.balance }; }\n})\n')
    (plugin_dir.root / "comma.usage.js").write_text(comma, newline="")
    (plugin_dir.root / "quote.usage.js").write_text(quote)
    configured = UsageScriptConfig(script="\n\n({ request: { url: 'https://relay.example/x' method: 'GET' }, "
                                          "extractor: function (r) { return r; } })")
    async with make_host(usage_scripts={"inline": configured}) as h:
        infos = {i.id: i for i in h.plugins()}
    assert all(infos[k].state == "error" for k in ("comma", "quote", "inline")), infos
    assert f"{plugin_dir.root / 'comma.usage.js'}:5:5" in infos["comma"].error, infos["comma"].error
    assert "headers" in infos["comma"].error
    assert f"{plugin_dir.root / 'quote.usage.js'}:4:16" in infos["quote"].error, infos["quote"].error
    assert "U+201C" in infos["quote"].error
    assert "line 3, column 46 of host.toml usage_scripts.inline" in infos["inline"].error, infos["inline"].error
    assert not any("mod.js" in infos[k].error for k in ("comma", "quote", "inline"))


@pytest.mark.timeout(60)
async def test_a_script_saved_as_utf16_runs_and_one_in_another_encoding_is_a_plugin_in_error(
        plugin_dir, make_host, fake_http):
    """A script saved by a Windows editor: UTF-16 with its BOM (Notepad's "Unicode") or GBK (a
    Chinese system's "ANSI"). Both were left out without a word but a log line: not in `list`,
    "no balance plugins" from `balances`, exit 0. UTF-16 (and UTF-8 with a BOM) is read; a script
    that is no such text is a plugin in error that names its file and says to save it as UTF-8."""
    text = ('// \u4f59\u989d\u67e5\u8be2\r\n({ request: { url: "{{baseUrl}}/b", method: "GET" },\r\n'
            '  extractor: function (r) { return { remaining: r.balance, unit: "\u5143" }; } })\r\n')
    (plugin_dir.root / "wide.usage.js").write_bytes(text.encode("utf-16"))
    (plugin_dir.root / "bom.usage.js").write_bytes(text.encode("utf-8-sig"))
    (plugin_dir.root / "ansi.usage.js").write_bytes(text.encode("gbk"))
    fake_http.json("GET", "/b", {"balance": 8.5})
    async with make_host(plugins={k: settings(fake_http) for k in ("wide", "bom", "ansi")}) as h:
        infos = {i.id: i for i in h.plugins()}
        got = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert (infos["wide"].state, infos["bom"].state) == ("running", "running"), infos
    assert (got["wide"].balance, got["wide"].currency, got["bom"].balance) == (8.5, "\u5143", 8.5)
    assert infos["ansi"].state == "error", infos["ansi"]
    said = infos["ansi"].error
    assert str(plugin_dir.root / "ansi.usage.js") in said and "save it as UTF-8" in said, said
    assert got["ansi"].status == "error"


@pytest.mark.timeout(60)
async def test_a_value_a_header_cannot_carry_is_refused_naming_it_not_called_a_network_error(
        plugin_dir, make_host, fake_http):
    """cc-switch's New API template sends {{userId}} in a header. A user id typed with a Chinese
    IME's fullwidth digits ("\uff11\uff12\uff13"), or a token pasted with a line break, cannot be
    sent in one: the station failed as NETWORK_ERROR "Failed to construct 'Request': 'headers' ...
    is not a valid ByteString", naming neither the header nor the value. config set refuses it
    naming the field; a config given otherwise fails the query saying which value to retype."""
    (plugin_dir.root / "relay.usage.js").write_text(NEW_API)
    fake_http.json("GET", "/api/user/self", {"success": True, "data": {"quota": 500000, "used_quota": 0}})
    wide = PluginSettings(config={"baseUrl": fake_http.url, "accessToken": "tok", "userId": "\uff11\uff12\uff13"},
                          allow_private_network=True, breaker=BreakerConfig(enabled=False))
    async with make_host(plugins={"relay": wide}) as h:
        (b,) = await h.query_balances(refresh=True)
        with pytest.raises(InvalidConfig) as refused:
            await h.set_config("relay", {"userId": "\uff14\uff15", "accessToken": "tok"})
        with pytest.raises(InvalidConfig) as secret:
            await h.set_config("relay", {"userId": "7", "accessToken": "tok-\u4e2d\u6587"})
        await h.set_config("relay", {"userId": "7", "accessToken": "tok"})
        (good,) = await h.query_balances(refresh=True)
    assert b.status != "success" and b.error_type != "NETWORK_ERROR", (b.status, b.error_type, b.error_message)
    assert "userId" in b.error_message and "New-Api-User" in b.error_message, b.error_message
    assert "userId" in str(refused.value) and "U+FF14" in str(refused.value), str(refused.value)
    assert "accessToken" in str(secret.value) and "\u4e2d" not in str(secret.value), str(secret.value)
    assert (good.status, good.balance) == ("success", 1.0), good.error_message


@pytest.mark.timeout(60)
async def test_a_scripts_own_non_ascii_header_text_is_sent_as_utf8_as_cc_switch_sends_it(
        plugin_dir, make_host, fake_http):
    """cc-switch's reqwest sends a header value's UTF-8 bytes (http's HeaderValue refuses only
    control bytes): a script's "User-Agent": "cc-switch 用量查询" was refused here as a value 'an HTTP
    header cannot carry'. A control character written in the script is still refused, naming the
    header."""
    (plugin_dir.root / "zh.usage.js").write_text(
        '({ request: { url: "{{baseUrl}}/zh", method: "GET", headers: { "User-Agent": "cc-switch \u7528\u91cf",'
        ' "Authorization": "Bearer {{apiKey}}" } },\n'
        '  extractor: function (r) { return { remaining: r.balance, unit: "USD" }; } })')
    (plugin_dir.root / "ctl.usage.js").write_text(
        '({ request: { url: "{{baseUrl}}/zh", method: "GET", headers: { "X-Note": "a\\u0001b" } },\n'
        '  extractor: function (r) { return { remaining: r.balance }; } })')
    fake_http.json("GET", "/zh", {"balance": 4.5})
    async with make_host(plugins={k: settings(fake_http, apiKey="sk-test") for k in ("zh", "ctl")}) as h:
        got = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert (got["zh"].status, got["zh"].balance) == ("success", 4.5), got["zh"].error_message
    (_, _, headers), = [r for r in fake_http.requests if r[1] == "/zh"]
    assert headers["User-Agent"] == "cc-switch \u7528\u91cf" and headers["Authorization"] == "Bearer sk-test"
    assert got["ctl"].error_type == "NOT_CONFIGURED" and 'request.headers["X-Note"]' in got["ctl"].error_message
    assert "U+0001" in got["ctl"].error_message, got["ctl"].error_message


@pytest.mark.timeout(60)
async def test_a_placeholder_spelt_another_way_is_named_with_the_spelling_to_write(plugin_dir, make_host, fake_http):
    """cc-switch fills in exactly {{apiKey}}, {{baseUrl}}, {{accessToken}} and {{userId}}: a script
    written with {{ apiKey }} or {{api_key}} (as other tools spell theirs) sends the braces as they
    are, and the station fails with the provider's 401, or with "request.url must be built from
    {{baseUrl}} ..., got {{ baseUrl }}/...". Both now say which spelling to write."""
    (plugin_dir.root / "spaced.usage.js").write_text(
        '({ request: { url: "{{baseUrl}}/b", method: "GET", headers: { "Authorization": "Bearer {{ apiKey }}" } },\n'
        '  extractor: function (r) { return { remaining: r.balance }; } })')
    (plugin_dir.root / "snake.usage.js").write_text(
        '({ request: { url: "{{base_url}}/b", method: "GET" }, extractor: function (r) { return { remaining: 1 }; } })')

    def unauthorised(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid token"}, status=401)

    fake_http.route("GET", "/b", unauthorised)
    async with make_host(plugins={"spaced": settings(fake_http, apiKey="sk-1")}) as h:
        infos = {i.id: i for i in h.plugins()}
        (b,) = [b for b in await h.query_balances(refresh=True) if b.provider == "spaced"]
    assert b.error_type == "AUTH_ERROR" and "write {{apiKey}}" in b.error_message, b.error_message
    assert infos["snake"].state == "error" and "write {{baseUrl}}" in infos["snake"].error, infos["snake"].error


async def test_a_placeholder_in_a_comment_is_not_a_value_the_script_needs(plugin_dir, make_host, fake_http):
    """cc-switch's New API template with its New-Api-User header commented out, and no userId
    configured: cc-switch's plain replace fills the comment to no effect and the query works.
    Here {{userId}} in the comment made the station 'userId not configured'."""
    commented = NEW_API.replace('"New-Api-User": "{{userId}}"', '// "New-Api-User": "{{userId}}"').replace(
        '"Authorization": "Bearer {{accessToken}}",', '"Authorization": "Bearer {{accessToken}}" /* {{apiKey}} */')
    assert commented.count("{{userId}}") == 1 and "// " in commented
    (plugin_dir.root / "commented.usage.js").write_text(commented)
    fake_http.json("GET", "/api/user/self", {"success": True, "message": "", "data": {
        "id": 7, "username": "alice", "quota": 1_000_000, "used_quota": 0, "group": "default"}})
    async with make_host(plugins={"commented": settings(fake_http, accessToken="tok-9")}) as h:
        (b,) = [b for b in await h.query_balances(refresh=True) if b.provider == "commented"]
    assert (b.status, b.balance) == ("success", 2.0), b.error_message
    (_, _, headers), = [r for r in fake_http.requests if r[1].startswith("/api/user/self")]
    assert headers["Authorization"] == "Bearer tok-9" and "New-Api-User" not in headers


@pytest.mark.timeout(60)
async def test_a_script_written_as_a_module_is_told_the_shape_cc_switch_evaluates(plugin_dir, make_host):
    """What someone used to Node or Deno writes: `export default {...}`, `module.exports = {...}`,
    `return {...}`, `const config = {...};`. cc-switch refuses each too, but here each error named
    a line of the generated module ("(at .../usage_scripts/ID/mod.js:213:21)") and none said what
    shape is wanted. Each now names the script's file (and line, when the script threw) and says
    to write the one expression cc-switch evaluates."""
    body = '{\n  request: { url: "{{baseUrl}}/b", method: "GET" },\n  extractor(r) { return { remaining: r.balance }; }\n}'
    shapes = {"exp": f"export default {body};\n", "cjs": f"// node style\nmodule.exports = {body};\n",
              "ret": f"return {body};\n", "decl": f"const config = {body};\n"}
    for name, text in shapes.items():
        (plugin_dir.root / f"{name}.usage.js").write_text(text)
    async with make_host() as h:
        infos = {i.id: i for i in h.plugins()}
    for name in shapes:
        said = infos[name].error or ""
        assert infos[name].state == "error" and "mod.js" not in said, (name, said)
        assert str(plugin_dir.root / f"{name}.usage.js") in said, (name, said)
    for name in ("exp", "cjs", "ret"):
        assert "not a module" in infos[name].error, infos[name].error
    assert f"{plugin_dir.root / 'cjs.usage.js'}:2:1" in infos["cjs"].error  # where it threw, in the script
    assert "completion value" in infos["decl"].error, infos["decl"].error


@pytest.mark.timeout(60)
async def test_an_extractor_that_throws_names_its_line_in_the_script(plugin_dir, make_host, fake_http):
    """A provider changed its answer and the extractor reads a field that is gone: the station
    failed "the extractor threw: TypeError: Cannot read properties of undefined (reading
    'quota')", and its ``where`` was a line of the generated module. Both name the script's line."""
    (plugin_dir.root / "relay.usage.js").write_text(
        '({\n  request: { url: "{{baseUrl}}/b", method: "GET" },\n  extractor: function (r) {\n'
        '    return { remaining: r.data.quota / 500000 };\n  }\n})\n')
    fake_http.json("GET", "/b", {"balance": 1})
    async with make_host(plugins={"relay": settings(fake_http)}) as h:
        (b,) = await h.query_balances(refresh=True)
        with pytest.raises(PluginError) as e:
            await h.call("relay", "queryBalance", {"baseUrl": fake_http.url})
    at = f"{plugin_dir.root / 'relay.usage.js'}:4:"
    assert b.error_type == "PARSE_ERROR" and at in b.error_message, b.error_message
    assert e.value.where is not None and e.value.where.startswith(at), (e.value.where, e.value.stack)


def test_usage_files_are_not_loaded_as_modules(tmp_path):
    (tmp_path / "relay.usage.js").write_text(NEW_API)
    assert source_for(tmp_path / "relay.usage.js") is None


async def test_the_generated_module_embeds_the_script_as_data(stations, make_host, fake_http, state_dir):
    async with make_host(state_dir=str(state_dir), **config_for(fake_http)) as h:
        module = state_dir / "usage_scripts" / "quoting" / "mod.js"
        text = module.read_text()
        assert h.plugin("quoting").path == str(module)
    assert f"const SCRIPT = {json.dumps(QUOTING)};" in text  # a JSON string literal: data, not code
    assert HOSTILE_KEY not in text  # values are never written into the module


async def test_a_redirect_to_another_host_names_what_to_change_in_the_script(plugin_dir, make_host, fake_http):
    """A station answering 301 to another host: refused (the grant is the host of request.url),
    and the refusal names the script's baseUrl, or the file its URL is written in: not the
    generated module, which is written again from the script."""
    def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": f"http://localhost:{fake_http.port}/final"})

    fake_http.route("GET", "/rd/user/balance", moved)
    via_base = '({ request: { url: "{{baseUrl}}/user/balance", method: "GET" }, extractor: function (r) { return { remaining: 1 }; } })'
    fixed = via_base.replace("{{baseUrl}}", f"{fake_http.url}/rd")
    (plugin_dir.root / "moved.usage.js").write_text(via_base)
    (plugin_dir.root / "pinned.usage.js").write_text(fixed)
    plugins = {"moved": PluginSettings(config={"baseUrl": f"{fake_http.url}/rd"}, allow_private_network=True,
                                       breaker=BreakerConfig(enabled=False)),
               "pinned": PluginSettings(allow_private_network=True, breaker=BreakerConfig(enabled=False))}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        by = {b.provider: b for b in await h.query_balances(refresh=True)}
    entry = f'"localhost:{fake_http.port}"'
    b = by["moved"]
    assert (b.status, b.error_type) == ("error", "PermissionDenied"), b
    assert f"if the station answers at {entry} now" in b.error_message and \
        "python -m host config set moved baseUrl=URL" in b.error_message, b.error_message
    b = by["pinned"]
    assert b.error_type == "PermissionDenied" and f"change the URL in {plugin_dir.root / 'pinned.usage.js'}" in \
        b.error_message, b.error_message
    assert not any("mod.js" in r.error_message or "metadata.permissions" in r.error_message for r in by.values())


@pytest.mark.timeout(60)
async def test_a_configured_script_file_that_is_missing_is_a_station_in_error_naming_the_file_and_setting(
        plugin_dir, make_host, tmp_path):
    """A ``[usage_scripts.X] file`` that is not there (a typo, a file moved) must not leave the
    script out of ``list`` and ``balances`` with a log line: it is a plugin, and a station, in
    error whose message names the file and the setting naming it."""
    missing = tmp_path / "scripts" / "relay.usage.js"
    async with make_host(usage_scripts={"relay": UsageScriptConfig(file=str(missing))}) as h:
        infos = {i.id: i for i in h.plugins()}
        got = {b.provider: b for b in await h.query_balances(refresh=True)}
    assert "relay" in infos and infos["relay"].state == "error", infos
    said = infos["relay"].error or ""
    assert str(missing) in said and "usage_scripts.relay.file" in said, said
    assert got["relay"].status == "error" and str(missing) in (got["relay"].error_message or ""), got


@pytest.mark.timeout(60)
async def test_a_script_of_many_semicolons_is_refused_at_once(plugin_dir, make_host):
    """A script that is no program is read again as an expression, its trailing ";" cut off first:
    /;+\\s*$/ tried at every ";" of a run, and "{" + ";" * 65536 + "x" held its worker 10 s as it
    loaded."""
    (plugin_dir.root / "semi.usage.js").write_text("{" + ";" * 65536 + "x")
    t0 = time.monotonic()
    async with make_host() as h:
        info = h.plugin("semi")
    assert info.state == "error" and "SyntaxError" in (info.error or ""), info.error
    assert time.monotonic() - t0 < 5  # before: over 10 s


@pytest.mark.timeout(60)
async def test_a_base_url_of_many_slashes_is_read_at_once(plugin_dir, make_host):
    """The trailing "/" of baseUrl are cut off before the script gets it: /\\/+$/ tried at every
    "/" of a run, and "https://a" + "/" * 65536 + "x" held the worker 4 s at each use."""
    (plugin_dir.root / "relay.usage.js").write_text(NEW_API)
    async with make_host() as h:
        t0 = time.monotonic()
        await h.set_config("relay", {"baseUrl": "https://a" + "/" * 65536 + "x", "accessToken": "tok", "userId": "7"})
        assert time.monotonic() - t0 < 2  # before: 4 s
