"""What isolating pooled /execute costs (issue 14): each execution gets a V8 context of its own
on a worker whose main realm is frozen (worker_runtime/isolate.ts). Measured inside Deno with
the real isolate.ts, against the same function run without a context in the same process:

    .venv/bin/python bench/bench_isolation.py [--quick] [--no-write]

Rows: node:vm's first load (a fresh worker pays it once), hardening the main realm (a pooled
worker pays it once), a context made per execution, compiling and running the module in it, the
whole execution, and the baseline: the same code imported once and called in the main realm.
Writes bench/RESULTS.md (section "Execute isolation")."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import run_benchmark  # noqa: E402

from host.runtime import find_deno  # noqa: E402

SCRIPT = """
const t0 = performance.now();
const iso = await import(ISOLATE);
await iso.loadVm();
const vmLoad = performance.now() - t0;
const t1 = performance.now();
await iso.harden();
const harden = performance.now() - t1;
const CODE = "export default (x) => x * 2";
const N = Number(Deno.args[0]);
const baseline = (await import("data:application/javascript," + encodeURIComponent(CODE))).default;
const rows = { context: [], load: [], exec: [], baseline: [] };
for (let i = 0; i < N + 100; i++) {
  const a = performance.now();
  const ex = iso.nextExecution().claim({ settled: false }, {}, () => {});
  const b = performance.now();
  const fn = await ex.load(CODE, "default");
  await fn(ex.adopt(21));
  const c = performance.now();
  ex.dispose();
  const d = performance.now();
  await baseline(21);
  const e = performance.now();
  if (i >= 100) {
    rows.context.push(b - a); rows.load.push(c - b); rows.exec.push(c - a); rows.baseline.push(e - d);
  }
}
console.log(JSON.stringify({ vmLoad, harden, ...rows }));
"""


def median_us(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    runs, n = (3, 300) if args.quick else (5, 1000)
    deno = find_deno()
    with tempfile.TemporaryDirectory(prefix="bench-iso-") as tmp:
        script = Path(tmp) / "iso.js"
        script.write_text(SCRIPT.replace("ISOLATE", json.dumps((ROOT / "worker_runtime" / "isolate.ts").as_uri())))
        samples = []
        for _ in range(runs):
            out = subprocess.run([deno, "run", "--no-prompt", "--allow-read", str(script), str(n)],
                                 capture_output=True, text=True, check=True, timeout=120)
            samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ctx = median_us([x for s in samples for x in s["context"]])
    load = median_us([x for s in samples for x in s["load"]])
    execu = median_us([x for s in samples for x in s["exec"]])
    base = median_us([x for s in samples for x in s["baseline"]])
    return [
        ("node:vm loaded, once per worker (median of runs)", f"{statistics.median(s['vmLoad'] for s in samples):.1f} ms", "recorded"),
        ("main realm hardened, once per pooled worker", f"{statistics.median(s['harden'] for s in samples):.1f} ms", "recorded"),
        ("a context of its own, per execution (p50)", f"{ctx:,.0f} µs", "recorded"),
        ("compile, link, run the module in it and call it (p50)", f"{load:,.0f} µs", "recorded"),
        ("one isolated execution in all (p50)", f"{execu:,.0f} µs", "recorded"),
        ("baseline: the same function imported once, called in the main realm (p50)", f"{base:,.1f} µs", "(same run)"),
        ("samples", f"{runs} processes × {n} executions", ""),
    ]


if __name__ == "__main__":
    run_benchmark(main, "isolation", "Execute isolation (issue 14): bench/bench_isolation.py", find_deno())
