"""HostConfig: defaults that work, sections given as dicts, errors that name the field."""

from __future__ import annotations

import re

import msgspec
import pytest

from host import HostConfig, InvalidConfig, PoolConfig
from host.config import CacheConfig, PluginSettings, PolicyConfig, RetryConfig, WorkerLimits


def test_defaults_need_no_arguments():
    cfg = HostConfig()
    assert cfg.pool.min_workers == 1 and cfg.limits.max_frame == 16 * 1024 * 1024
    assert cfg.reload.enabled and cfg.policy.retry.max_attempts == 1


def test_sections_may_be_plain_dicts():
    cfg = HostConfig(pool={"max_workers": 8}, reload={"enabled": False},
                     plugins={"x": {"config": {"a": 1}, "pool": {"min_workers": 0}}})
    assert isinstance(cfg.pool, PoolConfig) and cfg.pool.max_workers == 8
    assert cfg.reload.enabled is False
    assert cfg.plugins["x"].config == {"a": 1} and cfg.pool_for("x").min_workers == 0


@pytest.mark.parametrize(("kw", "message"), [
    ({"pool": {"max_wrkers": 8}}, "pool.max_wrkers: unknown field (did you mean `max_workers`?); pool has: min_workers, max_workers"),
    ({"pool": {"max_workers": "many"}}, "pool.max_workers: Expected `int`, got `str`"),
    ({"security": {"strict": "maybe"}}, "security.strict: 'maybe' is not one of 'off', 'refuse', 'warn'"),
    ({"pool": {"min_workers": 5, "max_workers": 2}}, "pool: min_workers (5) must not exceed max_workers (2)"),
    ({"pool": {"max_workers": 0}}, "pool.max_workers: Expected `int` >= 1"),
    ({"limits": {"call_timeout": float("inf")}}, "limits.call_timeout: Expected `float` <= 1000000000.0"),
    ({"limits": {"heartbeat_timeout": float("nan")}}, "limits.heartbeat_timeout: Expected `float` > 0.0"),
    ({"server": {"port": 70000}}, "server.port: Expected `int` <= 65535"),
    ({"plugins": {"x": {"retry": {"jitter": 2}}}}, "plugins.x.retry.jitter: Expected `float` <= 1.0"),
    ({"plugins": {"x": {"breaker": {"window": 0}}}}, "plugins.x.breaker.window: Expected `float` > 0.0"),
    ({"policy": {"max_concurrent_calls": 0}}, "policy.max_concurrent_calls: Expected `int` >= 1"),
    ({"security": {"egress": {"max_upstream": 0}}}, "security.egress.max_upstream: Expected `int` >= 1"),
])
def test_bad_sections_are_typed_errors_naming_the_field(kw, message):
    with pytest.raises(InvalidConfig) as e:
        HostConfig(**kw)
    assert message in str(e.value)


@pytest.mark.parametrize(("kw", "message"), [
    ({"pool": PoolConfig(max_workers=0)}, "pool.max_workers: Expected `int` >= 1"),
    ({"limits": WorkerLimits(heap_mb=8)}, "limits.heap_mb: Expected `int` >= 16"),
    ({"plugins": {"x": PluginSettings(cache=CacheConfig(ttl=-1))}}, "plugins.x.cache.ttl: Expected `float` > 0.0"),
    ({"policy": PolicyConfig(retry=RetryConfig(max_attempts=0))}, "policy.retry.max_attempts: Expected `int` >= 1"),
])
def test_sections_built_in_python_are_checked_like_a_file(kw, message):
    """msgspec checks constraints when it decodes, not when a Struct is constructed: HostConfig
    re-checks every section, so an embedding app's PoolConfig(max_workers=0) is refused too."""
    with pytest.raises(InvalidConfig) as e:
        HostConfig(**kw)
    assert str(e.value) == message


@pytest.mark.parametrize(("section", "named"), [
    ({"execute": {"crypto": {"methods": ["getRandomValues", "sign"]}}}, "execute.crypto.methods: unknown ['sign']"),
    ({"execute": {"crypto": {"max_bytes": 70000}}}, "execute.crypto.max_bytes: Expected `int` <= 65536"),
    ({"execute": {"min_workers": 9}}, "execute: min_workers (9) must not exceed max_workers (8)"),
    ({"execute": {"timeout": 0}}, "execute.timeout: Expected `float` > 0.0"),
    ({"plugins": {"calc": {"inspect": "0.0.0.0:9229"}}}, "plugins.calc.inspect: the inspector address must be 127.0.0.1"),
    ({"plugins": {"calc": {"inspect": "127.0.0.1"}}}, "loopback only"),
])
def test_execute_tools_and_inspect_are_validated(section, named):
    with pytest.raises(InvalidConfig, match=re.escape(named)):
        HostConfig(**section)


def test_an_inspected_plugin_runs_one_worker_without_a_heartbeat_deadline():
    c = HostConfig(pool={"min_workers": 2, "max_workers": 6}, plugins={"calc": {"inspect": "127.0.0.1:9230"}})
    assert c.inspect_for("calc") == "127.0.0.1:9230" and c.inspect_for("other") is None
    assert (c.pool_for("calc").min_workers, c.pool_for("calc").max_workers) == (1, 1)
    assert c.pool_for("other").max_workers == 6
    assert c.limits_for("calc").heartbeat_timeout >= 3600 and c.limits_for("other").heartbeat_timeout == 10.0


@pytest.mark.parametrize("given", [
    {"pool": "x"}, {"pool": None}, {"pool": object()}, {"limits": 5}, {"plugins_dir": 5}, {"state_dir": 5},
    {"plugins": None}, {"plugins": {5: {}}}, {"load": 3}, {"dev_plugins": "x"},
], ids=lambda g: f"{next(iter(g))}-{type(next(iter(g.values()))).__name__}")
def test_a_field_of_the_wrong_type_is_invalid_config_naming_it(given):
    """A section given as a str or None, a path as an int, were taken as they came and failed
    later (AttributeError at the start, or in a worker spawn)."""
    name = next(iter(given))
    with pytest.raises(InvalidConfig, match=f"^{name}"):
        HostConfig(**given)


def test_a_pathlib_path_is_taken_as_a_path(tmp_path):
    cfg = HostConfig(plugins_dir=[tmp_path / "p", "q"], state_dir=tmp_path / "s")
    assert (cfg.plugins_dir, cfg.state_path) == ([str(tmp_path / "p"), "q"], tmp_path / "s")


def test_a_heartbeat_timeout_not_longer_than_its_interval_is_refused():
    # Before: accepted, and every idle worker was found silent at each look and killed: a crash loop.
    for interval, timeout in ((20, 1), (5, 5)):
        with pytest.raises(InvalidConfig) as e:
            WorkerLimits(heartbeat_interval=interval, heartbeat_timeout=timeout)
        assert "limits.heartbeat_timeout" in e.value.message and "heartbeat_interval" in e.value.message
        with pytest.raises(InvalidConfig):
            msgspec.convert({"limits": {"heartbeat_interval": interval, "heartbeat_timeout": timeout}}, HostConfig)
    assert WorkerLimits(heartbeat_interval=1, heartbeat_timeout=2).heartbeat_timeout == 2


def test_a_config_changed_after_it_was_made_is_checked_again_when_a_host_takes_it(tmp_path):
    # Before: cfg.pool.min_workers = 9 with max_workers 1 started 9 workers; cfg.pool = "x"
    # failed the pool's start with an AttributeError.
    from host import PluginHost

    cfg = HostConfig(plugins_dir=str(tmp_path), state_dir=str(tmp_path / "s"), pool=PoolConfig(max_workers=1))
    cfg.pool.min_workers = 9
    with pytest.raises(InvalidConfig) as e:
        PluginHost(cfg)
    assert "min_workers" in e.value.message
    cfg.pool = "x"  # type: ignore[assignment]
    with pytest.raises(InvalidConfig):
        PluginHost(cfg)
    cfg.pool = PoolConfig(max_workers=1)
    cfg.limits = WorkerLimits()
    cfg.limits.heartbeat_interval = 30
    with pytest.raises(InvalidConfig):
        PluginHost(cfg)


TOO_MANY = 99999999999999999999999  # a number typed with a few digits too many


@pytest.mark.parametrize(("kw", "message"), [
    ({"limits": {"data_limit_mb": TOO_MANY}}, "limits.data_limit_mb: Expected `int` <= 1099511627776"),
    ({"limits": {"max_frame": TOO_MANY}}, "limits.max_frame: Expected `int` <= 9007199254740991"),
    ({"limits": {"max_web_workers": 5000}}, "limits.max_web_workers: Expected `int` <= 1024"),
    ({"pool": {"max_inflight": TOO_MANY}}, "pool.max_inflight: Expected `int` <= 9007199254740991"),
    ({"limits": {"cpu_seconds": TOO_MANY}}, "limits.cpu_seconds: Expected `int` <= 9007199254740991"),
    ({"plugins": {"x": {"limits": {"heap_mb": TOO_MANY}}}}, "plugins.x.limits.heap_mb: Expected `int` <= 9007199254740991"),
    # before: taken, and each call of the plugin an OverflowError (no HostError); "0/second" an
    # IndexError from the second call on
    ({"plugins": {"x": {"rate_limit": {"limit": f"{TOO_MANY}/second"}}}},
     f"plugins.x.rate_limit.limit: '{TOO_MANY}/second': a quota counts 1 to 1,000,000 calls in its window"),
    ({"plugins": {"x": {"rate_limit": {"limit": "10/second; 0/minute"}}}},
     "plugins.x.rate_limit.limit: '10/second; 0/minute': a quota counts 1 to 1,000,000 calls in its window, not 0"),
    ({"policy": {"global_limit": f"{TOO_MANY}/hour"}}, "policy.global_limit: "),
    ({"policy": {"rate_limit": {"limit": f"5/{TOO_MANY} years"}}}, "a window of at most 1e+09 seconds"),
])
def test_a_number_too_large_for_a_worker_is_refused_naming_the_field(kw, message):
    """Before: taken, and every worker of the host failed to start ('OverflowError: Python int
    too large to convert to C long', 'unhandled errors in a TaskGroup'), a crash loop that named
    no setting."""
    with pytest.raises(InvalidConfig) as e:
        HostConfig(**kw)
    assert message in str(e.value)


@pytest.mark.anyio
async def test_the_largest_numbers_allowed_still_start_workers(calc, make_host):
    most = 2**53 - 1
    limits = WorkerLimits(data_limit_mb=2**40, max_web_workers=1024, max_frame=most, cpu_seconds=most,
                          heap_mb=most, max_host_calls=most, max_write_buffer_bytes=most)
    async with make_host(pool=PoolConfig(max_inflight=most, max_calls_per_worker=most), limits=limits) as h:
        assert await h.call("calc", "add", 1, 2) == 3


@pytest.mark.parametrize(("kw", "message"), [
    ({"policy": {"cache_storage": "redis://127.0.0.1:6379/0?socket_timeout=abc"}},
     "policy.cache_storage: 'redis://127.0.0.1:6379/0?***': Invalid value for 'socket_timeout' in connection URL."),
    ({"state": {"channel_storage": "redis://:pw-9f2@127.0.0.1:6379/0?sockettimeout=1"}},
     "state.channel_storage: 'redis://***@127.0.0.1:6379/0?***': "),
    ({"policy": {"cache_storage": "redis://127.0.0.1:99999/0"}},
     "policy.cache_storage: 'redis://127.0.0.1:99999/0': Port out of range 0-65535"),
    ({"policy": {"storage": "redis://[::1/0"}}, "policy.storage: 'redis://[::1/0': Invalid IPv6 URL"),
])
def test_a_redis_url_the_client_cannot_read_is_refused_naming_the_field(kw, message):
    """Before: policy.cache_storage and state.channel_storage took it, and the host's start
    failed with the redis client's ValueError and a traceback."""
    with pytest.raises(InvalidConfig) as e:
        HostConfig(**kw)
    assert str(e.value).startswith(message) and "pw-9f2" not in str(e.value)
