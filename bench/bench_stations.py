"""Stations benchmark (issue 17): 50 relay stations of 3 shipped providers (New API by sk- key,
DeepSeek, OpenRouter), each with its own key and base URL, against local fakes of the providers'
documented answers on 127.0.0.1.

    .venv/bin/python bench/bench_stations.py [--quick] [--no-write]

Measures how many Deno workers serve the 50 stations, what they hold in memory, and how long
``query_balances(refresh=True)`` takes for all 50 (nothing cached), against a baseline measured
in the same run: the same 50 requests made straight from Python with aiohttp (the floor: what
the network and the fakes cost). Writes bench/RESULTS.md (section "Stations").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import pct, run_benchmark  # noqa: E402

from host import HostConfig, PluginHost, PluginSettings  # noqa: E402
from host.balances.stations import StationConfig  # noqa: E402
from host.runtime import find_deno  # noqa: E402

STATIONS = 50
PROVIDERS = ("newapi", "deepseek", "openrouter")
PATHS = {"newapi": "/api/usage/token", "deepseek": "/user/balance", "openrouter": "/api/v1/credits"}


def answer(provider: str, n: int) -> dict:
    """The provider's documented answer, with a balance of its own for station ``n``."""
    if provider == "newapi":
        return {"code": True, "message": "ok", "data": {"object": "token_usage", "name": f"k{n}",
                "total_granted": 500_000 * (n + 1), "total_used": 0, "total_available": 500_000 * (n + 1),
                "unlimited_quota": False, "expires_at": 0}}
    if provider == "deepseek":
        return {"is_available": True, "balance_infos": [{"currency": "CNY", "total_balance": f"{n + 1}.00",
                                                         "granted_balance": "0.00", "topped_up_balance": f"{n + 1}.00"}]}
    return {"data": {"total_credits": float(n + 1), "total_usage": 0.0}}


class Fakes:
    """One aiohttp server in a thread of its own, answering every station under /s<n>/."""

    def __init__(self) -> None:
        self.port = 0
        self.served = 0
        self._loop = asyncio.new_event_loop()

    def start(self) -> None:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.served += 1
            n = int(request.match_info["n"])
            provider = PROVIDERS[n % len(PROVIDERS)]
            if request.headers.get("Authorization") != f"Bearer sk-bench-{n:03d}":
                return web.json_response({"error": "invalid key"}, status=401)
            if provider == "openrouter" and request.match_info["tail"] == "api/v1/key":
                return web.json_response({"data": {"label": "k", "limit": None, "usage": 0.0}})
            return web.json_response(answer(provider, n))

        app = web.Application()
        app.router.add_get("/s{n:\\d+}/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


async def direct(fakes: Fakes, session: aiohttp.ClientSession) -> float:
    """The baseline: the 50 stations' requests straight from Python, all at once."""
    async def one(n: int) -> None:
        provider = PROVIDERS[n % len(PROVIDERS)]
        url = f"http://127.0.0.1:{fakes.port}/s{n}{PATHS[provider]}"
        async with session.get(url, headers={"Authorization": f"Bearer sk-bench-{n:03d}"}) as r:
            await r.json()

    t = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(STATIONS)))
    return time.perf_counter() - t


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rounds = 5 if args.quick else 15
    fakes = Fakes()
    fakes.start()
    stations = {f"st{n:02d}": StationConfig(plugin=PROVIDERS[n % len(PROVIDERS)],
                                            config={"baseUrl": f"http://127.0.0.1:{fakes.port}/s{n}",
                                                    "apiKey": f"sk-bench-{n:03d}"})
                for n in range(STATIONS)}
    with tempfile.TemporaryDirectory() as tmp:
        plugins, state = Path(tmp) / "plugins", Path(tmp) / "state"
        for p in PROVIDERS:  # the three shipped providers, nothing else
            shutil.copytree(ROOT / "plugins" / p, plugins / p)
        cfg = HostConfig(plugins_dir=str(plugins), state_dir=str(state), stations=stations,
                         plugins={p: PluginSettings(allow_private_network=True) for p in PROVIDERS},
                         health={"interval": 0}, reload={"enabled": False})
        t0 = time.perf_counter()
        async with PluginHost(cfg) as h:
            started = time.perf_counter() - t0
            host_times, direct_times = [], []
            async with aiohttp.ClientSession() as session:
                first = await h.query_balances(refresh=True)
                assert len(first) == STATIONS and all(b.status == "success" for b in first), [
                    (b.provider, b.error_message) for b in first if b.status != "success"][:3]
                expected = {f"st{n:02d}": float(n + 1) for n in range(STATIONS)}
                assert {b.provider: b.balance for b in first} == expected
                for _ in range(rounds):  # interleaved, so that noise hits both alike
                    direct_times.append(await direct(fakes, session))
                    t = time.perf_counter()
                    results = await h.query_balances(refresh=True)
                    host_times.append(time.perf_counter() - t)
                    assert all(b.status == "success" for b in results)
            infos = [h.plugin(p) for p in PROVIDERS]
            workers = sum(len(i.workers) for i in infos)
            pids = [w.pid for i in infos for w in i.workers if w.pid]
            memory = rss_mb(pids)
    med_host, med_direct = statistics.median(host_times), statistics.median(direct_times)
    return [
        ("stations / providers", f"{STATIONS} / {len(PROVIDERS)}", ""),
        ("Deno workers serving them", f"{workers}", "≤ 3"),
        ("their RSS, together", f"{memory:.0f} MB", ""),
        ("host start with 50 stations (3 pools)", f"{started * 1000:.0f} ms", ""),
        ("query_balances(refresh) of all 50, p50 / max", f"{med_host * 1000:.0f} ms / {max(host_times) * 1000:.0f} ms",
         "< 2 s"),
        ("baseline: the 50 requests from aiohttp directly, p50", f"{med_direct * 1000:.0f} ms", "(same run)"),
        ("ratio host / direct (p50)", f"{med_host / med_direct:.1f}×", ""),
        ("p90 of the host's query", f"{pct(host_times, 0.9) * 1000:.0f} ms", ""),
        ("rounds", f"{rounds} (after one warm-up round), {os.cpu_count()} cores", ""),
    ]


if __name__ == "__main__":
    run_benchmark(main, "stations", "Stations (issue 17): bench/bench_stations.py", find_deno())
