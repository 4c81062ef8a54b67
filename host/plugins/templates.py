"""What ``python -m host new NAME --template T`` writes besides the basic plugin (scaffold.py):
a balance plugin, an event plugin and a cc-switch usage script, each with a test that passes as
written, so that an author starts from green. The balance plugin and the usage script are
tested with the package's pytest fixtures (host/testing.py) against a fake of the provider; the
event plugin with ``deno test`` (``python -m host test NAME``)."""

from __future__ import annotations

BALANCE_TS = '''// {name}: a balance plugin for a relay station. `python -m pytest {path}` runs its test against
// a fake of the station; `python -m host balances add my-station --plugin {name} baseUrl=...
// --from-env apiKey=KEY` makes it a station.
import {{ keyAndUrlChecks, parsers }} from "@plugin-host/kit";

const ID = "{name}";
const {{ object, number }} = parsers(ID);

export const metadata = {{
  id: ID,
  name: "{name}",
  version: "0.1.0",
  apiVersion: "1.0",
  description: "The balance of a relay station; replace the endpoint and the fields with the station's.",
  capabilities: ["balance"],
  permissions: {{ net: ["{{config.baseUrl}}"] }},  // the configured host, nothing else
  configSchema: {{
    baseUrl: {{ type: "string", format: "url", description: "the station's address" }},
    apiKey: {{ type: "string", secret: true, description: "a key of the station (sk-...)" }},
  }},
}};

export async function queryBalance(config: {{ baseUrl?: string; apiKey?: string }}, ctx: any) {{
  if (!config.apiKey || !config.baseUrl) {{
    throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${{ID}}: baseUrl and apiKey must be configured`);
  }}
  const body = object(await ctx.fetchJson(`${{config.baseUrl}}/api/balance`, {{
    headers: {{ Authorization: `Bearer ${{config.apiKey}}` }},
  }}), "body");
  return {{ balance: number(body.remaining, "remaining"), currency: "USD", rawData: body }};
}}

export const {{ healthCheck, validateConfig }} = keyAndUrlChecks();
'''

BALANCE_TEST = '''"""{name}: its balance against a fake of the station (the fixtures ship with Plugin Host)."""

from pathlib import Path

import pytest

from host import PluginError
from host.testing import call_with_config

pytestmark = pytest.mark.anyio
HERE = Path(__file__).parent


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_balance(plugin_host, fake_http):
    fake_http.json("GET", "/api/balance", {{"remaining": 12.5}})
    async with plugin_host(HERE, config={{"baseUrl": fake_http.url, "apiKey": "sk-test-1"}}) as host:
        [row] = await host.query_balances(refresh=True)
    assert (row.status, row.balance, row.currency) == ("success", 12.5, "USD")
    assert fake_http.requests[0][2]["Authorization"] == "Bearer sk-test-1"


async def test_a_refused_key_is_an_auth_error(plugin_host, fake_http):
    fake_http.json("GET", "/api/balance", {{"error": "invalid key"}}, status=401)
    async with plugin_host(HERE) as host:
        with pytest.raises(PluginError) as e:
            await call_with_config(host, "{name}", "queryBalance", {{"baseUrl": fake_http.url, "apiKey": "sk-bad"}})
    assert e.value.error_type == "AUTH_ERROR"
'''

EVENT_TS = '''// {name}: an event plugin. `python -m host test {name}` runs its test;
// `python -m host serve`, then `curl -X POST 127.0.0.1:8787/api/events/message.incoming -d '{{"content": "hi"}}'`.
export const metadata = {{
  id: "{name}",
  name: "{name}",
  version: "0.1.0",
  apiVersion: "1.0",
  description: "Answers message.incoming events; replace with what your plugin does.",
  capabilities: ["message.incoming"],
  priority: 10,  // the highest runs first
}};

export function onEvent(event: string, data: {{ content?: string }}) {{
  if (event !== "message.incoming") return null;
  return {{ reply: `heard: ${{data?.content ?? ""}}` }};
}}
'''

EVENT_TEST = '''// Run: python -m host test {name} --plugins {plugins}
import {{ metadata, onEvent }} from "./mod.ts";

Deno.test("onEvent answers message.incoming", () => {{
  const got = onEvent("message.incoming", {{ content: "hi" }});
  if (got?.reply !== "heard: hi") throw new Error(`got ${{JSON.stringify(got)}}`);
}});

Deno.test("metadata declares the event", () => {{
  if (!metadata.capabilities.includes("message.incoming")) throw new Error("capability missing");
}});
'''

USAGE_JS = '''({{
  // {name}: a cc-switch usage script, run as the balance plugin "{name}" (`python -m pytest {test}`)
  request: {{
    url: "{{{{baseUrl}}}}/api/balance",
    method: "GET",
    headers: {{ "Authorization": "Bearer {{{{apiKey}}}}" }}
  }},
  extractor: function (response) {{
    return {{ planName: "default", remaining: response.remaining, unit: "USD" }};
  }}
}})
'''

USAGE_TEST = '''"""{name}.usage.js against a fake of the station (the fixtures ship with Plugin Host)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio
SCRIPT = Path(__file__).with_name("{name}.usage.js")


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_script_reads_the_balance(plugin_host, fake_http, tmp_path):
    fake_http.json("GET", "/api/balance", {{"remaining": 7.25}})
    plugins = tmp_path / "scripts"
    plugins.mkdir()
    (plugins / SCRIPT.name).write_text(SCRIPT.read_text())
    async with plugin_host(plugins) as host:
        await host.set_config("{name}", {{"baseUrl": fake_http.url, "apiKey": "sk-test-1"}})
        [row] = await host.query_balances(refresh=True)
    assert (row.provider, row.status, row.balance, row.currency) == ("{name}", "success", 7.25, "USD")
'''

TEMPLATES = ("basic", "balance", "event", "usage-script")

__all__ = ["BALANCE_TEST", "BALANCE_TS", "EVENT_TEST", "EVENT_TS", "TEMPLATES", "USAGE_JS", "USAGE_TEST"]
