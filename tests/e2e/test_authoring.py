"""The test harness plugin authors get (issue 19): the package's pytest plugin (entry point
``pytest11``: fixtures ``plugin_host`` and ``fake_http``, helper ``call_with_config``) driving a
balance plugin against a fake provider, in a pytest run of the author's own project."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

PLUGIN = """
import { configChecks, parsers, secretProblem, urlProblem } from "@plugin-host/kit";

const ID = "myrelay";
const { object, number } = parsers(ID);

export const metadata = {
  id: ID, name: "My relay", version: "0.1.0", apiVersion: "1.0", capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    baseUrl: { type: "string", format: "url", description: "the relay's address" },
    apiKey: { type: "string", secret: true, pattern: "^sk-" },
  },
};

export async function queryBalance(config, ctx) {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const body = object(await ctx.fetchJson(`${config.baseUrl}/api/balance`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body");
  return { balance: number(body.remaining, "remaining"), currency: "USD", rawData: body };
}

export const { healthCheck, validateConfig } = configChecks((c) =>
  secretProblem(c.apiKey, "apiKey") ?? urlProblem(c.baseUrl, "baseUrl"));
"""

AUTHOR_TESTS = '''
import pytest

from host import InvalidConfig, PluginError
from host.testing import call_with_config

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_balance_against_a_fake_provider(plugin_host, fake_http):
    fake_http.json("GET", "/api/balance", {"remaining": 42.5})
    config = {"baseUrl": fake_http.url, "apiKey": "sk-test-1"}
    async with plugin_host("plugins/myrelay", config=config) as host:
        [row] = await host.query_balances(refresh=True)
        assert (row.provider, row.status, row.balance, row.currency) == ("myrelay", "success", 42.5, "USD")
    method, path, headers = fake_http.requests[0]
    assert (method, path, headers["Authorization"]) == ("GET", "/api/balance", "Bearer sk-test-1")


async def test_errors_are_typed(plugin_host, fake_http):
    fake_http.json("GET", "/api/balance", {"error": "no such key"}, status=401)
    async with plugin_host("plugins/myrelay") as host:
        with pytest.raises(PluginError) as e:
            await call_with_config(host, "myrelay", "queryBalance", {"baseUrl": fake_http.url, "apiKey": "sk-bad"})
        assert e.value.error_type == "AUTH_ERROR"
        with pytest.raises(InvalidConfig, match="config.apiKey: the value does not match pattern"):
            await call_with_config(host, "myrelay", "queryBalance", {"baseUrl": fake_http.url, "apiKey": "nope"})
'''


def test_a_plugin_authors_own_pytest_run_uses_the_shipped_fixtures(tmp_path):
    (tmp_path / "plugins" / "myrelay").mkdir(parents=True)
    (tmp_path / "plugins" / "myrelay" / "mod.ts").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_myrelay.py").write_text(AUTHOR_TESTS)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 passed" in out.stdout


def test_from_new_to_a_passing_test_and_a_balances_row_in_under_two_minutes(tmp_path, local_server):
    """The path docs/plugin-authoring.md walks, timed: new --template balance, its pytest, then a
    station of it against a local relay and `balances` printing its row."""
    import json
    import os
    import time

    t0 = time.monotonic()
    env = {**os.environ, "NORTH_KEY": "sk-north-123"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "host", *args, "--plugins", "plugins", "--state-dir", "state",
                               "--config", "host.toml"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=110, env=env)

    (tmp_path / "host.toml").write_text("[plugins.myrelay]\nallow_private_network = true  # the relay is local\n")
    new = cli("new", "myrelay", "--template", "balance")
    assert new.returncode == 0, new.stderr
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "plugins/myrelay/test_myrelay.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=110)
    assert tested.returncode == 0 and " passed" in tested.stdout, tested.stdout + tested.stderr
    local_server.responses["/api/balance"] = {"remaining": 42.5}
    added = cli("balances", "add", "north", "--plugin", "myrelay",
                f"baseUrl=http://127.0.0.1:{local_server.port}", "--from-env", "apiKey=NORTH_KEY")
    assert added.returncode == 0, added.stderr
    rows = cli("balances", "--json")
    assert rows.returncode == 0, rows.stdout + rows.stderr
    [row] = json.loads(rows.stdout)
    assert (row["status"], row["balance"], row["currency"]) == ("success", 42.5, "USD")
    assert "sk-north-123" not in rows.stdout + rows.stderr
    assert time.monotonic() - t0 < 120
