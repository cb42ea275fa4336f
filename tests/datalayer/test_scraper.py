"""The scraping shell against real loopback HTTP servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry
from sluice.datalayer.scraper import MetricsScraper, ScrapeSettings

PAGE = "vllm:num_requests_waiting 2\nvllm:num_requests_running 3\nvllm:kv_cache_usage_perc 0.5\n"


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[int, dict[str, object]]]:
    control: dict[str, object] = {"status": 200, "chunked": False}

    async def metrics(request: web.Request) -> web.StreamResponse:
        if control["chunked"]:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(PAGE[:20].encode())
            await response.write(PAGE[20:].encode())
            await response.write_eof()
            return response
        return web.Response(text=PAGE, status=int(control["status"]))  # type: ignore[call-overload]

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, control
    await runner.cleanup()


async def _wait_for(predicate: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_scraper_keeps_metrics_fresh_and_survives_failures(
    metrics_server: tuple[int, dict[str, object]], transport: str
) -> None:
    port, control = metrics_server
    registry = EndpointRegistry()
    registry.add(Endpoint("pod-0", "127.0.0.1", port))
    scraper = MetricsScraper(
        registry,
        settings=ScrapeSettings(interval_s=0.02, transport=transport),  # type: ignore[arg-type]
    )
    await scraper.start()
    try:
        state = registry.get("pod-0")
        assert state is not None
        await _wait_for(lambda: state.scraped)
        assert (state.metrics.waiting, state.metrics.running) == (2, 3)
        control["status"] = 500
        await _wait_for(lambda: state.consecutive_failures > 0)
        assert "pod-0" in registry and state.last_error == "HTTP 500"
        control["status"], control["chunked"] = 200, True
        await _wait_for(lambda: state.consecutive_failures == 0)
    finally:
        await scraper.stop()


async def test_unreachable_endpoint_only_goes_stale() -> None:
    registry = EndpointRegistry()
    registry.add(Endpoint("gone", "127.0.0.1", 1))  # nothing listens on port 1
    scraper = MetricsScraper(registry, settings=ScrapeSettings(interval_s=0.02, timeout_s=0.5))
    await scraper.start()
    try:
        state = registry.get("gone")
        assert state is not None
        await _wait_for(lambda: state.consecutive_failures >= 2)
        assert not state.scraped and "gone" in registry
    finally:
        await scraper.stop()
