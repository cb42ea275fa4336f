"""The metrics server: the text is streamed in slices, and a family that cannot be encoded is
left out (and logged) instead of failing every scrape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.health.metrics import Exposition, MetricsServer
from sluice.util.series import GaugeFamily


class Unencodable(Collector):
    """A collector Sluice does not own, with a label value no encoder can write."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("third_party", "Not ours.", labels=["who"])
        family.add_metric([b"\xff".decode("utf-8", "surrogateescape")], 1)
        yield family


async def test_an_unencodable_family_is_left_out_and_the_rest_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    Counter("healthy", "Still here.", registry=registry).inc()
    registry.register(Unencodable())
    server = MetricsServer(registry, host="127.0.0.1")
    port = await server.start(0)
    caplog.set_level(logging.ERROR, logger="sluice")
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = await response.text()
                assert "healthy_total 1.0" in text
                assert "third_party" not in text
    finally:
        await server.stop()
    logged = [r for r in caplog.records if "left out of /metrics" in r.getMessage()]
    assert len(logged) == 1  # once per family, not once per scrape


async def test_a_big_exposition_is_written_in_many_slices_with_the_loop_running_between() -> None:
    registry = CollectorRegistry()
    family = GaugeFamily("wide", "Many children.", ("id",))
    registry.register(family)
    for i in range(60_000):
        family.labels(f"child-{i}").set(i)
    ticks = 0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    sent: list[bytes] = []

    async def send(chunk: bytes) -> None:
        sent.append(chunk)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    total = await Exposition(registry).write(send)
    stop.set()
    await beating
    assert total == sum(len(c) for c in sent) > 1_000_000
    assert b"".join(sent).count(b"\nwide{") == 60_000
    assert len(sent) > 10 and ticks >= len(sent) - 1  # the loop ran between the slices
