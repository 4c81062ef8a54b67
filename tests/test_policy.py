"""Call policies: retries with backoff, the circuit breaker, rate limits (per plugin and global),
through real workers, plus the breaker's state machine on its own."""

from __future__ import annotations

import time

import pytest
from support.processes import wait_for

from host import (
    BreakerConfig,
    CircuitOpen,
    FunctionNotFound,
    HostConfig,
    InvalidConfig,
    PluginError,
    PluginHost,
    PluginSettings,
    PolicyConfig,
    PoolConfig,
    RateLimitConfig,
    RateLimited,
    RetryConfig,
    SyncPluginHost,
    WorkerCrashed,
)
from host.policy.rules import CircuitBreaker, is_service_failure, retry_after_of

pytestmark = pytest.mark.anyio

FLAKY = """
let calls = 0;
export function count() { return calls; }
export function failTimes(n, type) {
  calls++;
  if (calls <= n) throw new PluginError(type, `failure ${calls}`);
  return calls;
}
export function always(type) { calls++; throw new PluginError(type, "nope"); }
export function ok() { calls++; return "ok"; }
export function bug() { calls++; return null.foo; }
export function slowDown(n, after) {
  calls++;
  if (calls <= n) throw new PluginError(ErrorTypes.RATE_LIMIT, "slow down", { retryAfter: after });
  return calls;
}
export async function crashOnce(ctx) {
  const n = (await ctx.storage.get("n")) ?? 0;
  await ctx.storage.set("n", n + 1);
  if (n === 0) Deno.exit(3);
  return n + 1;
}
"""

ONE_WORKER = PoolConfig(min_workers=1, max_workers=1)
FAST_RETRY = RetryConfig(max_attempts=4, backoff=0.01, jitter=0.0)


def settings(**kw) -> dict[str, PluginSettings]:
    return {"flaky": PluginSettings(**kw)}


@pytest.fixture
def flaky(plugin_dir):
    plugin_dir.add("flaky.js", FLAKY)
    plugin_dir.add("other.js", "export function ok() { return 'ok'; }")
    return plugin_dir


async def wait_for_circuit(h: PluginHost, state: str, within: float = 3.0) -> None:
    await wait_for(lambda: h.plugin("flaky").circuit == state, timeout=within)


# ---------------------------------------------------------------------- retry


async def test_retry_succeeds_after_failures_with_the_right_number_of_attempts(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=FAST_RETRY)) as h:
        assert await h.call("flaky", "failTimes", 2, "NETWORK_ERROR") == 3
        assert await h.call("flaky", "count") == 3
        assert h.plugin("flaky").retries == 2


async def test_retry_gives_up_after_max_attempts_with_the_last_error(flaky, make_host):
    cfg = RetryConfig(max_attempts=3, backoff=0.01, jitter=0.0)
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=cfg)) as h:
        with pytest.raises(PluginError) as e:
            await h.call("flaky", "failTimes", 10, "TIMEOUT")
        assert e.value.error_type == "TIMEOUT" and e.value.message == "failure 3"
        assert await h.call("flaky", "count") == 3


async def test_no_retry_by_default(flaky, make_host):
    async with make_host(pool=ONE_WORKER) as h:
        with pytest.raises(PluginError):
            await h.call("flaky", "failTimes", 1, "NETWORK_ERROR")
        assert await h.call("flaky", "count") == 1
        assert h.plugin("flaky").retries == 0


async def test_auth_and_parse_errors_are_never_retried(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=FAST_RETRY)) as h:
        for error_type, calls in (("AUTH_ERROR", 1), ("PARSE_ERROR", 2)):
            with pytest.raises(PluginError) as e:
                await h.call("flaky", "always", error_type)
            assert e.value.error_type == error_type
            assert await h.call("flaky", "count") == calls
        with pytest.raises(FunctionNotFound):
            await h.call("flaky", "missing")
        assert h.plugin("flaky").retries == 0


async def test_retry_after_from_the_plugin_is_honoured(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=FAST_RETRY)) as h:
        t0 = time.monotonic()
        assert await h.call("flaky", "slowDown", 1, 0.3) == 2
        assert time.monotonic() - t0 >= 0.3


async def test_retries_never_pass_the_call_deadline(flaky, make_host):
    cfg = RetryConfig(max_attempts=1000, backoff=0.05, multiplier=1.0, jitter=0.0)
    no_breaker = BreakerConfig(enabled=False)
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=cfg, breaker=no_breaker)) as h:
        t0 = time.monotonic()
        with pytest.raises(PluginError) as e:
            await h.call("flaky", "always", "NETWORK_ERROR", timeout=0.5)
        assert time.monotonic() - t0 < 0.5
        assert e.value.error_type == "NETWORK_ERROR"
        attempts = await h.call("flaky", "count")
        assert 2 <= attempts <= 11
        # a retry-after beyond the deadline: give up at once rather than sleep past it
        t0 = time.monotonic()
        with pytest.raises(PluginError) as e:
            await h.call("flaky", "slowDown", 10_000, 5, timeout=1)
        assert time.monotonic() - t0 < 1 and e.value.details == {"retryAfter": 5}
        assert await h.call("flaky", "count") == attempts + 1


async def test_worker_crash_is_retried_on_a_new_worker(flaky, make_host, tmp_path):
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=FAST_RETRY),
                         state_dir=str(tmp_path / "state")) as h:
        assert await h.call("flaky", "crashOnce") == 2
        info = h.plugin("flaky")
        assert info.crashes == 1 and info.retries == 1


async def test_worker_crash_is_not_retried_when_only_network_errors_are(flaky, make_host, tmp_path):
    cfg = RetryConfig(max_attempts=4, backoff=0.01, retry_on=["NETWORK_ERROR"])
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=cfg),
                         state_dir=str(tmp_path / "state")) as h:
        with pytest.raises(WorkerCrashed):
            await h.call("flaky", "crashOnce")


# ---------------------------------------------------------------------- circuit breaker

BREAKER = BreakerConfig(failure_threshold=3, failure_rate=0, cooldown=0.3)


async def test_breaker_opens_after_consecutive_failures_and_rejects_without_calling(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(breaker=BREAKER)) as h:
        for _ in range(3):
            with pytest.raises(PluginError):
                await h.call("flaky", "always", "NETWORK_ERROR")
        assert h.plugin("flaky").circuit == "open"
        t0 = time.monotonic()
        with pytest.raises(CircuitOpen) as e:
            await h.call("flaky", "ok")
        assert time.monotonic() - t0 < 0.1
        assert 0 < e.value.retry_after <= 0.3 and e.value.plugin == "flaky"
        assert h.plugin("other").circuit == "closed"  # breakers are per plugin
        assert await h.call("other", "ok") == "ok"

        await wait_for_circuit(h, "half_open")
        assert await h.call("flaky", "ok") == "ok"  # the probe goes through and closes it
        info = h.plugin("flaky")
        assert (info.circuit, info.circuit_opens, info.circuit_rejected) == ("closed", 1, 1)
        # 3 failures + the probe: the rejected call never reached the plugin
        assert await h.call("flaky", "count") == 4


async def test_failed_probe_opens_the_breaker_again(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(breaker=BREAKER)) as h:
        for _ in range(3):
            with pytest.raises(PluginError):
                await h.call("flaky", "always", "NETWORK_ERROR")
        await wait_for_circuit(h, "half_open")
        with pytest.raises(PluginError):
            await h.call("flaky", "always", "NETWORK_ERROR")  # the probe fails
        assert h.plugin("flaky").circuit == "open"
        with pytest.raises(CircuitOpen):
            await h.call("flaky", "ok")
        await wait_for_circuit(h, "half_open")
        assert await h.call("flaky", "ok") == "ok"
        assert await h.call("flaky", "count") == 5  # 3 + failed probe + good probe
        assert h.plugin("flaky").circuit_opens == 2


async def test_breaker_opens_on_failure_rate(flaky, make_host):
    cfg = BreakerConfig(failure_threshold=0, failure_rate=0.5, min_calls=4, window=60, cooldown=30)
    async with make_host(pool=ONE_WORKER, plugins=settings(breaker=cfg)) as h:
        assert await h.call("flaky", "ok") == "ok"
        with pytest.raises(PluginError):
            await h.call("flaky", "always", "PROVIDER_ERROR")
        assert await h.call("flaky", "ok") == "ok"
        assert h.plugin("flaky").circuit == "closed"  # 1 of 3 failed, under min_calls anyway
        with pytest.raises(PluginError):
            await h.call("flaky", "always", "AUTH_ERROR")  # counts too
        assert h.plugin("flaky").circuit == "open"  # 2 of 4
        with pytest.raises(CircuitOpen):
            await h.call("flaky", "ok")


async def test_caller_mistakes_and_unclassified_throws_do_not_count_against_the_breaker(flaky, make_host):
    async with make_host(pool=ONE_WORKER, plugins=settings(breaker=BREAKER)) as h:
        for _ in range(5):
            with pytest.raises(FunctionNotFound):
                await h.call("flaky", "missing")
            with pytest.raises(PluginError) as e:
                await h.call("flaky", "bug")
            assert e.value.name == "TypeError" and e.value.error_type is None
        assert h.plugin("flaky").circuit == "closed"


async def test_retries_stop_when_the_breaker_opens(flaky, make_host):
    cfg = RetryConfig(max_attempts=10, backoff=0.01, jitter=0.0)
    async with make_host(pool=ONE_WORKER, plugins=settings(retry=cfg, breaker=BREAKER)) as h:
        with pytest.raises(PluginError) as e:  # the real failure, not CircuitOpen
            await h.call("flaky", "always", "NETWORK_ERROR")
        assert e.value.error_type == "NETWORK_ERROR"
        assert h.plugin("flaky").circuit == "open"
        await wait_for_circuit(h, "half_open")
        assert await h.call("flaky", "count") == 3


# ---------------------------------------------------------------------- rate limits


async def test_reject_strategy_raises_rate_limited_and_counts_it(flaky, make_host):
    limit = RateLimitConfig(limit="2/minute", strategy="reject")
    async with make_host(pool=ONE_WORKER, plugins=settings(rate_limit=limit)) as h:
        assert await h.call("flaky", "ok") == "ok"
        assert await h.call("flaky", "ok") == "ok"
        with pytest.raises(RateLimited) as e:
            await h.call("flaky", "ok")
        assert 0 < e.value.retry_after <= 60 and e.value.plugin == "flaky"
        assert h.plugin("flaky").rate_limited == 1
        assert h.plugin("other").rate_limited == 0
        for _ in range(5):  # other plugins have no quota
            assert await h.call("other", "ok") == "ok"
        with pytest.raises(RateLimited):  # the quota counts calls, whatever they do
            await h.call("flaky", "count")
        assert h.plugin("flaky").rate_limited == 2


async def test_wait_strategy_delays_calls_until_a_slot_frees(flaky, make_host):
    limit = RateLimitConfig(limit="2/second", strategy="wait", max_wait=2)
    async with make_host(pool=ONE_WORKER, plugins=settings(rate_limit=limit)) as h:
        t0 = time.monotonic()
        for _ in range(3):
            assert await h.call("flaky", "ok") == "ok"
        assert time.monotonic() - t0 >= 0.9  # the third waited for the first to leave the window
        info = h.plugin("flaky")
        assert (info.rate_delayed, info.rate_limited) == (1, 0)


async def test_wait_strategy_rejects_when_the_wait_exceeds_max_wait(flaky, make_host):
    limit = RateLimitConfig(limit="1/minute", strategy="wait", max_wait=0.2)
    async with make_host(pool=ONE_WORKER, plugins=settings(rate_limit=limit)) as h:
        assert await h.call("flaky", "ok") == "ok"
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as e:
            await h.call("flaky", "ok")
        assert time.monotonic() - t0 < 0.2 and e.value.retry_after > 0.2
        assert h.plugin("flaky").rate_limited == 1


async def test_global_limit_applies_across_plugins(flaky, make_host):
    policy = PolicyConfig(global_limit="3/minute", rate_limit=RateLimitConfig(strategy="reject"))
    async with make_host(pool=ONE_WORKER, policy=policy) as h:
        assert await h.call("flaky", "ok") == "ok"
        assert await h.call("other", "ok") == "ok"
        assert await h.call("flaky", "ok") == "ok"
        with pytest.raises(RateLimited):
            await h.call("other", "ok")
        assert h.plugin("other").rate_limited == 1 and h.plugin("flaky").rate_limited == 0


async def test_set_policy_changes_a_plugin_at_runtime(flaky, make_host):
    async with make_host(pool=ONE_WORKER) as h:
        h.set_policy("flaky", retry=FAST_RETRY)
        assert await h.call("flaky", "failTimes", 1, "NETWORK_ERROR") == 2
        with pytest.raises(InvalidConfig):
            h.set_policy("flaky", rate_limit=RateLimitConfig(limit="lots"))


# ---------------------------------------------------------------------- configuration


def test_policy_defaults_work_and_bad_values_are_refused(tmp_path):
    cfg = HostConfig()
    assert cfg.retry_for("x").max_attempts == 1
    assert cfg.rate_limit_for("x").limit is None
    assert cfg.breaker_for("x").enabled and cfg.breaker_for("x").failure_threshold == 5
    with pytest.raises(InvalidConfig):
        HostConfig(policy=PolicyConfig(global_limit="ten per second"))
    with pytest.raises(InvalidConfig):
        HostConfig(plugins={"x": PluginSettings(rate_limit=RateLimitConfig(strategy="drop"))})
    with pytest.raises(InvalidConfig):
        HostConfig(plugins={"x": PluginSettings(retry=RetryConfig(max_attempts=0))})
    with pytest.raises(InvalidConfig, match="storage URI"):
        HostConfig(policy=PolicyConfig(storage="mongodb://localhost"))
    with pytest.raises(InvalidConfig) as err:
        HostConfig(policy=PolicyConfig(cache_storage="memcached://:hunter2@localhost"))
    assert "hunter2" not in str(err.value) and "cache_storage" in str(err.value)


# ---------------------------------------------------------------------- breaker state machine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**kw) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerConfig(**kw), plugin="p", clock=clock), clock


def tick(b: CircuitBreaker, ok: bool) -> None:
    b.check()
    b.record(ok)


def test_breaker_state_machine_consecutive_failures():
    b, clock = breaker(failure_threshold=2, failure_rate=0, cooldown=10)
    tick(b, False)
    tick(b, True)   # a success resets the run
    tick(b, False)
    assert b.state == "closed"
    tick(b, False)
    assert b.state == "open"
    with pytest.raises(CircuitOpen) as e:
        b.check()
    assert e.value.retry_after == 10
    clock.now += 9.5
    with pytest.raises(CircuitOpen) as e:
        b.check()
    assert e.value.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert b.state == "half_open"
    b.check()                   # the probe
    with pytest.raises(CircuitOpen):
        b.check()               # only one at a time
    b.record(False)
    assert b.state == "open" and b.opens == 2
    clock.now += 10
    b.check()
    b.record(True)
    assert b.state == "closed" and b.rejected == 3
    b.check()


def test_breaker_released_probe_lets_the_next_call_probe():
    b, clock = breaker(failure_threshold=1, failure_rate=0, cooldown=1)
    tick(b, False)
    clock.now += 1
    b.check()
    b.release()                 # cancelled: no verdict
    assert b.state == "half_open"
    b.check()
    b.record(True)
    assert b.state == "closed"


def test_breaker_failure_rate_counts_only_the_window():
    b, clock = breaker(failure_threshold=0, failure_rate=0.5, min_calls=4, window=10)
    for ok in (False, False, True):
        tick(b, ok)
    clock.now += 11             # those three leave the window
    for ok in (True, True, False):
        tick(b, ok)
    assert b.state == "closed"  # 1 of 3 in the window, under min_calls
    tick(b, False)
    assert b.state == "open"    # 2 of 4


def test_disabled_breaker_never_opens():
    b, _ = breaker(enabled=False, failure_threshold=1)
    for _ in range(10):
        tick(b, False)
    assert b.state == "closed"


def test_which_failures_count_and_retry_after_convention():
    assert is_service_failure(PluginError("x", error_type="AUTH_ERROR"))
    assert not is_service_failure(WorkerCrashed("gone"))  # the pool's crash-loop detector judges crashes
    assert not is_service_failure(PluginError("null.foo", name="TypeError"))  # unclassified
    assert not is_service_failure(FunctionNotFound("nope"))
    assert not is_service_failure(InvalidConfig("bad"))
    assert retry_after_of(PluginError("x", details={"retryAfter": 2})) == 2.0
    assert retry_after_of(PluginError("x", details={"retryAfter": "soon"})) is None
    assert retry_after_of(PluginError("x", details=[1])) is None
    assert retry_after_of(RateLimited("x", retry_after=0.5)) == 0.5


def test_sync_host_sets_a_policy(flaky, shared_state):
    cfg = HostConfig(plugins_dir=str(flaky.root), state_dir=str(shared_state), pool=ONE_WORKER)
    with SyncPluginHost(cfg) as h:
        h.set_policy("flaky", retry=FAST_RETRY)
        assert h.call("flaky", "failTimes", 1, "NETWORK_ERROR") == 2
        assert next(i for i in h.plugins() if i.id == "flaky").retries == 1


async def test_worker_crashes_leave_the_breaker_closed_and_the_recovered_pool_serves(plugin_dir, make_host):
    # Measured before this change, with the default breaker: five worker crashes in a row opened
    # the circuit in about a second, and it then refused every call for 30 s though the pool
    # had already replaced the worker. Crashes are the crash-loop detector's to judge.
    from host import WorkerCrashed

    plugin_dir.add("dies.js", "export function die() { Deno.exit(3); }\nexport function ok() { return 'ok'; }\n")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, crash_loop_threshold=50)) as h:
        for _ in range(6):
            with pytest.raises(WorkerCrashed):
                await h.call("dies", "die")
        assert h.plugin("dies").circuit == "closed"
        assert await h.call("dies", "ok") == "ok"
