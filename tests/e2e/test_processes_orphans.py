"""``serve --processes N`` whose parent is SIGKILLed while a serve process cannot act on the
SIGTERM its death sends (stopped by SIGSTOP, or its event loop wedged): before, that process,
its reaper and the listening socket it holds lived on for ever (the port could not be bound
again); now a guard the parent started wakes it to drain and SIGKILLs it past the drain's time."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest
from support.plugins import fresh_state
from support.processes import descendants, process_gone
from support.servers import serve_process

from host.multiproc import STOP_MARGIN

pytestmark = pytest.mark.timeout(120)

WHO = """
export const metadata = { id: "who", name: "Who", version: "1.0.0", apiVersion: "1.0" };
export function who() { return Deno.ppid; }
"""


def test_a_stopped_serve_process_does_not_outlive_its_sigkilled_parent(tmp_path, shared_state, plugin_dir):
    plugin_dir.add("who.js", WHO)
    (tmp_path / "host.toml").write_text("[server]\nshutdown_grace = 1.0\n")
    everything: list[int] = []
    try:
        with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                           str(fresh_state(tmp_path, shared_state)), "--processes", "2",
                           "--config", "host.toml") as srv:
            srv.wait_running("who")
            port = int(srv.base.rsplit(":", 1)[1])
            children = [int(pid) for pid in re.findall(r"serve process \d+ started \(pid (\d+)\)", srv.log())]
            assert len(children) == 2
            everything = descendants(lambda name: True, srv.proc.pid)
            os.kill(children[1], signal.SIGSTOP)
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(5)
            deadline = time.monotonic() + 1.0 + STOP_MARGIN + 10
            while time.monotonic() < deadline and not all(process_gone(pid) for pid in everything):
                time.sleep(0.1)
            left = [pid for pid in everything if not process_gone(pid)]
            assert not left, f"alive after the parent was SIGKILLed: {left}"
            with socket.socket() as s:  # nobody holds the port any more
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
    finally:
        for pid in everything:
            if not process_gone(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
