"""The deno binary and the worker runtime named by the operator (``deno_path``,
``$PLUGIN_HOST_DENO``, ``runtime_entry``): one that is not there, or not a file, fails the start
with an InvalidConfig naming the setting (the CLI exits 2), instead of a host whose every plugin
is in error with a worker's 'setpriv: failed to execute' or 'Module not found'."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.plugins import CALC

from host import InvalidConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize("where", ["directory", "missing"])
async def test_a_deno_path_that_is_no_executable_file_fails_the_start_naming_it(plugin_dir, make_host, tmp_path,
                                                                                 where):
    plugin_dir.add("calc.js", CALC)
    path = tmp_path if where == "directory" else tmp_path / "no-deno"
    with pytest.raises(InvalidConfig) as e:
        async with make_host(deno_path=str(path)):
            pass
    assert e.value.message.startswith(f"deno_path: '{path}'"), e.value


async def test_a_runtime_entry_that_is_not_a_file_fails_the_start_naming_it(plugin_dir, make_host, tmp_path):
    plugin_dir.add("calc.js", CALC)
    with pytest.raises(InvalidConfig, match=r"^runtime_entry: "):
        async with make_host(runtime_entry=str(tmp_path / "worker.ts")):
            pass


@pytest.mark.parametrize("setting", ["deno_path", "PLUGIN_HOST_DENO"])
def test_the_cli_says_which_deno_setting_to_change_and_exits_2(plugin_dir, tmp_path, setting):
    plugin_dir.add("calc.js", CALC)
    env = {**os.environ, "PLUGIN_HOST_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "host.toml").write_text(f'deno_path = "{tmp_path}"\n' if setting == "deno_path" else "")
    if setting == "PLUGIN_HOST_DENO":
        env["PLUGIN_HOST_DENO"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "host", "--config", str(tmp_path / "host.toml"), "--plugins",
                          str(plugin_dir.root), "list"], capture_output=True, text=True, timeout=50, env=env)
    want = "deno_path" if setting == "deno_path" else "$PLUGIN_HOST_DENO"
    assert out.returncode == 2 and out.stderr.startswith(f"error: {want}: '{tmp_path}' is a directory"), out


async def test_a_runtime_directory_too_long_for_sockets_is_passed_over(calc, make_host, tmp_path, monkeypatch,
                                                                       caplog):
    """helper-100: under an XDG_RUNTIME_DIR of 86 bytes every worker's socket path passed the
    107-byte AF_UNIX limit: every plugin crash-looped, while doctor and /healthz/ready said all was
    well. The host's sockets go in the temp directory instead, and it says why."""
    import logging
    import tempfile

    from host.runtime import private_run_dir

    long_dir = tmp_path / ("r" * max(1, 90 - len(str(tmp_path))))
    long_dir.mkdir()
    assert len(str(long_dir)) >= 86
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(long_dir))
    with caplog.at_level(logging.WARNING, "host.runtime"):
        made = private_run_dir("t-")
    try:
        assert os.path.dirname(made) == tempfile.gettempdir()  # before: under long_dir
        assert any("too long for the host's sockets" in r.getMessage() for r in caplog.records)
    finally:
        os.rmdir(made)
    async with make_host() as h:  # its workers' sockets fit
        assert await h.call("calc", "add", 1, 2) == 3
