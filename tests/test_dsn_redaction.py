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
    assert out.returncode != 0 and len(text.strip().splitlines()) == 1, text
    # refused when read (a second "@" ends libpq's password at the first), else when it connects
    assert ("state.database: more than one" in text) if password.count("@") else "[state] database" in text, text
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


@pytest.mark.parametrize(("section", "value", "secret"), [
    ("state", "postgresql://postgres:WRONG@pw#6@127.0.0.1:5432/db", "pw#6"),  # the driver said 'pw#6@127.0.0.1'
    ("state", "host=127.0.0.1 port=5432 user=app password=WRONG-pw-5 dbname=app", "WRONG-pw-5"),  # quoted whole
    ("redis", "redis://default:rpw/S3CRET@127.0.0.1:6379/0", "rpw"),  # "cast to integer value as 'rpw'"
    ("execute", "host=127.0.0.1 user=app password=EXEC-pw-9 dbname=app", "EXEC-pw-9"),  # taken for a sqlite path
    ("execute", "postgresql://app:pw-11@x@127.0.0.1:5432/app", "pw-11"),  # as DATABASE_URL gives it too
])
def test_a_database_or_redis_address_that_parsers_read_apart_is_refused_without_its_password(
        tmp_path, section, value, secret):
    """helper-89: a password with an unencoded "@", "/" or "#", or a libpq key=value string, showed
    part or all of the password: in the start's error, in doctor's, and for [execute] database in
    every /execute answer of code using db ('cannot open the sqlite database ... password=...')."""
    from host import ExecuteConfig, HostConfig, InvalidConfig
    from host.config import PolicyConfig
    from host.state_config import StateConfig

    make = {"state": lambda: HostConfig(state_dir=str(tmp_path), state=StateConfig(database=value)),
            "redis": lambda: HostConfig(state_dir=str(tmp_path), policy=PolicyConfig(storage=value)),
            "execute": lambda: HostConfig(state_dir=str(tmp_path), execute=ExecuteConfig(database=value))}[section]
    with pytest.raises(InvalidConfig) as exc:
        make()
    message = exc.value.message
    assert secret not in message and "WRONG" not in message and "password=" not in message, message
    assert "percent-encoded" in message or "key=value" in message or "not a postgresql" in message \
        or "a postgresql:// URL" in message, message
