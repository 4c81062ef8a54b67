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
