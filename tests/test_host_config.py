"""HostConfig: defaults that work, sections given as dicts, errors that name the field."""

from __future__ import annotations

import pytest

from host import HostConfig, InvalidConfig, PoolConfig


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
    ({"pool": {"max_wrkers": 8}}, "pool: Object contains unknown field `max_wrkers`"),
    ({"pool": {"max_workers": "many"}}, "pool: Expected `int`, got `str`"),
    ({"pool": {"min_workers": 5, "max_workers": 2}}, "min_workers <= max_workers"),
])
def test_bad_sections_are_typed_errors_naming_the_field(kw, message):
    with pytest.raises(InvalidConfig) as e:
        HostConfig(**kw)
    assert message in str(e.value)
