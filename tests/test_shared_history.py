"""Balance history in PostgreSQL (``[state] database``): two hosts with their own state
directories and their own workers append to one history, and either reads all of it; alerts
likewise; nothing goes to the sqlite file; a database that is gone is a StateError without the
password. On the real postgres of tests/support/postgres.py."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from support.plugins import fresh_state
from support.processes import free_port

from host import BalancesConfig, PoolConfig, StateError
from host.balances.alerts import Alert, AlertsConfig
from host.balances.history_pg import PostgresHistory
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

STATION = """
export const metadata = { id: "alpha", name: "alpha", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"] };
let n = 0;
export async function queryBalance() { n++; return { balance: 100 - n, currency: "USD", quota: 100, usedQuota: n }; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


async def test_two_hosts_append_to_one_history(make_host, plugin_dir, tmp_path, shared_state, postgres_url):
    plugin_dir.add("alpha.js", STATION)
    state = StateConfig(database=postgres_url)
    a_dir, b_dir = (fresh_state(tmp_path / n, shared_state) for n in "ab")
    every = BalancesConfig(min_interval=0)  # each refresh asks the station
    async with make_host(state_dir=str(a_dir), state=state, pool=ONE, balances=every) as a, \
            make_host(state_dir=str(b_dir), state=state, pool=ONE, balances=every) as b:
        await a.query_balances(refresh=True)
        await b.query_balances(refresh=True)
        await b.balance_history()  # written in the background: a read on b waits for b's write
        await a.query_balances(refresh=True)
        seen_a, seen_b = await a.balance_history("alpha"), await b.balance_history()
        latest = await b.balance_history(limit=1)
    assert seen_a == seen_b
    assert [(p.balance, p.used_quota) for p in seen_a] == [(99.0, 1.0), (99.0, 1.0), (98.0, 2.0)]  # a, b, a
    assert [p.time for p in seen_a] == sorted(p.time for p in seen_a)
    assert latest == seen_a[-1:]
    assert not (a_dir / "balances.sqlite3").exists() and not (b_dir / "balances.sqlite3").exists()
    async with make_host(state_dir=str(a_dir), state=state, pool=ONE) as again:  # it outlives both hosts
        assert await again.balance_history() == seen_a


def test_alerts_written_by_one_host_are_read_by_another(postgres_url):
    one, two = PostgresHistory(postgres_url), PostgresHistory(postgres_url)
    t = dt.datetime.now(dt.UTC)
    try:
        one.record_alerts([Alert("alpha", "Alpha", "low_balance", t, 3.0, "USD", 5.0, "low")])
        two.record_alerts([Alert("beta", "Beta", "low_balance", t + dt.timedelta(seconds=1), 1.0, "USD", 2.0, "low")])
        assert [a.provider for a in one.read_alerts()] == ["alpha", "beta"]
        assert [(a.provider, a.balance, a.threshold) for a in two.read_alerts("alpha")] == [("alpha", 3.0, 5.0)]
        assert [a.provider for a in two.read_alerts(limit=1)] == ["beta"]
    finally:
        one.close()
        two.close()


def test_an_unreachable_history_database_is_a_state_error_without_the_password():
    port = free_port()  # nothing listens there
    history = PostgresHistory(f"postgresql://app:t0psecret@127.0.0.1:{port}/app", timeout=2.0)
    with pytest.raises(StateError) as e:
        history.read()
    assert f"127.0.0.1:{port}" in e.value.message and "t0psecret" not in e.value.message


async def test_a_balance_answer_does_not_wait_for_a_history_write_the_database_holds(
        make_host, plugin_dir, tmp_path, shared_state, postgres_server, postgres_url):
    plugin_dir.add("alpha.js", STATION)
    async with make_host(state_dir=str(fresh_state(tmp_path / "a", shared_state)),
                         state=StateConfig(database=postgres_url), pool=ONE,
                         balances=BalancesConfig(min_interval=0)) as h:  # each refresh asks the station
        await h.query_balances(refresh=True)
        assert len(await h.balance_history("alpha")) == 1
        with postgres_server.admin(postgres_url.rsplit("/", 1)[1]) as blocker:
            blocker.execute("BEGIN")  # a session holding the table (a migration, a stuck job): writes wait
            blocker.execute("LOCK TABLE balance_points IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            [answer] = await h.query_balances(refresh=True)
            took = time.monotonic() - t0
            blocker.execute("ROLLBACK")
        assert answer.status == "success" and answer.balance == 98.0
        assert took < 3, f"the answer waited {took:.1f}s for the history write"
        assert [p.balance for p in await h.balance_history("alpha")] == [99.0, 98.0]  # written once it could be
        await h.query_balances(refresh=True)
    async with make_host(state_dir=str(fresh_state(tmp_path / "b", shared_state)),
                         state=StateConfig(database=postgres_url), pool=ONE) as again:  # flushed at close
        assert [p.balance for p in await again.balance_history("alpha")] == [99.0, 98.0, 97.0]


async def test_a_balance_answer_does_not_wait_for_an_alert_write_the_database_holds(
        make_host, plugin_dir, tmp_path, shared_state, postgres_server, postgres_url):
    # Before: the alert a query raised was written before the answer, so a held table (or a
    # hung database) held the answer for the statement timeout; and an alert that could not be
    # written was neither logged nor delivered.
    plugin_dir.add("alpha.js", STATION)
    balances = BalancesConfig(min_interval=0, alerts=AlertsConfig(low_balance=98.5))
    async with make_host(state_dir=str(fresh_state(tmp_path / "a", shared_state)), balances=balances,
                         state=StateConfig(database=postgres_url), pool=ONE) as h:
        await h.query_balances(refresh=True)  # 99: above the threshold, no alert
        assert await h.balance_alerts() == []
        with postgres_server.admin(postgres_url.rsplit("/", 1)[1]) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE balance_alerts IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            [answer] = await h.query_balances(refresh=True)  # 98: low
            took = time.monotonic() - t0
            blocker.execute("ROLLBACK")
        assert answer.status == "success" and answer.balance == 98.0
        assert took < 3, f"the answer waited {took:.1f}s for the alert write"
        assert [a.kind for a in await h.balance_alerts("alpha")] == ["low_balance"]  # written once it could be


async def test_an_alert_already_said_is_not_said_again_after_a_start_that_could_not_read_them(
        make_host, plugin_dir, tmp_path, shared_state, postgres_server, postgres_url):
    # Before: the first query after a start set an empty alert state, then read back what was said
    # before; when that read failed (the table held, the database hung) the empty state stayed,
    # and the next query said low_balance again though it had been said and nothing changed.
    plugin_dir.add("alpha.js", STATION)  # 99, 98, 97... below the threshold from the start
    balances = BalancesConfig(min_interval=0, alerts=AlertsConfig(low_balance=200))
    config = dict(balances=balances, state=StateConfig(database=postgres_url), pool=ONE)
    async with make_host(state_dir=str(fresh_state(tmp_path / "a", shared_state)), **config) as h:
        await h.query_balances(refresh=True)
        assert [a.kind for a in await h.balance_alerts()] == ["low_balance"]
    async with make_host(state_dir=str(fresh_state(tmp_path / "b", shared_state)), **config) as h:
        with postgres_server.admin(postgres_url.rsplit("/", 1)[1]) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE balance_alerts IN ACCESS EXCLUSIVE MODE")
            [answer] = await h.query_balances(refresh=True)  # the read back fails: nothing judged
            blocker.execute("ROLLBACK")
        assert answer.status == "success"
        said = await answered_again(h)  # the failed read is taken for an outage: asked again within 10 s
        assert [a.kind for a in said] == ["low_balance"]
        await h.query_balances(refresh=True)  # still low: nothing new to say
        assert [a.kind for a in await h.balance_alerts()] == ["low_balance"]


async def answered_again(h) -> list:
    """``balance_alerts()`` once the state database is asked again (host/outage.py's pause)."""
    import anyio

    with anyio.fail_after(30):
        while True:
            try:
                return await h.balance_alerts()
            except StateError:
                await anyio.sleep(0.5)
