"""Balance history: every successful, freshly answered balance query appended to
``<state_dir>/balances.sqlite3`` (0600), readable for plotting through
``PluginHost.balance_history()`` and ``GET /api/balances/history``."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from ..errors import StateError
from ..security.private_files import PrivateDb
from .alerts import Alert
from .result import BalanceResult

SCHEMA = ("CREATE TABLE IF NOT EXISTS points (provider TEXT NOT NULL, time REAL NOT NULL, balance REAL NOT NULL, "
          "currency TEXT, quota REAL, used_quota REAL, PRIMARY KEY (provider, time))")
ALERTS = ("CREATE TABLE IF NOT EXISTS alerts (provider TEXT NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL, "
          "body TEXT NOT NULL)")


class BalancePoint(msgspec.Struct, rename="camel", omit_defaults=False):
    """One recorded balance: when the plugin answered, and what."""

    provider: str
    time: dt.datetime
    balance: float
    currency: str | None = None
    quota: float | None = None
    used_quota: float | None = None


class Horizon:
    """The time before which history is older than ``keep_days``: the wall clock, but never
    further on than the newest point found at the first prune plus the monotonic time since.
    Before, a clock stepped years ahead (a VM's clock reset, a dead RTC battery, even for one
    query) deleted every point and alert; set back, it prunes less, never more."""

    def __init__(self, keep_days: float) -> None:
        self.keep_days = keep_days
        self._anchor: tuple[float, float] | None = None  # (wall time it stood at, monotonic then)

    def cutoff(self, newest: Callable[[], float | None]) -> float | None:
        """Times before this are pruned; None: none (kept for ever, or nothing older to judge).
        ``newest``: the newest time stored before this write, asked at the first prune only."""
        if self.keep_days <= 0:
            return None
        now, mono = time.time(), time.monotonic()
        if self._anchor is None:
            last = newest()
            if last is None:
                return None
            self._anchor = (min(now, last), mono)
        wall, then = self._anchor
        return min(now, wall + (mono - then)) - self.keep_days * 86400


class History(Protocol):
    """Where balance history lives: ``<state_dir>/balances.sqlite3`` (BalanceHistory), or the
    ``[state] database`` every host shares (history_pg.py). Blocking: called in worker threads.
    Failures are StateError."""

    def append(self, results: list[BalanceResult]) -> int: ...
    def read(self, provider: str | None = None, *, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]: ...
    def record_alerts(self, alerts: list[Alert]) -> None: ...
    def read_alerts(self, provider: str | None = None, *, limit: int = 1000) -> list[Alert]: ...
    def close(self) -> None: ...


def is_recorded(r: BalanceResult) -> bool:
    """A result the history keeps: usable and asked of the station now (not an invalid one)."""
    return r.usable and not r.cached and r.balance is not None


def recorded(results: list[BalanceResult]) -> list[tuple]:
    """The rows ``append`` adds: those of the results the history keeps (``is_recorded``)."""
    return [(r.provider, r.last_updated.timestamp(), r.balance, r.currency, r.quota, r.used_quota)
            for r in results if is_recorded(r)]


MAX_TIME = 253_402_300_800  # 10000-01-01 UTC: past the last time a datetime holds
MAX_UNRECORDED = 10_000  # points kept in memory while the history cannot be written


class Unrecorded:
    """Points the history could not take (a full disk, its database down): kept in memory, the
    newest MAX_UNRECORDED of them (without their rawData), and written with the next points
    once the history takes them again, so that an outage leaves no gap in it."""

    def __init__(self) -> None:
        self._held: collections.deque[BalanceResult] = collections.deque(maxlen=MAX_UNRECORDED)
        self._lock = threading.Lock()

    def append(self, history: History, results: list[BalanceResult]) -> int:
        """``history.append`` of what is held and ``results``; on a StateError ``results`` are
        held too (and it is raised)."""
        fresh = [msgspec.structs.replace(r, raw_data=None) for r in results if recorded([r])]
        with self._lock:
            try:
                added = history.append([*self._held, *fresh])
            except StateError:
                self._held.extend(fresh)
                raise
            self._held.clear()
        return added


def points_query(table: str, mark: str, provider: str | None, since: dt.datetime | None,
                 until: dt.datetime | None) -> tuple[str, list]:
    """``read``'s statement (newest first, its LIMIT the last argument to add) and arguments.
    Only times a datetime holds: a row written by hand with another (NaN, Infinity, 1e300, which
    would sort first) is not a point, and neither fails the read nor takes a place in the LIMIT."""
    where, args = [f"time >= 0 AND time < {MAX_TIME}"], []
    if provider is not None:
        where.append(f"provider = {mark}")
        args.append(provider)
    if since is not None:
        where.append(f"time >= {mark}")
        args.append(since.timestamp())
    if until is not None:
        where.append(f"time <= {mark}")
        args.append(until.timestamp())
    return (f"SELECT provider, time, balance, currency, quota, used_quota FROM {table}"
            + " WHERE " + " AND ".join(where) + f" ORDER BY time DESC LIMIT {mark}"), args


def to_points(rows: Iterable[Sequence]) -> list[BalancePoint]:
    """Rows newest first as points oldest first."""
    return [BalancePoint(p, dt.datetime.fromtimestamp(t, dt.UTC), b, c, q, u)
            for p, t, b, c, q, u in reversed(list(rows))]


def alert_rows(alerts: list[Alert]) -> list[tuple]:
    """The rows ``record_alerts`` adds: (provider, time, kind, the alert as JSON)."""
    return [(a.provider, a.time.timestamp(), a.kind, msgspec.json.encode(a).decode()) for a in alerts]


def to_alerts(bodies: Iterable[str]) -> list[Alert]:
    """Stored alert bodies newest first as alerts oldest first (a row of another version skipped)."""
    out = []
    for body in reversed(list(bodies)):
        try:
            out.append(msgspec.json.decode(body, type=Alert))
        except msgspec.DecodeError:
            continue
    return out


class BalanceHistory:
    """The history store. Blocking (sqlite): call it from a worker thread in async code."""

    def __init__(self, state_dir: Path, *, keep_days: float = 365.0) -> None:
        self.path = Path(state_dir) / "balances.sqlite3"
        self.keep_days = keep_days
        self._points, self._alerts = Horizon(keep_days), Horizon(keep_days)
        # a damaged file is set aside (kept) and a new history started; other failures are
        # StateErrors naming the file
        self._db = PrivateDb(self.path, SCHEMA, damaged_ok=True)
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        db = self._db.conn()
        db.execute("CREATE INDEX IF NOT EXISTS points_by_time ON points (time)")
        db.execute(ALERTS)
        return db

    def append(self, results: list[BalanceResult]) -> int:
        """Record the successful results that were asked of the station now (a cached answer
        was recorded when it was fresh); returns how many were added. Older points than
        ``keep_days`` are dropped."""
        rows = recorded(results)
        with self._lock:
            try:
                db = self._conn()
                db.execute("BEGIN")
                try:
                    cutoff = self._points.cutoff(lambda: db.execute("SELECT max(time) FROM points").fetchone()[0])
                    db.executemany("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?)", rows)
                    added = db.execute("SELECT changes()").fetchone()[0] if rows else 0
                    if cutoff is not None:
                        db.execute("DELETE FROM points WHERE time < ?", (cutoff,))
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise self._db.failure(exc, "record balances in") from None
        return added

    def read(self, provider: str | None = None, *, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]:
        """Points oldest first: of one provider or all, within [since, until], at most the
        ``limit`` newest."""
        sql, args = points_query("points", "?", provider, since, until)
        with self._lock:
            try:
                rows = self._conn().execute(sql, (*args, max(0, limit))).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise self._db.failure(exc, "read balances from") from None
        return to_points(rows)

    def record_alerts(self, alerts: list[Alert]) -> None:
        """Keep ``alerts`` (kept as long as the points)."""
        rows = alert_rows(alerts)
        with self._lock:
            try:
                db = self._conn()
                with db:
                    cutoff = self._alerts.cutoff(lambda: db.execute("SELECT max(time) FROM alerts").fetchone()[0])
                    db.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?)", rows)
                    if cutoff is not None:
                        db.execute("DELETE FROM alerts WHERE time < ?", (cutoff,))
            except (sqlite3.Error, OSError) as exc:
                raise self._db.failure(exc, "record alerts in") from None

    def read_alerts(self, provider: str | None = None, *, limit: int = 1000) -> list[Alert]:
        """Alerts oldest first: of one provider or all, at most the ``limit`` newest."""
        sql = ("SELECT body FROM alerts" + (" WHERE provider = ?" if provider is not None else "")
               + " ORDER BY time DESC, rowid DESC LIMIT ?")
        args = ([provider] if provider is not None else []) + [max(0, limit)]
        with self._lock:
            try:
                rows = self._conn().execute(sql, args).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise self._db.failure(exc, "read alerts from") from None
        return to_alerts(body for (body,) in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
