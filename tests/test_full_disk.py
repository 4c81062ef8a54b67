"""A host whose state directory fills up: ``serve`` runs on a real tmpfs of a few MiB (a mount
namespace of its own, tests/support/full_disk.py) that the test fills to the last bytes and
frees again. What was stored stays whole, what fails is a typed error naming the file, and the
host recovers by itself once there is room."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from msgspec import msgpack
from support.full_disk import SmallDisk
from support.packages import plugin_source, tar_gz
from support.plugins import CALC, PluginDir, fresh_state, vault_plugin
from support.processes import free_port, sigterm_and_reap
from support.servers import ServeProcess, serve_process
from test_ccswitch_import import cc_switch_db

from host.plugins.manifest_cache import SAVE_INTERVAL
from host.security.audit import read_audit

pytestmark = pytest.mark.timeout(90)


TYPED = """
export const metadata: { id: string; name: string; version: string; apiVersion: string } =
  { id: "typed", name: "typed", version: "1.0.%d", apiVersion: "1.0" };
export function version(): number { return Number(metadata.version.split(".")[2]); }
"""


def _state(srv: ServeProcess, pid: str, want: str) -> dict | None:
    status, body = srv.request("GET", f"/api/plugins/{pid}")
    return body if status == 200 and body["state"] == want else None


@contextmanager
def small_disk_serve(tmp_path: Path, shared_state: Path, plugins: Path, *args: str, running: str | None = None,
                     size: str = "20m", held: SmallDisk | None = None) -> Iterator[tuple[ServeProcess, SmallDisk]]:
    """``serve --plugins PLUGINS ARGS`` with its state directory on a tmpfs of ``size`` (Deno's
    cache linked from the suite's: warm), until ``running`` serves; ``held``: a disk held
    mounted to run in instead (what serve leaves stays there after it exits)."""
    disk = held or SmallDisk(tmp_path / "disk", size, deno=shared_state / "deno")
    with serve_process(tmp_path, "--plugins", str(plugins), "--state-dir", str(disk.state), "--insecure-no-token",
                       *args, wrap=disk.inside if held else disk.wrap) as srv:
        disk.pid = disk.pid if held else srv.proc.pid
        if running:
            srv.wait_running(running)
        yield srv, disk


@contextmanager
def full_plugin_dir(tmp_path: Path) -> Iterator[tuple[SmallDisk, Path, tuple[str, ...]]]:
    """A plugin directory on a small disk held mounted and filled up (the state directory on
    the ordinary one): the disk for ``run``, the directory, and the options naming both."""
    disk = SmallDisk(tmp_path / "disk", "2m")
    home = disk.mount / "plugins"
    with disk.held():
        disk.path("plugins").mkdir()
        disk.fill()
        yield disk, home, ("--plugins", str(home), "--state-dir", str(tmp_path / "state"))


def test_a_plugin_that_could_not_be_recorded_on_a_full_disk_loads_once_there_is_room(tmp_path, shared_state):
    """A plugin first seen while the disk is full cannot have its grants recorded (approvals.json):
    it waits in ``error`` saying so, and loads by itself once space is freed, without a restart.
    Before: it stayed in ``error`` until its file changed or the host restarted."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    with small_disk_serve(tmp_path, shared_state, plugins.root, running="calc") as (srv, disk):
        disk.fill()
        plugins.add("late.js", "export function mul(a, b) { return a * b; }")
        failed = srv.poll(lambda: _state(srv, "late", "error"), "late failing on the full disk")
        assert "approvals.json: No space left on device (free some space" in failed["error"]
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[1]["result"] == 3
        disk.free()
        srv.poll(lambda: _state(srv, "late", "running"), "late loading once there is room", timeout=15)
        assert srv.request("POST", "/api/plugins/late/call/mul", {"args": [3, 4]}) == (200, {"ok": True, "result": 12})
        assert "Traceback" not in srv.log()


SCRIPT = """({
  request: { url: "{{baseUrl}}/balance", method: "GET", headers: { "Authorization": "Bearer {{apiKey}}" } },
  extractor: function (response) { return { remaining: response.left, unit: "USD" }; }
})"""


def test_a_usage_script_edited_on_a_full_disk_keeps_its_module_whole(tmp_path, shared_state):
    """The module generated from a NAME.usage.js (``<state_dir>/usage_scripts/NAME/mod.js``) is
    replaced in one step: on a full disk the old one stays whole (a worker started meanwhile
    loads it), the failure is logged naming the file, other plugins' changes are still seen,
    and the new module is written once there is room. Before: the file was truncated in place,
    and the whole rescan failed with it."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    script = plugins.root / "relay.usage.js"
    script.write_text(SCRIPT)
    with small_disk_serve(tmp_path, shared_state, plugins.root, running="relay") as (srv, disk):
        module = disk.path("state/usage_scripts/relay/mod.js")
        before = module.read_text()
        disk.fill()
        script.write_text(SCRIPT + "\n// " + "x" * 200_000 + "\n")
        srv.wait_logged(f"cannot write {disk.mount}/state/usage_scripts/relay/mod.js: No space left on device "
                        "(free some space")
        assert module.read_text() == before
        plugins.add("late.js", "export function ping() { return 'pong'; }")  # the rescan goes on
        srv.poll(lambda: _state(srv, "late", "running") or _state(srv, "late", "error"), "late seen")
        status, info = srv.request("POST", "/api/plugins/relay/restart")  # its code read anew
        assert status == 200 and info["state"] == "running" and info["reload_error"] is None, info
        disk.free()
        srv.poll(lambda: True if "x" * 1000 in module.read_text() else None, "the new module written")
        assert "Traceback" not in srv.log()


def test_the_first_secret_stored_on_a_full_disk_is_a_state_error_and_leaves_no_key_file(tmp_path, shared_state):
    """The secret key file is made when the first secret is stored: on a full disk that is a 503
    StateError naming the key file, no key file is left (a half-written key would lock every
    later secret out), and the same request succeeds once there is room. Before: a raw OSError,
    500 and a traceback."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("vault.js", vault_plugin("export function tail(ctx) { return ctx.config.apiKey.slice(-4); }"))
    with small_disk_serve(tmp_path, shared_state, plugins.root) as (srv, disk):
        srv.poll(lambda: _state(srv, "vault", "error"), "vault waiting for its config")
        disk.fill()
        status, body = srv.request("PUT", "/api/plugins/vault/config", {"apiKey": "sk-live-first-1111"})
        assert status == 503 and body["error"]["type"] == "StateError", body
        assert body["error"]["message"] == (f"cannot create the secret key file {disk.mount}/state/secret.key: No "
                                            "space left on device (free some space on its file system)")
        assert not disk.path("state/secret.key").exists()
        disk.free()
        assert srv.request("PUT", "/api/plugins/vault/config", {"apiKey": "sk-live-first-1111"}) == (
            200, {"apiKey": "********"})
        assert srv.request("POST", "/api/plugins/vault/call/tail", {"args": []}) == (200, {"ok": True, "result": "1111"})
        assert "Traceback" not in srv.log() and "sk-live" not in srv.log()


def test_a_package_installed_onto_a_full_plugin_directory_is_refused_whole_and_installs_once_there_is_room(
        tmp_path, shared_state):
    """Unpacking a package into a plugin directory whose file system fills up is a 503 naming the
    directory and the full disk, nothing of it is left there, and the same upload installs once
    there is room. Before: a raw OSError (a 500, a traceback)."""
    (tmp_path / "host.toml").write_text("[packages]\nallow_unverified = true\n")
    home = tmp_path / "disk" / "plugins"
    archive = tar_gz({"big/mod.js": plugin_source("big", "1.0.0"), "big/blob.bin": os.urandom(2 << 20)})
    with small_disk_serve(tmp_path, shared_state, home, "--config", "host.toml", size="24m") as (srv, disk):
        disk.fill(leave=256 << 10)
        status, body = srv.request("POST", "/api/plugins/install?filename=big.tar.gz", data=archive)
        assert status == 503 and body["error"]["type"] == "PackageRefused", body
        assert body["error"]["message"] == (f"big.tar.gz: cannot unpack into the plugin directory {home}: No space "
                                            "left on device (free some space on its file system); nothing was installed")
        assert os.listdir(disk.path("plugins")) == []  # no staging directory left behind
        disk.free()
        status, body = srv.request("POST", "/api/plugins/install?filename=big.tar.gz", data=archive)
        assert status == 201 and body["state"] == "running", body
        assert "Traceback" not in srv.log()


@pytest.mark.parametrize("command", [("list",), ("config", "export"), ("list", "--json")])
def test_a_command_whose_output_goes_to_a_full_disk_says_so_in_one_line(tmp_path, shared_state, command):
    """``python -m host list > out.txt`` on a full disk (/dev/full: every write fails with
    ENOSPC): exit 1 and one line saying the output could not be written. Before: a traceback,
    or exit 120 and "Exception ignored" from the interpreter's last flush."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "host", "--plugins", str(plugins.root), "--state-dir", str(state),
                              *command], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, cwd=tmp_path)
    assert (out.returncode, out.stderr) == (1, "error: cannot write the output: No space left on device\n")


def test_a_host_whose_log_cannot_be_written_keeps_serving(tmp_path, shared_state):
    """``serve --debug 2>log`` with the log on a full disk (/dev/full): every log line fails to
    be written; calls (whose workers' console lines are logged) and restarts go on, and
    SIGTERM still exits 0 with no worker left."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    port = free_port()
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen([sys.executable, "-m", "host", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--plugins", str(plugins.root), "--state-dir", str(state), "--insecure-no-token",
                                 "--debug"], cwd=tmp_path, stdout=full, stderr=full)
    srv = ServeProcess(proc, f"http://127.0.0.1:{port}", Path(os.devnull))
    try:
        srv.wait_running("calc")
        for _ in range(3):
            assert srv.request("POST", "/api/plugins/calc/call/say", {"args": ["hi"]}) == (200, {"ok": True, "result": "hi"})
            assert srv.request("POST", "/api/plugins/calc/restart")[1]["state"] == "running"
        sigterm_and_reap(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_cc_switch_import_onto_a_full_plugin_directory_leaves_no_broken_script(tmp_path):
    """``import-cc-switch`` writing its NAME.usage.js files into a full plugin directory: exit 1
    with one line naming the file and the full disk, and no empty or cut script left behind
    (the next import would keep it as "a different script", and the host would load it); the
    same import works once there is room. Before: a traceback and empty scripts kept for good."""
    cc_switch_db(tmp_path / "cc.db", "https://relay.example")
    with full_plugin_dir(tmp_path) as (disk, home, common):
        out = disk.run("import-cc-switch", "--db", str(tmp_path / "cc.db"), *common, cwd=tmp_path)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(f"error: cannot write {home}/") and out.stderr.endswith(
            ".usage.js: No space left on device (free some space on its file system)\n"), out.stderr
        assert os.listdir(disk.path("plugins")) == []
        disk.free()
        out = disk.run("import-cc-switch", "--db", str(tmp_path / "cc.db"), *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert sorted(os.listdir(disk.path("plugins"))) == ["my-relay.usage.js", "newapi-station.usage.js"]


COUNTER = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] };
let n = 0;
export function queryBalance() { n += 1; return { balance: n, currency: "USD" }; }
"""


def test_balances_answered_while_the_disk_is_full_reach_the_history_once_there_is_room(tmp_path, shared_state):
    """Balance queries answer on a full disk, and the points the history could not take are kept
    in memory and written with the next ones once there is room: the history has no gap.
    Before: those points were dropped (logged only)."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("station.js", COUNTER)
    (tmp_path / "host.toml").write_text("[balances]\nmin_interval = 0\n")  # each refresh asks the station
    with small_disk_serve(tmp_path, shared_state, plugins.root, "--config", str(tmp_path / "host.toml"),
                          running="station") as (srv, disk):

        def balance() -> float:
            status, body = srv.request("GET", "/api/balances?refresh=1")
            assert status == 200 and body[0]["status"] == "success", body
            return body[0]["balance"]

        assert balance() == 1
        disk.fill()
        assert [balance(), balance()] == [2, 3]  # answered, though not recorded
        srv.wait_logged("balance history: cannot record balances in")
        disk.free()
        assert balance() == 4
        status, points = srv.request("GET", "/api/balances/history?provider=station")
        assert status == 200 and [p["balance"] for p in points] == [1, 2, 3, 4], points


def test_what_loading_found_on_a_full_disk_is_saved_once_there_is_room(tmp_path, shared_state):
    """The manifest cache (``manifests.msgpack``: what loading each plugin found) that could not
    be written on a full disk keeps its entries to write: once there is room they are saved (at
    the latest when the host stops), so the next start need not load the plugin again. Before:
    the failed write marked them saved, and they were lost."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    disk = SmallDisk(tmp_path / "disk", "20m", deno=shared_state / "deno")
    with disk.held(), small_disk_serve(tmp_path, shared_state, plugins.root, running="calc", held=disk) as (srv, _):
        time.sleep(SAVE_INTERVAL)  # the cache is written at most this often: the next load writes it
        disk.fill()
        plugins.add("calc.js", CALC + "export function twice(x) { return 2 * x; }\n")
        srv.wait_logged("manifests.msgpack: cannot be written")
        srv.poll(lambda: True if "twice" in srv.request("GET", "/api/plugins/calc")[1]["exports"] else None,
                 "the new version serving")
        disk.free()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=20) == 0
        saved = msgpack.decode(disk.path("state/manifests.msgpack").read_bytes())
        assert "twice" in saved["entries"][str(plugins.root / "calc.js")][2]


def test_the_audit_log_on_a_full_disk_keeps_whole_lines_and_writes_the_waiting_ones_later(tmp_path, shared_state):
    """A spawn line that only partly fits on the full disk (a short write) leaves no cut line in
    audit.jsonl, and the lines that could not be written wait in memory and are written, in
    order, once there is room: the log reads as JSON lines throughout and misses no spawn.
    Before: the cut line stayed, glued to the next one, and the waiting lines were lost."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    with small_disk_serve(tmp_path, shared_state, plugins.root, running="calc") as (srv, disk):
        audit = disk.path("state/audit.jsonl")
        disk.fill()
        room = -audit.stat().st_size % 4096  # what the file's last page still takes
        if room < 120:
            room += 4096  # a page of its own (the filler gives one back)
            disk.path(".filler").open("r+b").truncate(disk.path(".filler").stat().st_size - 4096)
        with audit.open("ab") as f:  # a line of our own, so that the next spawn line fits only in part
            f.write(b'{"ts": 0, "event": "pad", "pad": "' + b"p" * (room - 100 - 37) + b'"}\n')
        pids = []
        for _ in range(3):
            pids.append(srv.request("POST", "/api/plugins/calc/restart")[1]["workers"][0]["pid"])
        srv.wait_logged("audit log")
        disk.free()
        pids.append(srv.request("POST", "/api/plugins/calc/restart")[1]["workers"][0]["pid"])
        entries = read_audit(audit)  # every line whole JSON
        spawned = [e["pid"] for e in entries if e["event"] == "spawn" and e.get("plugin") == "calc"]
        assert spawned[-4:] == pids, (spawned, pids)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """An empty directory with a short path (a socket path has at most 107 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix="fd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_worker_whose_socket_cannot_be_made_is_a_state_error_and_its_plugin_loads_once_there_is_room(
        tmp_path, shared_state, short_dir):
    """The host's private socket directory (under $XDG_RUNTIME_DIR or $TMPDIR) on a file system
    out of inodes: a new plugin's worker cannot bind its socket. That is a StateError naming the
    directory and what to do (no traceback), and the plugin loads by itself once there is room.
    Before: "could not start: OSError: [Errno 28]" with a traceback, in ``error`` for good."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    disk = SmallDisk(short_dir, "2m,nr_inodes=64")
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(state), "--insecure-no-token",
                       wrap=disk.wrap, env={"TMPDIR": str(disk.mount), "XDG_RUNTIME_DIR": ""}) as srv:
        disk.pid = srv.proc.pid
        srv.wait_running("calc")
        [run_dir] = [n for n in os.listdir(disk.path()) if n.startswith("plugin-host-")]
        disk.fill_inodes()
        plugins.add("late.js", "export function mul(a, b) { return a * b; }")
        failed = srv.poll(lambda: _state(srv, "late", "error"), "late failing without a socket")
        assert failed["error"] == (f"cannot make a worker socket in {disk.mount}/{run_dir}: No space left on device "
                                   "(free some space or inodes on its file system, or set XDG_RUNTIME_DIR or TMPDIR "
                                   "to another directory)")
        disk.free()
        srv.poll(lambda: _state(srv, "late", "running"), "late loading once there is room", timeout=15)
        assert srv.request("POST", "/api/plugins/late/call/mul", {"args": [3, 4]}) == (200, {"ok": True, "result": 12})
        assert "Traceback" not in srv.log()


def test_workers_start_and_typescript_loads_with_deno_dir_on_a_full_disk(tmp_path, shared_state):
    """DENO_DIR (Deno's transpile and V8 code caches, localStorage) on the full state disk: a
    changed TypeScript plugin still loads (Deno runs without writing its caches), workers
    restart without crashing, and a plugin's localStorage.setItem fails inside the plugin while
    what it held stays. Held on main; kept as a regression test."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("keeper.js", """
        export function put(k, v) {
          try { localStorage.setItem(k, v); return "stored"; } catch (e) { return `${e.name}: ${e.message}`; }
        }
        export function size(k) { return localStorage.getItem(k)?.length ?? null; }
    """)
    (plugins.root / "typed.ts").write_text(TYPED % 1)
    disk = SmallDisk(tmp_path / "disk", "24m")  # Deno's cache on it, cold
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(disk.state),
                       "--insecure-no-token", wrap=disk.wrap) as srv:
        disk.pid = srv.proc.pid
        srv.wait_running("typed")
        srv.wait_running("keeper")
        assert srv.request("POST", "/api/plugins/keeper/call/put", {"args": ["a", "x" * 1000]})[1]["result"] == "stored"
        disk.fill()
        (plugins.root / "typed.ts").write_text(TYPED % 2)
        srv.poll(lambda: True if srv.request("POST", "/api/plugins/typed/call/version", {"args": []})[1].get("result")
                 == 2 else None, "the changed TypeScript serving")
        assert srv.request("POST", "/api/plugins/typed/restart")[1]["state"] == "running"
        assert srv.request("POST", "/api/plugins/typed/call/version", {"args": []})[1]["result"] == 2
        assert srv.request("POST", "/api/plugins/keeper/call/put", {"args": ["b", "y" * 200_000]})[1]["result"] == (
            "Error: database or disk is full")
        assert srv.request("POST", "/api/plugins/keeper/call/size", {"args": ["a"]})[1]["result"] == 1000
        info = srv.request("GET", "/api/plugins/typed")[1]
        assert info["crashes"] == 0 and info["state"] == "running"
        assert "Traceback" not in srv.log()


@pytest.mark.parametrize("template", ["basic", "usage-script"])
def test_new_on_a_full_disk_leaves_no_half_made_plugin(tmp_path, template):
    """``new NAME`` writing into a full plugin directory: exit 1 with one line naming the file,
    nothing of the plugin left (an empty module would load as a broken plugin, and ``new`` would
    then refuse the name as taken); the same command works once there is room."""
    with full_plugin_dir(tmp_path) as (disk, home, common):
        out = disk.run("new", "hello", "--template", template, *common, cwd=tmp_path)
        assert out.returncode == 1 and out.stderr.startswith(f"error: cannot write {home}/hello"), out.stderr
        assert out.stderr.endswith(": No space left on device (free some space on its file system)\n"), out.stderr
        assert os.listdir(disk.path("plugins")) == []
        disk.free()
        out = disk.run("new", "hello", "--template", template, *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert any(n.startswith("hello") for n in os.listdir(disk.path("plugins")))


def test_a_plugin_whose_workers_cannot_respawn_on_a_full_disk_serves_again_once_there_is_room(
        tmp_path, shared_state, short_dir):
    """A running plugin's worker dies while the socket directory's file system is out of inodes:
    every respawn a call asks for fails (a StateError; the call a 503) until the crash-loop
    breaker puts it in ``error``; once there is room it serves again by itself, no restart.
    Before: it stayed in ``error`` until the operator restarted it."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    disk = SmallDisk(short_dir, "2m,nr_inodes=64")
    (tmp_path / "host.toml").write_text("[pool]\nmin_workers = 0\n")
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(state), "--insecure-no-token",
                       "--config", "host.toml", wrap=disk.wrap,
                       env={"TMPDIR": str(disk.mount), "XDG_RUNTIME_DIR": ""}) as srv:
        disk.pid = srv.proc.pid
        srv.wait_running("calc")
        assert srv.request("POST", "/api/plugins/calc/call/pid", {"args": []})[0] == 200  # a worker, on demand
        worker = srv.request("GET", "/api/plugins/calc")[1]["workers"][0]["pid"]
        os.kill(worker, signal.SIGKILL)
        srv.wait_logged("exited (crash)")  # none replaces it (min_workers = 0) until a call asks
        disk.fill_inodes()
        answers = []
        while (failed := _state(srv, "calc", "error")) is None:  # calls need a worker: each try fails
            answers.append(srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}))
            assert len(answers) < 20, answers
        assert all(status == 503 for status, _ in answers), answers
        assert "crash loop" in failed["error"] and "cannot make a worker socket in" in failed["error"], failed
        disk.free()
        srv.poll(lambda: _state(srv, "calc", "running"), "calc serving once there is room", timeout=15)
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}) == (200, {"ok": True, "result": 3})


def test_a_state_directory_out_of_inodes_is_said_so(tmp_path):
    """helper-89: with no inode left (df -h: 40M free), every write said "No space left on device
    (free some space on its file system)", which df -h contradicts. It says inodes and df -i."""
    import subprocess
    import sys

    from support.full_disk import _unshare_works

    if not _unshare_works():
        pytest.skip("no mount namespaces here (unshare -rm failed)")
    mount = tmp_path / "small"
    mount.mkdir()
    script = (
        "import os, sys\n"
        "from host.security.private_files import os_failure\n"
        "d = sys.argv[1]\n"
        "for i in range(10000):\n"
        "    try:\n"
        "        open(os.path.join(d, f'f{i}'), 'w').close()\n"
        "    except OSError as exc:\n"
        "        print(os_failure(os.path.join(d, 'state.json'), exc, 'write').message)\n"
        "        break\n")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=8m,nr_inodes=16 tmpfs "$1" && '
                          'shift && exec "$@"', "small", str(mount), sys.executable, "-c", script, str(mount)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    assert "No space left on device" in out.stdout and "no free inodes left (df -i)" in out.stdout, out.stdout


def test_the_first_storage_write_on_a_full_disk_is_storage_full(tmp_path, shared_state):
    """helper-100: the first ctx.storage.set of a plugin on a full disk (its database file cannot
    even be made) said StorageError "database or disk is full", where the documented type for a
    full disk is StorageFull; it is now, and the write goes through once there is room."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("storer.js", "export async function put(ctx) {\n"
                             "  try { await ctx.storage.set('k', 'v'); return 'stored'; }\n"
                             "  catch (e) { return e.name + ': ' + e.message; }\n}\n")
    with small_disk_serve(tmp_path, shared_state, plugins.root, running="storer") as (srv, disk):
        disk.fill()
        status, body = srv.request("POST", "/api/plugins/storer/call/put", {"args": []})
        assert status == 200 and body["result"].startswith("StorageFull: storage failed:"), body  # before: StorageError
        assert "full" in body["result"]
        disk.free()
        assert srv.request("POST", "/api/plugins/storer/call/put", {"args": []}) == (200, {"ok": True, "result": "stored"})
