"""Tools for plugin authors through real subprocesses: arity refused at the command line and over
HTTP, examples in every subcommand's help, shell completion, ``--inspect-brk``."""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest
from support.processes import deno_children, free_port
from support.servers import run_cli, serve_process


def common(plugin_dir, state) -> list[str]:
    return ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]


@pytest.mark.timeout(90)
def test_call_with_missing_arguments_is_a_usage_error_naming_the_function(calc, shared_state, tmp_path):
    out = run_cli("call", "calc", "add", *common(calc, shared_state), cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""  # not "[object Object]" with exit 0
    assert "error: calc.add: takes 2 arguments (a, b), 0 given" in out.stderr
    assert f"metadata.functions.add.params in {calc.root / 'calc.js'}" in out.stderr
    assert run_cli("call", "calc", "add", "1", "2", "3", *common(calc, shared_state), cwd=tmp_path).returncode == 2
    with serve_process(tmp_path, *common(calc, shared_state)) as srv:
        status, body = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1]})
        assert status == 400 and body["error"]["type"] == "InvalidArguments"
        assert "takes 2 arguments (a, b), 1 given" in body["error"]["message"]
        status, body = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})
        assert (status, body["result"]) == (200, 3)
    assert json.loads(run_cli("call", "calc", "add", "1", "2", *common(calc, shared_state), cwd=tmp_path).stdout) == 3


def command_paths() -> list[str]:
    from host.cli import build_parser
    from host.cli_help import commands

    return [" ".join(path) for path, _ in commands(build_parser())]


@pytest.mark.timeout(120)
def test_every_subcommand_help_ends_with_real_examples(tmp_path, monkeypatch):
    from host.cli import build_parser
    from host.cli_help import commands

    monkeypatch.setattr("sys.argv", ["-c"])  # as `python -m host` names itself
    helps = {" ".join(path): sub.format_help() for path, sub in commands(build_parser())}
    assert {"serve", "call", "config set", "balances add", "completion"} <= set(helps)
    out = run_cli("config", "set", "--help", cwd=tmp_path)  # the parser the command line gets: the same
    assert out.returncode == 0 and out.stdout.split("\nexamples:\n", 1)[1] == \
        helps["config set"].split("\nexamples:\n", 1)[1], out.stderr
    for path, text in helps.items():
        examples = text.split("\nexamples:\n", 1)
        assert len(examples) == 2, f"`{path} --help` has no examples section"
        lines = examples[1].strip().splitlines()
        assert 1 <= len(lines) <= 3 and all(line.strip().startswith(f"python -m host {path} ") or
                                            line.strip() == f"python -m host {path}" for line in lines), (path, lines)


def complete(script: str, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` with ``script`` loaded (compgen through the
    completion function, as a <TAB> would)."""
    line = " ".join(shlex.quote(w) for w in words)
    probe = (f"source {shlex.quote(str(script))}\nCOMP_WORDS=({line})\nCOMP_CWORD={len(words) - 1}\n"
             "_plugin_host\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.timeout(60)
def test_bash_completion_completes_commands_subcommands_options_and_choices(tmp_path):
    out = run_cli("completion", "bash", cwd=tmp_path)
    assert out.returncode == 0 and "complete -o default -F _plugin_host plugin-host" in out.stdout
    script = tmp_path / "plugin-host.bash"
    script.write_text(out.stdout)
    assert complete(script, "python", "-m", "host", "con") == ["config"]
    assert complete(script, "plugin-host", "con") == ["config"]
    assert complete(script, "plugin-host", "--plugins", "dir", "config", "s") == ["set"]
    assert sorted(complete(script, "plugin-host", "new", "x", "--template", "")) == [
        "balance", "basic", "event", "usage-script"]
    assert complete(script, "plugin-host", "call", "--with") == ["--with-config"]
    assert "--dev" in complete(script, "plugin-host", "serve", "--")
    assert complete(script, "python", "-m", "other", "con") == []  # not ours: left to the default
    for shell, marker in (("zsh", "bashcompinit"), ("fish", "complete -c plugin-host -n __fish_use_subcommand -a call")):
        other = run_cli("completion", shell, cwd=tmp_path)
        assert other.returncode == 0 and marker in other.stdout
    assert run_cli("completion", "tcsh", cwd=tmp_path).returncode == 2


@pytest.mark.timeout(90)
def test_inspect_brk_waits_for_the_debugger_on_loopback_and_stops_cleanly(calc, shared_state, tmp_path):
    port = free_port()
    with serve_process(tmp_path, *common(calc, shared_state), "--inspect-brk", "calc", "--inspect-port", str(port),
                       ready=False) as srv:
        srv.wait_logged("calc's worker waits for the debugger")
        assert f"ws://127.0.0.1:{port}/" in srv.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=5) as r:
            assert "Deno" in json.loads(r.read())["Browser"]  # the worker's inspector, on 127.0.0.1
        args = [a for pid in deno_children(srv.proc.pid) for a in Path(f"/proc/{pid}/cmdline").read_text().split("\0")]
        assert f"--inspect-brk=127.0.0.1:{port}" in args
        status, health = srv.request("GET", "/healthz")
        assert status == 503 and health["plugins"] == {"calc": "loaded"}  # paused: no call deadline runs
    # serve_process's SIGTERM ended the wait: exit 0, no worker left behind
    assert srv.proc.returncode == 0 and "stopped while calc waited for the debugger" in srv.log()
    assert "crashed" not in srv.log()  # the worker stopped on purpose


@pytest.mark.timeout(90)
def test_a_rate_limited_call_answers_429_not_502(calc, shared_state, tmp_path):
    conf = tmp_path / "host.toml"
    conf.write_text('[plugins.calc.rate_limit]\nlimit = "1/minute"\nstrategy = "reject"\n')
    with serve_process(tmp_path, *common(calc, shared_state), "--config", str(conf)) as srv:
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[0] == 200
        status, body = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})
        assert status == 429 and body["error"]["type"] == "RateLimited"
