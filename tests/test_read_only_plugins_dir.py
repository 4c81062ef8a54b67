"""A plugin directory on a read-only file system (a config-managed mount, a container's image
layer): a command that writes into it says so in one line naming the file and what to change,
the plugin directory (``plugins_dir``, ``--plugins``), not the state directory it does not use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.full_disk import _unshare_works
from test_ccswitch_import import cc_switch_db

pytestmark = pytest.mark.timeout(60)

# a read-only tmpfs over the plugin directory, for this command alone (a mount namespace of its own)
_READ_ONLY = 'mkdir -p "$1" && mount -t tmpfs -o ro,size=1m tmpfs "$1" && shift && exec "$@"'


def run_on_read_only(plugins: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not _unshare_works():
        pytest.skip("no mount namespaces here (unshare -rm failed)")
    return subprocess.run(["unshare", "-rm", "sh", "-c", _READ_ONLY, "read-only", str(plugins),
                           sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=50, cwd=cwd)


def assert_names_the_plugin_dir(out: subprocess.CompletedProcess, plugins: Path) -> None:
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"error: cannot write {plugins}/") and "Read-only file system" in out.stderr, out.stderr
    # before: "(its file system is read-only: set state_dir (--state-dir) to a writable directory)"
    assert "plugins_dir (--plugins)" in out.stderr and "state_dir" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


def test_new_into_a_read_only_plugin_dir_names_the_plugin_dir(tmp_path):
    plugins = tmp_path / "plugins"
    out = run_on_read_only(plugins, "new", "hello", "--plugins", str(plugins), "--state-dir", str(tmp_path / "state"),
                           cwd=tmp_path)
    assert_names_the_plugin_dir(out, plugins)


def test_a_cc_switch_import_into_a_read_only_plugin_dir_names_the_plugin_dir(tmp_path):
    cc_switch_db(tmp_path / "cc.db", "https://relay.example")
    plugins = tmp_path / "plugins"
    out = run_on_read_only(plugins, "import-cc-switch", "--db", str(tmp_path / "cc.db"), "--plugins", str(plugins),
                           "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert_names_the_plugin_dir(out, plugins)
