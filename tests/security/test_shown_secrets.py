"""Secrets the host shows masked: what a plugin answers over HTTP (a call, an event, a balance's
rawData) with its config's secret values in it, as ``call --with-config`` masks it; and the
password of a URL written into a config field that is not ``secret`` (``baseUrl:
https://user:PASSWORD@host``), in every config shown and every log line, while the workers get
it whole and a config sent back as shown keeps it."""

from __future__ import annotations

import pytest
from support.servers import served

from host import PluginSettings, PoolConfig
from host.plugins.settings import MASK, masked_url, redacted, url_passwords

pytestmark = pytest.mark.anyio

KEY = "sk-live-3b9f0e7d2c1a"
PASSWORD = "S3CRETpw-77"
URL = f"https://relay-user:{PASSWORD}@relay.example/v1?password=QPASS-4242&region=eu"
SHOWN = f"https://relay-user:{MASK}@relay.example/v1?password={MASK}&region=eu"
READ, ADMIN = "read-7c2e9a", "admin-1f4b8d"

RELAY = """
export const metadata = { id: "relayx", name: "RelayX", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance", "message.incoming"],
  configSchema: { baseUrl: { type: "string", required: true }, apiKey: { type: "string", required: true, secret: true },
                  mirrors: { type: "array", default: [] } } };
export function queryBalance(config) {
  return { balance: 1, currency: "USD", rawData: { echo: config.apiKey, url: config.baseUrl } };
}
export function key(ctx) { return ctx.config.apiKey; }
export function echoed(ctx) {
  return { key: ctx.config.apiKey, [ctx.config.apiKey]: "as a key", list: ["Bearer " + ctx.config.apiKey],
           url: ctx.config.baseUrl, plain: "nothing secret", n: 42 };
}
export function baseUrl(ctx) { return ctx.config.baseUrl; }
export function logUrl(ctx) { console.log("asking " + ctx.config.baseUrl); return 1; }
export function onEvent(event, payload, ctx) { return "my key is " + ctx.config.apiKey; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.fixture
def relay(plugin_dir):
    plugin_dir.add("relayx.js", RELAY)
    return {"relayx": PluginSettings(config={"baseUrl": URL, "apiKey": KEY, "mirrors": [URL]})}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_what_a_plugin_answers_over_http_has_its_secrets_masked(relay, make_host, anyio_backend):
    # Before: POST /api/plugins/relayx/call/key answered the key in clear (the CLI's
    # `call --with-config` masked the same answer); the rawData of a balance went to the read token.
    async with make_host(pool=ONE, plugins=relay) as h, served(h, admin_token=ADMIN, read_token=READ) as (_, http):
        admin, reader = {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": f"Bearer {READ}"}
        async with http.post("/api/plugins/relayx/call/key", json={}, headers=admin) as r:
            assert (r.status, await r.json()) == (200, {"ok": True, "result": MASK})
        async with http.post("/api/plugins/relayx/call/echoed", json={}, headers=admin) as r:
            assert (await r.json())["result"] == {"key": MASK, MASK: "as a key", "list": [f"Bearer {MASK}"],
                                                  "url": SHOWN, "plain": "nothing secret", "n": 42}
        async with http.post("/api/events/message.incoming", json={}, headers=admin) as r:
            assert [x["value"] for x in (await r.json())["replies"]] == [f"my key is {MASK}"]
        async with http.get("/api/balances", headers=reader) as r:
            assert (await r.json())[0]["rawData"] == {"echo": MASK, "url": SHOWN}
        assert await h.call("relayx", "key") == KEY  # the Python API gets what the plugin answered


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_password_in_a_url_field_is_masked_in_every_config_shown(relay, make_host, anyio_backend):
    # Before: GET /api/plugins/ID/config, /api/stations and /api/stations/NAME/config showed
    # https://relay-user:S3CRETpw-77@... to the read token.
    async with make_host(pool=ONE, plugins=relay) as h, served(h, admin_token=ADMIN, read_token=READ) as (_, http):
        reader, admin = {"Authorization": f"Bearer {READ}"}, {"Authorization": f"Bearer {ADMIN}"}
        await h.stations.add("mine", plugin="relayx", config={"baseUrl": URL, "apiKey": KEY})
        shown = []
        for path in ("/api/plugins/relayx/config", "/api/stations", "/api/stations/mine/config"):
            async with http.get(path, headers=reader) as r:
                assert r.status == 200
                shown.append(text := await r.text())
                assert PASSWORD not in text and "QPASS-4242" not in text and KEY not in text, (path, text)
        async with http.get("/api/plugins/relayx/config", headers=reader) as r:
            config = await r.json()
        assert config == {"baseUrl": SHOWN, "apiKey": MASK, "mirrors": [SHOWN]}
        async with http.put("/api/plugins/relayx/config", json=config, headers=admin) as r:  # sent back as shown
            assert r.status == 200, await r.text()
        assert await h.call("relayx", "baseUrl") == URL  # kept whole, and the worker has it so
        await h.call("relayx", "logUrl")
        logged = [e.message for e in h.logs("relayx") if "asking" in e.message]
        assert logged and all(PASSWORD not in m and "QPASS-4242" not in m for m in logged), logged


@pytest.mark.parametrize(("url", "shown"), [
    ("https://u:pw-1234@h.example/x", f"https://u:{MASK}@h.example/x"),
    ("postgresql://app:pa/ss@db:5432/app", f"postgresql://app:{MASK}@db:5432/app"),  # libpq: to the last "@"
    ("redis://:pw-1234@127.0.0.1:6379/0", f"redis://:{MASK}@127.0.0.1:6379/0"),
    ("https://user@h.example/x", "https://user@h.example/x"),  # a user name alone is not a secret
    ("https://h.example/x?sslpassword=abc&y=1", f"https://h.example/x?sslpassword={MASK}&y=1"),
    ("https://h.example/users/@me", "https://h.example/users/@me"),
    ("not a url: u:p@h", "not a url: u:p@h"),
])
def test_masked_url_hides_only_the_password(url, shown):
    assert masked_url(url) == shown


def test_url_passwords_are_what_the_logs_redact():
    assert url_passwords({"a": ["https://u:p%40ss-1@h/"], "b": 5}) == ["p%40ss-1", "p@ss-1"]


def test_redacted_masks_strings_keys_and_numbers_and_leaves_the_rest():
    secrets = ['se"cret\\1', "987654"]

    def redact(text: str) -> str:
        for s in secrets:
            text = text.replace(s, MASK)
        return text

    value = {"a": 'x se"cret\\1 y', 'se"cret\\1': [987654, 9876541, True, None, 1.5], "b": b"bytes"}
    assert redacted(value, redact) == {"a": f"x {MASK} y", MASK: [MASK, 9876541, True, None, 1.5], "b": b"bytes"}
    plain = {"n": list(range(1000))}
    assert redacted(plain, redact) is plain  # nothing to mask: not walked


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_short_secret_changes_neither_the_answers_envelope_nor_another_plugins_numbers(
        plugin_dir, make_host, anyio_backend):
    """An operator set one plugin's apiKey to "1234", another's to "result": every plugin's
    answer went through every secret, so calc's add(1000, 234) answered "********" (a string)
    and each call's envelope became {"ok": true, "********": 3}, clients losing .result
    (helper-71's finding). The envelope is the host's and is never masked; a number is masked
    only when a secret of six characters or more is its whole text."""
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }")
    for name in ("short", "word"):
        plugin_dir.add(f"{name}.js", f"""
export const metadata = {{ id: "{name}", name: "{name}", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["message.incoming"], configSchema: {{ apiKey: {{ type: "string", secret: true }} }} }};
export function key(ctx) {{ return "key " + ctx.config.apiKey; }}
export function onEvent(event, payload, ctx) {{ return "{name}" === "word" ? "my " + ctx.config.apiKey : undefined; }}""")
    settings = {"short": PluginSettings(config={"apiKey": "1234"}), "word": PluginSettings(config={"apiKey": "result"})}
    async with make_host(pool=ONE, plugins=settings) as h, served(h, admin_token=ADMIN) as (_, http):
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with http.post("/api/plugins/calc/call/add", json={"args": [1000, 234]}, headers=admin) as r:
            assert (r.status, await r.json()) == (200, {"ok": True, "result": 1234})
        async with http.post("/api/plugins/word/call/key", json={}, headers=admin) as r:
            assert await r.json() == {"ok": True, "result": f"key {MASK}"}  # its own answer is still masked
        async with http.post("/api/plugins/short/call/key", json={}, headers=admin) as r:
            assert await r.json() == {"ok": True, "result": f"key {MASK}"}
        await h.set_config("word", {"apiKey": "value"})  # an event reply's own key
        async with http.post("/api/events/message.incoming", json={}, headers=admin) as r:
            replies = (await r.json())["replies"]
        assert [(x["plugin"], x["ok"], x["value"]) for x in replies] == [
            ("short", True, None), ("word", True, f"my {MASK}")], replies  # before: {"********": "my ********"}
