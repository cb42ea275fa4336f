"""The proxy with the real pipeline (flow control, scheduler, scraping) over simulated engines in
their own processes: 200 concurrent streams of mixed priority each get exactly one complete
response; killing an engine mid-run ends its streams with a clean error, and new requests route
around it within one scrape interval plus the staleness threshold — without relying on retries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from e2e.support import write_pool
from sluice.app import App
from sluice.bench.harness.ports import free_port, held_port, wait_listening
from sluice.cli.serve_options import parse_serve_options

pytestmark = pytest.mark.slow

OBJECTIVES = """---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: interactive, namespace: default}
spec: {priority: 10, poolRef: {name: pool}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: default}
spec: {priority: -1, poolRef: {name: pool}}
"""
SCRAPE_INTERVAL_S = 0.05
STALENESS_S = 0.2  # the saturation detector's metricsStalenessThreshold (upstream default)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # bound seconds from now (the engines start, then Sluice): below the ephemeral range
        self.ports = [held_port() for _ in range(3)]
        self.engines: dict[int, subprocess.Popen[bytes]] = {}
        self.app: App | None = None
        self.proxy_port = held_port()

    async def start(self) -> None:
        for port in self.ports:
            # Long generations with a slow profile keep streams in flight when the kill lands.
            self.engines[port] = subprocess.Popen(
                [sys.executable, "-m", "sluice", "sim", "--count", "1", "--port", str(port)],
                stdout=(self.tmp / f"engine-{port}.log").open("w"),
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        await wait_listening(self.ports)
        write_pool(self.tmp, self.ports, OBJECTIVES)
        options = parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={self.tmp}",
                f"--proxy-port={self.proxy_port}",
                "--disable-extproc",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
            ]
        )
        self.app = App(options)
        await self.app.start()
        await asyncio.sleep(3 * SCRAPE_INTERVAL_S)  # first scrapes: every engine has room

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
        for process in self.engines.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=5)

    def dispatched_to(self, port: int) -> int:
        assert self.app is not None
        return sum(
            s.dispatched_total for s in self.app.registry.snapshot() if s.endpoint.port == port
        )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def stream(session: aiohttp.ClientSession, port: int, max_tokens: int) -> list[str]:
    body = {
        "model": "sim-model",
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "tell me a long story"}],
    }
    lines: list[str] = []
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                lines.append(line[6:])
    return lines


async def test_killing_an_engine_ends_its_streams_cleanly_and_traffic_routes_around_it(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as session:
        # Long streams spread over the three engines (ITL ~12 ms → ~2.4 s each).
        in_flight = [
            asyncio.create_task(stream(session, cluster.proxy_port, 200)) for _ in range(9)
        ]
        await asyncio.sleep(0.5)
        victim = cluster.ports[0]
        assert cluster.dispatched_to(victim) > 0, "the test needs streams on the victim"
        cluster.engines[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        results = await asyncio.wait_for(asyncio.gather(*in_flight), 30)
        broken = [r for r in results if r and r[-1] != "[DONE]"]
        assert broken, "streams on the killed engine must end in an error event"
        for events in broken:
            error = json.loads(events[-1])["error"]
            assert error["message"]
        assert all(r[-1] == "[DONE]" or "error" in json.loads(r[-1]) for r in results)

        # One scrape interval plus the staleness threshold after the kill, nothing new goes
        # to the dead engine: every request succeeds on the first endpoint tried.
        await asyncio.sleep(
            max(0.0, killed_at + SCRAPE_INTERVAL_S + STALENESS_S - time.monotonic())
        )
        before = cluster.dispatched_to(victim)
        fresh = await asyncio.gather(*(stream(session, cluster.proxy_port, 4) for _ in range(30)))
        assert all(events[-1] == "[DONE]" for events in fresh)
        assert cluster.dispatched_to(victim) == before


async def test_200_concurrent_streams_of_mixed_priority_each_get_one_complete_response(
    cluster: Cluster,
) -> None:
    objectives = (None, "interactive", "batch")

    async def one(session: aiohttp.ClientSession, index: int) -> list[str]:
        headers = {"x-gateway-inference-fairness-id": f"tenant-{index % 3}"}
        objective = objectives[index % len(objectives)]
        if objective:
            headers["x-gateway-inference-objective"] = objective
        body = {
            "model": "sim-model",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 16,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": f"request {index}"}],
        }
        lines: list[str] = []
        async with session.post(
            f"http://127.0.0.1:{cluster.proxy_port}/v1/chat/completions",
            json=body,
            headers=headers,
        ) as response:
            assert response.status == 200
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    lines.append(line[6:])
        return lines

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(session, i) for i in range(200))), 120
        )
    for lines in results:
        assert lines.count("[DONE]") == 1 and lines[-1] == "[DONE]"
        documents = [json.loads(line) for line in lines[:-1]]
        assert not any("error" in document for document in documents)
        assert documents[-1]["usage"]["completion_tokens"] == 16
    assert cluster.app is not None
    await asyncio.sleep(0.05)
    assert cluster.app.director.in_flight == 0, "every request finished exactly once"
    assert cluster.app.flow.queued_requests == 0
    assert sum(s.dispatched_total for s in cluster.app.registry.snapshot()) == 200
