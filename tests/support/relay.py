"""A relay station for the station tests: the "relayco" provider plugin (its key in a Bearer
header, its balance at ``GET /balance``) and a fake of its API answering each key's balance."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from host.testing import FakeHttp

_RELAYCO = """
export const metadata = { id: "relayco", name: "RelayCo", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: { baseUrl: { type: "string", description: "the relay's address" },
                  apiKey: { type: "string", secret: true, description: "a relay key (sk-...)" } } };
export async function queryBalance(config, ctx) {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, "apiKey is not configured");
  const body = await ctx.fetchJson(`${config.baseUrl}/balance@QUERY@`, { headers: { Authorization: `Bearer ${config.apiKey}` } });
  return { balance: body.left, currency: "USD", rawData: body };
}
export function validateConfig(config) {
  return config.apiKey && config.apiKey.startsWith("bad") ? { valid: false, message: "that key is revoked" } : true;
}
"""


def relayco(*, key_in_query: bool = False) -> str:
    """The plugin's source; ``key_in_query`` also sends the key as ``?key=`` (to see it masked)."""
    return _RELAYCO.replace("@QUERY@", "?key=${config.apiKey}" if key_in_query else "")


def serve_relay(fake: FakeHttp, balances: dict[str, float], extra: dict[str, Any]) -> FakeHttp:
    """``GET /balance`` on ``fake``: ``{"left": <the key's balance>, **extra}``, 401 for a key it does not know."""
    def balance(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key not in balances:
            return web.json_response({"error": "invalid key"}, status=401)
        return web.json_response({"left": balances[key], **extra})

    fake.route("GET", "/balance", balance)
    return fake
