"""One quota for two ``serve`` processes on different ports (``[policy] storage`` on a real
redis-server): calls through either count against it, and the call past it is refused 429 on
both; each host alone would have let it through."""

from __future__ import annotations

import pytest
from support.plugins import CALC
from support.servers import two_serve_processes

QUOTA = 5


@pytest.mark.timeout(120)
def test_two_serve_processes_share_one_quota(tmp_path, shared_state, redis_url, plugin_dir):
    plugin_dir.add("calc.js", CALC)
    (tmp_path / "host.toml").write_text(
        f'[policy]\nstorage = "{redis_url}"\n'
        f'[plugins.calc.rate_limit]\nlimit = "{QUOTA}/hour"\nstrategy = "reject"\n')
    with two_serve_processes(tmp_path, shared_state, plugin_dir.root, running="calc") as (one, two):
        assert one.base != two.base
        statuses = []
        for n in range(QUOTA):  # alternately, so that neither host alone reaches the quota
            srv = (one, two)[n % 2]
            status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [n, 1]})
            statuses.append(status)
            assert (status, out.get("result")) == (200, n + 1), out
        for srv in (one, two):  # the quota is spent, whichever host is asked
            status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 1]})
            assert status == 429, out
            assert out["error"]["type"] == "RateLimited", out
    assert statuses.count(200) == QUOTA
