"""A host whose state directory fills up: ``serve`` runs on a real tmpfs of a few MiB (a mount
namespace of its own, tests/support/full_disk.py) that the test fills to the last bytes and
frees again. What was stored stays whole, what fails is a typed error naming the file, and the
host recovers by itself once there is room."""

from __future__ import annotations

import pytest
from support.full_disk import SmallDisk
from support.plugins import CALC, PluginDir
from support.servers import ServeProcess, serve_process

pytestmark = pytest.mark.timeout(90)


def _state(srv: ServeProcess, pid: str, want: str) -> dict | None:
    status, body = srv.request("GET", f"/api/plugins/{pid}")
    return body if status == 200 and body["state"] == want else None


def test_a_plugin_that_could_not_be_recorded_on_a_full_disk_loads_once_there_is_room(tmp_path, shared_state):
    """A plugin first seen while the disk is full cannot have its grants recorded (approvals.json):
    it waits in ``error`` saying so, and loads by itself once space is freed, without a restart.
    Before: it stayed in ``error`` until its file changed or the host restarted."""
    plugins = PluginDir(tmp_path / "plugins")
    plugins.add("calc.js", CALC)
    disk = SmallDisk(tmp_path / "disk", "20m", deno=shared_state / "deno")
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(disk.state),
                       "--insecure-no-token", wrap=disk.wrap) as srv:
        disk.pid = srv.proc.pid
        srv.wait_running("calc")
        disk.fill()
        plugins.add("late.js", "export function mul(a, b) { return a * b; }")
        failed = srv.poll(lambda: _state(srv, "late", "error"), "late failing on the full disk")
        assert "approvals.json: No space left on device (free some space" in failed["error"]
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})[1]["result"] == 3
        disk.free()
        srv.poll(lambda: _state(srv, "late", "running"), "late loading once there is room", timeout=15)
        assert srv.request("POST", "/api/plugins/late/call/mul", {"args": [3, 4]}) == (200, {"ok": True, "result": 12})
        assert "Traceback" not in srv.log()
