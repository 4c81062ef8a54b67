"""The /metrics view of ``serve --processes`` (issue 20), asked of real sibling sockets: a stray
file in the peers directory is no sibling, and hung siblings cost one PEER_TIMEOUT together."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from host.multiproc import PEER_TIMEOUT, merged_metrics, peer_socket

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30), pytest.mark.parametrize("anyio_backend", ["asyncio"])]

OWN = b"# HELP calls_total Calls.\n# TYPE calls_total counter\ncalls_total 3.0\n"
SIBLING = "# HELP calls_total Calls.\n# TYPE calls_total counter\ncalls_total 5.0\n"


@contextlib.asynccontextmanager
async def sibling(peers: Path, index: int) -> AsyncIterator[None]:
    """A sibling answering its /metrics on its private socket, as join_siblings serves it."""
    async def own(request: web.Request) -> web.Response:
        return web.Response(text=SIBLING, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", own)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, peer_socket(str(peers), index)).start()
    try:
        yield
    finally:
        await runner.cleanup()


def hung_sibling(peers: Path, index: int) -> socket.socket:
    """A sibling that takes the connection (the kernel completes it) and never answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(peer_socket(str(peers), index))
    sock.listen(8)
    return sock


async def test_a_stray_file_in_the_peers_directory_is_no_sibling(tmp_path, anyio_backend):
    # Before: int("x") raised ValueError and /metrics answered 500.
    for stray in ("metrics-x.sock", "metrics-1.sock.bak", "metrics-.sock", "metrics-2.sockx"):
        (tmp_path / stray).write_text("not a socket")
    async with sibling(tmp_path, 1):
        text = (await merged_metrics(OWN, 0, str(tmp_path))).decode()
    assert 'calls_total{process="0"} 3.0' in text and 'calls_total{process="1"} 5.0' in text
    assert "process=\"2\"" not in text


async def test_hung_siblings_cost_one_peer_timeout_together(tmp_path, anyio_backend):
    # Before: asked one after another, two hung siblings took 2 * PEER_TIMEOUT.
    hung = [hung_sibling(tmp_path, 2), hung_sibling(tmp_path, 3)]
    try:
        async with sibling(tmp_path, 1):
            start = time.monotonic()
            text = (await merged_metrics(OWN, 0, str(tmp_path))).decode()
            elapsed = time.monotonic() - start
    finally:
        for sock in hung:
            sock.close()
    assert 'calls_total{process="1"} 5.0' in text and 'calls_total{process="0"} 3.0' in text
    assert 'process="2"' not in text and 'process="3"' not in text
    assert PEER_TIMEOUT * 0.9 <= elapsed < 2 * PEER_TIMEOUT, elapsed


async def test_the_merged_view_keeps_each_family_s_type(tmp_path, anyio_backend):
    # Before: a counter's TYPE line named it without `_total` (as the parser names the family),
    # so its samples parsed as an untyped family of their own: Prometheus lost the counter type.
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    Counter("plugin_host_calls", "Calls.", ["plugin"], registry=registry).labels("a").inc(3)
    Histogram("latency_seconds", "Latency.", registry=registry, buckets=(0.1, 1.0)).observe(0.5)
    own = generate_latest(registry)

    def families(text: str) -> list[tuple[str, str, int]]:
        return sorted((f.name, f.type, len(f.samples)) for f in text_string_to_metric_families(text))

    merged = (await merged_metrics(own, 0, str(tmp_path))).decode()
    assert families(merged) == families(own.decode())
    assert '# TYPE plugin_host_calls_total counter\nplugin_host_calls_total{plugin="a",process="0"} 3.0' in merged
