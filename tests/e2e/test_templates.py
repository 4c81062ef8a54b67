"""`python -m host new NAME --template basic|balance|event|usage-script` (issue 19): each writes a
plugin and a test that passes as written, run the way its first line says (pytest with the
shipped fixtures, or `python -m host test`), and the plugin loads as the host would load it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def run(*argv: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=100, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(cwd)})


@pytest.mark.parametrize("template", ["basic", "balance", "event", "usage-script"])
def test_each_template_starts_green(template, tmp_path):
    name = f"my-{template}"
    made = run("-m", "host", "new", name, "--template", template, "--plugins", "plugins", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    created = [line.removeprefix("created ") for line in made.stdout.splitlines() if line.startswith("created ")]
    hint = made.stdout.splitlines()[-1]
    test = created[1]
    if test.endswith(".py"):
        assert hint.endswith(f"python -m pytest {test}")
        out = run("-m", "pytest", "-q", "-p", "no:cacheprovider", test, cwd=tmp_path)
        assert out.returncode == 0 and " passed" in out.stdout, out.stdout + out.stderr
    else:
        assert hint.endswith(f"python -m host test {name}")
        out = run("-m", "host", "test", name, "--plugins", "plugins", cwd=tmp_path)
        assert out.returncode == 0 and "ok | 2 passed" in out.stdout, out.stdout + out.stderr
    if template != "usage-script":
        valid = run("-m", "host", "validate", f"plugins/{name}", cwd=tmp_path)
        assert valid.returncode == 0, valid.stdout + valid.stderr
