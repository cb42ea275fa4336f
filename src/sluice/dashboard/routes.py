"""The dashboard's HTTP side, on the metrics port's aiohttp app: `/` and `/static/*` (package
data), `/debug/state` (one snapshot), `/debug/events` (a snapshot a second as server-sent
events) and `/debug/decisions` (receipts, filtered). The metrics port's authorization (upstream's
`--metrics-endpoint-auth`) guards them all: receipts name tenants and request ids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from sluice.dashboard.snapshot import DashboardView
from sluice.receipts.query import DecisionFilter, FilterError
from sluice.receipts.ring import encode

Authorize = Callable[[web.Request], Awaitable[bool]]
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
EVENT_INTERVAL_S = 1.0
_JSON = "application/json"


def _asset(name: str) -> bytes:
    return resources.files("sluice.dashboard").joinpath("static", name).read_bytes()


class DashboardRoutes:
    def __init__(
        self,
        view: DashboardView,
        *,
        clock: Callable[[], float] = time.monotonic,
        authorize: Authorize | None = None,
    ) -> None:
        self.view = view
        self.clock = clock
        self.authorize = authorize
        self._assets = {name: _asset(name) for name in STATIC}

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/debug/state", self._state)
        app.router.add_get("/debug/events", self._events)
        app.router.add_get("/debug/decisions", self._decisions)

    def snapshot(self) -> dict[str, object]:
        return self.view.snapshot(self.clock(), time.time())

    async def _denied(self, request: web.Request) -> web.Response | None:
        if self.authorize is None or await self.authorize(request):
            return None
        status = 403 if "Authorization" in request.headers else 401
        return web.Response(status=status, text="unauthorized\n")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return await self._denied(request) or web.Response(
            body=self._assets["index.html"], content_type="text/html", charset="utf-8"
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        denied = await self._denied(request)
        if denied is not None:
            return denied
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound(text=f"no asset {name}\n")
        return web.Response(
            body=self._assets[name],
            headers={"Content-Type": STATIC[name], "Cache-Control": "no-cache"},
        )

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return await self._denied(request) or web.Response(
            body=encode(self.snapshot()), content_type=_JSON
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        denied = await self._denied(request)
        if denied is not None:
            return denied
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            while True:
                await response.write(b"data: " + encode(self.snapshot()) + b"\n\n")
                await asyncio.sleep(EVENT_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _decisions(self, request: web.Request) -> web.StreamResponse:
        denied = await self._denied(request)
        if denied is not None:
            return denied
        recorder = self.view.recorder
        if recorder is None or recorder.ring.max_entries == 0:
            return web.Response(
                status=404,
                text="decision receipts are off; start with --decision-receipts N (N > 0)\n",
            )
        try:
            selection = DecisionFilter.from_query(request.query)
        except FilterError as exc:
            return web.Response(status=400, text=f"/debug/decisions: {exc}\n")
        body = b"[" + b",".join(selection.select(recorder.ring)) + b"]"
        return web.Response(body=body, content_type=_JSON)
