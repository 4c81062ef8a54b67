"""``dev_plugins = ["name:path"]``: a plugin run from a source path outside the plugin directories,
under the id ``name``, hot-reloaded like the others; every bad entry is a config error naming it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support.servers import run_cli

from host import HostConfig, InvalidConfig, PluginHost
from host.config_file import load_config

pytestmark = pytest.mark.timeout(60)


def source(tmp_path: Path, n: int = 1, pid: str = "example") -> Path:
    """A plugin directory far from any plugin directory."""
    root = tmp_path / "src" / "example-plugin"
    root.mkdir(parents=True, exist_ok=True)
    (root / "mod.ts").write_text(
        f'export const metadata = {{ id: "{pid}", name: "Example", version: "1.0.{n}", apiVersion: "1.0" }};\n'
        f"export function which(): number {{ return {n}; }}\n")
    return root


def toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "plugins").mkdir(exist_ok=True)
    path = tmp_path / "conf" / "host.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.anyio
async def test_a_dev_plugin_runs_from_its_source_path_and_is_hot_reloaded(tmp_path, state_dir):
    root = source(tmp_path)
    config = load_config(toml(tmp_path, f"""
        plugins_dir = "../plugins"
        state_dir = {json.dumps(str(state_dir))}
        dev_plugins = ["example:../src/example-plugin"]
    """), env={})
    assert config.dev_plugins == [f"example:{root}"]  # relative to the file
    async with PluginHost(config) as h:
        assert await h.call("example", "which") == 1
        info = h.plugin("example")
        assert (info.state, info.version) == ("running", "1.0.1")
        source(tmp_path, 2)
        await h.rescan()  # what the watcher does every reload.interval
        assert await h.call("example", "which") == 2


@pytest.mark.anyio
async def test_a_dev_plugin_wins_over_the_plugin_directory_and_must_carry_its_name(tmp_path, plugin_dir, state_dir):
    plugin_dir.add("example.js", "export function which() { return 0; }")
    root = source(tmp_path, 5)
    config = HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(state_dir), dev_plugins=[f"example:{root}"])
    async with PluginHost(config) as h:
        assert await h.call("example", "which") == 5
    source(tmp_path, 6, pid="other")
    async with PluginHost(config) as h:
        info = h.plugin("example")
        assert info.state == "error"
        assert "'other' does not match its name in dev_plugins 'example'" in info.error


@pytest.mark.parametrize(("entry", "expected"), [
    ("example", '"name:path"'),
    ("example:", '"name:path"'),
    ("bad id!:/tmp", "'bad id!' is not a plugin id"),
    ("host:/tmp", "'host' is not a plugin id"),
    ("example:/no/such/dir", "dev_plugins[0]: example: /no/such/dir: no such file or directory"),
])
def test_a_bad_entry_is_a_config_error_naming_it(entry, expected):
    with pytest.raises(InvalidConfig) as exc:
        HostConfig(dev_plugins=[entry])
    assert expected in str(exc.value)


def test_a_path_that_is_not_a_plugin_says_what_to_give(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InvalidConfig, match=r"dev_plugins\[0\]: a: .*empty is not a plugin: give a directory with one of mod.ts"):
        HostConfig(dev_plugins=[f"a:{tmp_path / 'empty'}"])
    with pytest.raises(InvalidConfig, match=r"dev_plugins\[1\]: b: .*notes.txt is not a plugin: give a module ending in .ts"):
        HostConfig(dev_plugins=[f"a:{source(tmp_path)}", f"b:{tmp_path / 'notes.txt'}"])
    with pytest.raises(InvalidConfig, match="'a' is named twice"):
        HostConfig(dev_plugins=[f"a:{source(tmp_path)}", f"a:{source(tmp_path)}"])


def test_the_seeds_placement_under_plugins_is_read_as_the_same_setting(tmp_path):
    root = source(tmp_path)
    config = load_config(toml(tmp_path, """
        [plugins]
        dev_plugins = ["example:../src/example-plugin"]
        [plugins.example]
        enabled = true
    """), env={})
    assert config.dev_plugins == [f"example:{root}"]
    assert set(config.plugins) == {"example"}


@pytest.mark.timeout(90)
def test_the_cli_lists_a_dev_plugin_and_refuses_a_missing_path(tmp_path, shared_state):
    source(tmp_path)
    good = toml(tmp_path, f"""
        plugins_dir = "../plugins"
        state_dir = {json.dumps(str(shared_state))}
        dev_plugins = ["example:../src/example-plugin"]
    """)
    out = run_cli("list", "--config", str(good), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [(p["id"], p["state"]) for p in json.loads(out.stdout)] == [("example", "running")]
    bad = toml(tmp_path, 'dev_plugins = ["example:../src/gone"]\n')
    out = run_cli("list", "--config", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert f"host.toml: dev_plugins[0]: example: {tmp_path / 'src' / 'gone'}: no such file or directory" in out.stderr


@pytest.mark.anyio
async def test_a_dev_plugin_whose_directory_holds_the_state_directory_is_refused(tmp_path, shared_state):
    # dev_plugins = ["leak:/X"] with the state in /X/state: its workers could read secret.key
    top = tmp_path / "X"
    (top / "state").mkdir(parents=True)
    (top / "mod.ts").write_text('export const metadata = { id: "leak", name: "Leak", version: "1.0.0", apiVersion: "1.0" };\n'
                                "export function read(): string { return Deno.readTextFileSync('state/secret.key'); }\n")
    config = load_config(toml(tmp_path, f"""
        plugins_dir = "../plugins"
        state_dir = {json.dumps(str(top / "state"))}
        dev_plugins = ["leak:{top}"]
    """), env={})
    async with PluginHost(config) as h:
        info = h.plugin("leak")
        assert info.state == "error"
        assert "would let the plugin read the host's state directory" in (info.error or "")
