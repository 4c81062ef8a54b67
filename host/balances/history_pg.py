"""Balance history in PostgreSQL (``[state] database = "postgresql://..."``): the points and the
alerts of every host sharing the database in two tables, so the history any host reads is the
one history all of them append to (a point is its provider and time: the same answer recorded
twice counts once). Blocking, as the sqlite history is: its callers run it in worker threads.
Failures are StateError naming the database with its password hidden."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..pg_session import STATE_TIMEOUT, PgSession
from .alerts import Alert
from .history import (
    BalanceHistory,
    BalancePoint,
    History,
    Horizon,
    alert_rows,
    points_query,
    recorded,
    to_alerts,
    to_points,
)
from .result import BalanceResult

if TYPE_CHECKING:
    from ..config import HostConfig

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS balance_points (provider TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, "
    "balance DOUBLE PRECISION NOT NULL, currency TEXT, quota DOUBLE PRECISION, used_quota DOUBLE PRECISION, "
    "PRIMARY KEY (provider, time))",
    "CREATE INDEX IF NOT EXISTS balance_points_by_time ON balance_points (time)",
    "CREATE TABLE IF NOT EXISTS balance_alerts (id BIGSERIAL PRIMARY KEY, provider TEXT NOT NULL, "
    "time DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL)",
)


def open_history(config: HostConfig) -> History:
    """The balance history ``[state]`` names: tables in its ``database``, else the sqlite file."""
    if config.state.database:
        return PostgresHistory(config.state.database, keep_days=config.balances.history_days)
    return BalanceHistory(config.state_path, keep_days=config.balances.history_days)


class PostgresHistory:
    """``balance_points`` and ``balance_alerts``: as BalanceHistory's tables, for every host."""

    def __init__(self, url: str, *, keep_days: float = 365.0, timeout: float = STATE_TIMEOUT) -> None:
        self.db = PgSession(url, timeout, SCHEMA, what="balance history ([state] database)")
        self.keep_days = keep_days
        self._horizons = {"balance_points": Horizon(keep_days), "balance_alerts": Horizon(keep_days)}

    def _cutoff(self, conn: Any, table: str) -> float | None:
        """Before which ``table`` is pruned (history.Horizon: a clock stepped ahead drops nothing
        more); asked before this write's rows, which carry the clock as it reads now."""
        return self._horizons[table].cutoff(
            lambda: self.db.rows(conn, f"SELECT max(time) AS t FROM {table}", [])[0]["t"])

    def _prune(self, conn: Any, table: str, cutoff: float | None) -> None:
        if cutoff is not None:
            self.db.backend.run(conn, f"DELETE FROM {table} WHERE time < %s", [cutoff], 0)

    def append(self, results: list[BalanceResult]) -> int:
        rows = recorded(results)

        def write(conn: Any) -> int:
            def body() -> int:
                cutoff = self._cutoff(conn, "balance_points")
                added = sum(self.db.backend.run(conn, "INSERT INTO balance_points VALUES (%s, %s, %s, %s, %s, %s) "
                                                      "ON CONFLICT DO NOTHING", list(row), 0)[1] for row in rows)
                self._prune(conn, "balance_points", cutoff)
                return added
            return self.db.tx(conn, body)
        return self.db.run_blocking(write)

    def read(self, provider: str | None = None, *, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]:
        sql, args = points_query("balance_points", "%s", provider, since, until)
        rows = self.db.run_blocking(lambda c: self.db.rows(c, sql, [*args, max(0, limit)]))
        return to_points(tuple(r.values()) for r in rows)

    def record_alerts(self, alerts: list[Alert]) -> None:
        rows = alert_rows(alerts)

        def write(conn: Any) -> None:
            def body() -> None:
                cutoff = self._cutoff(conn, "balance_alerts")
                for row in rows:
                    self.db.backend.run(conn, "INSERT INTO balance_alerts (provider, time, kind, body) "
                                              "VALUES (%s, %s, %s, %s)", list(row), 0)
                self._prune(conn, "balance_alerts", cutoff)
            self.db.tx(conn, body)
        self.db.run_blocking(write)

    def read_alerts(self, provider: str | None = None, *, limit: int = 1000) -> list[Alert]:
        sql = ("SELECT body FROM balance_alerts" + (" WHERE provider = %s" if provider is not None else "")
               + " ORDER BY time DESC, id DESC LIMIT %s")
        args = ([provider] if provider is not None else []) + [max(0, limit)]
        rows = self.db.run_blocking(lambda c: self.db.rows(c, sql, args))
        return to_alerts(r["body"] for r in rows)

    def close(self) -> None:
        self.db.close()


__all__ = ["PostgresHistory", "open_history"]
