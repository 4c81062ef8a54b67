"""A plugin cannot rotate the audit log's history away through the egress proxy: each request it
makes is an ``egress`` line, and a request the proxy refuses costs it nothing (no traffic: a
granted name that resolves to a private address is refused at once). Those lines are budgeted per
plugin (security/refusals.py ``record_egress``), and the next line let through says how many were
left out."""

from __future__ import annotations

import time

import anyio
import pytest

from host import PoolConfig
from host.config import SecurityConfig
from host.security.audit import read_audit
from host.security.refusals import EGRESS_BURST, EGRESS_RATE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

FLOOD = 2400

NOISY = """
export const metadata = { id: "noisy", name: "noisy", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["[::7f00:1]:%(port)d"] } };
export async function flood(n) {
  let refused = 0;
  const one = async () => {
    try { await fetch("http://[::7f00:1]:%(port)d/x"); } catch (e) { if (/egress proxy refused/.test(e.message)) refused++; }
  };
  for (let i = 0; i < n; i += 32) await Promise.all(Array.from({ length: Math.min(32, n - i) }, one));
  return refused;
}
"""


async def test_refused_fetches_in_a_loop_cannot_flood_the_audit_log(plugin_dir, make_host, local_server, tmp_path):
    plugin_dir.add("noisy.js", NOISY % {"port": local_server.port})
    audit = tmp_path / "audit.jsonl"
    security = SecurityConfig(egress_proxy=True, audit_log=str(audit))
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), security=security) as h:
        started = time.monotonic()
        assert await h.call("noisy", "flood", FLOOD, timeout=90) == FLOOD  # each one refused by the proxy
        took = time.monotonic() - started
        lines = [e for e in read_audit(audit) if e["event"] == "egress"]
        await anyio.sleep(2 / EGRESS_RATE)  # the budget refills: the next line is written, and tells
        assert await h.call("noisy", "flood", 1, timeout=30) == 1
        info = h.plugin("noisy")
    assert local_server.connections == 0
    assert len(lines) <= EGRESS_BURST + EGRESS_RATE * (took + 1)  # before: one line per request, 2,400
    every = [e for e in read_audit(audit) if e["event"] == "egress"]
    assert every[-1]["suppressed"] > 0 and every[-1]["suppressed_bytes_out"] == 0  # the last one tells
    assert len(every) + sum(e.get("suppressed", 0) for e in every) == FLOOD + 1  # every request accounted for
    assert (info.egress_requests, info.egress_refused) == (FLOOD + 1, FLOOD + 1)  # the counters see them all
    spawns = [e for e in read_audit(audit) if e["event"] == "spawn"]
    assert spawns and spawns[0]["plugin"] == "noisy"  # the history is still there
