"""Prometheus `/metrics` over HTTP (aiohttp), serving one registry the caller assembled.

The exposition is written in slices: the registry's families are rendered a few children at a
time (`util.series` families render themselves; any other collector through prometheus_client's
own encoder, one family at a time), and after each slice of about a millisecond the handler
yields to the event loop, so a scrape never holds up requests for longer than one slice. The
text is streamed (chunked), never held whole. Always the Prometheus text format 0.0.4, which
every Prometheus accepts.

A family that cannot be encoded is left out and logged (once per family), instead of failing
the whole scrape: one bad label value must never cost every other metric.

Authentication is a hook: `authorize(request)` returns True to allow. Kubernetes TokenReview /
SubjectAccessReview (upstream's `--metrics-endpoint-auth`) plugs in here; the default is open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from sluice.logs import get_logger
from sluice.util.series import FamilySnapshot

Authorize = Callable[[web.Request], Awaitable[bool]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SLICE_S = 0.001  # rendering time between two yields to the event loop
FLUSH_BYTES = 64 * 1024

log = get_logger("health.metrics")


class _OneFamily:
    """A registry of one already-collected family, for prometheus_client's encoder."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> list[Metric]:
        return [self._metric]


class Exposition:
    """Renders a registry as text, in slices."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._broken: set[str] = set()

    def texts(self) -> Iterator[str]:
        """The exposition in pieces: a family's header and a few children at a time."""
        for metric in self._registry.collect():
            if isinstance(metric, FamilySnapshot):
                yield from metric.family.text_chunks()
            else:
                yield self._library_text(metric)

    def _library_text(self, metric: Metric) -> str:
        try:
            return generate_latest(_OneFamily(metric)).decode("utf-8")  # type: ignore[arg-type]
        except (UnicodeError, ValueError) as err:
            if metric.name not in self._broken:
                self._broken.add(metric.name)
                log.error("metric family left out of /metrics", family=metric.name, error=repr(err))
            return ""

    async def write(self, send: Callable[[bytes], Awaitable[None]]) -> int:
        """Render and send the exposition, yielding to the event loop between slices."""
        pending: list[str] = []
        size = sent = 0
        started = time.perf_counter()
        for text in self.texts():
            pending.append(text)
            size += len(text)
            if size >= FLUSH_BYTES or time.perf_counter() - started >= SLICE_S:
                sent += await self._flush(pending, send)
                pending, size = [], 0
                await asyncio.sleep(0)  # let the requests waiting on the loop run
                started = time.perf_counter()
        if pending:
            sent += await self._flush(pending, send)
        return sent

    @staticmethod
    async def _flush(pending: list[str], send: Callable[[bytes], Awaitable[None]]) -> int:
        # Label values are made printable before they get here; "replace" is the last guard.
        chunk = "".join(pending).encode("utf-8", "replace")
        await send(chunk)
        return len(chunk)


class MetricsServer:
    """
    >>> metrics = MetricsServer(registry, authorize=None)
    >>> port = await metrics.start(9090)
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        authorize: Authorize | None = None,
        host: str = "0.0.0.0",
        extra_routes: Callable[[web.Application], None] | None = None,
    ) -> None:
        self._exposition = Exposition(registry)
        self._extra_routes = extra_routes  # the dashboard and /debug/* (sluice.dashboard)
        self._authorize = authorize
        self._host = host
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.on_response_prepare.append(_no_versions)  # aiohttp's Server: names its version
        if self._extra_routes is not None:
            self._extra_routes(app)
        return app

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self._authorize is not None and not await self._authorize(request):
            # 401 asks for credentials; 403 refuses the ones given.
            status = 403 if "Authorization" in request.headers else 401
            return web.Response(status=status, text="unauthorized\n")
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await self._exposition.write(response.write)
        await response.write_eof()
        return response

    async def start(self, port: int) -> int:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, port)
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _no_versions(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "sluice"
