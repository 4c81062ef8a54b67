"""Balance history: successful, freshly asked balances go to sqlite in the state directory and
come back through the Python API, the sync facade and ``GET /api/balances/history``."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from support.servers import served

from host import BalancePoint, BalancesConfig, CacheConfig, InvalidArguments, PluginSettings, PoolConfig

pytestmark = pytest.mark.anyio

STATION = """
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"] }};
let n = 0;
export async function queryBalance() {{ n++; {body} }}
"""


EVERY_QUERY = BalancesConfig(min_interval=0)  # each query asks the stations (the cache still answers)


@pytest.fixture
def stations(plugin_dir):
    plugin_dir.add("alpha.js", STATION.format(pid="alpha", body='return { balance: 100 - n, currency: "USD", quota: 100, usedQuota: n };'))
    plugin_dir.add("beta.js", STATION.format(pid="beta", body='return { balance: 5 * n, currency: "CNY" };'))
    plugin_dir.add("broken.js", STATION.format(pid="broken", body='throw new PluginError("AUTH_ERROR", "bad key");'))
    return plugin_dir


async def test_successful_fresh_queries_are_recorded_and_read_back(stations, make_host, tmp_path):
    state = tmp_path / "state"
    cached = {"alpha": PluginSettings(cache=CacheConfig(enabled=True, ttl=600))}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), state_dir=str(state), plugins=cached,
                         balances=EVERY_QUERY) as h:
        t0 = dt.datetime.now(dt.UTC)
        await h.query_balances(refresh=True)
        await h.query_balances(refresh=True)
        again = await h.query_balances()  # alpha from the cache: not a new point
        assert {b.provider: b.cached for b in again if b.status == "success"} == {"alpha": True, "beta": False}
        stats = {pid: (h.plugin(pid).latency_p50_ms, h.plugin(pid).error_rate) for pid in ("beta", "broken")}
        points = await h.balance_history()
        alpha = await h.balance_history("alpha")
        latest = await h.balance_history(limit=1)
        future = await h.balance_history(since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert stats["beta"][0] is not None and stats["beta"][1] == 0.0  # balance queries count as calls
    assert stats["broken"][1] == 1.0
    assert all(isinstance(p, BalancePoint) for p in points)
    assert [(p.provider, p.balance) for p in points if p.provider == "beta"] == [("beta", 5.0), ("beta", 10.0), ("beta", 15.0)]
    assert [(p.balance, p.quota, p.used_quota, p.currency) for p in alpha] == [(99.0, 100.0, 1.0, "USD"), (98.0, 100.0, 2.0, "USD")]
    assert not any(p.provider == "broken" for p in points)  # only successes
    assert all(t0 - dt.timedelta(seconds=1) <= p.time <= dt.datetime.now(dt.UTC) for p in points)
    assert [p.time for p in points] == sorted(p.time for p in points)
    assert len(latest) == 1 and latest[0].time == max(p.time for p in points)
    assert future == []
    db = state / "balances.sqlite3"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    # a new host on the same state directory reads the same history
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), state_dir=str(state)) as h:
        assert len(await h.balance_history()) == len(points)
        # what HTTP refuses with a 400, Python refuses too: a negative limit read everything
        for bad in ({"limit": -5}, {"limit": 2.5}, {"limit": True}, {"since": "yesterday"}):
            with pytest.raises(InvalidArguments):
                await h.balance_history(**bad)
        with pytest.raises(InvalidArguments):
            await h.balance_alerts(limit=-1)
        assert len(await h.balance_history(limit=1)) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_history_over_http_for_plotting(stations, make_host, tmp_path, anyio_backend):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), state_dir=str(tmp_path / "s"),
                         balances=EVERY_QUERY) as h, served(h) as (_, session):
        for _ in range(3):
            async with session.get("/api/balances?refresh=1") as r:
                assert r.status == 200
        async with session.get("/api/balances/history?provider=beta") as r:
            body = await r.json()
        assert r.status == 200
        assert [(p["provider"], p["balance"], p["currency"]) for p in body] == [("beta", 5.0, "CNY"), ("beta", 10.0, "CNY"), ("beta", 15.0, "CNY")]
        assert all(dt.datetime.fromisoformat(p["time"]) for p in body) and set(body[0]) == {
            "provider", "time", "balance", "currency", "quota", "usedQuota"}
        since = body[1]["time"]
        async with session.get("/api/balances/history", params={"since": since, "limit": "10"}) as r:
            later = await r.json()
        assert {p["provider"] for p in later} == {"alpha", "beta"} and all(p["time"] >= since for p in later)
        async with session.get("/api/balances/history?since=yesterday") as r:
            assert r.status == 400 and (await r.json())["error"]["type"] == "BadRequest"


def test_sync_facade_reads_the_history(stations, shared_state, tmp_path):
    from host import HostConfig, SyncPluginHost

    cfg = HostConfig(plugins_dir=str(stations.root), state_dir=str(tmp_path / "st"), pool=PoolConfig(min_workers=1))
    with SyncPluginHost(cfg) as h:
        h.query_balances(refresh=True)
        assert sorted(p.provider for p in h.balance_history()) == ["alpha", "beta"]


def test_points_older_than_history_days_are_dropped_at_the_next_write(tmp_path):
    from host.balances.history import BalanceHistory
    from host.balances.result import BalanceResult

    now = dt.datetime.now(dt.UTC)

    def point(age: dt.timedelta, balance: float) -> BalanceResult:
        return BalanceResult("relay", "Relay", "success", now - age, balance=balance, currency="USD")

    history = BalanceHistory(tmp_path, keep_days=30)
    try:  # as a host started again finds them: one point past 30 days, one within
        history.append([point(dt.timedelta(days=40), 1), point(dt.timedelta(hours=1), 2)])
        history.append([point(dt.timedelta(0), 3)])
        assert [p.balance for p in history.read("relay")] == [2, 3]
    finally:
        history.close()


class _Raw(dict):
    """A result's rawData whose lifetime a weak reference can follow."""


@pytest.mark.timeout(30)
def test_answers_waiting_for_the_history_keep_no_raw_data(tmp_path):
    # Before: each queued batch held its results whole, rawData (up to 8 MiB each) included,
    # though the history never stores it: 256 queued queries could pin gigabytes.
    import gc
    import weakref

    from host.balances.history import BalanceHistory
    from host.balances.history_writer import HistoryWriter
    from host.balances.result import BalanceResult

    history = BalanceHistory(tmp_path)
    try:
        writer = HistoryWriter(history)
        raw = _Raw(blob="x" * (1 << 20))
        alive = weakref.ref(raw)
        result = BalanceResult(provider="alpha", provider_name="Alpha", status="success",
                               last_updated=dt.datetime.now(dt.UTC), balance=1.0, currency="USD", raw_data=raw)
        writer.add([result], [], None)  # no task group (a host closing): it waits for flush
        del raw, result
        gc.collect()
        assert alive() is None, "a queued answer still holds its rawData"
    finally:
        history.close()
