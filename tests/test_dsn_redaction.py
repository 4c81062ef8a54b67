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
