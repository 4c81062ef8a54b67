"""The balance plugin document's ``[rate_limit]`` keys: read as today's settings with a hint naming
them, refused with the exact equivalent when they clash with the setting they stand for."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest
from support.servers import run_cli

from host import InvalidConfig
from host.config_file import load_config

pytestmark = pytest.mark.timeout(60)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "host.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_documents_keys_become_todays_settings_with_a_hint(tmp_path, caplog):
    path = write(tmp_path, """
        [rate_limit]
        global_max_requests_per_second = 10
        per_plugin_max_requests_per_minute = 30
        burst_size = 5
    """)
    with caplog.at_level(logging.WARNING, logger="host.config"):
        config = load_config(path, env={})
    assert config.policy.global_limit == "10/second"
    assert config.policy.rate_limit.limit == "30/minute; 5/second"
    hints = [r.getMessage() for r in caplog.records]
    assert any("rate_limit.global_max_requests_per_second is deprecated" in h
               and '[policy] global_limit = "10/second"' in h for h in hints)
    assert any("rate_limit.per_plugin_max_requests_per_minute is deprecated" in h
               and '[rate_limit] limit = "30/minute; 5/second"' in h for h in hints)
    assert any("rate_limit.burst_size is deprecated" in h for h in hints)
    assert all(str(path) in h for h in hints)


def test_the_documents_keys_under_policy_too_and_the_rest_of_the_table_is_kept(tmp_path):
    config = load_config(write(tmp_path, """
        [policy.rate_limit]
        per_plugin_max_requests_per_minute = 60
        strategy = "reject"
    """), env={})
    assert config.policy.rate_limit.limit == "60/minute"
    assert config.policy.rate_limit.strategy == "reject"
    assert config.policy.global_limit is None


def test_the_documents_keys_in_a_plugins_table_and_under_policy(tmp_path, caplog):
    # helper-82's finding: the same keys were translated under [rate_limit] and refused elsewhere
    with caplog.at_level(logging.WARNING, logger="host.config"):
        config = load_config(write(tmp_path, """
            [policy]
            global_max_requests_per_second = 10
            [plugins.calc.rate_limit]
            per_plugin_max_requests_per_minute = 30
            burst_size = 5
        """), env={})
    assert config.policy.global_limit == "10/second"
    assert config.plugins["calc"].rate_limit.limit == "30/minute; 5/second"
    hints = [r.getMessage() for r in caplog.records]
    assert any('plugins.calc.rate_limit.per_plugin_max_requests_per_minute is deprecated' in h
               and '[plugins.calc.rate_limit] limit = "30/minute; 5/second"' in h for h in hints), hints
    with pytest.raises(InvalidConfig, match=r'plugins.calc.rate_limit.global_max_requests_per_second: a limit of '
                                            r'the whole host, not of one plugin: write \[policy\] global_limit'):
        load_config(write(tmp_path, "[plugins.calc.rate_limit]\nglobal_max_requests_per_second = 3\n"), env={})


@pytest.mark.parametrize(("text", "expected"), [
    ("[rate_limit]\nlimit = '5/second'\nper_plugin_max_requests_per_minute = 30\n",
     'rate_limit: per_plugin_max_requests_per_minute and limit are both given; keep only limit '
     '(the equivalent of per_plugin_max_requests_per_minute is limit = "30/minute")'),
    ("[policy]\nglobal_limit = '1/second'\n[rate_limit]\nglobal_max_requests_per_second = 10\n",
     'rate_limit.global_max_requests_per_second and policy.global_limit are both given; keep only '
     '[policy] global_limit (the equivalent is "10/second")'),
    ("[rate_limit]\nburst_size = 0\n", "rate_limit.burst_size: must be a whole number of requests, at least 1"),
    ("[rate_limit]\nburst_size = 'many'\n", "rate_limit.burst_size: must be a whole number"),
])
def test_a_clash_or_a_bad_value_is_refused_naming_the_exact_equivalent(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(InvalidConfig) as exc:
        load_config(path, env={})
    assert expected in str(exc.value)
    assert str(exc.value).startswith(str(path))


@pytest.mark.timeout(90)
def test_the_cli_accepts_the_documents_keys_and_prints_the_hint(tmp_path, shared_state):
    (tmp_path / "plugins").mkdir()
    path = write(tmp_path, f"""
        plugins_dir = "plugins"
        state_dir = {json.dumps(str(shared_state))}
        [rate_limit]
        per_plugin_max_requests_per_minute = 30
    """)
    out = run_cli("list", "--config", str(path), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert 'per_plugin_max_requests_per_minute is deprecated' in out.stderr
    assert '[rate_limit] limit = "30/minute"' in out.stderr
