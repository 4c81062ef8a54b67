"""The wheel: it ships the Deno worker runtime inside the package, where the installed host
looks for it, and a host imported from the unpacked wheel runs a plugin end to end."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_FILES = ("worker.ts", "wire.ts", "calls.ts", "context.ts", "console.ts", "errors.ts", "sandbox.ts", "tools.ts",
                 "isolate.ts", "lockdown.ts", "execute.ts", "msgpack.ts", "protocol.ts", "http.ts", "plugin.d.ts")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=100,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (whl,) = out.glob("plugin_host-*.whl")
    return whl


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    return root


def run_python(code: str, site: Path, cwd: Path, *args: str, timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter that imports ``host`` from ``site`` first; the
    code prints one JSON object as its last line."""
    prelude = f"import sys; sys.path.insert(0, {str(site)!r})\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_wheel_ships_the_worker_runtime_inside_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in RUNTIME_FILES:
            member = f"host/worker_runtime/{name}"
            assert member in names, f"{member} missing from {wheel.name}"
            assert z.read(member) == (REPO / "worker_runtime" / name).read_bytes()
        assert {"host/__init__.py", "host/runtime.py", "host/worker.py"} <= names
        assert not any(n.startswith(("tests/", "worker_runtime/", ".venv/")) for n in names)


def test_wheel_console_script_points_at_a_module_it_ships(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (ep_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        eps = configparser.ConfigParser()
        eps.read_string(z.read(ep_name).decode())
    target = eps["console_scripts"]["plugin-host"]
    module, _, func = target.partition(":")
    assert module.replace(".", "/") + ".py" in names and func


def test_host_imported_from_the_wheel_finds_its_own_runtime_entry(unpacked, tmp_path):
    got = run_python(
        "import json, host, host.runtime\n"
        "print(json.dumps({'host': host.__file__, 'entry': str(host.runtime.find_runtime_entry())}))\n",
        unpacked, tmp_path,
    )
    assert Path(got["host"]).resolve() == (unpacked / "host" / "__init__.py").resolve()
    assert Path(got["entry"]) == (unpacked / "host" / "worker_runtime" / "worker.ts").resolve()


def test_host_from_the_wheel_runs_a_plugin_with_the_shipped_runtime(unpacked, calc, shared_state, tmp_path):
    code = """
import json, sys
import anyio
from host import HostConfig, PluginHost

async def main():
    cfg = HostConfig(plugins_dir=sys.argv[1], state_dir=sys.argv[2])
    async with PluginHost(cfg) as h:
        total = await h.call("calc", "add", 1, 2)
        pid = h.plugin("calc").workers[0].pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\\0")[:-1]]
    print(json.dumps({"total": total, "argv": argv}))

anyio.run(main)
"""
    got = run_python(code, unpacked, tmp_path, str(calc.root), str(shared_state), timeout=90)
    assert got["total"] == 3
    # the worker was started from the runtime inside the unpacked wheel, not the source tree
    entry = str((unpacked / "host" / "worker_runtime" / "worker.ts").resolve())
    assert entry in got["argv"]
    assert not any(a.startswith(str(REPO / "worker_runtime")) for a in got["argv"])
