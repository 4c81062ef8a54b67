"""``python -m host execute FILE --tool NAME`` with an operator tool from host.toml
(``[execute.tools.NAME]``), its hooks applied; an unknown tool is a usage error (exit 2)."""

from __future__ import annotations

import json

import pytest
from support.plugins import fresh_state
from support.servers import run_cli


@pytest.mark.timeout(60)
def test_execute_cli_uses_operator_tools_and_hooks_from_host_toml(shared_state, tmp_path):
    # python -m host puts its working directory on sys.path: the operator's module is found there
    (tmp_path / "ops_cli.py").write_text("def weather(city):\n    return {'city': city, 'temp': 18}\n\n"
                                         "def before(request):\n    request.input = request.input.upper()\n")
    (tmp_path / "host.toml").write_text('[execute.tools.weather]\nfunction = "ops_cli:weather"\n'
                                        '[execute.hooks]\nbefore_execute = "ops_cli:before"\n')
    (tmp_path / "code.js").write_text("export default async (city) => await weather(city);\n")
    state = fresh_state(tmp_path, shared_state)
    args = ["--config", "host.toml", "--state-dir", str(state), "--plugins", str(tmp_path / "none")]
    out = run_cli("execute", "code.js", "--input", '"oslo"', "--tool", "weather", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == {"city": "OSLO", "temp": 18}
    refused = run_cli("execute", "code.js", "--input", '"oslo"', "--tool", "radar", *args, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "unknown tool 'radar'" in refused.stderr and "[execute.tools.NAME]" in refused.stderr
    assert "Traceback" not in refused.stderr
