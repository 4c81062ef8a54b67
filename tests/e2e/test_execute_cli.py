"""``python -m host execute FILE.ts``: a .ts file runs as TypeScript, audited as the CLI's."""

from __future__ import annotations

import json

import pytest
from support.plugins import fresh_state
from support.servers import run_cli

from host.security.audit import read_audit


@pytest.mark.timeout(60)
def test_execute_runs_a_typescript_file_and_refuses_one_that_does_not_parse(shared_state, tmp_path):
    (tmp_path / "area.ts").write_text("type Box = { w: number; h: number };\n"
                                      "export default (b: Box = { w: 2, h: 3 }): number => b.w * b.h;\n")
    (tmp_path / "broken.ts").write_text("const a: number = 1;\nconst b: = 2;\n")
    state = fresh_state(tmp_path, shared_state)  # its own audit log, the session's compiled runtime
    args = ["--state-dir", str(state), "--plugins", str(tmp_path / "none")]
    out = run_cli("execute", "area.ts", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == 6  # no --input: the default parameter applies
    out = run_cli("execute", "area.ts", "--input", '{"w": 4, "h": 5}', *args, cwd=tmp_path)
    assert json.loads(out.stdout)["result"] == 20
    broken = run_cli("execute", "broken.ts", *args, cwd=tmp_path)
    assert broken.returncode == 1 and "TypeScript syntax error at <execute>:2:10" in broken.stderr
    assert "Traceback" not in broken.stderr
    lines = [x for x in read_audit(state / "audit.jsonl") if x["event"] == "execute"]
    assert [(x["by"], x["language"], x["outcome"]) for x in lines] == [
        ("cli", "typescript", "ok"), ("cli", "typescript", "ok"), ("cli", "typescript", "invalid")]


@pytest.mark.timeout(60)
def test_code_on_stdin_is_read_as_utf8_and_bytes_that_are_not_are_named_as_the_code(shared_state, tmp_path):
    """`execute -` read stdin in the locale's encoding with surrogate escapes: bytes that are not
    UTF-8 became "execute.default: arguments cannot be sent to the plugin: 'utf-8' codec can't
    encode characters ... surrogates not allowed", blaming arguments nobody gave. The code is read
    as UTF-8 (a BOM or not, as a file is), and bytes that are not are a usage error about the code."""
    import os
    import subprocess
    import sys

    state = fresh_state(tmp_path, shared_state)
    args = [sys.executable, "-m", "host", "execute", "-", "--state-dir", str(state), "--plugins", str(tmp_path / "none")]
    ok = subprocess.run(args, input="\ufeffexport default () => '\u4f59\u989d';\n".encode(), capture_output=True,
                        timeout=60, cwd=tmp_path, env={**os.environ, "LANG": "C", "LC_ALL": "C"})
    assert ok.returncode == 0 and json.loads(ok.stdout)["result"] == "\u4f59\u989d", ok.stderr
    bad = subprocess.run(args, input=b"export default () => '\xff\xfe';\n", capture_output=True, timeout=60, cwd=tmp_path)
    said = bad.stderr.decode()
    assert bad.returncode == 2 and "UTF-8" in said and "arguments" not in said, said
