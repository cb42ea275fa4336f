"""`GrpcServer`: listens and serves gRPC routes over HTTP/2 on one of two engines.

- `frames` (default): Sluice's own HTTP/2 frame layer (`sluice.net.frames`) — every RFC 9113
  rule it needs, nothing else, about half the CPU per call of `hyper`.
- `hyper`: python-hyper's `h2` state machine (`sluice.net.hyper_h2`), the reference.

Both share `sluice.net.connection` (routing by `:path`, gRPC framing, limits, closing) and are
run through the same conformance, limit and fuzz tests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Literal

from sluice.net.call import Route
from sluice.net.connection import NO_ERROR, GrpcConnection
from sluice.net.frames import FrameConnection
from sluice.net.hyper_h2 import HyperConnection
from sluice.net.limits import H2Limits

Engine = Literal["frames", "hyper"]
ENGINES: dict[str, type[GrpcConnection]] = {"frames": FrameConnection, "hyper": HyperConnection}


class GrpcServer:
    """Serves `routes` (`{"/pkg.Service/Method": handler factory}`) over HTTP/2.

    >>> server = GrpcServer({"/pkg.S/M": MyHandler}, H2Limits())
    >>> port = await server.start("127.0.0.1", 0)
    >>> await server.stop(grace=5)
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        limits: H2Limits | None = None,
        *,
        engine: Engine = "frames",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.limits = limits or H2Limits()
        self.engine = ENGINES[engine]
        self.ssl_context = ssl_context
        self.connections: set[GrpcConnection] = set()
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    def connection(self) -> GrpcConnection:
        """A new connection's protocol (what the listener creates per accepted socket)."""
        return self.engine(self.limits, self.routes, self.connections)

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self.connection, host, port, ssl=self.ssl_context, reuse_address=True
        )
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; give calls in progress `grace` seconds, then close everything."""
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        if grace:
            for connection in list(self.connections):
                connection.drain()
            deadline = loop.time() + grace
            while any(not c.idle for c in self.connections) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.goaway(NO_ERROR)
        await self._server.wait_closed()
        self._server = None

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
