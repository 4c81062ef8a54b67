"""Import the usage queries a user has in cc-switch (issue 17): a cc-switch database as cc-switch
writes it (its `providers` table, `meta.usage_script`), read-only, or its SQL export or v3.6-3.7
config.json (tests/support/ccswitch.py writes them as cc-switch does); a dry run that shows what
would be created and writes nothing; then the scripts as usage plugins with the values cc-switch
would use (the script's own, else the provider's key and base URL, per app) and its own timeout,
and the built-in queries as stations of the shipped provider plugins, secrets stored sealed and
never printed; the imported stations answer against a local fake."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from support.ccswitch import cc_switch_db as write_db
from support.ccswitch import config_json, dump_sql, usage
from support.servers import run_cli, serve_process

from host import BalancesConfig, PluginSettings

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


# ------------------------------------------------------------------ cc-switch's other files

REPO = Path(__file__).resolve().parent.parent
# The shipped provider plugins ask their providers' public hosts: kept off the network by the sandbox
NO_NETWORK = "[plugins.{pid}.permissions]\nnet = false\n"


def _plan_rows(stdout: str) -> list[str]:
    """The plan's table and notes, without its first line (which names the file and its kind)."""
    return stdout.splitlines()[1:]


def test_the_sql_export_and_the_37_config_json_import_as_the_database_does(plugin_dir, tmp_path, fake_http):
    """cc-switch's "Export" (SQL since 3.8) and the config.json of 3.6-3.7 (config.json.migrated
    since 3.8) give the same plan as its database, and the export's scripts answer."""
    fake_http.json("GET", "/v1/usage", {"left": 12.5})
    fake_http.json("GET", "/api/user/self", {"success": True, "data": {"quota": 5_000_000, "group": "vip"}})
    db = tmp_path / "cc-switch.db"
    cc_switch_db(db, fake_http.url)
    (tmp_path / "cc-switch-export.sql").write_text(dump_sql(db), encoding="utf-8")
    conn = sqlite3.connect(db)
    rows = [(i, a, n, json.loads(s), json.loads(m)) for i, a, n, s, m in
            conn.execute("SELECT id, app_type, name, settings_config, meta FROM providers ORDER BY rowid")]
    conn.close()
    (tmp_path / "config.json.migrated").write_text(config_json(rows), encoding="utf-8")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]

    plans = {}
    for name in ("cc-switch.db", "cc-switch-export.sql", "config.json.migrated"):
        out = run_cli("import-cc-switch", "--db", str(tmp_path / name), "--dry-run", *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        plans[name] = _plan_rows(out.stdout)
    assert plans["cc-switch-export.sql"] == plans["cc-switch.db"] == plans["config.json.migrated"]
    assert "cc-switch SQL export" in run_cli("import-cc-switch", "--db", str(tmp_path / "cc-switch-export.sql"),
                                             "--dry-run", *common, cwd=tmp_path).stdout

    done = run_cli("import-cc-switch", "--db", str(tmp_path / "cc-switch-export.sql"), *common, cwd=tmp_path)
    assert done.returncode == 0 and "imported 2" in done.stdout, done.stdout + done.stderr
    results = _query(plugin_dir, tmp_path / "state", ["my-relay", "newapi-station"])
    assert results["my-relay"].balance == 12.5 and results["newapi-station"].balance == 10.0


def test_a_hostile_export_is_a_typed_error_naming_file_and_line(tmp_path):
    db = tmp_path / "cc-switch.db"
    cc_switch_db(db, "https://relay.example")
    attached = tmp_path / "written-by-the-export.db"
    (tmp_path / "evil.sql").write_text(dump_sql(db).replace(
        "BEGIN TRANSACTION;\n", f"BEGIN TRANSACTION;\nATTACH DATABASE '{attached}' AS x;\n"), encoding="utf-8")
    out = run_cli("import-cc-switch", "--db", str(tmp_path / "evil.sql"), "--dry-run", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"{tmp_path / 'evil.sql'}: line 7: ATTACH" in out.stderr and not attached.exists()


def test_the_plan_shows_names_with_their_control_characters_written_out(tmp_path):
    db = tmp_path / "c.db"
    write_db(db, [("e", "claude", "evil\x1b[2J\u202ename", {"env": {}}, usage(GENERIC)),
                  ("f", "claude", "gone\x1b]0;x\x07", {"env": {}}, usage("", templateType="github_copilot"))])
    out = run_cli("import-cc-switch", "--db", str(db), "--dry-run", "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert out.returncode == 0 and "\x1b" not in out.stdout and "\u202e" not in out.stdout, out.stdout
    assert "evil\\x1b[2J\\u202ename" in out.stdout and "gone\\x1b]0;x\\x07 (claude" in out.stdout


def _query(plugin_dir, state, ids, **host) -> dict:
    """Every station's balance, asked by a host over the imported plugins (each may reach the fake)."""
    import anyio

    from host import HostConfig, PluginHost

    async def query():
        cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state),
                         plugins={i: PluginSettings(allow_private_network=True) for i in ids}, **host)
        async with PluginHost(cfg) as h:
            return {b.provider: b for b in await h.query_balances(refresh=True)}

    return anyio.run(query)


def test_each_app_gives_the_key_and_url_cc_switch_gives_it(plugin_dir, tmp_path, fake_http):
    """Claude Desktop's env map, Codex's ACTIVE model provider and its bearer token, Pi's first
    model's URL and Grok Build's default model section: what the script is sent."""
    for prefix in ("desktop", "new", "bearer", "pi-model", "grok"):
        fake_http.json("GET", f"/{prefix}/v1/usage", {"left": 1.0})
    base = fake_http.url
    db = tmp_path / "apps.db"
    grok = (f'models.default = "relay"\n[model.relay]\nmodel = "grok-4"\nname = "Relay"\nbase_url = "{base}/grok"\n'
            'api_key = "sk-grok"\napi_backend = "openai"\ncontext_window = 256000\n')
    write_db(db, [
        ("d", "claude-desktop", "Desktop", {"env": {"ANTHROPIC_AUTH_TOKEN": "sk-desktop", "ANTHROPIC_BASE_URL": f"{base}/desktop"}},
         usage(GENERIC)),
        ("c1", "codex", "Codex sections", {"auth": {"OPENAI_API_KEY": "sk-codex"}, "config":
            f'model_provider = "new"\n[model_providers.old]\nbase_url = "{base}/old"\n[model_providers.new]\nbase_url = "{base}/new"\n'},
         usage(GENERIC)),
        ("c2", "codex", "Codex bearer", {"auth": {}, "config":
            f'model_provider = "br"\n[model_providers.br]\nbase_url = "{base}/bearer"\nexperimental_bearer_token = "sk-bearer"\n'},
         usage(GENERIC)),
        ("p", "pi", "Pi", {"apiKey": "sk-pi", "models": [{"id": "m", "baseUrl": f"{base}/pi-model"}]}, usage(GENERIC)),
        ("g", "grokbuild", "Grok", {"config": grok}, usage(GENERIC)),
    ])
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    done = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert done.returncode == 0 and "imported 5" in done.stdout, done.stdout + done.stderr
    results = _query(plugin_dir, tmp_path / "state", ["desktop", "codex-sections", "codex-bearer", "pi", "grok"])
    assert {k: (b.status, b.balance) for k, b in results.items()} == {
        k: ("success", 1.0) for k in ("desktop", "codex-sections", "codex-bearer", "pi", "grok")}
    sent = {path: headers["Authorization"] for _, path, headers in fake_http.requests}
    assert sent == {"/desktop/v1/usage": "Bearer sk-desktop", "/new/v1/usage": "Bearer sk-codex",
                    "/bearer/v1/usage": "Bearer sk-bearer", "/pi-model/v1/usage": "Bearer sk-pi",
                    "/grok/v1/usage": "Bearer sk-grok"}


def test_builtin_queries_become_stations_of_the_shipped_plugins(plugin_dir, tmp_path):
    """cc-switch's built-in balance and coding-plan queries (templateType balance / token_plan,
    no code): a station of the shipped plugin cc-switch's choice maps to, with the provider's
    key; what cannot be mapped is listed with the reason, none skipped silently."""
    for pid in ("deepseek", "kimi", "zhipu"):
        shutil.copytree(REPO / "plugins" / pid, plugin_dir.root / pid)
    db = tmp_path / "cc-switch.db"
    claude = lambda url, key: {"env": {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_BASE_URL": url}}  # noqa: E731
    write_db(db, [
        ("ds", "claude", "DeepSeek 官方", claude("https://api.deepseek.com/anthropic", "sk-ds-secret"),
         usage("", templateType="balance", timeout=10)),
        ("km", "claude", "Kimi For Coding", claude("https://api.kimi.com/coding/", "sk-kimi-secret"),
         usage("", templateType="token_plan", codingPlanProvider="kimi")),
        ("zp", "claude", "GLM", claude("https://api.z.ai/api/anthropic", "zp-secret"), usage("", templateType="token_plan")),
        ("mm", "claude", "MiniMax", claude("https://api.minimax.io/anthropic", "mm"), usage("", templateType="token_plan")),
        ("zm", "claude", "ZenMux", claude("https://zenmux.ai/api/anthropic", "zm"),
         usage("", templateType="token_plan", codingPlanProvider="zenmux")),
        ("cp", "claude", "Copilot", claude("", ""), usage("", templateType="github_copilot")),
    ])
    (tmp_path / "host.toml").write_text("".join(NO_NETWORK.format(pid=p) for p in ("deepseek", "kimi", "zhipu")))
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state"), "--config", str(tmp_path / "host.toml")]
    done = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "station of deepseek" in out and "station of kimi" in out and "station of zhipu" in out, out
    assert "not imported (3)" in out and "the minimax plugin is not installed" in out, out
    assert "ZenMux (claude, token_plan): ZenMux's coding plan: no ZenMux plugin here" in out
    assert "Copilot (claude, github_copilot): cc-switch's GitHub Copilot query" in out
    assert "imported 3" in out and "secret" not in out + done.stderr

    listed = run_cli("balances", "stations", "--json", *common, cwd=tmp_path)
    stations = {s["name"]: (s["plugin"], s["title"], s["config"]) for s in json.loads(listed.stdout)}
    assert stations == {
        "deepseek-2": ("deepseek", "DeepSeek 官方", {"apiKey": "********", "baseUrl": "https://api.deepseek.com"}),
        "kimi-for-coding": ("kimi", "Kimi For Coding", {"apiKey": "********", "baseUrl": "https://api.kimi.com/coding"}),
        "glm": ("zhipu", "GLM", {"apiKey": "********", "baseUrl": "https://api.z.ai"}),
    }, listed.stdout + listed.stderr
    assert "sk-ds-secret" not in (tmp_path / "state" / "config.json").read_text()  # sealed

    again = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already imported") == 3, again.stdout
    assert "imported" not in again.stdout.replace("already imported", "").replace("not imported", "")
def test_a_scripts_own_timeout_is_its_call_timeout(plugin_dir, tmp_path, fake_http):
    """cc-switch waits a script's ``timeout`` (clamped to 2-30 s) for its station; here too: kept
    as the plugin's call timeout, which its balance query waits instead of [balances] timeout."""
    async def slow(request):
        await asyncio.sleep(2.5)
        return web.json_response({"left": 3.0})

    fake_http.route("GET", "/slow/v1/usage", slow)
    db = tmp_path / "cc-switch.db"
    env = {"env": {"ANTHROPIC_AUTH_TOKEN": "k", "ANTHROPIC_BASE_URL": f"{fake_http.url}/slow"}}
    write_db(db, [("a", "claude", "Slow", env, usage(GENERIC, timeout=6)),
                  ("b", "claude", "Long", env, usage(GENERIC, timeout=600)),
                  ("c", "claude", "Short", env, usage(GENERIC, timeout=0))])
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    done = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage script, 6 s" in done.stdout and "usage script, 30 s" in done.stdout and \
        "usage script, 2 s" in done.stdout, done.stdout
    results = _query(plugin_dir, tmp_path / "state", ["slow", "long", "short"], balances=BalancesConfig(timeout=1.5))
    assert (results["slow"].status, results["slow"].balance) == ("success", 3.0), results["slow"]
    assert results["short"].status == "timeout"  # 2 s: cc-switch's floor, shorter than the answer


def test_cc_switchs_automatic_query_interval_is_said_not_carried_over(plugin_dir, tmp_path):
    """cc-switch asks a provider by itself every ``autoQueryInterval`` minutes; this host asks a
    station when asked, with no timer per station. The import ignored it silently: the user
    lost the refresh they had set without knowing. The plan says so, for a script, a built-in
    query and a deep link (``usageAutoInterval``) alike, and how to keep them fresh instead."""
    import base64
    from urllib.parse import urlencode

    env = {"env": {"ANTHROPIC_AUTH_TOKEN": "k", "ANTHROPIC_BASE_URL": "https://relay.example"}}
    db = tmp_path / "cc-switch.db"
    write_db(db, [("a", "claude", "Every Ten", env, usage(GENERIC, autoQueryInterval=10)),
                  ("b", "claude", "Off", env, usage(GENERIC, autoQueryInterval=0)),
                  ("c", "claude", "Older", env, usage(GENERIC, autoIntervalMinutes=15))])
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state"), "--dry-run"]
    plan = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    notes = [line for line in plan.stdout.splitlines() if "autoQueryInterval" in line]
    assert [n.split("; ")[0] for n in notes] == [
        "note: every-ten: cc-switch queried it by itself every 10 min (autoQueryInterval)",
        "note: older: cc-switch queried it by itself every 15 min (autoQueryInterval)"], plan.stdout
    assert all("not carried over" in n and "balances --refresh" in n for n in notes), notes

    link = "ccswitch://v1/import?" + urlencode({
        "resource": "provider", "app": "claude", "name": "Linked", "endpoint": "https://relay.example",
        "apiKey": "k", "usageEnabled": "true", "usageAutoInterval": "30",
        "usageScript": base64.b64encode(GENERIC.encode()).decode()})
    linked = run_cli("import-cc-switch", "--db", link, *common, cwd=tmp_path)
    assert linked.returncode == 0, linked.stderr
    assert "every 30 min (autoQueryInterval); not carried over" in linked.stdout, linked.stdout


def test_with_a_server_running_the_import_goes_through_it(plugin_dir, tmp_path, fake_http):
    """A server on the state directory loads the new script with its kept timeout, stores its
    values and adds the built-in query's station, at once."""
    async def slow(request):
        await asyncio.sleep(2.0)
        return web.json_response({"left": 4.0})

    fake_http.route("GET", "/slow/v1/usage", slow)
    shutil.copytree(REPO / "plugins" / "deepseek", plugin_dir.root / "deepseek")
    db = tmp_path / "cc-switch.db"
    write_db(db, [
        ("s", "claude", "Patient", {"env": {"ANTHROPIC_AUTH_TOKEN": "sk-p", "ANTHROPIC_BASE_URL": f"{fake_http.url}/slow"}},
         usage(GENERIC, timeout=8)),
        ("d", "claude", "DS", {"env": {"ANTHROPIC_AUTH_TOKEN": "sk-ds", "ANTHROPIC_BASE_URL": "https://api.deepseek.com"}},
         usage("", templateType="balance")),
    ])
    (tmp_path / "host.toml").write_text('[balances]\ntimeout = 1\n[plugins.patient]\nallow_private_network = true\n'
                                        + NO_NETWORK.format(pid="deepseek"))
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    with serve_process(tmp_path, *common, "--config", str(tmp_path / "host.toml"), "--insecure-no-token") as srv:
        srv.wait_running("deepseek")
        done = run_cli("import-cc-switch", "--db", str(db), *common, "--config", str(tmp_path / "host.toml"), cwd=tmp_path)
        assert done.returncode == 0 and "imported 2: patient, ds" in done.stdout, done.stdout + done.stderr
        _, stations = srv.request("GET", "/api/stations")
        assert [(s["name"], s["plugin"], s["config"]) for s in stations] == [
            ("ds", "deepseek", {"apiKey": "********", "baseUrl": "https://api.deepseek.com"})]
        _, config = srv.request("GET", "/api/plugins/patient/config")
        assert config == {"apiKey": "********", "baseUrl": f"{fake_http.url}/slow"}
        _, balances = srv.request("GET", "/api/balances?refresh=1")
    by = {b["provider"]: b for b in balances}
    assert (by["patient"]["status"], by["patient"]["balance"]) == ("success", 4.0), by  # waited its 8 s, not 1 s
    assert by["ds"]["errorType"] == "PermissionDenied"  # asked, but kept off the network by host.toml


def test_a_deep_link_imports_its_usage_script_as_cc_switch_would(plugin_dir, tmp_path, fake_http):
    """A provider's ``ccswitch://v1/import`` link (cc-switch docs/user-manual 5.3-deeplink.md: the
    script base64 in ``usageScript``, on only with ``usageEnabled=true``; what relays hand out, e.g.
    an OrangeAPI link) was "no cc-switch database there", and that error repeated the link's apiKey.
    It is read as cc-switch reads it (deeplink/parser.rs, provider.rs): the script with the link's
    usage key and base URL, else its apiKey and first endpoint; the key is never printed."""
    import base64
    from urllib.parse import urlencode

    fake_http.json("GET", "/v1/usage", {"left": 12.5})
    params = {"resource": "provider", "app": "claude", "name": "OrangeAPI 酸橘子",
              "endpoint": f"{fake_http.url}/, https://backup.example", "apiKey": SECRET,
              "usageEnabled": "true", "usageAutoInterval": "30",
              "usageScript": base64.b64encode(GENERIC.encode()).decode().rstrip("=")}  # padding left off
    link = "ccswitch://v1/import?" + urlencode(params)
    state = tmp_path / "state"
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]

    dry = run_cli("import-cc-switch", "--db", link, "--dry-run", *common, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "orangeapi" in dry.stdout and "apiKey, baseUrl" in dry.stdout, dry.stdout
    assert SECRET not in dry.stdout + dry.stderr

    done = run_cli("import-cc-switch", "--db", link, *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (plugin_dir.root / "orangeapi.usage.js").read_text() == GENERIC
    assert SECRET not in done.stdout + done.stderr

    import anyio

    from host import HostConfig, PluginHost

    async def query():
        cfg = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state),
                         plugins={"orangeapi": PluginSettings(allow_private_network=True)})
        async with PluginHost(cfg) as h:
            return (await h.query_balances(refresh=True))[0]

    b = anyio.run(query)
    assert (b.provider, b.status, b.balance) == ("orangeapi", "success", 12.5), b.error_message
    assert [h["Authorization"] for _, p, h in fake_http.requests if p == "/v1/usage"] == [f"Bearer {SECRET}"]

    off = "ccswitch://v1/import?" + urlencode({**params, "name": "off", "usageEnabled": "1"})
    out = run_cli("import-cc-switch", "--db", off, "--dry-run", *common, cwd=tmp_path)
    assert out.returncode == 0 and "usageEnabled=true" in out.stdout, out.stdout + out.stderr
    for bad, said in (({"resource": "mcp"}, "resource=provider"), ({"usageScript": "%%%"}, "usageScript"),
                      ({"app": None}, "app")):
        query = {k: v for k, v in {**params, **bad}.items() if v is not None}
        out = run_cli("import-cc-switch", "--db", "ccswitch://v1/import?" + urlencode(query), "--dry-run", *common,
                      cwd=tmp_path)
        assert out.returncode == 1 and said in out.stderr, (bad, out.stdout + out.stderr)
        assert SECRET not in out.stdout + out.stderr
    # one no URL parser reads (an unclosed IPv6 bracket): urlsplit's ValueError was a traceback
    out = run_cli("import-cc-switch", "--db", "ccswitch://[v1/import?apiKey=" + SECRET, "--dry-run", *common,
                  cwd=tmp_path)
    assert out.returncode == 1 and "copy the whole link again" in out.stderr, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and SECRET not in out.stdout + out.stderr


def test_a_station_on_a_loopback_or_private_address_is_said_in_the_plan(plugin_dir, tmp_path):
    """cc-switch reaches a local proxy (`http://127.0.0.1:8095`, as lingma-proxy's script tells
    its users); this host refuses loopback and private addresses until the operator allows them,
    so the first `balances` after the import failed with nothing in the plan saying why. The
    plan names the station, the address and the setting; a public one, or one already allowed,
    gets no note."""
    def env(url: str) -> dict:
        return {"env": {"ANTHROPIC_AUTH_TOKEN": "k", "ANTHROPIC_BASE_URL": url}}

    literal = GENERIC.replace("{{baseUrl}}", "http://10.1.2.3:3000")
    db = tmp_path / "cc-switch.db"
    write_db(db, [("a", "claude", "Local Proxy", env("http://127.0.0.1:8095"), usage(GENERIC)),
                  ("b", "claude", "Public", env("https://relay.example"), usage(GENERIC)),
                  ("c", "claude", "Lan", env("https://relay.example"), usage(literal)),
                  ("d", "claude", "Allowed", env("http://localhost:9000"), usage(GENERIC)),
                  ("e", "claude", "Short", env("http://127.1:8096"), usage(GENERIC))])  # 127.0.0.1 to a resolver
    (tmp_path / "host.toml").write_text("[plugins.allowed]\nallow_private_network = true\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state"), "--dry-run",
              "--config", "host.toml"]
    plan = run_cli("import-cc-switch", "--db", str(db), *common, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    notes = [line for line in plan.stdout.splitlines() if "private address" in line]
    assert [n.split(", a loopback")[0] for n in notes] == [
        "note: local-proxy: its station is at 127.0.0.1:8095", "note: lan: its station is at 10.1.2.3:3000",
        "note: short: its station is at 127.1:8096"], plan.stdout
    assert "[plugins.local-proxy] allow_private_network = true" in notes[0], notes


def test_a_table_with_wide_characters_stays_aligned():
    """helper-90: the balances table and the import plan misaligned their columns when a cell held
    CJK text ("积分", "S2A 中转"): widths were counted in characters, a wide one takes two columns."""
    from host.cli_output import columns, table

    out = table([["NAME", "UNIT", "BALANCE"], ["s2a", "积分", "12"], ["S2A 中转", "USD", "3"], ["é", "x", "100"]],
                right=[2])
    lines = out.splitlines()
    starts = [columns(line[:line.index(cell)]) for line, cell in zip(lines, ["UNIT", "积分", "USD", "x"], strict=True)]
    assert len(set(starts)) == 1, out  # the second column starts at one place on every line
    assert len({columns(line) for line in lines}) == 1, out  # and the right-aligned last one ends at one
    assert columns("S2A 中转") == 8 and columns("é") == 1
