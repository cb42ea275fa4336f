"""Prometheus `/metrics` over HTTP (aiohttp), serving one registry the caller assembled.

Authentication is a hook: `authorize(request)` returns True to allow. Kubernetes TokenReview /
SubjectAccessReview (upstream's `--metrics-endpoint-auth`) plugs in here; the default is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

Authorize = Callable[[web.Request], Awaitable[bool]]


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
    ) -> None:
        self._registry = registry
        self._authorize = authorize
        self._host = host
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._authorize is not None and not await self._authorize(request):
            # 401 asks for credentials; 403 refuses the ones given.
            status = 403 if "Authorization" in request.headers else 401
            return web.Response(status=status, text="unauthorized\n")
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

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
