"""`serve --dev` (issue 19): an edit is served at once with a banner saying so; a broken edit
says why with the code it points at, while the old version keeps serving."""

from __future__ import annotations

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
