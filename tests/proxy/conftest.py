"""Fixtures: fake engines on loopback ports, a proxy in front of them, and an HTTP client.

`make_pipeline` is the single place that decides which pipeline the proxy runs on. Today it is
the round-robin double; when the real pipeline lands, build it here from the same endpoints and
every test that does not poke the double's knobs (`gate`, `reject_with`) runs against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Limits, Pipeline
from sluice.proxy import ProxyOptions, ProxyServer

from .fake_engine import FakeEngine
from .recording import RecordingPipeline
from .round_robin import RoundRobinPipeline

# No gc.freeze() in the test process: it would keep every earlier test's cyclic garbage forever.
QUICK_STOP = ProxyOptions(shutdown_grace_s=0.5, freeze_gc=False)


def make_pipeline(endpoints: Sequence[Endpoint], **double_options: Any) -> RecordingPipeline:
    return RecordingPipeline(RoundRobinPipeline(endpoints, **double_options))


@pytest.fixture
async def start_engines() -> AsyncIterator[Callable[[int], Awaitable[list[FakeEngine]]]]:
    started: list[FakeEngine] = []

    async def start(count: int) -> list[FakeEngine]:
        engines = [FakeEngine(name=f"engine-{len(started) + i}") for i in range(count)]
        for engine in engines:
            await engine.start()
        started.extend(engines)
        return engines

    yield start
    for engine in started:
        await engine.stop()


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[ProxyServer]]]:
    started: list[ProxyServer] = []

    async def start(
        pipeline: Pipeline, limits: Limits | None = None, options: ProxyOptions = QUICK_STOP
    ) -> ProxyServer:
        proxy = ProxyServer(pipeline, limits, options=options)
        await proxy.start("127.0.0.1", 0)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds (things on the other side of a socket take a moment)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition did not become true in time")
        await asyncio.sleep(0.01)
