"""A plugin's errors say where they were thrown wherever they are shown: the plugin's log (the
dashboard's log view) at error level, and the host's own log (what serve prints)."""

from __future__ import annotations

import logging

import pytest
from support.processes import wait_for

from host import PluginError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LATE = """
export function boom() {
  throw new TypeError("kaboom");
}
export function later() {
  setTimeout(() => { throw new Error("thrown late"); }, 0);
  return "returned";
}
"""


async def test_failed_calls_and_uncaught_errors_are_logged_at_error_with_their_place(make_host, plugin_dir, caplog):
    path = plugin_dir.add("late.js", LATE)
    caplog.set_level(logging.INFO)
    async with make_host() as host:
        with pytest.raises(PluginError) as failed:
            await host.call("late", "boom")
        assert failed.value.where == f"{path}:4:9"
        assert await host.call("late", "later") == "returned"
        await wait_for(lambda: any("thrown late" in e.message for e in host.logs("late", level="error")))
        errors = [e.message for e in host.logs("late", level="error")]
        assert any(m.startswith("boom failed: late.boom: kaboom") and m.endswith(f"(at {path}:4:9)") for m in errors)
        assert any("thrown late" in m and f"(at {path}:7:" in m for m in errors), errors
    served = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "host.plugin"]
    assert any("boom failed" in m and f"{path}:4:9" in m for m in served)
    assert any("thrown late" in m and f"{path}:7:" in m for m in served)
