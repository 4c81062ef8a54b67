"""Every refusal and every resource-limit kill, in the audit log.

Two events, each with the plugin id, a ``kind`` and ``what`` was refused (never a config value:
Deno's refusal text names a host, a path or a variable, and the audit log's redaction runs over
every line anyway):

- ``refusal``: ``kind`` is ``permission`` (the sandbox refused an operation and the plugin let
  the ``NotCapable`` error escape its call: a refusal the plugin catches itself is invisible to
  the host), ``limit`` (a cap the worker runtime applied: a result over ``max_result_bytes``, a
  Web Worker over ``max_web_workers``, a log flood past ``max_log_entries``/``max_log_bytes``) or
  ``approval`` (a version asking for grants beyond its approved ones, held until approved) or
  ``egress`` (the egress proxy refused a request: beside its ``egress`` line, security/egress.py;
  a response over its cap is a ``limit``).
- ``limit_kill``: a worker killed by a limit the host enforces, ``reason`` as in
  ``WorkerCrashed.reason`` and ``what`` naming the setting: a call past its deadline, memory,
  CPU time, heartbeats, a cancelled call that did not stop, a protocol violation (a frame over
  ``max_frame``, say), too many host calls, an unread write buffer, a lifecycle hook past
  ``hook_timeout``, a worker that did not exit within ``shutdown_grace``.

A plugin can fail calls as fast as it likes: each plugin gets at most PER_SECOND lines of each
event a second; the next line says how many were left out (``suppressed``).

The egress proxy's line per request (``egress``, security/egress.py) is budgeted too, per plugin
(unidentified connections share one budget): EGRESS_BURST lines at once, then EGRESS_RATE a
second; and so is the line per call of an operator's execute tool (``execute.tool``), per tool. A plugin can make requests the proxy refuses at once, without any traffic (a granted
name that resolves to a private address): 3,200 of them wrote 3,200 lines in 5 s, so the audit
log's rotation dropped every older line (spawns, approvals, executions) within minutes. The next
line let through says how many were left out and their bytes (``suppressed``,
``suppressed_bytes_out``, ``suppressed_bytes_in``); the plugin's egress counters count them all."""

from __future__ import annotations

import time
import weakref
from typing import Any

from .audit import AuditLog

# Kill reasons (worker.py) -> the limit, as the operator would change it.
LIMIT_KILLS = {
    "timeout": "a call passed its deadline (limits.call_timeout, or the call's own timeout)",
    "memory": "ran out of memory (limits.heap_mb, limits.data_limit_mb)",
    "cpu": "exceeded its CPU time (limits.cpu_seconds)",
    "heartbeat": "stopped answering heartbeats (limits.heartbeat_timeout)",
    "cancel": "a cancelled call did not stop in time (limits.cancel_grace)",
    "hook": "onStop/onConfigChange passed limits.hook_timeout",
    "shutdown-timeout": "did not exit when asked (limits.shutdown_grace)",
    "resource limit: host calls": "too many host calls in flight (limits.max_host_calls)",
    "resource limit: write buffer": "left replies unread (limits.max_write_buffer_bytes)",
}
# Error names a worker answers a call with when one of its runtime's caps refused something.
LIMIT_ERRORS = ("ResourceLimitExceeded", "PayloadTooLarge")
MAX_WHAT = 500


# Lines a plugin can make the host write as fast as it can fail calls: at most this many a
# second per plugin and event, so that a plugin cannot rotate the audit log's history away.
# The next line let through says how many were left out (``suppressed``).
PER_SECOND = 20


class _Budget:
    __slots__ = ("count", "since", "suppressed")

    def __init__(self) -> None:
        self.since, self.count, self.suppressed = 0.0, 0, 0


_budgets: weakref.WeakKeyDictionary[AuditLog, dict[tuple[str, str], _Budget]] = weakref.WeakKeyDictionary()


def _admit(audit: AuditLog, plugin: str, event: str) -> int | None:
    """None: leave this line out; else the number of lines left out before it."""
    budgets = _budgets.setdefault(audit, {})
    b = budgets.get((plugin, event))
    if b is None:
        if len(budgets) > 10_000:  # plugin ids are few; execute identities come and go
            budgets.clear()
        b = budgets[(plugin, event)] = _Budget()
    now = time.monotonic()
    if now - b.since >= 1.0:
        b.since, b.count = now, 0
    if b.count >= PER_SECOND:
        b.suppressed += 1
        return None
    b.count += 1
    left_out, b.suppressed = b.suppressed, 0
    return left_out


# Lines a plugin or an execution makes the host write once per request, as fast as it can make
# them (egress: one per request through the proxy; execute.tool: one per operator tool call): a
# burst (a plugin fetching a few hundred pages at once is audited line by line), then a
# sustained rate, per plugin (or tool).
EGRESS_BURST = 1000
EGRESS_RATE = PER_SECOND


class _Bucket:
    __slots__ = ("at", "sums", "suppressed", "tokens")

    def __init__(self) -> None:
        self.tokens, self.at = float(EGRESS_BURST), time.monotonic()
        self.suppressed = 0
        self.sums: dict[str, int] = {}


_buckets: weakref.WeakKeyDictionary[AuditLog, dict[tuple[str, str | None], _Bucket]] = weakref.WeakKeyDictionary()


def record_budgeted(audit: AuditLog, event: str, who: str | None, summed: tuple[str, ...] = (),
                    **fields: Any) -> None:
    """One ``event`` line of ``who`` (a plugin, a tool), within its budget: EGRESS_BURST at
    once, then EGRESS_RATE a second. A line left out is counted (and its ``summed`` fields
    added up); the next one written says so: ``suppressed``, ``suppressed_<field>``."""
    buckets = _buckets.setdefault(audit, {})
    b = buckets.get((event, who))
    if b is None:
        if len(buckets) > 10_000:
            buckets.clear()
        b = buckets[(event, who)] = _Bucket()
    now = time.monotonic()
    b.tokens, b.at = min(float(EGRESS_BURST), b.tokens + (now - b.at) * EGRESS_RATE), now
    if b.tokens < 1:
        b.suppressed += 1
        for name in summed:
            b.sums[name] = b.sums.get(name, 0) + (fields.get(name) or 0)
        return
    b.tokens -= 1
    if b.suppressed:
        fields["suppressed"] = b.suppressed
        fields.update((f"suppressed_{name}", n) for name, n in b.sums.items())
        b.suppressed, b.sums = 0, {}
    audit.record(event, **fields)


def record_egress(audit: AuditLog, plugin: str | None, **fields: Any) -> None:
    """The egress proxy's line for one request or tunnel, within its plugin's budget."""
    record_budgeted(audit, "egress", plugin, ("bytes_out", "bytes_in"), plugin=plugin, **fields)


def record_tool(audit: AuditLog, event: str, **fields: Any) -> None:
    """The line of one call of an operator's execute tool (``execute.tool``), within the tool's
    budget: an execution calling a trivial tool in a loop wrote 25,780 lines in 5 s."""
    record_budgeted(audit, event, fields.get("tool"), **fields)


def _record(audit: AuditLog, event: str, plugin: str, **fields: Any) -> None:
    left_out = _admit(audit, plugin, event)
    if left_out is None:
        return
    if left_out:
        fields["suppressed"] = left_out
    audit.record(event, plugin=plugin, **fields)


def _short(text: str) -> str:
    return text if len(text) <= MAX_WHAT else text[:MAX_WHAT] + "..."


def record_refusal(audit: AuditLog, plugin: str, kind: str, what: str, **fields: Any) -> None:
    _record(audit, "refusal", plugin, kind=kind, what=_short(what), **fields)


def record_error(audit: AuditLog, plugin: str, function: str, name: str, message: str) -> None:
    """A call's error, if it is a sandbox refusal or a runtime cap: recorded as a refusal."""
    if name == "NotCapable":
        record_refusal(audit, plugin, "permission", message, function=function)
    elif name in LIMIT_ERRORS:
        record_refusal(audit, plugin, "limit", f"{name}: {message}", function=function)


def record_kill(audit: AuditLog, plugin: str, pid: int | None, reason: str | None, detail: str = "") -> None:
    """A worker's end, if a limit killed it (``detail``: the protocol violation, for those)."""
    if reason is None:
        return
    what = LIMIT_KILLS.get(reason) or (f"protocol violation: {detail}" if reason == "protocol" else None)
    if what is not None:
        _record(audit, "limit_kill", plugin, pid=pid, reason=reason, what=_short(what))


__all__ = ["EGRESS_BURST", "EGRESS_RATE", "LIMIT_KILLS", "record_budgeted", "record_egress", "record_error",
           "record_kill", "record_refusal", "record_tool"]
