"""A secret the operator is setting (``config set``, ``PUT /api/plugins/ID/config``) that the
plugin's ``validateConfig`` rejects, echoing it in its error or its console: the secret is
masked in the answer, in the plugin's log (the dashboard) and in the host's log, as a stored
secret is; the plugin running or not."""

from __future__ import annotations

import logging

import pytest

from host import InvalidConfig, PluginSettings, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CANDIDATE = "sk-bad-7d1c9e40b2"
GOOD = "sk-good-51aa08f3"

VAULT = """
export const metadata = { id: "vault", name: "Vault", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", required: true, secret: true } } };
export function hi() { return "hi"; }
export function validateConfig(config) {
  console.log("checking key " + config.apiKey);
  if (config.apiKey.startsWith("sk-bad")) throw new PluginError("AUTH_ERROR", `key ${config.apiKey} refused`);
}
"""


@pytest.mark.parametrize("running", [True, False])
async def test_a_rejected_secret_is_in_no_log(plugin_dir, make_host, caplog, running):
    plugin_dir.add("vault.js", VAULT)
    plugins = {"vault": PluginSettings(config={"apiKey": GOOD})} if running else {}
    caplog.set_level(logging.DEBUG)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        assert h.plugin("vault").state == ("running" if running else "error")
        with pytest.raises(InvalidConfig) as e:
            await h.set_config("vault", {"apiKey": CANDIDATE})
        assert "refused" in e.value.message and CANDIDATE not in e.value.message
        logged = [entry.message for entry in h.logs("vault")]
        assert any("checking key" in m for m in logged) or not running, logged  # a one-off worker's is not kept
        # before: "validateConfig failed: vault.validateConfig: key sk-bad-7d1c9e40b2 refused" and
        # "checking key sk-bad-7d1c9e40b2" in both logs
        assert not [m for m in logged if CANDIDATE in m], logged
    assert not [r.getMessage() for r in caplog.records if CANDIDATE in r.getMessage()]
