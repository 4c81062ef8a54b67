"""`serve --dev` (issue 19): an edit is served at once with a banner saying so; a broken edit
says why with the code it points at, while the old version keeps serving."""

from __future__ import annotations

import time

import pytest
from support.servers import serve_process

pytestmark = pytest.mark.timeout(90)

GOOD = 'export const metadata = {{ id: "calc", name: "c", version: "{v}", apiVersion: "1.0" }};\n' \
       "export function add(a, b) {{ return a + b + {extra}; }}\n"
THROWS = ('export const metadata = { id: "calc", name: "c", version: "1.0.2", apiVersion: "1.0" };\n'
          "const table = null;\n"
          "export const first = table.rows[0];\n")


def test_serve_dev_reloads_on_save_and_points_at_the_broken_line(plugin_dir, tmp_path):
    module = plugin_dir.root / "calc.js"
    module.write_text(GOOD.format(v="1.0.0", extra=0))
    with serve_process(tmp_path, "--dev", "--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "s")) as srv:
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[1]["result"] == 3
        module.write_text(GOOD.format(v="1.0.1", extra=100))
        srv.wait_logged("==> calc 1.0.1 reloaded")
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[1]["result"] == 103
        module.write_text(THROWS)
        srv.wait_logged("==> calc: reload failed, the old version keeps serving")
        srv.wait_logged(f"{module}:3:")
        log = srv.log()
        assert ">    3 | export const first = table.rows[0];" in log and "|" in log.split(">    3 |", 1)[1]
        assert "[plugin:calc" in log  # --dev turns --debug on
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[1]["result"] == 103


@pytest.mark.parametrize("reason", ["\n" * 32768, "/" * 32768])
def test_a_failed_load_s_banner_takes_linear_time_on_any_reason(reason):
    """The banner runs on the event loop for each failed load, on the plugin's own error text (up
    to 64 KiB). Before, looking for Deno's frame (``^\\s*\\d+ \\|``) took 9 s on "\\n" * 32768, and
    looking for a ``/file:line:column`` 8 s on "/" * 32768: the host held all that time."""
    from host.cli_dev import dev_banner
    from host.plugins.lifecycle import PluginEvent

    written: list[str] = []
    t0 = time.process_time()
    dev_banner(PluginEvent("calc", "1.0.1", "error", "running", reason, 0.0, "reload_failed"), written.append)
    assert time.process_time() - t0 < 1  # seconds of CPU: before, 8 to 9
    assert "==> calc: reload failed, the old version keeps serving" in "".join(written)


def test_a_version_waiting_for_approval_has_a_banner_saying_how_to_approve_it():
    """helper-113: under --dev, an edit adding a grant made the new version wait for approval with
    one log line only: the plugin seemed not to change. Its banner says it waits, and how."""
    from host.cli_dev import dev_banner
    from host.plugins.lifecycle import PluginEvent

    written: list[str] = []
    how = "python -m host approve ap --plugins /p --state-dir /s"
    dev_banner(PluginEvent("ap", "1.0.1", "running", "running", f"asks for env: HOME; approve with `{how}`", 0.0,
                           "approval_pending"), written.append)
    said = "".join(written)
    assert "==> ap 1.0.1 waits for approval, the version before keeps serving" in said and how in said


@pytest.mark.parametrize("stack", [
    "TypeError: x is not a function\n    at fn (file://{a}:2:9)\n    at file://{b}:1:2",  # V8, a named frame first
    "Error: boom\n    at file://{a}:2:9\n    at async Promise.all (index 0)",  # a module's top level
    "    at fn (file:///gone/x.ts:1:1)\n    at g (file://{a}:2:9)",  # the first file that can be read
    "error: Uncaught (in promise) Error: boom at {a}:2:9:",  # a bare path, with Deno's trailing ":"
    "SyntaxError: bad at '{a}:2:9' (a 'quoted' place)",
])
def test_the_code_frame_of_a_v8_stack_is_its_first_readable_place(tmp_path, stack):
    """The place a stack points at is found as ``(?:file://)?(/[^\\s()'"]+):(\\d+):(\\d+)`` finds it
    (now one try a token, which was a try at every "/"): the same file, line and column."""
    from host.cli_dev import code_frame

    a, b = tmp_path / "a.ts", tmp_path / "b.js"
    a.write_text("const one = 1;\nexport const two = one.x();\nconst three = 3;\n")
    b.write_text("x\n")
    assert code_frame(stack.format(a=a, b=b)).splitlines() == [
        f"  {a}:2:9",
        "       1 | const one = 1;",
        "  >    2 | export const two = one.x();",
        "         |         ^",
        "       3 | const three = 3;",
    ]
    assert code_frame("at file:///gone/x.ts:1:1 and /etc/nothing:9:9") == ""
