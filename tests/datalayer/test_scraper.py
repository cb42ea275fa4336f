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
    control: dict[str, object] = {"status": 200, "chunked": False, "page": PAGE}

    async def metrics(request: web.Request) -> web.StreamResponse:
        page = str(control["page"])
        if control["chunked"]:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(page[:20].encode())
            await response.write(page[20:].encode())
            await response.write_eof()
            return response
        return web.Response(text=page, status=int(control["status"]))  # type: ignore[call-overload]

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


_HEAD_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"14\r\n" + PAGE[:20].encode() + b"\r\n"
    b"%x\r\n" % len(PAGE[20:]) + PAGE[20:].encode() + b"\r\n"
    b"0\r\nX-Trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("style", ["close", "chunked-trailers", "silent"])
async def test_lean_transport_reads_real_world_responses_and_times_out(style: str) -> None:
    """Raw servers: `Connection: close` after each answer, chunked with trailers written byte by
    byte, and a server that never answers (a timeout: stale, never removed)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            if style == "silent":
                await asyncio.sleep(10)
            elif style == "close":
                writer.write(_HEAD_CLOSE % len(PAGE) + PAGE.encode())
                await writer.drain()
                writer.close()
                return
            else:
                for i in range(len(_CHUNKED)):
                    writer.write(_CHUNKED[i : i + 1])
                    await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = EndpointRegistry()
    registry.add(Endpoint("pod-0", "127.0.0.1", port))
    scraper = MetricsScraper(registry, settings=ScrapeSettings(interval_s=0.02, timeout_s=0.1))
    await scraper.start()
    try:
        state = registry.get("pod-0")
        assert state is not None
        if style == "silent":
            await _wait_for(lambda: state.consecutive_failures >= 2)
            assert state.last_error == "TimeoutError: " and "pod-0" in registry
        else:
            await _wait_for(lambda: state.scraped)
            first = state.metrics.updated_at
            await _wait_for(lambda: state.metrics.updated_at > first)  # reconnects / repeats
            assert (state.metrics.waiting, state.metrics.running) == (2, 3)
            assert state.consecutive_failures == 0
    finally:
        await scraper.stop()
        server.close()


async def test_an_unchanged_page_is_restamped_and_a_changed_one_parsed(
    metrics_server: tuple[int, dict[str, object]],
) -> None:
    port, control = metrics_server
    registry = EndpointRegistry()
    registry.add(Endpoint("pod-0", "127.0.0.1", port))
    scraper = MetricsScraper(registry, settings=ScrapeSettings(interval_s=0.02))
    await scraper.start()
    try:
        state = registry.get("pod-0")
        assert state is not None
        await _wait_for(lambda: state.scraped)
        first = state.metrics
        await _wait_for(lambda: state.metrics.updated_at > first.updated_at)
        assert (state.metrics.waiting, state.metrics.kv_cache_usage) == (2, 0.5)
        control["page"] = PAGE.replace("waiting 2", "waiting 7")
        await _wait_for(lambda: state.metrics.waiting == 7)
    finally:
        await scraper.stop()


async def _scrape_once(answer: bytes) -> tuple[bool, str | None]:
    """One raw server answering every request with `answer`; what the scraper made of it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(answer)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = EndpointRegistry()
    registry.add(Endpoint("pod-0", "127.0.0.1", port))
    scraper = MetricsScraper(registry, settings=ScrapeSettings(interval_s=0.02, timeout_s=0.5))
    await scraper.start()
    try:
        state = registry.get("pod-0")
        assert state is not None
        await _wait_for(lambda: state.scraped or state.consecutive_failures > 0)
        return state.scraped, state.last_error
    finally:
        await scraper.stop()
        server.close()


_BODY = PAGE.encode()
_CHUNKED_BODY = b"%x\r\n" % len(_BODY) + _BODY + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        # The old parser let Content-Length win over chunked: a smuggling shape.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            + _CHUNKED_BODY,
            "Content-Length",
        ),
        # -2 and -3 were the old parser's own markers for chunked and until-close.
        (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n" + _CHUNKED_BODY, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n" + _BODY, "Content-Length"),
        # It buffered without bound: a page over the limit is refused as soon as it is declared.
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (17 << 20), "over the limit"),
    ],
    ids=["chunked and Content-Length", "Content-Length -2", "Content-Length -3", "huge page"],
)
async def test_the_scraper_refuses_responses_rfc_9112_refuses(answer, error):
    scraped, last_error = await _scrape_once(answer)
    assert not scraped
    assert last_error is not None and error in last_error


async def test_the_scraper_skips_100_continue_and_reads_the_real_response():
    """The old parser took the 100 Continue as the response (an empty page)."""
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + _HEAD_CLOSE % len(_BODY) + _BODY
    scraped, last_error = await _scrape_once(answer)
    assert scraped and last_error is None


async def test_a_page_streamed_without_end_is_cut_at_the_limit_not_buffered():
    """An endpoint that sends an endless body (until close) is refused at MAX_PAGE_BYTES."""
    from sluice.datalayer.http11 import MAX_PAGE_BYTES

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        chunk = b"x" * (1 << 20)
        for _ in range(MAX_PAGE_BYTES // len(chunk) + 4):  # bounded: a little past the limit
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    registry = EndpointRegistry()
    registry.add(Endpoint("pod-0", "127.0.0.1", server.sockets[0].getsockname()[1]))
    scraper = MetricsScraper(registry, settings=ScrapeSettings(interval_s=0.05, timeout_s=5))
    await scraper.start()
    try:
        state = registry.get("pod-0")
        assert state is not None
        await _wait_for(lambda: state.consecutive_failures > 0, timeout=10)
        assert state.last_error is not None and "over the limit" in state.last_error
    finally:
        await scraper.stop()
        server.close()
