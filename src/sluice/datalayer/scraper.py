"""The scraping shell: polls every endpoint's `/metrics` each refresh interval.

Two transports: `lean` (default; `lean_scraper.LeanScraper`, one ticker for all endpoints and one
keep-alive connection each, a fraction of aiohttp's CPU per request) and `aiohttp` (one loop
per endpoint on a shared `ClientSession`; proxies, TLS options). Parsing and state live in the
pure modules (`recorder` applies outcomes); this file only moves bytes and time.
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

from sluice.datalayer.lean_scraper import LeanScraper
from sluice.datalayer.metric_names import VLLM, MetricNames
from sluice.datalayer.recorder import MissingMetricsObserver, ScrapeRecorder
from sluice.datalayer.registry import EndpointRegistry


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    interval_s: float = 0.05  # upstream --refresh-metrics-interval
    timeout_s: float = 5.0
    scheme: str = "http"
    path: str = "/metrics"
    transport: Literal["lean", "aiohttp"] = "lean"
    # https only: verify the engines' certificates (upstream's default skips: its
    # --model-server-metrics-https-insecure-skip-verify is true), against `ca_file` (PEM) or
    # the system roots
    verify_tls: bool = False
    ca_file: str = ""


class MetricsScraper:
    """Scrapes every registered endpoint each interval until `stop()`."""

    def __init__(
        self,
        registry: EndpointRegistry,
        names: MetricNames = VLLM,
        settings: ScrapeSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_missing: MissingMetricsObserver | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings or ScrapeSettings()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._seen_version = -1
        self._recorder = ScrapeRecorder(registry, names, clock, on_missing)
        self._lean: LeanScraper | None = None

    async def start(self) -> None:
        settings = self._settings
        if settings.transport == "lean":
            self._lean = LeanScraper(
                self._registry,
                self._recorder,
                interval_s=settings.interval_s,
                timeout_s=settings.timeout_s,
                path=settings.path,
                ssl_context=self._ssl_context(),
            )
            self._lean.start()
            return
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl_context() or False)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        self._supervisor = asyncio.create_task(self._supervise(), name="sluice-scrape-supervisor")

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._settings.scheme != "https":
            return None
        context = ssl.create_default_context(cafile=self._settings.ca_file or None)
        if not self._settings.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def stop(self) -> None:
        if self._lean is not None:
            self._lean.stop()
            self._lean = None
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

    async def _scrape_loop(self, name: str, host: str, port: int) -> None:
        """The `aiohttp` transport: one loop per endpoint."""
        settings = self._settings
        url = f"{settings.scheme}://{host if ':' not in host else f'[{host}]'}:{port}"
        url += settings.path
        session = self._session
        assert session is not None
        interval = settings.interval_s
        registry, recorder, clock = self._registry, self._recorder, self._clock
        while True:
            started = clock()
            mark = registry.begin_scrape(name)
            if mark is None:
                return
            try:
                async with session.get(url) as response:
                    status, body = response.status, await response.read()
                recorder.response(mark, status, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure only makes the metrics stale
                recorder.failure(mark, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, interval - (clock() - started)))
