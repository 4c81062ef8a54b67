"""Balance alerts: a station whose balance falls below its threshold (``low_balance``), comes
back above it, starts failing or recovers. Each change is said once (not at every query while
it lasts), recorded in the balance history's database with its time (``alerts`` table), and
sent where ``[balances.alerts]`` says: a webhook (the alert POSTed as JSON) and/or a command
(the alert as JSON on its stdin). Delivery never fails a query: a webhook or command that
fails, hangs or is missing is logged (throttled) and the alert stays recorded.

Only fresh answers judge a station (a cached one says nothing new); a station that is not
configured yet is neither low nor failing. What was said last is read back from the database at
start, so a restart repeats nothing."""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from collections.abc import Callable
from typing import Annotated, Literal

import aiohttp
import anyio
import msgspec
from anyio.abc import TaskGroup
from msgspec import Meta

from ..logs import Throttle
from .result import BalanceResult

log = logging.getLogger("host.balances")
_warn = Throttle(log)

Kind = Literal["low_balance", "balance_recovered", "failing", "recovered"]
MAX_ALERT_MESSAGE = 500


class Alert(msgspec.Struct, rename="camel", omit_defaults=False):
    provider: str
    provider_name: str
    kind: Kind
    time: dt.datetime
    balance: float | None = None
    currency: str | None = None
    threshold: float | None = None
    message: str = ""


class AlertsConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[balances.alerts]``: where alerts go, and the threshold of stations that set none
    (``[plugins.<id>] low_balance``)."""

    webhook: str | None = None        # an http(s) URL the alert is POSTed to as JSON
    command: list[str] | None = None  # argv of a command given the alert as JSON on stdin
    timeout: Annotated[float, Meta(gt=0, le=600)] = 10.0            # seconds a webhook or command may take
    low_balance: float | None = None  # the default threshold; None: no low-balance alerts


class AlertState:
    """What was last said of each provider: failing or not, its balance low or not."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.low: set[str] = set()

    def replay(self, alerts: list[Alert]) -> None:
        """Take up where the alerts recorded before (oldest first) left off."""
        for a in alerts:
            self._apply(a.provider, a.kind)

    def _apply(self, provider: str, kind: Kind) -> None:
        {"failing": self.failing.add, "recovered": self.failing.discard, "low_balance": self.low.add,
         "balance_recovered": self.low.discard}[kind](provider)

    def judge(self, results: list[BalanceResult], threshold: Callable[[str], float | None],
              now: dt.datetime) -> list[Alert]:
        """The alerts ``results`` raise: each change once."""
        out: list[Alert] = []
        for r in results:
            if r.cached or r.status == "not_configured":
                continue
            limit = threshold(r.provider)
            said: list[tuple[Kind, str]] = []
            if not r.usable:  # an error, or an answer the station calls invalid
                if r.provider not in self.failing:
                    said.append(("failing", f"{r.error_type or ('invalid' if r.invalid else r.status)}: "
                                            f"{r.error_message or ''}"))
            else:
                if r.provider in self.failing:
                    said.append(("recovered", "answers again"))
                if r.balance is not None and not r.unlimited:
                    low = limit is not None and r.balance < limit
                    if low and r.provider not in self.low:
                        said.append(("low_balance", f"balance {r.balance:g} below {limit:g}"))
                    elif not low and r.provider in self.low:
                        said.append(("balance_recovered", "balance " + (
                            f"{r.balance:g} back at or above {limit:g}" if limit is not None else "no longer watched")))
            for kind, message in said:
                self._apply(r.provider, kind)
                out.append(Alert(r.provider, r.provider_name, kind, now, r.balance, r.currency, limit,
                                 message[:MAX_ALERT_MESSAGE]))
        return out


async def deliver(alert: Alert, config: AlertsConfig) -> None:
    """Send ``alert`` to the webhook and the command, if any; failures are logged, never raised."""
    try:  # runs in the host's task group: nothing may escape it
        body = msgspec.json.encode(alert)
        if config.webhook is not None:
            await _post(config.webhook, body, config.timeout)
        if config.command:
            await _run(config.command, body, config.timeout)
    except Exception as exc:
        log.error("balance alerts could not be delivered", exc_info=exc)


MAX_UNDELIVERED = 1000  # alerts waiting behind a slow webhook or command; more drop the oldest


class Deliveries:
    """Alerts delivered one at a time in the order they were said, in a task of the host's:
    each query's alerts went in a task of their own, so a webhook or command could hear
    "recovered" before the "failing" it ends. At most MAX_UNDELIVERED wait behind a slow one."""

    def __init__(self, config: AlertsConfig) -> None:
        self._config = config
        self._waiting: deque[Alert] = deque()
        self._running = False
        self._idle: anyio.Event | None = None  # set once the last waiting alert is delivered

    def add(self, alerts: list[Alert], tg: TaskGroup) -> None:
        if not alerts or (self._config.webhook is None and not self._config.command):
            return
        for alert in alerts:
            if len(self._waiting) >= MAX_UNDELIVERED:
                dropped = self._waiting.popleft()
                _warn.warning("alerts-queue", "balance alerts: %d wait behind a slow webhook or command; the "
                              "oldest (%s %s) is not delivered", MAX_UNDELIVERED, dropped.provider, dropped.kind)
            self._waiting.append(alert)
        if not self._running:
            self._running, self._idle = True, anyio.Event()
            tg.start_soon(self._run)

    async def _run(self) -> None:
        try:
            while self._waiting:
                await deliver(self._waiting.popleft(), self._config)
        finally:
            self._running = False
            if self._idle is not None:
                self._idle.set()

    async def flush(self, timeout: float) -> None:
        """At close: wait (at most ``timeout`` seconds) for the alerts still waiting; past it
        they are not delivered, and said."""
        with anyio.move_on_after(timeout):
            if self._running and self._idle is not None:
                await self._idle.wait()
        if self._waiting:
            log.warning("balance alerts: %d not delivered within [balances] history_flush (%gs) at close",
                        len(self._waiting), timeout)


async def _post(url: str, body: bytes, timeout: float) -> None:
    try:
        with anyio.fail_after(timeout):
            async with aiohttp.ClientSession() as session, session.post(
                    url, data=body, headers={"Content-Type": "application/json"}) as resp:
                if resp.status >= 300:
                    _warn.warning(url, "balance alert webhook %s answered %d", url, resp.status)
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
        _warn.warning(url, "balance alert webhook %s failed: %s: %s", url, type(exc).__name__, exc)


async def _run(command: list[str], body: bytes, timeout: float) -> None:
    key = " ".join(command)
    try:
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, input=body, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if done.stderr else []
            _warn.warning(key, "balance alert command %s exited %d%s", command[0], done.returncode,
                          f": {tail[0][:200]}" if tail else "")
    except (TimeoutError, OSError) as exc:
        _warn.warning(key, "balance alert command %s failed: %s: %s", command[0], type(exc).__name__, exc)


__all__ = ["Alert", "AlertState", "AlertsConfig", "Deliveries", "deliver"]
