"""`--model-server-metrics-https-insecure-skip-verify` does what it says (issue #17: `=false`
still skipped verification). An engine serving its metrics over HTTPS with a self-signed
certificate is refused when verification is on, scraped when it is skipped, and scraped with
verification on once `--model-server-metrics-https-ca-file` names the CA that signed it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from certs import Pair, make_pair
from sluice.app import AppError, scrape_settings
from sluice.cli.serve_options import parse_serve_options
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.datalayer.scraper import MetricsScraper

PAGE = "vllm:num_requests_waiting 2\nvllm:num_requests_running 3\nvllm:kv_cache_usage_perc 0.5\n"
HTTPS = ["--pool-name=p", "--model-server-metrics-scheme=https", "--refresh-metrics-interval=20ms"]

StartEngine = Callable[[Pair], Awaitable[int]]


async def metrics(_: web.Request) -> web.Response:
    return web.Response(text=PAGE)


@pytest.fixture
async def https_engine(tmp_path: Path) -> AsyncIterator[StartEngine]:
    """Starts an engine whose /metrics is served over TLS with the given pair; its port."""
    runners: list[web.AppRunner] = []

    async def start(pair: Pair) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        directory = pair.write(tmp_path / f"engine-{len(runners)}")
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


async def scrape_once(port: int, flags: list[str]) -> EndpointState:
    """Scrapes the engine with the settings `sluice serve` builds from `flags`, until its first
    page is recorded or its first failure."""
    registry = EndpointRegistry()
    registry.add(Endpoint("engine", "127.0.0.1", port))
    scraper = MetricsScraper(registry, settings=scrape_settings(parse_serve_options(flags)))
    await scraper.start()
    state = registry.get("engine")
    assert state is not None
    try:
        for _ in range(500):  # 5 s at most
            if state.scraped or state.consecutive_failures:
                break
            await asyncio.sleep(0.01)
    finally:
        await scraper.stop()
    return state


async def test_a_self_signed_engine_is_refused_when_verification_is_on(
    https_engine: StartEngine,
) -> None:
    port = await https_engine(make_pair("engine")[0])
    state = await scrape_once(
        port, [*HTTPS, "--model-server-metrics-https-insecure-skip-verify=false"]
    )
    assert not state.scraped
    assert "CERTIFICATE_VERIFY_FAILED" in (state.last_error or "")


async def test_it_is_scraped_when_the_flag_says_skip_as_upstreams_default(
    https_engine: StartEngine,
) -> None:
    port = await https_engine(make_pair("engine")[0])
    for flags in ([], ["--model-server-metrics-https-insecure-skip-verify"]):
        state = await scrape_once(port, [*HTTPS, *flags])
        assert state.scraped and (state.metrics.waiting, state.metrics.running) == (2, 3)


async def test_a_ca_file_lets_verification_accept_the_engines_it_signed(
    https_engine: StartEngine, tmp_path: Path
) -> None:
    ca_pair, ca_cert, ca_key = make_pair("engines CA")
    signed = await https_engine(make_pair("engine", issuer=(ca_cert, ca_key))[0])
    stranger = await https_engine(make_pair("engine")[0])  # self-signed: not by that CA
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_pair.cert_pem)
    verify = [
        *HTTPS,
        "--model-server-metrics-https-insecure-skip-verify=false",
        f"--model-server-metrics-https-ca-file={ca_file}",
    ]
    assert (await scrape_once(signed, verify)).scraped
    assert not (await scrape_once(stranger, verify)).scraped


def test_a_missing_ca_file_is_refused_at_start_naming_the_flag(tmp_path: Path) -> None:
    flags = [*HTTPS, f"--model-server-metrics-https-ca-file={tmp_path / 'nope.pem'}"]
    with pytest.raises(AppError, match=r"--model-server-metrics-https-ca-file .*: no such file"):
        scrape_settings(parse_serve_options(flags))
