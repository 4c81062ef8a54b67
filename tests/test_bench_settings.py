"""The benchmarks' own settings are ones the host accepts: `make bench` stopped at its second
script when a stricter check (a quota of at most 1,000,000 calls per window) refused the
policy benchmark's rate limit, and no test ran that script."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

from host import HostConfig, PluginSettings

pytestmark = pytest.mark.timeout(30)

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_every_policy_variant_of_bench_policy_is_a_valid_plugin_setting(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "bench_policy", raising=False)
    import bench_policy

    assert set(bench_policy.VARIANTS) >= {"bare", "rate", "full"}
    for variant, (_, sections) in bench_policy.VARIANTS.items():
        settings = msgspec.structs.replace(PluginSettings(), **sections)
        checked = HostConfig(plugins={"calc": settings}).plugins["calc"]  # what set_policy runs
        assert checked.rate_limit == sections["rate_limit"], variant
