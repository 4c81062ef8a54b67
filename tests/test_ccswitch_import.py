"""Import the usage scripts a user has in cc-switch (issue 17): a cc-switch database as cc-switch
writes it (its `providers` table, `meta.usage_script`), read-only; a dry run that shows what would
be created and writes nothing; then the scripts as usage plugins with the values cc-switch would
use (the script's own, else the provider's key and base URL, per app), secrets stored sealed and
never printed; the imported station answers against a local fake."""

from __future__ import annotations

import json
import sqlite3

import pytest
from support.servers import run_cli

from host import PluginSettings

pytestmark = pytest.mark.timeout(120)

NEW_API = """({
  request: { url: "{{baseUrl}}/api/user/self", method: "GET",
             headers: { "Authorization": "Bearer {{accessToken}}", "New-Api-User": "{{userId}}" } },
  extractor: function (r) { return { planName: r.data.group, remaining: r.data.quota / 500000, unit: "USD" }; }
})"""
GENERIC = """({
  request: { url: "{{baseUrl}}/v1/usage", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (r) { return { remaining: r.left, unit: "USD" }; }
})"""
SECRET = "sk-claude-secret-5b1e"


def cc_switch_db(path, base_url: str) -> None:
    """The providers table as cc-switch creates it (src-tauri/src/database/schema.rs)."""
    conn = sqlite3.connect(path)
    conn.execute("""CREATE TABLE providers (id TEXT NOT NULL, app_type TEXT NOT NULL, name TEXT NOT NULL,
        settings_config TEXT NOT NULL, website_url TEXT, category TEXT, created_at INTEGER, sort_index INTEGER,
        notes TEXT, icon TEXT, icon_color TEXT, meta TEXT NOT NULL DEFAULT '{}',
        is_current BOOLEAN NOT NULL DEFAULT 0, in_failover_queue BOOLEAN NOT NULL DEFAULT 0,
        PRIMARY KEY (id, app_type))""")
    rows = [
        # a Claude provider whose generic script takes the provider's own key and base URL
        ("p1", "claude", "My Relay 中转", {"env": {"ANTHROPIC_AUTH_TOKEN": SECRET, "ANTHROPIC_BASE_URL": base_url + "/"}},
         {"usage_script": {"enabled": True, "language": "javascript", "code": GENERIC, "templateType": "general"}}),
        # a Codex provider with a New API script and its own access token and user id
        ("p2", "codex", "newapi station", {"auth": {"OPENAI_API_KEY": "sk-codex"},
                                            "config": f'model_provider = "x"\n[model_providers.x]\nbase_url = "{base_url}/v1"\n'},
         {"usage_script": {"enabled": True, "language": "javascript", "code": NEW_API, "templateType": "newapi",
                           "accessToken": "tok-123", "userId": "7", "baseUrl": base_url}}),
        # disabled: not imported
        ("p3", "claude", "Off", {"env": {}}, {"usage_script": {"enabled": False, "code": GENERIC}}),
        # no usage script at all
        ("p4", "gemini", "Plain", {"env": {"GEMINI_API_KEY": "g"}}, {}),
    ]
    for pid, app, name, settings, meta in rows:
        conn.execute("INSERT INTO providers (id, app_type, name, settings_config, meta) VALUES (?, ?, ?, ?, ?)",
                     (pid, app, name, json.dumps(settings), json.dumps(meta)))
    conn.commit()
    conn.close()


def test_dry_run_then_import_creates_working_stations(plugin_dir, tmp_path, fake_http):
    fake_http.json("GET", "/v1/usage", {"left": 12.5})
    fake_http.json("GET", "/api/user/self", {"success": True, "data": {"quota": 5_000_000, "group": "vip"}})
    db = tmp_path / "cc-switch.db"
    cc_switch_db(db, fake_http.url)
    state = tmp_path / "state"
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]

    dry = run_cli("import-cc-switch", "--db", str(db), "--dry-run", *common, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "my-relay" in dry.stdout and "newapi-station" in dry.stdout and "dry run: nothing written" in dry.stdout
    assert "apiKey, baseUrl" in dry.stdout and "accessToken, apiKey, baseUrl, userId" in dry.stdout
    assert "Off" not in dry.stdout and "Plain" not in dry.stdout
    assert SECRET not in dry.stdout + dry.stderr
    assert not list(plugin_dir.root.glob("*.usage.js"))

    done = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 2" in done.stdout and SECRET not in done.stdout + done.stderr
    relay = plugin_dir.root / "my-relay.usage.js"
    assert relay.read_text() == GENERIC  # the script as cc-switch keeps it
    stored = (state / "config.json").read_text()
    assert SECRET not in stored  # sealed at rest

    again = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already imported") == 2, again.stdout
    assert "imported 2" not in again.stdout and not (plugin_dir.root / "my-relay-2.usage.js").exists()

    allow = {"my-relay": PluginSettings(allow_private_network=True),
             "newapi-station": PluginSettings(allow_private_network=True)}
    import anyio

    from host import HostConfig, PluginHost

    async def query():
        cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state), plugins=allow)
        async with PluginHost(cfg) as h:
            return {b.provider: b for b in await h.query_balances(refresh=True)}, h.get_config("my-relay")

    results, masked = anyio.run(query)
    assert results["my-relay"].status == "success" and results["my-relay"].balance == 12.5
    assert results["newapi-station"].balance == 10.0
    assert masked["apiKey"] == "********" and masked["baseUrl"] == fake_http.url
    sent = {path: headers for _, path, headers in fake_http.requests}
    assert sent["/v1/usage"]["Authorization"] == f"Bearer {SECRET}"
    assert sent["/api/user/self"]["New-Api-User"] == "7"


def test_a_missing_or_foreign_database_is_a_clear_error(tmp_path):
    out = run_cli("import-cc-switch", "--db", str(tmp_path / "nope.db"), "--dry-run", cwd=tmp_path)
    assert out.returncode == 1 and "no cc-switch database there" in out.stderr
    (tmp_path / "other.db").write_bytes(b"not sqlite at all" * 10)
    out = run_cli("import-cc-switch", "--db", str(tmp_path / "other.db"), "--dry-run", cwd=tmp_path)
    assert out.returncode == 1 and "not a cc-switch database" in out.stderr
