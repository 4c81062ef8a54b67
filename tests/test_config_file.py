"""host.toml: every section parsed into HostConfig, paths relative to the file, precedence of
flags over environment over file over defaults, errors that name the file and the field and
never a secret, and the CLI reading it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support.servers import run_cli

from host import HostConfig, InvalidConfig
from host.config import PoolConfig, RateLimitConfig
from host.config_file import load_config

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str, **kw) -> str:
    path = write(tmp_path / "host.toml", text)
    with pytest.raises(InvalidConfig) as exc:
        load_config(path, env={}, **kw)
    return str(exc.value)


def test_no_file_gives_the_defaults():
    assert load_config(env={}) == HostConfig()
    assert load_config(None, env={"PLUGIN_HOST_CONFIG": ""}) == HostConfig()


def test_config_variable_names_the_file_when_no_path_is_given(tmp_path):
    path = write(tmp_path / "conf" / "host.toml", "[pool]\nmax_workers = 7\n")
    assert load_config(env={"PLUGIN_HOST_CONFIG": str(path)}).pool.max_workers == 7
    other = write(tmp_path / "other.toml", "[pool]\nmax_workers = 3\n")
    assert load_config(other, env={"PLUGIN_HOST_CONFIG": str(path)}).pool.max_workers == 3


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    # before: "line 1, column 1: invalid TOML: Invalid statement", at a mark no editor shows
    path = tmp_path / "host.toml"
    path.write_bytes(b"\xef\xbb\xbf[pool]\r\nmax_workers = 7\r\n")
    assert load_config(path, env={}).pool.max_workers == 7


def test_every_section_is_parsed(tmp_path):
    path = write(tmp_path / "host.toml", """
        deno_path = "/opt/deno/bin/deno"
        [pool]
        min_workers = 2
        max_workers = 6
        [limits]
        call_timeout = 12.5
        heap_mb = 256
        cpu_seconds = 30
        [execute]
        pooled = false
        timeout = 2
        [health]
        interval = 0
        [reload]
        enabled = false
        [events]
        timeout = 1.5
        [balances]
        timeout = 4
        [server]
        host = "0.0.0.0"
        port = 9000
        enable_execute = true
        max_body_bytes = 1024
        shutdown_grace = 3
        [policy]
        storage = "redis://127.0.0.1:6379/0"
        cache_storage = "redis://127.0.0.1:6379/1"
        global_limit = "1000/minute"
        max_concurrent_calls = 32
        max_concurrent = 4
        [policy.rate_limit]
        limit = "5/second"
        [policy.retry]
        max_attempts = 2
        retry_on = ["TIMEOUT"]
        [policy.breaker]
        enabled = false
        [policy.cache]
        enabled = true
        functions = ["*"]
    """)
    c = load_config(path, env={})
    assert c.deno_path == "/opt/deno/bin/deno"
    assert (c.pool.min_workers, c.pool.max_workers, c.pool.idle_timeout) == (2, 6, 60.0)
    assert (c.limits.call_timeout, c.limits.heap_mb, c.limits.cpu_seconds) == (12.5, 256, 30)
    assert c.execute.pooled is False and c.execute.timeout == 2.0
    assert c.health.interval == 0 and c.reload.enabled is False
    assert c.events.timeout == 1.5 and c.balances.timeout == 4.0
    assert (c.server.host, c.server.port, c.server.enable_execute) == ("0.0.0.0", 9000, True)
    assert (c.server.max_body_bytes, c.server.shutdown_grace, c.server.admin_token) == (1024, 3.0, None)
    p = c.policy
    assert (p.storage, p.cache_storage) == ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1")
    assert (p.global_limit, p.max_concurrent_calls, p.max_concurrent) == ("1000/minute", 32, 4)
    assert p.rate_limit == RateLimitConfig(limit="5/second")
    assert p.retry.max_attempts == 2 and p.retry.retry_on == ["TIMEOUT"]
    assert p.breaker.enabled is False and p.cache.applies("add") and not p.cache.applies("onEvent")
    assert c.rate_limit_for("anything").limit == "5/second"


def test_top_level_shortcut_sections_land_in_policy(tmp_path):
    path = write(tmp_path / "host.toml", """
        [policy]
        global_limit = "50/second"
        [rate_limit]
        limit = "10/second"
        strategy = "reject"
        [retry]
        max_attempts = 4
        [breaker]
        failure_threshold = 9
        [cache]
        enabled = true
        ttl = 5
    """)
    p = load_config(path, env={}).policy
    assert p.global_limit == "50/second"
    assert p.rate_limit == RateLimitConfig(limit="10/second", strategy="reject")
    assert p.retry.max_attempts == 4 and p.breaker.failure_threshold == 9
    assert p.cache.enabled and p.cache.ttl == 5.0


def test_a_shortcut_and_the_same_policy_table_together_are_refused(tmp_path):
    msg = load_error(tmp_path, """
        [retry]
        max_attempts = 2
        [policy.retry]
        max_attempts = 3
    """)
    assert msg.startswith(str(tmp_path / "host.toml") + ": ")
    assert "[retry]" in msg and "[policy.retry]" in msg


def test_per_plugin_sections_override_only_that_plugin(tmp_path):
    path = write(tmp_path / "host.toml", """
        [rate_limit]
        limit = "100/second"
        [plugins.weather]
        max_concurrent = 2
        [plugins.weather.pool]
        max_workers = 8
        [plugins.weather.limits]
        call_timeout = 3
        [plugins.weather.rate_limit]
        limit = "10/second; 300/minute"
        [plugins.weather.retry]
        max_attempts = 3
        [plugins.weather.breaker]
        cooldown = 5
        [plugins.weather.cache]
        enabled = true
        functions = ["today"]
        [plugins.weather.config]
        city = "Oslo"
        units = { temperature = "C" }
        [plugins."calc@1.0.0".pool]
        min_workers = 0
    """)
    c = load_config(path, env={})
    assert c.pool_for("weather").max_workers == 8 and c.pool_for("other") == PoolConfig()
    assert c.limits_for("weather").call_timeout == 3.0 and c.limits_for("other").call_timeout == 30.0
    assert c.rate_limit_for("weather").limit == "10/second; 300/minute"
    assert c.rate_limit_for("other").limit == "100/second"
    assert c.retry_for("weather").max_attempts == 3 and c.retry_for("other").max_attempts == 1
    assert c.breaker_for("weather").cooldown == 5.0 and c.breaker_for("other").cooldown == 30.0
    assert c.cache_for("weather").applies("today") and not c.cache_for("other").enabled
    assert c.max_concurrent_for("weather") == 2 and c.max_concurrent_for("other") == 0
    assert c.plugins["weather"].config == {"city": "Oslo", "units": {"temperature": "C"}}
    assert c.pool_for("calc@1.0.0").min_workers == 0


def test_relative_paths_are_resolved_against_the_files_directory(tmp_path, monkeypatch):
    conf = tmp_path / "etc" / "plugin-host"
    path = write(conf / "host.toml", """
        plugins_dir = ["plugins", "../shared", "/abs/plugins"]
        state_dir = "state"
        deno_path = "bin/deno"
    """)
    monkeypatch.chdir(tmp_path)
    c = load_config(path, env={})
    assert c.plugins_dir == [str(conf / "plugins"), str(conf / "../shared"), "/abs/plugins"]
    assert c.plugin_dirs[1] == (tmp_path / "etc" / "shared")
    assert c.state_dir == str(conf / "state") and c.deno_path == str(conf / "bin" / "deno")
    # The same file given by a relative path resolves the same way.
    assert load_config("etc/plugin-host/host.toml", env={}).state_dir == str(conf / "state")
    # Flags and variables are the user's own paths: relative to the working directory.
    assert load_config(path, env={}, plugins_dir="mine").plugins_dir == "mine"


@pytest.mark.parametrize("line", ['state_dir = ""', 'plugins_dir = ""', 'plugins_dir = ["plugins", " "]'])
def test_an_empty_directory_is_refused_naming_it_not_taken_for_the_files_own(tmp_path, line):
    """helper-100: state_dir = "" put secret.key, audit.jsonl and deno/ beside host.toml (in
    /etc/plugin-host, say), with doctor saying all was well; plugins_dir = "" served that directory."""
    path = write(tmp_path / "etc" / "host.toml", line)
    field = line.split()[0]
    with pytest.raises(InvalidConfig, match=f"{field}: empty; give a directory"):
        load_config(path, env={})


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path / "host.toml", """
        state_dir = "/from/file"
        [server]
        host = "10.1.1.1"
        port = 9000
        admin_token = "file-token"
        [policy]
        storage = "memory://"
    """)
    env = {"PLUGIN_HOST_PORT": "9100", "PLUGIN_HOST_ADMIN_TOKEN": "env-token",
           "PLUGIN_HOST_STORAGE": "redis://:pw@cache:6379/2", "PLUGIN_HOST_STATE_DIR": "/from/env",
           "PLUGIN_HOST_HOST": ""}  # empty: unset
    c = load_config(path, env=env)
    assert (c.server.host, c.server.port, c.server.admin_token) == ("10.1.1.1", 9100, "env-token")
    assert c.policy.storage == c.policy.cache_storage == "redis://:pw@cache:6379/2"
    assert c.state_dir == "/from/env"

    c = load_config(path, env=env, server={"port": 9200}, state_dir="/from/flag", plugins_dir=None)
    assert (c.server.host, c.server.port, c.server.admin_token) == ("10.1.1.1", 9200, "env-token")
    assert c.state_dir == "/from/flag" and c.plugins_dir == "plugins"

    # A Struct replaces the whole section: the file's host and the env's port are gone.
    c = load_config(path, env=env, pool=PoolConfig(max_workers=2), server=HostConfig().server)
    assert (c.server.host, c.server.port, c.pool.max_workers) == ("127.0.0.1", 8787, 2)
    with pytest.raises(TypeError):
        load_config(path, env={}, plugin_dir="typo")


def test_bad_toml_names_the_file_and_the_line(tmp_path):
    msg = load_error(tmp_path, """\
        [server]
        admin_token = "s3cret-token"
        port = 80 80
    """)
    assert msg.startswith(f"{tmp_path / 'host.toml'}: line 3")
    assert "invalid TOML" in msg and "s3cret" not in msg


def test_unknown_section_and_unknown_field_are_named_with_what_is_known(tmp_path):
    msg = load_error(tmp_path, "[pools]\nmax_workers = 2\n")
    assert "pools: unknown section" in msg and "pool," in msg and "rate_limit" in msg
    msg = load_error(tmp_path, "[pool]\nmax_worker = 2\n")
    assert msg.endswith("pool.max_worker: unknown field (did you mean `max_workers`?); pool has: min_workers, "
                        "max_workers, "
                        "max_inflight, idle_timeout, max_calls_per_worker, restart_backoff, "
                        "restart_backoff_max, crash_loop_threshold, crash_loop_window, crash_loop_cooldown, "
                        "crash_loop_cooldown_max, drain_timeout, spares")
    msg = load_error(tmp_path, "[plugins.calc.retry]\nattempts = 2\n")
    assert "plugins.calc.retry.attempts: unknown field" in msg and "max_attempts" in msg
    # helper-82's finding: a renamed field was listed as known in the spelling it refused
    msg = load_error(tmp_path, "[execute.allow]\nnet = true\nallow_private_network = true\n")
    assert msg.endswith("execute.allow.allow_private_network: unknown field (did you mean `allowPrivateNetwork`?); "
                        "execute.allow has: net, read, write, env, run, ffi, sys, allowPrivateNetwork"), msg
    msg = load_error(tmp_path, "[plugins.calc.permissions]\nallow_private_network = true\n")
    assert "not a permission kind (the operator's opt-in to private addresses is " \
           "plugins.calc.allow_private_network = true" in msg, msg
    msg = load_error(tmp_path, "[plugins.calc.permissions]\nnetwork = [\"a.example\"]\n")
    assert "network: not a permission kind (did you mean `net`?)" in msg, msg


def test_wrong_types_name_the_section_and_field(tmp_path):
    msg = load_error(tmp_path, '[pool]\nmax_workers = "four"\n')
    assert msg == f"{tmp_path / 'host.toml'}: pool.max_workers: Expected `int`, got `str`"
    msg = load_error(tmp_path, "[plugins.calc.limits]\ncall_timeout = true\n")
    assert msg.endswith("plugins.calc.limits.call_timeout: Expected `float`, got `bool`")
    msg = load_error(tmp_path, "[retry]\nretry_on = [1]\n")
    assert msg.endswith("retry.retry_on[0]: Expected `str`, got `int`")
    msg = load_error(tmp_path, "[server]\nadmin_token = 918273645\n")
    assert msg.endswith("server.admin_token: Expected `str | null`, got `int`")
    assert "918273645" not in msg


def test_invalid_values_are_refused_with_the_field(tmp_path):
    msg = load_error(tmp_path, '[rate_limit]\nlimit = "lots"\n')
    assert msg.endswith("rate_limit.limit: 'lots' is not a rate limit such as '10/second; 300/minute'")
    msg = load_error(tmp_path, '[plugins.calc.rate_limit]\nlimit = "10/fortnight"\n')
    assert "plugins.calc.rate_limit.limit" in msg
    msg = load_error(tmp_path, "[pool]\nmin_workers = 5\nmax_workers = 2\n")
    assert msg.startswith(f"{tmp_path / 'host.toml'}: pool:")


def test_missing_file_given_explicitly(tmp_path):
    with pytest.raises(InvalidConfig, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(InvalidConfig, match="no such config file"):
        load_config(env={"PLUGIN_HOST_CONFIG": str(tmp_path / "nope.toml")})


def test_bad_storage_uri_never_shows_its_password(tmp_path):
    msg = load_error(tmp_path, '[policy]\ncache_storage = "mongodb://admin:hunter2@db:27017/0"\n')
    assert "policy.cache_storage" in msg and "***@db:27017" in msg and "hunter2" not in msg
    with pytest.raises(InvalidConfig) as exc:
        load_config(env={"PLUGIN_HOST_STORAGE": "memcached://u:hunter2@mc:11211"})
    assert "PLUGIN_HOST_STORAGE" in str(exc.value) and "hunter2" not in str(exc.value)
    with pytest.raises(InvalidConfig, match="PLUGIN_HOST_PORT: 'http' is not a port"):
        load_config(env={"PLUGIN_HOST_PORT": "http"})


def test_example_file_loads(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    c = load_config(REPO / "host.example.toml", env={})
    assert c.plugin_dirs == [REPO / "plugins"]
    assert c.rate_limit_for("calc").strategy == "reject" and c.retry_for("calc").max_attempts == 3
    assert c.cache_for("calc").applies("add") and c.server.admin_token is None


def test_readme_example_loads(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    c = load_config(write(tmp_path / "host.toml", block), env={})
    assert c.policy.storage.startswith("redis://") and c.rate_limit_for("weather").strategy == "reject"
    assert c.rate_limit_for("other").limit == "100/second"


@pytest.mark.timeout(90)
def test_cli_reads_plugins_dir_and_plugin_settings_from_the_config(calc, shared_state, tmp_path):
    # calc lives in tmp_path/plugins; the file, one directory down, names it relatively, and
    # the CLI runs from yet another directory.
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    config = write(tmp_path / "conf" / "host.toml", f"""
        plugins_dir = "../plugins"
        state_dir = {json.dumps(str(shared_state))}
        [plugins.calc.pool]
        min_workers = 2
        max_workers = 2
    """)
    out = run_cli("list", "--config", str(config), "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    (info,) = json.loads(out.stdout)
    assert info["id"] == "calc" and info["state"] == "running"
    assert len(info["workers"]) == 2

    # --plugins given (before the command this time) beats the file's plugins_dir.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli("--config", str(config), "--plugins", str(empty), "list", "--json", cwd=cwd)
    assert out.returncode == 0 and json.loads(out.stdout) == []

    bad = write(tmp_path / "bad.toml", "[pool]\nmax_workers = 'x'\n")
    out = run_cli("list", "--config", str(bad), cwd=cwd)
    assert out.returncode == 2 and "bad.toml: pool.max_workers: Expected `int`" in out.stderr


def test_database_url_names_the_db_tools_database_unless_the_file_does(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    assert load_config(env={"DATABASE_URL": url}).execute.database == url
    pg = "postgresql://u:p@db:5432/x"
    assert load_config(env={"DATABASE_URL": pg}).execute.database == pg
    # another kind of database is somebody else's: ignored, not an error
    assert load_config(env={"DATABASE_URL": "mysql://u:p@db:3306/x"}).execute.database is None
    (tmp_path / "host.toml").write_text('[execute]\ndatabase = "data/own.sqlite"\n')
    own = load_config(tmp_path / "host.toml", env={"DATABASE_URL": url}).execute.database
    assert own == str(tmp_path / "data" / "own.sqlite")  # the file wins, relative to it
