"""Execute code that V8 refuses is parsed once more by Deno to place the syntax error
(isolate.ts syntaxErrorAt): imported as a data: URL in the worker's main realm. That import
must run nothing, not even the modules the code imports (static imports are evaluated before
the importing module's first statement), and code nested past what Deno's Rust parsers can
recurse on must never reach them: their stack overflow aborts the worker (helper-78's findings)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from host import InvalidCode
from host.runtime import find_deno

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ISOLATE_TS = Path(__file__).resolve().parents[2] / "worker_runtime" / "isolate.ts"
DEEP = "[" * 3000 + "]" * 3000


def probed(code: str) -> dict:
    script = (f'import {{ syntaxErrorAt }} from "{ISOLATE_TS.as_uri()}";\n'
              "globalThis.PWNED = 0;\n"
              f"const at = await syntaxErrorAt({json.dumps(code)});\n"
              "console.log(JSON.stringify({ at: at ?? null, pwned: globalThis.PWNED }));")
    out = subprocess.run([find_deno(), "eval", "--no-config", "--quiet", script], capture_output=True, text=True,
                         timeout=50)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_the_probe_runs_none_of_the_modules_the_code_imports():
    found = probed('import "data:text/javascript,globalThis.PWNED=1";\n'
                   'export * from "data:text/javascript,globalThis.PWNED=2";\nexport default 1;')
    assert found == {"at": None, "pwned": 0}
    assert probed("export default 1;\nlet x = ;") == {"at": "2:9", "pwned": 0}  # it still places errors
    assert probed("let x = ;") == {"at": "1:9", "pwned": 0}
    # helper-81: the import once appended after the code took the place of an unexpected end
    assert probed("export default (n) => {\n  return n +\n")["at"].startswith(("2:", "3:"))


def test_code_nested_past_the_parser_is_not_probed_and_flat_code_is():
    assert probed(f"export default 1; export default 2;\nconst r = {DEEP};") == {"at": None, "pwned": 0}
    flat = "export default [" + ", ".join(f"(x) => x + {i}" for i in range(500)) + "];\nlet y = ;"
    assert probed(flat) == {"at": "2:9", "pwned": 0}  # helper-81: 500 sibling arrows were "too deep"


async def test_deeply_nested_code_is_an_error_answer_not_a_crashed_worker(make_host):
    async with make_host() as h:
        out = await h.execute(f"export default 1; export default 2;\nconst r = {DEEP};")
        assert not out.ok and out.logs[-1].name == "SyntaxError", out.logs
        with pytest.raises(InvalidCode, match="nested deeper than 2000 levels"):
            await h.execute("export default () => 1;\nconst r = " + "[" * 20000 + "]" * 20000 + ";",
                            language="typescript")
        with pytest.raises(InvalidCode, match="nested deeper"):
            await h.execute("export default 1;\nconst f = " + "x=>" * 6000 + "1;", language="typescript")
        assert (await h.execute("export default (x: number) => x * 2;", 21, language="typescript")).result == 42
        # recursion with no bracket (helper-83, helper-84): labels, prefix words and operators, arrows
        # across lines, type arguments with commas; each aborted the worker (SIGABRT) before
        for code in ("".join(f"l{i}:" for i in range(3000)) + "1;\nexport default 1;\nlet y = ;",
                     "new " * 6000 + "\nlet y = ;", "!" * 10000 + "\nlet y = ;", "await " * 6000 + "\nlet y = ;"):
            out = await h.execute(code)
            assert not out.ok and out.logs[-1].name == "SyntaxError", out.logs[-1]
        # helper-85: a member chain long enough for the import's thread is past what is probed at all
        out = await h.execute("x" + ".a" * 35000 + ";\nlet y = ;")
        assert not out.ok and out.logs[-1].name == "SyntaxError", out.logs[-1]
        for code in ("new " * 20000, "!" * 50000, "export default " + "x =>\n" * 8000 + "1",
                     "type A<X,Y>=Y;\ntype T = " + "A<1, " * 8000 + "1" + ">" * 8000,
                     "x = " + "class extends " * 6200 + "class {}" + "{}" * 6200 + ";",
                     "x = " + "(" * 1990 + "class extends " * 4500 + "class {}" + "{}" * 4500 + ")" * 1990 + ";"):
            with pytest.raises(InvalidCode, match="nested deeper"):
                await h.execute(code, language="typescript")
        flat = ("let c = 0;\n" + "\n".join(f"if (c < {i}) c++;" for i in range(2100))
                + "\nexport default () => [" + ", ".join(f"(x: number) => x + {i}" for i in range(2100)) + "].length + c;")
        assert (await h.execute(flat, language="typescript")).result == 2100 + 2099  # flat, however long
