"""CLI polish for plugin authors and operators (issue 19): `--version`, the program name as
invoked, `doctor`, and a missing plugins directory as a usage error rather than an empty list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import free_port

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(sys.executable).parent / "plugin-host"


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_version_and_the_name_it_was_invoked_by(tmp_path):
    module = run(sys.executable, "-m", "host", "--version", cwd=tmp_path)
    assert module.returncode == 0 and module.stdout.startswith("python -m host ")
    script = run(str(SCRIPT), "--version", cwd=tmp_path)
    assert script.returncode == 0 and script.stdout.startswith("plugin-host ")
    assert run(str(SCRIPT), "list", "--help", cwd=tmp_path).stdout.startswith("usage: plugin-host list")


def test_a_missing_plugins_directory_is_a_usage_error(tmp_path):
    out = run(sys.executable, "-m", "host", "list", "--plugins", str(tmp_path / "nope"),
              "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert out.returncode == 2
    assert f"plugins directory {tmp_path / 'nope'} does not exist" in out.stderr
    (tmp_path / "afile").write_text("")  # helper-111: a file was said not to exist
    out = run(sys.executable, "-m", "host", "list", "--plugins", str(tmp_path / "afile"),
              "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert out.returncode == 2 and f"plugins directory {tmp_path / 'afile'} is a file, not a directory" in out.stderr


def test_doctor_checks_what_a_host_needs_and_says_what_to_do(calc, tmp_path, shared_state):
    state = tmp_path / "fresh-state"
    base = [sys.executable, "-m", "host", "doctor", "--json", "--state-dir", str(state)]
    bad = run(*base, "--plugins", str(tmp_path / "missing"), cwd=tmp_path)
    assert bad.returncode == 1
    rows = {r["check"]: r for r in json.loads(bad.stdout)}
    assert rows["deno"]["status"] == "ok" and rows["deno"]["detail"].split()[-1].startswith("2.")
    assert rows["state directory"]["status"] == "ok" and "made at the first start" in rows["state directory"]["detail"]
    assert rows["plugin directories"] == {"check": "plugin directories", "status": "fail",
                                          "detail": f"{tmp_path / 'missing'} (missing) (--plugins, plugins_dir)"}
    assert not state.exists()  # nothing made
    # helper-89: a plugins_dir that is a file was "missing"; a FIFO, a link to nothing or a symlink
    # loop among the plugins passed (list and serve warn about each)
    (tmp_path / "a-file").write_text("")
    file_dir = run(*base, "--plugins", str(tmp_path / "a-file"), cwd=tmp_path)
    rows = {r["check"]: r for r in json.loads(file_dir.stdout)}
    assert rows["plugin directories"]["detail"].startswith(f"{tmp_path / 'a-file'} (not a directory)")
    odd = tmp_path / "odd-plugins"
    odd.mkdir()
    (odd / "calc.js").write_text(calc.root.joinpath("calc.js").read_text())
    os.mkfifo(odd / "fifo.js")
    (odd / "gone.js").symlink_to(tmp_path / "nowhere.js")
    (odd / "loop.js").symlink_to(odd / "loop.js")
    warned = run(*base, "--plugins", str(odd), cwd=tmp_path)
    row = {r["check"]: r for r in json.loads(warned.stdout)}["plugin directories"]
    assert row["status"] == "warn" and row["detail"].startswith(f"1 plugin(s) in {odd}; left out: "), row
    assert all(f"{odd / name}:" in row["detail"] for name in ("fifo.js", "gone.js", "loop.js")), row

    toml = tmp_path / "host.toml"
    toml.write_text(f'[policy]\nstorage = "redis://127.0.0.1:{free_port()}/0"\n'
                    f'[state]\nchannel_storage = "redis://127.0.0.1:{free_port()}/0"\n')
    down = run(*base, "--plugins", str(calc.root), "--config", str(toml), cwd=tmp_path)
    rows = {r["check"]: r for r in json.loads(down.stdout)}
    assert down.returncode == 1 and rows["policy.storage"]["status"] == "fail"
    assert "does not answer" in rows["policy.storage"]["detail"]
    assert rows["state.channel_storage"]["status"] == "fail"

    good = run(sys.executable, "-m", "host", "doctor", "--state-dir", str(state), "--plugins", str(calc.root),
               cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert any(line.startswith("plugin directories") and "1 plugin(s)" in line for line in lines)


def test_a_plugins_own_tests_run_and_a_plugin_without_any_fails(calc, tmp_path):
    common = ["--plugins", str(calc.root), "--state-dir", str(tmp_path / "state")]
    made = run(sys.executable, "-m", "host", "new", "hello", *common, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert f"python -m host test hello --plugins {calc.root}" in (calc.root / "hello" / "mod_test.ts").read_text()
    tested = run(sys.executable, "-m", "host", "test", "hello", *common, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "ok | 2 passed" in tested.stdout
    none = run(sys.executable, "-m", "host", "test", "calc", *common, cwd=tmp_path)
    assert none.returncode == 1 and "calc has no test files" in none.stderr

    # no ID: every plugin that has tests, each on its own; one failing fails the command
    every = run(sys.executable, "-m", "host", "test", *common, cwd=tmp_path)
    assert every.returncode == 0, every.stdout + every.stderr
    assert "== hello (1 test file(s))" in every.stdout
    assert "tested 1 plugin(s), 0 failed; no test files: calc" in every.stdout
    (calc.root / "hello" / "broken_test.ts").write_text('Deno.test("fails", () => { throw new Error("no"); });\n')
    failing = run(sys.executable, "-m", "host", "test", *common, cwd=tmp_path)
    assert failing.returncode == 1 and "tested 1 plugin(s), 1 failed: hello" in failing.stdout, failing.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run(sys.executable, "-m", "host", "test", "--plugins", str(empty), "--state-dir", str(tmp_path / "s2"),
                  cwd=tmp_path)
    assert nothing.returncode == 1 and f"no plugin has test files (*_test.ts, *.test.ts, ...) in {empty}" in nothing.stderr


SHOW = """
export const metadata = { id: "show", name: "Show", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true }, region: { type: "string", default: "eu" } } };
export function tail(config) { return [config.apiKey.slice(-4), config.region]; }
export function echo(config) { return { said: `key=${config.apiKey}` }; }
export function own(ctx) { return { said: `key=${ctx.config.apiKey}` }; }
function deeper() { throw new TypeError("something went wrong"); }
export function boom() { deeper(); }
"""


def test_call_with_the_stored_config_and_the_stack_under_debug(plugin_dir, tmp_path):
    plugin_dir.add("show.js", SHOW)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    env_key = "sk-stored-secret-7731"
    set_ = subprocess.run([sys.executable, "-m", "host", "config", "set", "show", "--from-env", "apiKey=K", *common],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "K": env_key})
    assert set_.returncode == 0, set_.stderr
    out = run(sys.executable, "-m", "host", "call", "show", "tail", "--with-config", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["7731", "eu"] and env_key not in out.stdout + out.stderr
    echoed = run(sys.executable, "-m", "host", "call", "show", "echo", "--with-config", *common, cwd=tmp_path)
    assert echoed.returncode == 0, echoed.stderr  # a plugin that echoes its config: the secret stays masked
    assert env_key not in echoed.stdout + echoed.stderr and json.loads(echoed.stdout)["said"].startswith("key=")
    # its own config echoed without --with-config too (helper-113: printed in plain text; HTTP masked it)
    own = run(sys.executable, "-m", "host", "call", "show", "own", *common, cwd=tmp_path)
    assert own.returncode == 0, own.stderr
    assert env_key not in own.stdout + own.stderr and json.loads(own.stdout) == {"said": "key=********"}

    plain = run(sys.executable, "-m", "host", "call", "show", "boom", *common, cwd=tmp_path)
    debug = run(sys.executable, "-m", "host", "call", "show", "boom", "--debug", *common, cwd=tmp_path)
    assert plain.returncode == debug.returncode == 1
    where = f"{plugin_dir.root / 'show.js'}:7:"  # deeper's throw
    assert f"at {where}" in plain.stderr and "at deeper" not in plain.stderr
    frames = [line.strip() for line in debug.stderr.splitlines() if line.strip().startswith("at ")]
    assert frames[0].startswith("at " + where)  # the summary line
    assert any(f.startswith("at deeper") for f in frames) and any(f.startswith("at boom") for f in frames)


def test_config_set_reads_values_from_a_file(plugin_dir, tmp_path):
    plugin_dir.add("show.js", SHOW)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    (tmp_path / "values.toml").write_text('apiKey = "sk-from-file-4242"\nregion = "us"\n')
    out = run(sys.executable, "-m", "host", "config", "set", "show", "--file", "values.toml", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"apiKey": "********", "region": "us"}
    called = run(sys.executable, "-m", "host", "call", "show", "tail", "--with-config", *common, cwd=tmp_path)
    assert json.loads(called.stdout) == ["4242", "us"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = run(sys.executable, "-m", "host", "config", "set", "show", "--file", "bad.json", *common, cwd=tmp_path)
    assert bad.returncode == 2 and "must hold an object of config values, found list" in bad.stderr
    endless = run(sys.executable, "-m", "host", "config", "set", "show", "--file", "/dev/zero", *common, cwd=tmp_path)
    assert endless.returncode == 2 and "/dev/zero: more than 4194304 bytes" in endless.stderr


def test_doctor_reads_the_secret_key_as_the_host_does(tmp_path):
    """doctor said "secret key ok" for a key file of garbage, one readable by others, and a
    valid key that does not open the stored secrets, each of which the host refuses to start
    with (helper-71's finding): it now loads the key as the host does and opens the secrets."""
    from host import HostConfig, SyncPluginHost

    state = tmp_path / "state"
    plugins = tmp_path / "vault-plugins"
    plugins.mkdir()
    (plugins / "vault.js").write_text("""
export const metadata = { id: "vault", name: "Vault", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true } } };
export function ok() { return 1; }""")
    with SyncPluginHost(HostConfig(plugins_dir=str(plugins), state_dir=str(state))) as h:
        h.set_config("vault", {"apiKey": "sk-doctor-1"})
    key = state / "secret.key"
    assert key.exists()
    good = key.read_bytes()

    def doctor(**env: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "host", "doctor", "--json", "--state-dir", str(state),
                               "--plugins", str(plugins)], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path, env={**os.environ, **env})
        return {r["check"]: r for r in json.loads(done.stdout)}["secret key"]

    assert doctor()["status"] == "ok" and "opens the stored secrets" in doctor()["detail"]
    from cryptography.fernet import Fernet
    for text, mode, why in ((b"garbage\n", 0o600, "secret key file"), (good, 0o644, "chmod 600"),
                            (Fernet.generate_key() + b"\n", 0o600, "does not match")):
        key.write_bytes(text)
        key.chmod(mode)
        row = doctor()
        assert row["status"] == "fail" and why in row["detail"], row
    key.write_bytes(good)
    key.chmod(0o600)
    row = doctor(PLUGIN_HOST_SECRET_KEY="notakey")
    assert row["status"] == "fail" and "PLUGIN_HOST_SECRET_KEY" in row["detail"], row


def test_a_bad_log_setting_names_the_variable_or_flag_it_came_from(tmp_path):
    """PLUGIN_HOST_LOG_LEVEL=verbose (set in a unit file long ago) said 'log level must be one of
    ... and format one of ...', naming neither the variable nor its value (helper-71's finding)."""
    base = [sys.executable, "-m", "host", "--plugins", str(tmp_path), "--state-dir", str(tmp_path / "s"), "list"]
    for name, value, said in (("PLUGIN_HOST_LOG_LEVEL", "verbose", "debug, info, warning, error"),
                              ("PLUGIN_HOST_LOG_FORMAT", "xml", "text, json")):
        done = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={**os.environ, name: value})
        assert done.returncode == 2
        assert done.stderr.strip() == f"error: ${name} is {value!r}: it must be one of {said}", done.stderr


def test_a_state_files_lock_that_cannot_be_opened_is_named_not_the_file_it_guards(tmp_path):
    """config.json.lock made a directory: 'config set' said 'cannot write .../config.json: Is a
    directory', sending the operator to the wrong file (helper-71's finding)."""
    plugins = tmp_path / "p"
    plugins.mkdir()
    (plugins / "calc.js").write_text('export const metadata = { id: "calc", name: "c", version: "1.0.0", '
                                     'apiVersion: "1.0", configSchema: { n: { type: "number" } } };\n'
                                     "export function n(ctx) { return ctx.config.n; }")
    state = tmp_path / "s"
    (state / "config.json.lock").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "host", "--plugins", str(plugins), "--state-dir", str(state),
                           "config", "set", "calc", "n=1"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot take the lock {state / 'config.json.lock'}: Is a directory" in done.stderr, done.stderr


def test_a_one_off_call_starts_the_workers_of_the_plugin_it_calls_and_no_other(plugin_dir, state_dir, tmp_path):
    """`call c1 add` in a directory of many plugins started a worker for each of them (100
    plugins: 100 Deno processes for one answer, 3.4 s) and printed every other plugin's load
    warnings; a one-off command starts workers only as its calls need them, and says only
    what concerns the plugin it calls."""
    for i in range(1, 6):
        plugin_dir.add(f"c{i}.js", f'export const metadata = {{ id: "c{i}", name: "C", version: "1.0.0", '
                                   f'apiVersion: "1.0" }};\nexport function add(a, b) {{ return a + b + {i}; }}\n')
    plugin_dir.add("risky.js", 'export const metadata = { id: "risky", name: "R", version: "1.0.0", apiVersion: "1.0",'
                               ' permissions: { run: true } };\nexport function f() { return 1; }\n')
    argv = [sys.executable, "-m", "host", "call", "c1", "add", "1", "2", "--plugins", str(plugin_dir.root),
            "--state-dir", str(state_dir)]
    first = run(*argv, cwd=tmp_path)  # the plugins' metadata read once (the manifest cache)
    assert (first.returncode, first.stdout.strip()) == (0, "4"), first.stderr
    audit = state_dir / "audit.jsonl"
    audit.unlink()
    again = run(*argv, cwd=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (0, "4"), again.stderr
    spawned = [json.loads(line)["plugin"] for line in audit.read_text().splitlines() if '"spawn"' in line]
    assert spawned == ["c1"]
    assert "risky" not in again.stderr and "risky" not in first.stderr
    # the plugin it calls still has its say
    own = run(*argv[:4], "risky", "f", *argv[8:], cwd=tmp_path)
    assert (own.returncode, own.stdout.strip()) == (0, "1"), own.stderr
    assert "risky@1.0.0: risky permissions: run" in own.stderr and "c1" not in own.stderr


def test_closed_stdout_or_stderr_neither_stops_a_command_nor_serve(calc, tmp_path):
    """helper-100: with stderr closed (`2>&-`) every command exited 1 saying nothing (a None
    sys.stderr at import); with stdout closed `serve` ran, then aborted at SIGTERM (rc 134, a
    uvloop assertion: a socket had taken fd 1)."""
    import shlex
    import signal
    import time

    python = shlex.quote(sys.executable)
    version = subprocess.run(f"exec {python} -m host --version 2>&-", shell=True, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert (version.returncode, version.stdout.split()[:2]) == (0, ["python", "-m"])
    err = tmp_path / "serve.err"
    port = free_port()
    with err.open("w") as sink:
        proc = subprocess.Popen(f"exec {python} -m host serve --plugins {shlex.quote(str(calc.root))} --state-dir "
                                f"{shlex.quote(str(tmp_path / 'state'))} --port {port} >&-",
                                shell=True, stderr=sink, cwd=tmp_path, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while "serving on" not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "serving on" in err.read_text(), err.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, err.read_text()  # before: 134
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert "Assertion" not in err.read_text()


def test_a_log_nobody_reads_never_stops_serve(plugin_dir, tmp_path):
    """helper-100: with serve's stderr a pipe whose reader stopped (a stuck journald, a paused
    `| tee`), after ~64 KiB of log the event loop blocked writing it: calls, /healthz/live and
    SIGTERM's drain all waited for ever. Lines now wait in a bounded queue, written by a thread."""
    import json as json_
    import signal
    import time
    import urllib.request

    plugin_dir.add("noisy.js", 'export const metadata = { id: "noisy", name: "N", version: "1.0.0", apiVersion: "1.0" };\n'
                   'export function spam(n) { for (let i = 0; i < n; i++) console.log("spam " + i + " " + "x".repeat(100));'
                   ' return n; }\n', auto_metadata=False)
    port = free_port()
    unread, log = os.pipe()  # nobody reads `unread`: 64 KiB fill the pipe
    proc = subprocess.Popen([sys.executable, "-m", "host", "--debug", "serve", "--plugins", str(plugin_dir.root),
                             "--state-dir", str(tmp_path / "state"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, cwd=tmp_path)
    os.close(log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until it serves (its log says nothing: nobody reads it)
            try:
                urllib.request.urlopen(f"{base}/healthz/ready", timeout=1).read()
                break
            except OSError:
                proc.poll()
                assert proc.returncode is None
                time.sleep(0.1)
        call = urllib.request.Request(f"{base}/api/plugins/noisy/call/spam", method="POST",
                                      data=json_.dumps({"args": [3000]}).encode())  # ~350 KB of log
        assert json_.loads(urllib.request.urlopen(call, timeout=20).read())["result"] == 3000
        assert json_.loads(urllib.request.urlopen(f"{base}/healthz/live", timeout=5).read()) == {"live": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # before: blocked in write(2) until the reader went away
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(unread)


def test_a_plugins_tests_see_the_globals_the_worker_defines(tmp_path):
    """helper-106: a plugin throwing the documented globals PluginError and ErrorTypes failed its
    own `python -m host test` with "TS2304 Cannot find name 'PluginError'" (and, past the type
    check, they were not defined): they are typed and defined as in the host."""
    plugins = tmp_path / "plugins"
    common = ["--plugins", str(plugins), "--state-dir", str(tmp_path / "state")]
    assert run(sys.executable, "-m", "host", "new", "typed", *common, cwd=tmp_path).returncode == 0
    mod = plugins / "typed" / "mod.ts"
    mod.write_text(mod.read_text() + 'export function refuse(): never { throw new PluginError(ErrorTypes.AUTH_ERROR, "no key"); }\n')
    (plugins / "typed" / "refuse_test.ts").write_text(
        'import { refuse } from "./mod.ts";\n'
        'Deno.test("typed refusal", () => {\n'
        '  try { refuse(); } catch (e) { if (e instanceof PluginError && e.errorType === ErrorTypes.AUTH_ERROR) return; throw e; }\n'
        '});\n')
    tested = run(sys.executable, "-m", "host", "test", "typed", *common, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr  # before: TS2304, exit 1
    assert "ok | 3 passed" in tested.stdout


def test_a_call_waits_for_its_own_plugin_not_for_another_ones_hung_load(plugin_dir, tmp_path):
    """helper-113: `call calc add 1 2` in a directory holding a plugin whose top level never
    settles answered after that plugin's 10 s handshake timeout, saying nothing meanwhile. A call
    loads its own plugin first and the others in the background (cancelled at exit)."""
    plugin_dir.add("calc.js", "export function add(a, b) { return a + b; }\n")
    plugin_dir.add("stuck.js", "await new Promise(() => {});\nexport function f() { return 1; }\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    out = subprocess.run([sys.executable, "-m", "host", "call", "calc", "add", "1", "2", *common], capture_output=True,
                         text=True, timeout=7, cwd=tmp_path)  # before: 10.5 s
    assert out.returncode == 0 and json.loads(out.stdout) == 3, out.stderr


TYPED = """
import type { Context, PluginMetadata } from "@plugin-host/kit";

export const metadata: PluginMetadata = { id: "typed", name: "Typed", version: "1.0.0", apiVersion: "1.0" };
export function hello(name: string, ctx: Context): string { return `hi ${name} (${ctx.pluginId})`; }
"""


def test_the_types_an_author_imports_come_from_one_specifier_wherever_the_plugin_lives(plugin_dir, tmp_path):
    """helper-113: the README's `import type ... from "../worker_runtime/plugin.d.ts"` holds only
    inside this repository: a plugin elsewhere loaded (types are erased) and `host test` failed
    with TS2307. They come from "@plugin-host/kit", which the checker and the runtime both map."""
    plugin_dir.add("typed/mod.ts", TYPED)
    (plugin_dir.root / "typed" / "mod_test.ts").write_text(
        'import { hello } from "./mod.ts";\n'
        'import type { Context } from "@plugin-host/kit";\n'
        'Deno.test("hello", () => { if (hello("x", { pluginId: "typed" } as Context) !== "hi x (typed)") '
        'throw new Error("no"); });\n')
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    tested = run(sys.executable, "-m", "host", "test", "typed", *common, cwd=tmp_path)
    assert tested.returncode == 0 and "ok | 1 passed" in tested.stdout, tested.stdout + tested.stderr
    called = run(sys.executable, "-m", "host", "call", "typed", "hello", '"x"', *common, cwd=tmp_path)
    assert called.returncode == 0 and json.loads(called.stdout) == "hi x (typed)", called.stderr


def test_an_answer_a_non_utf8_stdout_cannot_hold_is_printed_escaped(plugin_dir, tmp_path):
    """helper-111: with stdout in latin-1 (PYTHONIOENCODING, a non-UTF-8 locale), an answer holding
    "✓" ended in a traceback from the CLI's own write, exit 1. Also: execute, like call, waits for
    no plugin's load (a hung one held it 10 s)."""
    plugin_dir.add("stuck.js", "await new Promise(() => {});\nexport function f() { return 1; }\n")
    (tmp_path / "uni.js").write_text('export default () => "ok \\u2713";\n')
    out = subprocess.run([sys.executable, "-m", "host", "execute", "uni.js", "--plugins", str(plugin_dir.root),
                          "--state-dir", str(tmp_path / "state")], capture_output=True, timeout=7, cwd=tmp_path,
                         env={**os.environ, "PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "0"})
    assert out.returncode == 0 and b"Traceback" not in out.stderr, out.stderr
    assert json.loads(out.stdout.decode("latin-1"))["result"] == "ok \u2713"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_while_serve_still_imports_ends_it_quietly_with_exit_0(calc, tmp_path, sig):
    """helper-111: in serve's first ~0.4 s (its imports, before it listens for signals) SIGTERM
    and SIGHUP killed it (143, 129, nothing logged) and SIGINT printed a KeyboardInterrupt
    traceback; the README says a stop signal during the start ends it at once with exit 0."""
    import signal as _signal
    import time as _time

    proc = subprocess.Popen([sys.executable, "-m", "host", "serve", "--port", str(free_port()), "--plugins",
                             str(calc.root), "--state-dir", str(tmp_path / "state")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _time.sleep(0.1)  # within its imports (~0.4 s at least)
    proc.send_signal(getattr(_signal, sig))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err)


def test_a_bare_word_as_a_call_argument_is_told_how_to_quote_it(calc, tmp_path):
    """helper-113: `call greeter greet world` said "JSON is malformed: invalid character (byte 0)"
    with no hint that a string is written in JSON's quotes."""
    out = run(sys.executable, "-m", "host", "call", "calc", "add", "world", "2", "--plugins", str(calc.root),
              "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert out.returncode == 2 and "argument 1 ('world') must be a JSON value" in out.stderr
    assert "a string is quoted as JSON, in the shell's quotes: '\"world\"'" in out.stderr, out.stderr


def test_call_with_config_on_a_cold_state_directory(plugin_dir, tmp_path):
    """helper-116: call loads in the background, and --with-config read the config of a plugin
    still loading: 'plugin is loading', exit 1, on a state directory that had never read it."""
    plugin_dir.add("show.js", SHOW)
    out = run(sys.executable, "-m", "host", "call", "show", "tail", "--with-config", "--plugins", str(plugin_dir.root),
              "--state-dir", str(tmp_path / "cold"), cwd=tmp_path)
    assert out.returncode == 1 and "apiKey" not in out.stdout  # no key set: its own error, not "loading"
    assert "loading" not in out.stderr, out.stderr


def test_a_one_off_command_keeps_a_signal_its_parent_ignores(calc, tmp_path):
    """helper-116: the quiet handlers installed while the CLI imports replaced an inherited
    SIG_IGN, and put Python's defaults back after: `nohup python -m host call ...` died when the
    terminal hung up."""
    import signal as _signal

    plugin_dir = calc.root
    calc.add("slow.js", "export async function wait() { await new Promise((r) => setTimeout(r, 1500)); return 'done'; }\n")
    proc = subprocess.Popen([sys.executable, "-m", "host", "call", "slow", "wait", "--plugins", str(plugin_dir),
                             "--state-dir", str(tmp_path / "state")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: _signal.signal(_signal.SIGHUP, _signal.SIG_IGN))  # as nohup does
    import time as _time

    for _ in range(2):  # while it imports, then while it calls
        _time.sleep(0.5)
        proc.send_signal(_signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and json.loads(out) == "done", (proc.returncode, err)
