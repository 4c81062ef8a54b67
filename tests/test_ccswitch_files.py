"""Reading cc-switch's files for ``import-cc-switch``: its database, its SQL export (read without
running any of it: a hostile export is refused naming the file and line) and the v3.6-3.7
config.json, told apart by content; each provider's key and base URL as cc-switch reads them per
app; and which shipped plugin cc-switch's built-in balance and coding-plan queries map to."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ccswitch import cc_switch_db, config_json, dump_sql, usage

from host.balances import ccswitch_sql
from host.balances.ccswitch import clamped_timeout, read
from host.balances.ccswitch_apps import provider_credentials
from host.balances.ccswitch_sources import CcSwitchUnreadable, read_rows

GENERAL = '({ request: { url: "{{baseUrl}}/user/balance", method: "GET" }, extractor: function (r) { return { remaining: r.balance }; } })'


def providers(base: str = "https://relay.example") -> list:
    return [
        ("p1", "claude", "Relay 'quoted'; -- not a comment", {"env": {"ANTHROPIC_AUTH_TOKEN": "k1", "ANTHROPIC_BASE_URL": base}},
         usage(GENERAL + "\n/* ; */ // END;\n", timeout=25)),
        ("p2", "codex", "Codex", {"auth": {"OPENAI_API_KEY": "k2"},
                                  "config": f'model_provider = "x"\n[model_providers.x]\nbase_url = "{base}/v1"\n'},
         usage(GENERAL)),
        ("p3", "gemini", "Off", {"env": {}}, {"usage_script": {"enabled": False, "code": GENERAL}}),
    ]


def test_the_three_file_kinds_hold_the_same_providers(tmp_path):
    db = cc_switch_db(tmp_path / "cc-switch.db", providers())
    (tmp_path / "export.sql").write_text(dump_sql(db), encoding="utf-8")
    (tmp_path / "config.json.migrated").write_text(config_json(providers()), encoding="utf-8")
    (tmp_path / "named.db").write_text(dump_sql(db), encoding="utf-8")  # told apart by content, not by name
    kinds = {}
    for name in ("cc-switch.db", "export.sql", "config.json.migrated", "named.db"):
        kind, rows = read_rows(tmp_path / name)
        kinds[name] = kind
        assert [(r.provider_id, r.app, r.name, r.settings, r.meta) for r in rows] == [
            (p, a, n, s, m) for p, a, n, s, m in providers()], name
    assert kinds == {"cc-switch.db": "cc-switch database", "export.sql": "cc-switch SQL export",
                     "config.json.migrated": "cc-switch 3.6-3.7 config.json", "named.db": "cc-switch SQL export"}
    scan = read(tmp_path / "export.sql")
    assert [(f.name, f.values, f.timeout) for f in scan.found] == [
        ("Relay 'quoted'; -- not a comment", {"apiKey": "k1", "baseUrl": "https://relay.example"}, 25.0),
        ("Codex", {"apiKey": "k2", "baseUrl": "https://relay.example/v1"}, None)]


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["'", "''", ";", "END;", "--", "/*", "*/", "\n", "\0", "X'00'", "CAST(", "ATTACH", '"', "`", "[", "]"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_TEXT, min_size=1, max_size=5), code=_TEXT, numbers=st.lists(
    st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False), min_size=1, max_size=3))
def test_any_export_reads_back_as_its_database(tmp_path_factory, names, code, numbers):
    """Whatever text the rows hold, the export parsed as literals gives the rows the database holds."""
    tmp = tmp_path_factory.mktemp("dump")
    rows = [(f"id{i}{name}", "claude", name, {"env": {"ANTHROPIC_AUTH_TOKEN": name}, "n": numbers},
             usage(code + name, timeout=numbers[0])) for i, name in enumerate(names)]
    db = cc_switch_db(tmp / "c.db", rows)
    (tmp / "c.sql").write_text(dump_sql(db), encoding="utf-8")
    assert read_rows(tmp / "c.sql")[1] == read_rows(db)[1]


def test_an_export_of_many_rows_is_read_in_batches(tmp_path):
    rows = [(f"id{i}", "claude", f"n{i:04d}", {"env": {}}, usage(GENERAL)) for i in range(450)]
    db = cc_switch_db(tmp_path / "c.db", rows)
    text = dump_sql(db)
    assert text.count('INSERT INTO "providers"') == 3  # 200 + 200 + 50, as backup.rs batches them
    (tmp_path / "c.sql").write_text(text, encoding="utf-8")
    assert len(read_rows(tmp_path / "c.sql")[1]) == 450


HOSTILE = {
    "attach": ("ATTACH DATABASE '{out}' AS x;", "line 5: ATTACH"),
    "pragma": ("PRAGMA writable_schema=ON;", "line 5: PRAGMA writable_schema"),
    "load_extension": ("""INSERT INTO "providers" ("id", "app_type", "name", "settings_config", "meta") VALUES """
                       "('a', 'claude', load_extension('/tmp/x.so'), '{}', '{}');", "line 5: a providers row holds"),
    "randomblob": ("""INSERT INTO providers (id, app_type, name, settings_config, meta) VALUES """
                   "('a', 'claude', 'n', hex(randomblob(1000000000)), '{}');", "line 5: a providers row holds"),
    "subquery": ("INSERT INTO providers (id, app_type, name, settings_config, meta) SELECT * FROM x;",
                 "line 5: an INSERT INTO providers that is not VALUES"),
    "update": ("UPDATE providers SET meta = '{}';", "line 5: UPDATE"),
    "recursive": ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;",
                  "line 5: WITH"),
    "vtable": ("CREATE VIRTUAL TABLE v USING fts5(x);", "line 5: CREATE VIRTUAL"),
    "delete": ("DELETE FROM providers;", "line 5: DELETE"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_export_is_refused_naming_file_and_line_and_runs_nothing(tmp_path, case):
    db = cc_switch_db(tmp_path / "c.db", providers())
    statement, said = HOSTILE[case]
    out = tmp_path / "attached.db"
    lines = dump_sql(db).split("\n")
    lines.insert(4, statement.replace("{out}", str(out)))  # after the header and the two pragmas
    dump = tmp_path / "hostile.sql"
    dump.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(CcSwitchUnreadable) as err:
        read(dump)
    assert str(dump) in err.value.message and said in err.value.message, err.value.message
    assert not out.exists()


def test_an_export_cut_short_is_refused_naming_the_line(tmp_path):
    db = cc_switch_db(tmp_path / "c.db", providers())
    text = dump_sql(db)
    cut = text[:text.index("Relay ") + 5]  # inside the first provider's name
    (tmp_path / "cut.sql").write_text(cut, encoding="utf-8")
    line = cut.count("\n", 0, cut.rindex("'Relay")) + 1  # where the text that never ends starts
    with pytest.raises(CcSwitchUnreadable, match=rf"cut.sql: line {line}: a quoted text or name that never ends"):
        read(tmp_path / "cut.sql")


def test_an_export_too_big_or_not_text_is_refused(tmp_path, monkeypatch):
    db = cc_switch_db(tmp_path / "c.db", providers())
    dump = tmp_path / "c.sql"
    dump.write_text(dump_sql(db), encoding="utf-8")
    monkeypatch.setattr(ccswitch_sql, "MAX_DUMP_BYTES", 1000)
    with pytest.raises(CcSwitchUnreadable, match="over the 0 MiB this host reads"):
        read(dump)
    monkeypatch.undo()
    dump.write_bytes(b"-- CC Switch\nPRAGMA user_version=1;\n\xff\xfe")
    with pytest.raises(CcSwitchUnreadable, match="not UTF-8"):
        read(dump)


def test_an_export_saved_as_utf16_or_with_a_bom_reads_as_the_utf8_one(tmp_path):
    """An export or config.json saved again by a Windows editor ("Unicode": UTF-16 with its BOM, or
    UTF-8 with one) was "not a cc-switch database this host can read (neither SQLite, ...)": it is
    read as a usage script's file is; UTF-16 with no BOM is named, not called foreign."""
    db = cc_switch_db(tmp_path / "c.db", providers())
    want = read_rows(db)[1]
    for text, kind in ((dump_sql(db), "cc-switch SQL export"), (config_json(providers()), "cc-switch 3.6-3.7 config.json")):
        for encoding in ("utf-16", "utf-16-be", "utf-8-sig"):
            saved = tmp_path / f"saved-{encoding}.txt"
            bom = b"\xfe\xff" if encoding == "utf-16-be" else b""
            saved.write_bytes(bom + text.encode(encoding))
            got_kind, rows = read_rows(saved)
            assert (got_kind, [(r.provider_id, r.settings, r.meta) for r in rows]) == (
                kind, [(r.provider_id, r.settings, r.meta) for r in want]), encoding
    bare = tmp_path / "no-bom.sql"
    bare.write_bytes(dump_sql(db).encode("utf-16-le"))
    with pytest.raises(CcSwitchUnreadable, match="UTF-16 text without a byte-order mark: save it as UTF-8"):
        read(bare)
    odd = tmp_path / "broken-utf16.sql"
    odd.write_bytes(b"\xff\xfe" + "-- x\n".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(CcSwitchUnreadable, match="is not UTF-16 text") as err:
        read(odd)
    assert err.value.message.count(str(odd)) == 1, err.value.message


def test_a_crafted_database_runs_none_of_its_code(tmp_path):
    """A database whose providers is a view calling a function, or a table with a damaged row:
    a typed error (the view) or that provider listed as not imported (the row)."""
    conn = sqlite3.connect(tmp_path / "view.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("CREATE VIEW providers AS SELECT 'a' AS id, 'claude' AS app_type, hex(randomblob(100000000)) AS name, "
                 "'{}' AS settings_config, '{}' AS meta")
    conn.commit()
    conn.close()
    with pytest.raises(CcSwitchUnreadable, match="without a providers table"):
        read(tmp_path / "view.db")
    db = cc_switch_db(tmp_path / "c.db", providers())
    conn = sqlite3.connect(db)
    conn.execute("UPDATE providers SET meta = '{\"usage_script\": ' WHERE id = 'p2'")
    conn.commit()
    conn.close()
    scan = read(db)
    assert [f.name for f in scan.found] == ["Relay 'quoted'; -- not a comment"]
    assert [(s.name, s.reason) for s in scan.skipped] == [("Codex", "its meta is not valid JSON")]


def test_a_foreign_json_or_v1_config_is_refused(tmp_path):
    (tmp_path / "a.json").write_text('{"hello": 1}')
    with pytest.raises(CcSwitchUnreadable, match="without any app's providers"):
        read(tmp_path / "a.json")
    (tmp_path / "v1.json").write_text(json.dumps({"providers": {}, "current": ""}))
    with pytest.raises(CcSwitchUnreadable, match=r"v1 cc-switch config\.json"):
        read(tmp_path / "v1.json")
    (tmp_path / "deep.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(CcSwitchUnreadable, match="not valid JSON"):
        read(tmp_path / "deep.json")


# ------------------------------------------------------------------ credentials per app

def test_claude_desktop_reads_the_env_map_as_claude():
    env = {"env": {"ANTHROPIC_AUTH_TOKEN": "", "ANTHROPIC_API_KEY": "sk-d", "ANTHROPIC_BASE_URL": "https://d.example/"}}
    for spelling in ("claude-desktop", "claude_desktop", "Claude-Desktop"):
        c = provider_credentials(spelling, env)
        assert (c.base_url, c.api_key) == ("https://d.example", "sk-d"), spelling


def test_codex_takes_the_active_provider_and_falls_back_to_its_bearer_token():
    toml = ('model_provider = "new"\nexperimental_bearer_token = "top"\n'
            '[model_providers.old]\nbase_url = "https://old.example/v1"\nexperimental_bearer_token = "old-token"\n'
            '[model_providers.new]\nbase_url = "https://new.example/v1/"\nexperimental_bearer_token = " new-token "\n')
    c = provider_credentials("codex", {"auth": {}, "config": toml})
    assert (c.base_url, c.api_key) == ("https://new.example/v1", "new-token")
    c = provider_credentials("codex", {"auth": {"OPENAI_API_KEY": " sk-auth "}, "config": toml})
    assert c.api_key == "sk-auth"  # auth.json's key first, trimmed
    # a reserved provider (openai) never reads its section's token: the top-level one
    reserved = toml.replace('model_provider = "new"', 'model_provider = "openai"') + \
        '[model_providers.openai]\nexperimental_bearer_token = "section"\n'
    c = provider_credentials("codex", {"config": reserved})
    assert (c.base_url, c.api_key) == ("", "top")
    c = provider_credentials("codex", {"config": 'base_url = "https://top.example"\nmodel_provider = "none"\n'})
    assert c.base_url == "https://top.example"
    assert provider_credentials("codex", {"config": 'base_url = "https://x" [broken'}).base_url == ""


def test_pi_falls_back_to_the_first_models_base_url():
    c = provider_credentials("pi", {"apiKey": "sk-pi", "models": [{"id": "a"}, {"id": "b", "baseUrl": "https://m.example/"}]})
    assert (c.base_url, c.api_key) == ("https://m.example", "sk-pi")
    c = provider_credentials("pi", {"apiKey": "k", "baseUrl": "https://p.example", "models": [{"baseUrl": "https://m"}]})
    assert c.base_url == "https://p.example"


def test_grok_build_reads_the_default_models_section(monkeypatch):
    whole = ('models.default = "relay"\n[model.other]\nbase_url = "https://other"\n'
             '[model.relay]\nmodel = "grok-4"\nname = "Relay"\nbase_url = "https://g.example/v1/"\n'
             'api_key = "sk-grok"\napi_backend = "openai"\ncontext_window = 256000\n')
    c = provider_credentials("grokbuild", {"config": whole})
    assert (c.base_url, c.api_key, c.env_key) == ("https://g.example/v1", "sk-grok", "")
    assert provider_credentials("grok-build", {"config": whole}).api_key == "sk-grok"
    # cc-switch finds nothing in a section without context_window
    assert provider_credentials("grokbuild", {"config": whole.replace("context_window = 256000\n", "")}).base_url == ""
    # a key named by env_key is named, never read from this process's environment
    monkeypatch.setenv("SOME_SECRET", "must-not-be-read")
    c = provider_credentials("grokbuild", {"config": whole.replace('api_key = "sk-grok"', 'env_key = "SOME_SECRET"')})
    assert (c.api_key, c.env_key) == ("", "SOME_SECRET")


def test_the_flat_apps_read_their_own_field_names():
    assert provider_credentials("hermes", {"base_url": "https://h/", "api_key": "kh", "apiKey": "no"}).api_key == "kh"
    assert provider_credentials("openclaw", {"baseUrl": "https://o", "apiKey": "ko", "api_key": "no"}).api_key == "ko"
    c = provider_credentials("opencode", {"options": {"baseURL": "https://c/", "apiKey": "kc"}})
    assert (c.base_url, c.api_key) == ("https://c", "kc")


def test_a_scripts_timeout_is_clamped_as_cc_switch_clamps_it():
    assert [clamped_timeout(v) for v in (0, 1, 2, 25, 30, 60, None, "10", True)] == [
        2.0, 2.0, 2.0, 25.0, 30.0, 30.0, None, None, None]


# ------------------------------------------------------------------ built-in queries

BUILTIN_ROWS = [
    # (base URL of the provider, template, usage fields) -> plugin and its baseUrl, or the reason
    ("https://api.deepseek.com/anthropic", "balance", {}, ("deepseek", "https://api.deepseek.com")),
    ("https://api.stepfun.ai/v1", "balance", {}, ("stepfun", "https://api.stepfun.com")),
    ("https://api.siliconflow.cn/v1", "balance", {}, ("siliconflow", "https://api.siliconflow.cn")),
    ("https://api.siliconflow.com/v1", "balance", {}, ("siliconflow", "https://api.siliconflow.com")),
    ("https://openrouter.ai/api", "balance", {}, ("openrouter", "https://openrouter.ai")),
    ("https://api.novita.ai/openai", "balance", {}, ("novita", "https://api.novita.ai")),
    ("https://relay.example", "balance", {}, "knows no provider at this base URL"),
    ("https://api.kimi.com/coding/", "token_plan", {"codingPlanProvider": "kimi"}, ("kimi", "https://api.kimi.com/coding")),
    ("https://open.bigmodel.cn/api/anthropic", "token_plan", {}, ("zhipu", "https://open.bigmodel.cn")),
    ("https://api.z.ai/api/anthropic", "token_plan", {}, ("zhipu", "https://api.z.ai")),
    ("https://api.minimaxi.com/anthropic", "token_plan", {}, ("minimax", "https://api.minimaxi.com")),
    ("https://api.minimax.io/anthropic", "token_plan", {}, ("minimax", "https://api.minimax.io")),
    ("https://open.bigmodel.cn/api/anthropic", "token_plan", {"codingPlanProvider": "zhipu_team"}, "team plan"),
    ("https://zenmux.ai/api/anthropic", "token_plan", {"codingPlanProvider": "zenmux"}, "no ZenMux plugin"),
    ("https://ark.cn-beijing.volces.com/api/coding", "token_plan", {}, "no Volcengine plugin"),
    ("https://relay.example", "github_copilot", {}, "GitHub Copilot"),
    ("https://relay.example", "official_subscription", {}, "official subscription"),
    ("https://relay.example", "general", {}, "its usage script is empty"),
    # the template decides, as in cc-switch: a built-in query with code left beside it
    ("https://api.deepseek.com", "balance", {"code": GENERAL}, ("deepseek", "https://api.deepseek.com")),
    ("", "balance", {}, "no base URL"),
]


def test_builtin_queries_map_to_the_shipped_plugins_as_cc_switch_picks_them(tmp_path):
    rows = [(f"b{i}", "claude", f"P{i}", {"env": {"ANTHROPIC_AUTH_TOKEN": f"sk-{i}", "ANTHROPIC_BASE_URL": base}},
             usage(fields.get("code", ""), templateType=template, timeout=10,
                   **{k: v for k, v in fields.items() if k != "code"}))
            for i, (base, template, fields, _) in enumerate(BUILTIN_ROWS)]
    scan = read(cc_switch_db(tmp_path / "c.db", rows))
    found = {f.name: (f.plugin, f.values.get("baseUrl"), f.values.get("apiKey"), f.script) for f in scan.found}
    skipped = {s.name: s.reason for s in scan.skipped}
    assert len(found) + len(skipped) == len(BUILTIN_ROWS)  # nothing left out silently
    for i, (_, _, _, want) in enumerate(BUILTIN_ROWS):
        if isinstance(want, tuple):
            assert found[f"P{i}"] == (*want, f"sk-{i}", None), i
        else:
            assert want in skipped[f"P{i}"], (i, skipped.get(f"P{i}"))
    assert found["P3"] and scan.found[3].values["currency"] == "USD"  # api.siliconflow.com: international


def test_zenmux_takes_the_scripts_own_key_and_url(tmp_path):
    rows = [("z", "claude", "Z", {"env": {"ANTHROPIC_AUTH_TOKEN": "native", "ANTHROPIC_BASE_URL": "https://api.kimi.com/coding"}},
             usage("", templateType="token_plan", codingPlanProvider="zenmux", apiKey="zk", baseUrl="https://zenmux.ai/api/")),
            ("k", "claude", "K", {"env": {"ANTHROPIC_AUTH_TOKEN": "native", "ANTHROPIC_BASE_URL": "https://api.kimi.com/coding"}},
             usage("", templateType="token_plan", codingPlanProvider="zenmux"))]
    scan = read(cc_switch_db(tmp_path / "c.db", rows))
    assert [s.name for s in scan.skipped] == ["Z"]  # the script's zenmux URL: no plugin
    assert [(f.name, f.plugin, f.values["apiKey"]) for f in scan.found] == [("K", "kimi", "native")]  # falls back


@pytest.mark.parametrize(("value", "what"), [("X'abc'", "odd hex"), ("CAST(X'abc' AS TEXT)", "odd hex as text"),
                                             ("1" * 5000, "5,000 digits")])
def test_a_literal_python_cannot_hold_is_refused_naming_the_file(tmp_path, value, what):
    """Before: a plain ValueError (``bytes.fromhex``, ``int``'s digit limit) out of the reader."""
    db = cc_switch_db(tmp_path / "c.db", providers())
    dump = tmp_path / "odd.sql"
    dump.write_text(dump_sql(db).replace("VALUES ('p1'", f"VALUES ({value}", 1), encoding="utf-8")
    with pytest.raises(CcSwitchUnreadable) as err:
        read(dump)
    assert str(dump) in err.value.message, (what, err.value.message)


def test_a_trigger_with_a_nul_or_many_semicolons_is_read_past(tmp_path):
    """A trigger is schema, left aside: one holding a NUL made ``sqlite3.complete_statement``
    raise a plain ValueError, and every ";" inside one re-read the statement so far (40,000 of
    them: 8.8 s; now it is asked only at an ``END``)."""
    db = cc_switch_db(tmp_path / "c.db", providers())
    head, sep, rest = dump_sql(db).partition("INSERT INTO")
    for body in ("SELECT 1;\0 END;\n", "SELECT 1; " * 40_000 + "END;\n"):
        (tmp_path / "t.sql").write_text(head + "CREATE TRIGGER t AFTER INSERT ON providers BEGIN " + body + sep + rest,
                                        encoding="utf-8")
        assert [f.name for f in read(tmp_path / "t.sql").found] == [providers()[0][2], "Codex"]


def test_a_comment_before_a_trigger_is_read_once(tmp_path):
    """Where a statement starts (past the comments before it) was found again at every ";" inside
    a trigger: a 20 KB comment before a trigger of 20,000 ";" took 7.5 s to read (import-cc-switch
    of a dump from anyone)."""
    db = cc_switch_db(tmp_path / "c.db", providers())
    head, sep, rest = dump_sql(db).partition("INSERT INTO")
    (tmp_path / "t.sql").write_text(head + "/*" + "x" * 20_000 + "*/CREATE TRIGGER t AFTER INSERT ON providers BEGIN "
                                    + "x;" * 20_000 + " END;\n" + sep + rest, encoding="utf-8")
    t0 = time.process_time()
    assert [f.name for f in read(tmp_path / "t.sql").found] == [providers()[0][2], "Codex"]
    assert time.process_time() - t0 < 2  # seconds of CPU: before, 7.5


def test_a_lone_surrogate_in_a_config_json_is_refused_naming_the_file(tmp_path):
    """``"\\udc00"`` in a config.json: json.loads took it, and writing the script or printing the
    plan failed with UnicodeEncodeError."""
    text = config_json(providers()).replace('"OPENAI_API_KEY": "k2"', '"OPENAI_API_KEY": "\\udc00"', 1)
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(CcSwitchUnreadable, match=r"config.json: not valid JSON.*surrogate"):
        read(tmp_path / "config.json")


def test_a_toml_number_python_cannot_hold_gives_no_credentials_not_a_crash():
    """tomllib raises a plain ValueError past 4,300 digits (not TOMLDecodeError): cc-switch reads
    no value from a TOML it cannot parse, and neither does this host."""
    c = provider_credentials("codex", {"auth": {}, "config": "n = " + "1" * 5000 + '\nbase_url = "https://x"\n'})
    assert (c.base_url, c.api_key) == ("", "")


def test_a_trigger_of_many_ends_is_refused_at_once(tmp_path):
    """Each "END;" inside a trigger asked sqlite whether the statement so far was complete, over
    all of it: "x END;" 20,000 times took 4.3 s, growing with the square up to the 256 MiB cap
    (helper-93). At most MAX_END_ASKS are asked; past them the dump is refused naming the line,
    and a trigger of a few CASE ... END is read as before."""
    from host.balances.ccswitch import CcSwitchUnreadable
    from host.balances.ccswitch_sql import MAX_END_ASKS

    db = cc_switch_db(tmp_path / "c.db", providers())
    head, sep, rest = dump_sql(db).partition("INSERT INTO")
    few = "CREATE TRIGGER t AFTER INSERT ON providers BEGIN " + "SELECT CASE WHEN 1 THEN 2 END;" * 3 + " END;\n"
    (tmp_path / "few.sql").write_text(head + few + sep + rest, encoding="utf-8")
    assert [f.name for f in read(tmp_path / "few.sql").found] == [providers()[0][2], "Codex"]
    (tmp_path / "t.sql").write_text(head + "CREATE TRIGGER t AFTER INSERT ON providers BEGIN " + "x END;" * 20_000
                                    + "\n" + sep + rest, encoding="utf-8")
    t0 = time.process_time()
    with pytest.raises(CcSwitchUnreadable) as exc:
        read(tmp_path / "t.sql")
    assert time.process_time() - t0 < 1  # seconds of CPU: before, 4.3
    assert f"a trigger with more than {MAX_END_ASKS} 'END;' in it" in exc.value.message
