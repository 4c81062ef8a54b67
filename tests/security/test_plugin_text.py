"""Text a plugin controls (its manifest, its console) cannot disguise or forge what the operator
reads: manifest strings are bounded and free of bidirectional and control characters, and its
console lines are escaped in text logs (issue 14, item 13)."""

from __future__ import annotations

import pytest
from support.plugins import PluginDir
from support.servers import run_cli

pytestmark = [pytest.mark.timeout(60), pytest.mark.one_backend]


def manifest(**fields: str) -> str:
    meta = {"id": '"liar"', "name": '"Liar"', "version": '"1.0.0"', "apiVersion": '"1.0"', **fields}
    body = ", ".join(f"{k}: {v}" for k, v in meta.items())
    return f"export const metadata = {{ {body} }};\nexport function hi() {{ return 'hi'; }}\n"


@pytest.mark.anyio
@pytest.mark.parametrize(("fields", "named"), [
    ({"name": '"x".repeat(21000)'}, "metadata.name: 21000 characters, more than 100"),
    ({"description": '"d".repeat(5000)'}, "metadata.description: 5000 characters, more than 2000"),
    ({"name": '"Safe\\u202Etxt.exe"'}, "metadata.name: contains the bidirectional control character U+202E"),
    ({"author": '"a\\u2066b"'}, "metadata.author: contains the bidirectional control character U+2066"),
    ({"name": '"two\\nlines"'}, "metadata.name: contains the control character U+000A"),
    ({"configSchema": '{ ["k\\u202E"]: { type: "string" } }'}, "metadata.configSchema.k\u202e: contains the bidirectional"),
    ({"configSchema": '{ k: { type: "string", title: "t".repeat(600) } }'}, "metadata.configSchema.k.title: 600 characters"),
    ({"configSchema": 'Object.fromEntries(Array.from({ length: 101 }, (_, i) => ["f" + i, { type: "string" }]))'},
     "metadata.configSchema: 101 fields, more than 100"),
])
async def test_manifest_text_that_could_disguise_or_swamp_the_dashboard_is_refused(
        plugin_dir: PluginDir, make_host, fields, named):
    plugin_dir.add("liar.js", manifest(**fields), auto_metadata=False)
    plugin_dir.add("fine.js", "export function hi() { return 'hi'; }\n")
    async with make_host() as h:
        info = h.plugin("liar")
        assert info.state == "error" and named in info.error
        assert await h.call("fine", "hi") == "hi"


def test_a_plugins_console_cannot_forge_log_lines_or_send_terminal_escapes(plugin_dir: PluginDir, tmp_path):
    plugin_dir.add("forger.js", r"""
        export function forge() {
          console.log("innocent\n12:00:00.000 WARNING [plugin:other#1] forged by forger\x1b[2J\x1b[31mred\u202Eevil");
          return "ok";
        }
    """)
    out = run_cli("--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state"), "--debug",
                  "call", "forger", "forge", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert not any(line.startswith("12:00:00.000 WARNING [plugin:other#1]") for line in lines)
    shown = next(line for line in lines if "innocent" in line)
    assert "innocent\\n12:00:00.000 WARNING" in shown and "\\x1b[2J" in shown and "\\u202e" in shown
    assert "\x1b" not in out.stderr and "\u202e" not in out.stderr


# OSC 52 writes the operator's clipboard; ESC c resets the terminal; U+202E turns text around.
HOSTILE = "\\x1b]52;c;Y3VybCBldmlsLnRlc3QgfCBzaA==\\x07\\x1bc\\u202Eevil\\x9b2J"


def test_what_the_cli_prints_of_a_plugins_own_text_never_drives_the_terminal(plugin_dir: PluginDir, tmp_path):
    """An export's name (a string export name is any text), an error's message, a returned
    string: each reaches the operator's terminal through the CLI, on stdout (tables, JSON) or
    stderr (errors). Before: printed as they were, so a plugin could write the clipboard (OSC 52),
    reset the screen, or reverse a line the operator reads."""
    plugin_dir.add("shady.js", f"""
        function hi() {{ return "hi"; }}
        export {{ hi as "{HOSTILE}" }};
        export function boom() {{ throw new Error("{HOSTILE}"); }}
        export function text() {{ return "{HOSTILE}"; }}
    """)
    common = ("--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state"))
    runs = {
        "list": run_cli(*common, "list", cwd=tmp_path),
        "info": run_cli(*common, "info", "shady", cwd=tmp_path),
        "boom": run_cli(*common, "call", "shady", "boom", cwd=tmp_path),
        "text": run_cli(*common, "call", "shady", "text", cwd=tmp_path),
    }
    assert runs["boom"].returncode == 1 and "error:" in runs["boom"].stderr
    for name, out in runs.items():
        for stream in (out.stdout, out.stderr):
            assert not any(c in stream for c in ("\x1b", "\x07", "\x9b", "\u202e")), (name, stream)
    assert "\\x1b]52;c;" in runs["list"].stdout  # the name is shown in the table, written out
    assert "\\x1b]52;c;" in runs["boom"].stderr
    for name in ("info", "text"):  # JSON: escapes, so the same value for a program reading it
        assert "\\u001b]52;c;" in runs[name].stdout and "\\u202e" in runs[name].stdout, runs[name].stdout


def test_log_lines_carry_no_terminal_controls_in_exceptions_or_json():
    """An exception's text in a text log, and a message in a JSON log, are a plugin's words too.
    Before (review): the exception's text went out raw; JSON left DEL, C1 and bidirectional
    controls as they were (json escapes only C0)."""
    import json
    import logging
    import sys

    from host.logs import JsonFormatter, TextFormatter

    try:
        raise RuntimeError("plugin said \x1b]52;c;Y3Vy\x07 \x1b[2J")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("host.plugin", logging.WARNING, __file__, 1, "said %s", ("\x9b2J\u202eevil",), exc_info)
    text = TextFormatter(colour=False).format(record)
    as_json = JsonFormatter().format(record)
    for line in (text, as_json):
        assert not any(c in line for c in ("\x1b", "\x07", "\x9b", "\u202e")), line
    assert "RuntimeError: plugin said \\x1b]52;c;" in text
    assert json.loads(as_json)["message"] == "said \x9b2J\u202eevil"  # the same value
