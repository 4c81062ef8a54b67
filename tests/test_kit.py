"""The runtime-provided helper module "@plugin-host/kit" (worker_runtime/kit.ts): importable by
any plugin with no read grant, read-only, and what the shipped providers use instead of copying
the same helpers into each (issue 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from host import PluginError, PoolConfig
from host.runtime import IMPORT_MAP, find_runtime_entry

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parent.parent
ONE = PoolConfig(min_workers=1, max_workers=1)

RELAY = """
import { configChecks, parsers, secretProblem, urlProblem } from "@plugin-host/kit";
import * as kit from "@plugin-host/kit";
const { object, number, array } = parsers("relay");
export const metadata = { id: "relay", name: "Relay", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true }, baseUrl: { type: "string" } } };
export const { healthCheck, validateConfig } = configChecks((c) =>
  secretProblem(c.apiKey, "apiKey") ?? urlProblem(c.baseUrl, "baseUrl"));
export function parse(body) {
  const data = object(object(body, "body").data, "data");
  return { balance: number(data.balance, "data.balance"), plans: array(data.plans, "data.plans").length };
}
export function tamper() {
  const tried = [];
  try { kit.parsers = () => ({}); tried.push("namespace assigned"); } catch (e) { tried.push(e.name); }
  const p = parsers("x");
  try { p.number = () => 0; tried.push("object assigned"); } catch (e) { tried.push(e.name); }
  return { tried, still: number("12.5", "n") };
}
"""


async def test_a_plugin_with_no_permissions_imports_the_kit(plugin_dir, make_host):
    plugin_dir.add("relay.js", RELAY)
    async with make_host(pool=ONE) as h:
        assert h.plugin("relay").permissions == {}
        assert await h.call("relay", "parse", {"data": {"balance": "41.50", "plans": [1, 2]}}) == {
            "balance": 41.5, "plans": 2}
        with pytest.raises(PluginError) as e:
            await h.call("relay", "parse", {"data": {"balance": None}})
        assert (e.value.error_type, e.value.message) == ("PARSE_ERROR", "relay: data.balance is missing or not a number")
        assert await h.call("relay", "validateConfig", {"apiKey": "sk-1 2", "baseUrl": "https://r.example"}) == {
            "valid": False, "message": "apiKey must not contain whitespace"}
        assert await h.call("relay", "healthCheck", {"apiKey": "sk-1", "baseUrl": "ftp://r.example"}) == {
            "healthy": False, "message": "baseUrl must be an http(s) URL"}
        assert await h.call("relay", "validateConfig", {"apiKey": "sk-1", "baseUrl": "https://r.example"}) is True


async def test_the_kit_is_read_only(plugin_dir, make_host):
    plugin_dir.add("relay.js", RELAY)
    async with make_host(pool=ONE) as h:
        assert await h.call("relay", "tamper") == {"tried": ["TypeError", "TypeError"], "still": 12.5}


def test_the_import_map_names_only_runtime_files_and_every_worker_gets_it():
    runtime_dir = find_runtime_entry().parent
    mapping = json.loads((runtime_dir / IMPORT_MAP).read_text())["imports"]
    assert mapping == {"@plugin-host/kit": "./kit.ts"}
    for target in mapping.values():
        assert (runtime_dir / target).resolve().parent == runtime_dir.resolve()
    # Preloaded by the entry point: that is what spares a plugin a read grant on the runtime.
    assert 'import "./kit.ts";' in (runtime_dir / "worker.ts").read_text()


@pytest.mark.parametrize("provider", sorted(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir()))
def test_shipped_providers_use_the_kit_instead_of_copies(provider):
    source = (ROOT / "plugins" / provider / "mod.ts").read_text()
    assert 'from "@plugin-host/kit"' in source
    copied = re.findall(r"^(?:export )?function (object|number|healthCheck|validateConfig)\b", source, re.M)
    assert copied == []


@pytest.mark.timeout(30)
def test_fake_http_running_is_the_with_block_its_docstring_says():
    """``FakeHttp.running()`` ("a server for the duration of the ``with``") was a bare generator:
    ``with FakeHttp.running() as fake`` raised TypeError for a plugin author outside the fixture."""
    import urllib.error
    import urllib.request

    from host.testing import FakeHttp

    with FakeHttp.running() as fake:
        fake.json("GET", "/balance", {"balance": 1.5})
        with urllib.request.urlopen(fake.url + "/balance", timeout=5) as r:
            assert json.loads(r.read()) == {"balance": 1.5}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(fake.url + "/balance", timeout=5)
