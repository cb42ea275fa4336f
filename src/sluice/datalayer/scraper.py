"""The scraping shell: one asyncio loop per endpoint polls `/metrics` every refresh interval.

Two transports: `lean` (default; `http11.MetricsClient`, one keep-alive connection per
endpoint, a fraction of aiohttp's CPU per request) and `aiohttp` (one shared `ClientSession`;
proxies, TLS options). Parsing and state live in the pure modules; this file only moves bytes
and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from sluice.datalayer.extract import metrics_from_text
from sluice.datalayer.http11 import MetricsClient
from sluice.datalayer.metric_names import VLLM, MetricNames
from sluice.datalayer.registry import EndpointRegistry


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    interval_s: float = 0.05  # upstream --refresh-metrics-interval
    timeout_s: float = 5.0
    scheme: str = "http"
    path: str = "/metrics"
    transport: Literal["lean", "aiohttp"] = "lean"
    verify_tls: bool = False  # upstream skips verification by default


class MetricsScraper:
    """Keeps one scrape loop running per registered endpoint until `stop()`."""

    def __init__(
        self,
        registry: EndpointRegistry,
        names: MetricNames = VLLM,
        settings: ScrapeSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._names = names
        self._settings = settings or ScrapeSettings()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._seen_version = -1

    async def start(self) -> None:
        if self._settings.transport == "aiohttp":
            timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
            connector = aiohttp.TCPConnector(limit=0, ssl=self._settings.verify_tls)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        self._supervisor = asyncio.create_task(self._supervise(), name="sluice-scrape-supervisor")

    async def stop(self) -> None:
        tasks = [t for t in (self._supervisor, *self._loops.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _supervise(self) -> None:
        # Membership changes are rare; polling the registry's version is cheaper than callbacks.
        while True:
            if self._registry.version != self._seen_version:
                self._seen_version = self._registry.version
                self._sync_loops()
            await asyncio.sleep(self._settings.interval_s)

    def _sync_loops(self) -> None:
        current = {s.name: s.endpoint for s in self._registry.snapshot()}
        for name in [n for n in self._loops if n not in current]:
            self._loops.pop(name).cancel()
        for name, endpoint in current.items():
            target = endpoint.metrics_hostport
            task = self._loops.get(name)
            if task is None or task.get_name() != target:
                if task is not None:
                    task.cancel()
                port = endpoint.metrics_port or endpoint.port
                loop = self._scrape_loop(name, endpoint.address, port)
                self._loops[name] = asyncio.create_task(loop, name=target)

    def _fetcher(self, host: str, port: int) -> Callable[[], object]:
        settings = self._settings
        if settings.transport == "aiohttp":
            url = f"{settings.scheme}://{host if ':' not in host else f'[{host}]'}:{port}"
            url += settings.path
            session = self._session
            assert session is not None

            async def fetch_aiohttp() -> tuple[int, bytes]:
                async with session.get(url) as response:
                    return response.status, await response.read()

            return fetch_aiohttp
        context: ssl.SSLContext | None = None
        if settings.scheme == "https":
            context = ssl.create_default_context()
            if not settings.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        client = MetricsClient(host, port, settings.path, ssl_context=context)
        return lambda: client.get(settings.timeout_s)

    async def _scrape_loop(self, name: str, host: str, port: int) -> None:
        fetch = self._fetcher(host, port)
        interval = self._settings.interval_s
        registry, names, clock = self._registry, self._names, self._clock
        while True:
            started = clock()
            mark = registry.begin_scrape(name)
            if mark is None:
                return
            try:
                status, body = await fetch()  # type: ignore[misc]
                if status != 200:
                    registry.record_scrape_failure(mark, f"HTTP {status}")
                else:
                    state = registry.get(name)
                    previous = state.metrics if state is not None and state.scraped else None
                    text = body.decode("utf-8", "replace")
                    registry.record_scrape(mark, metrics_from_text(text, names, previous, clock()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure only makes the metrics stale
                registry.record_scrape_failure(mark, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, interval - (clock() - started)))
