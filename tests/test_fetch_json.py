"""context.fetchJson: HTTP failures as typed PluginErrors; and net grants that follow a
config value (``"{config.baseUrl}"``), so a provider plugin reaches the host it is configured
for and nothing else."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from host import BreakerConfig, CallTimeout, PluginError, PluginSettings, PoolConfig
from host.plugins.manifest import url_host

pytestmark = pytest.mark.anyio

PROBE = """
export const metadata = {
  id: "probe", name: "Probe", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: { baseUrl: { type: "string", default: "https://api.example.com" } },
};
export async function get(path, ctx) { return await ctx.fetchJson(ctx.config.baseUrl + path); }
export async function raw(url, ctx) { return await ctx.fetchJson(url); }
export async function post(path, body, headers, ctx) {
  return await ctx.fetchJson(ctx.config.baseUrl + path, { method: "POST", body, headers: headers ?? undefined });
}
export async function within(path, ms, ctx) {
  return await ctx.fetchJson(ctx.config.baseUrl + path, { signal: AbortSignal.timeout(ms) });
}
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.mark.parametrize(("value", "host"), [
    ("https://api.deepseek.com", "api.deepseek.com"),
    ("https://relay.example:8443/v1/", "relay.example:8443"),
    ("http://user:pw@127.0.0.1:9000/x?y=1", "127.0.0.1:9000"),
    ("api.moonshot.cn", "api.moonshot.cn"),
    ("http://[::1]:8080", "[::1]:8080"),
    ("", None), (None, None), ("http://host:port", None), ("https://", None),
])
def test_url_host(value, host):
    assert url_host(value) == host


async def test_fetch_json_sends_an_object_body_as_json(plugin_dir, make_host, fake_http):
    # helper-80's finding: { method: "POST", body: { a: 1 } } went out as the text "[object Object]"
    plugin_dir.add("probe.js", PROBE)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"type": request.headers.get("Content-Type"), "body": await request.text()})

    fake_http.route("POST", "/echo", echo)
    settings = PluginSettings(config={"baseUrl": fake_http.url}, allow_private_network=True)
    async with make_host(pool=ONE, plugins={"probe": settings}) as h:
        assert await h.call("probe", "post", "/echo", {"a": 1}, None) == {
            "type": "application/json", "body": '{"a":1}'}
        assert await h.call("probe", "post", "/echo", [1, "x"], {"Content-Type": "application/vnd.x+json"}) == {
            "type": "application/vnd.x+json", "body": '[1,"x"]'}
        assert (await h.call("probe", "post", "/echo", "k=v", {"Content-Type": "application/x-www-form-urlencoded"})
                == {"type": "application/x-www-form-urlencoded", "body": "k=v"})  # a string goes as it is
    # /execute code's objects are its own V8 context's (helper-81: they still went as "[object Object]")
    from host import ExecuteConfig

    lan = ExecuteConfig(allow={"net": True, "allowPrivateNetwork": True})
    code = 'export default (url, ctx) => ctx.fetchJson(url, { method: "POST", body: { a: [1, { b: 2 }] } });'
    async with make_host(execute=lan) as h:
        out = await h.execute(code, f"{fake_http.url}/echo",
                              permissions={"net": [f"127.0.0.1:{fake_http.port}"], "allowPrivateNetwork": True})
    assert out.ok and out.result == {"type": "application/json", "body": '{"a":[1,{"b":2}]}'}, out


async def test_fetch_json_maps_http_failures_to_typed_errors(plugin_dir, make_host, fake_http):
    plugin_dir.add("probe.js", PROBE)
    fake_http.json("GET", "/ok", {"balance": 1.5})
    fake_http.json("GET", "/401", {"error": "bad key"}, status=401)
    fake_http.json("GET", "/403", {"error": "forbidden"}, status=403)
    fake_http.json("GET", "/429", {"error": "slow down"}, status=429, headers={"Retry-After": "7"})
    fake_http.json("GET", "/500", {"error": "boom"}, status=500)
    # an empty wallet is no bad key and no rate limit (helper-101: sub2api's refusals, OpenAI's quota)
    fake_http.json("GET", "/wallet", {"code": "INSUFFICIENT_BALANCE", "message": "insufficient balance"}, status=403)
    fake_http.json("GET", "/used", {"code": "USAGE_LIMIT_EXCEEDED", "message": "usage limit exceeded"}, status=429)
    fake_http.json("GET", "/quota", {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                               "code": "insufficient_quota"}}, status=429)
    fake_http.json("GET", "/404", {"error": "no such"}, status=404)
    fake_http.route("GET", "/garbled", lambda r: web.Response(text="<html>gateway</html>", status=200))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    fake_http.route("GET", "/slow", slow)
    settings = PluginSettings(config={"baseUrl": fake_http.url}, allow_private_network=True,
                              breaker=BreakerConfig(enabled=False))  # seven failures in a row here
    async with make_host(pool=ONE, plugins={"probe": settings}) as h:
        assert await h.call("probe", "get", "/ok") == {"balance": 1.5}
        expected = {"/401": ("AUTH_ERROR", {"status": 401}), "/403": ("AUTH_ERROR", {"status": 403}),
                    "/429": ("RATE_LIMIT", {"status": 429, "retryAfter": 7}),
                    "/500": ("PROVIDER_ERROR", {"status": 500}), "/404": ("PROVIDER_ERROR", {"status": 404}),
                    "/wallet": ("PROVIDER_ERROR", {"status": 403, "code": "INSUFFICIENT_BALANCE"}),
                    "/used": ("PROVIDER_ERROR", {"status": 429, "code": "USAGE_LIMIT_EXCEEDED"}),
                    "/quota": ("PROVIDER_ERROR", {"status": 429, "code": "insufficient_quota"}),
                    "/garbled": ("PARSE_ERROR", {"status": 200})}
        for path, (error_type, details) in expected.items():
            with pytest.raises(PluginError) as e:
                await h.call("probe", "get", path)
            assert (e.value.error_type, e.value.details) == (error_type, details), path
            assert f"127.0.0.1:{fake_http.port}" in e.value.message
        with pytest.raises(PluginError) as e:
            await h.call("probe", "raw", f"{fake_http.url}/garbled")
        assert e.value.error_type == "PARSE_ERROR" and "<html>gateway</html>" in e.value.message
        with pytest.raises(PluginError) as e:  # the plugin's own deadline on the request
            await h.call("probe", "within", "/slow", 300)
        assert e.value.error_type == "TIMEOUT" and "cancelled" in e.value.message
        with pytest.raises(CallTimeout):  # the call's deadline: the host kills the worker
            await h.call("probe", "get", "/slow", timeout=1.0)
        info = h.plugin("probe")
    assert info.permissions["net"] == [f"127.0.0.1:{fake_http.port}"]
    assert info.permissions["allowPrivateNetwork"] is True


async def test_a_body_is_decoded_with_the_charset_its_answer_declares(plugin_dir, make_host, fake_http):
    """A provider answering ``application/json; charset=gbk`` (or UTF-16 with its BOM): cc-switch
    reads the body with reqwest's ``text()``, which decodes by the Content-Type's charset and a
    BOM, so a usage script saw the plan name; fetchJson's ``Response.text()`` always assumes UTF-8,
    so the name came out as U+FFFD and a UTF-16 body was "not JSON", its error quoting NUL bytes."""
    plugin_dir.add("probe.js", PROBE)
    doc = '{"balance": 5.5, "plan": "\u4f59\u989d\u5957\u9910"}'
    fake_http.route("GET", "/gbk", lambda r: web.Response(body=doc.encode("gbk"), content_type="application/json",
                                                          charset="gbk"))
    fake_http.route("GET", "/wide", lambda r: web.Response(body=doc.encode("utf-16"), content_type="application/json"))
    fake_http.route("GET", "/binary", lambda r: web.Response(body=b"\x00\x01bad\x00", content_type="text/plain"))
    settings = PluginSettings(config={"baseUrl": fake_http.url}, allow_private_network=True)
    async with make_host(pool=ONE, plugins={"probe": settings}) as h:
        assert await h.call("probe", "get", "/gbk") == {"balance": 5.5, "plan": "\u4f59\u989d\u5957\u9910"}
        assert await h.call("probe", "get", "/wide") == {"balance": 5.5, "plan": "\u4f59\u989d\u5957\u9910"}
        with pytest.raises(PluginError) as e:
            await h.call("probe", "get", "/binary")
    assert e.value.error_type == "PARSE_ERROR" and "bad" in e.value.message and "\x00" not in e.value.message


async def test_the_grant_follows_the_configured_host_only(plugin_dir, make_host, fake_http, local_server):
    plugin_dir.add("probe.js", PROBE)
    fake_http.json("GET", "/ok", {"fine": True})
    settings = PluginSettings(config={"baseUrl": fake_http.url}, allow_private_network=True)
    async with make_host(pool=ONE, plugins={"probe": settings}) as h:
        assert await h.call("probe", "get", "/ok") == {"fine": True}
        # another host, even on loopback with the private network allowed, is not granted
        with pytest.raises(PluginError) as e:
            await h.call("probe", "raw", f"http://127.0.0.1:{local_server.port}/x")
        assert e.value.name == "NotCapable" and e.value.error_type is None, e.value
    assert local_server.requests == []


async def test_network_failure_is_network_error(plugin_dir, make_host):
    from support.processes import free_port

    plugin_dir.add("probe.js", PROBE)
    closed = f"http://127.0.0.1:{free_port()}"
    settings = PluginSettings(config={"baseUrl": closed}, allow_private_network=True)
    async with make_host(pool=ONE, plugins={"probe": settings}) as h:
        with pytest.raises(PluginError) as e:
            await h.call("probe", "get", "/anything")
    assert e.value.error_type == "NETWORK_ERROR" and closed.removeprefix("http://") in e.value.message
    assert "Connection refused" in e.value.message, e.value.message  # why, not "fetch failed" alone (helper-113)
    assert "/anything" not in e.value.message  # the cause quotes the URL: its host only


async def test_without_the_operator_opt_in_a_private_host_stays_denied(plugin_dir, make_host, fake_http):
    plugin_dir.add("probe.js", PROBE)
    fake_http.json("GET", "/ok", {"fine": True})
    async with make_host(pool=ONE, plugins={"probe": PluginSettings(config={"baseUrl": fake_http.url})}) as h:
        with pytest.raises(PluginError):
            await h.call("probe", "get", "/ok")
    assert fake_http.requests == []


@pytest.mark.parametrize(("perms", "named"), [
    ('{ net: ["{config.nope}"] }', "'{config.nope}' must name a string field of configSchema"),
    ('{ net: ["{config.port}"] }', "must name a string field"),
])
async def test_a_config_reference_must_name_a_string_field(plugin_dir, make_host, perms, named):
    plugin_dir.add("bad.js", f"""
export const metadata = {{ id: "bad", name: "Bad", version: "1.0.0", apiVersion: "1.0", permissions: {perms},
  configSchema: {{ port: {{ type: "integer", default: 1 }} }} }};
export function f() {{ return 1; }}
""")
    async with make_host(pool=ONE) as h:
        info = h.plugin("bad")
    assert info.state == "error" and named in info.error
