"""A ``[state] database`` URL whose password holds a character that ends a URL's parts elsewhere
(``/``, ``?``, ``#``; libpq reads the user-info up to the ``@``) never shows any of the password
in what ``python -m host`` prints when the database cannot be reached (a real subprocess, the
URL's port closed)."""

from __future__ import annotations

import pytest
from support.processes import free_port
from support.servers import run_cli


@pytest.mark.parametrize("password", ["pa/w0rdZZ", "pa#w0rdZZ", "pa?w0rdZZ", "pa@x/w0rdZZ"])
def test_no_part_of_a_database_password_is_printed(tmp_path, password):
    port = free_port()  # nothing listens there
    url = f"postgresql://app:{password}@127.0.0.1:{port}/app"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text(f'state_dir = "{tmp_path / "state"}"\nplugins_dir = "{tmp_path / "plugins"}"\n'
                                        f'[state]\ndatabase = "{url}"\n')
    out = run_cli("--config", "host.toml", "config", "export", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and len(text.strip().splitlines()) == 1 and "[state] database" in text, text
    assert "w0rdZZ" not in text and "app:pa" not in text and ":pa" not in text, text


@pytest.mark.parametrize(("setting", "section", "host", "says"), [
    ("state.database", "state", "[::1", "libpq cannot read"),  # libpq's own error quoted the URL whole
    ("state.database", "state", "127.0.0.1:99999", "port 99999 of"),  # was 'PluginHost.reserve_address'
    ("execute.database", "execute", "127.0.0.1:99999", "port 99999 of"),
])
def test_a_database_url_libpq_cannot_use_is_a_usage_error_naming_it_without_its_password(tmp_path, setting, section,
                                                                                         host, says):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text(f'state_dir = "{tmp_path / "state"}"\nplugins_dir = "{tmp_path / "plugins"}"\n'
                                        f'[{section}]\ndatabase = "postgresql://app:w0rdZZ@{host}/app"\n')
    out = run_cli("--config", "host.toml", "list", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and f"host.toml: {setting}: " in text and says in text, text
    assert "w0rdZZ" not in text, text
