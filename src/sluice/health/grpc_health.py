"""`grpc.health.v1.Health` with upstream's service names and leader-election semantics.

Status is computed on every call from `ready()` (the pool is loaded) and `is_leader()`, so it
can never go stale. Without leader election every known name reports readiness. With it,
`liveness` is always SERVING (a standby is alive) while `readiness`, `""` and the ext_proc
service are SERVING only on the ready leader, which keeps gateway traffic on the leader.
Unknown names get SERVICE_UNKNOWN, as upstream.

Served on its own plaintext port (`HealthServer`), and — with `--health-checking`, upstream's
flag — also on the ext_proc port (`GrpcHealthService`, for either ext_proc transport), so a
gateway can health-check the very port it sends traffic to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.extproc.server import SERVICE_NAME as EXT_PROC_SERVICE
from sluice.net.call import Call, Handler, Route
from sluice.net.grpc_framing import Status

LIVENESS = "liveness"
READINESS = "readiness"
OVERALL = ""
SERVICE_NAMES = frozenset({OVERALL, EXT_PROC_SERVICE, LIVENESS, READINESS})

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def serving_status(
    service: str,
    *,
    ready: bool,
    is_leader: Callable[[], bool] | None,
    extra: Mapping[str, Callable[[], bool]] | None = None,
) -> int:
    """The health of `service`; `is_leader` None means leader election is off. `extra`: more
    named services and whether each is SERVING (e.g. `sluice.replicas`: the store reached)."""
    if extra is not None and service in extra:
        return SERVING if extra[service]() else NOT_SERVING
    if service not in SERVICE_NAMES:
        return SERVICE_UNKNOWN
    if is_leader is None:
        return SERVING if ready else NOT_SERVING
    if service == LIVENESS:
        return SERVING
    return SERVING if ready and is_leader() else NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(
        self,
        ready: Callable[[], bool],
        is_leader: Callable[[], bool] | None = None,
        watch_interval_s: float = 1.0,
        extra: Mapping[str, Callable[[], bool]] | None = None,
    ) -> None:
        self._ready = ready
        self._is_leader = is_leader
        self._extra = extra
        self.watch_interval_s = watch_interval_s

    def status(self, service: str) -> int:
        return serving_status(
            service, ready=self._ready(), is_leader=self._is_leader, extra=self._extra
        )

    async def Check(  # gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        # Polled: readiness and leadership are plain callables without change notification.
        last = None
        while True:
            status = self.status(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(self.watch_interval_s)


CHECK_PATH = "/grpc.health.v1.Health/Check"
WATCH_PATH = "/grpc.health.v1.Health/Watch"


class _UnaryRequest:
    """A call that expects exactly one request message, then the client's half-close."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.request: health_pb2.HealthCheckRequest | None = None

    def on_message(self, message: bytes) -> None:
        if self.request is not None:
            self._call.finish(Status.INTERNAL, "expected one request message")
            return
        try:
            self.request = health_pb2.HealthCheckRequest.FromString(message)
        except DecodeError:
            self._call.finish(Status.INVALID_ARGUMENT, "malformed HealthCheckRequest")
            return
        self.received()

    def on_half_close(self) -> None:
        if self.request is None:
            self._call.finish(Status.INTERNAL, "expected one request message")
            return
        self.half_closed()

    def received(self) -> None:
        pass

    def half_closed(self) -> None:
        pass

    def on_cancel(self) -> None:
        pass


class _CheckCall(_UnaryRequest):
    def __init__(self, call: Call, servicer: HealthServicer) -> None:
        super().__init__(call)
        self._servicer = servicer

    def half_closed(self) -> None:
        assert self.request is not None
        status = self._servicer.status(self.request.service)
        self._call.send(health_pb2.HealthCheckResponse(status=status).SerializeToString())
        self._call.finish()


class _WatchCall(_UnaryRequest):
    """Server streaming: the status now, then each change, until the client cancels."""

    def __init__(self, call: Call, servicer: HealthServicer) -> None:
        super().__init__(call)
        self._servicer = servicer
        self._task: asyncio.Task[None] | None = None

    def received(self) -> None:
        assert self.request is not None
        self._task = asyncio.get_running_loop().create_task(self._watch(self.request.service))

    async def _watch(self, service: str) -> None:
        last = None
        while not self._call.ended:
            status = self._servicer.status(service)
            if status != last:
                last = status
                self._call.send(health_pb2.HealthCheckResponse(status=status).SerializeToString())
            await asyncio.sleep(self._servicer.watch_interval_s)

    def on_cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class GrpcHealthService:
    """`grpc.health.v1.Health` as a service sharing the ext_proc port (`SharedService`)."""

    def __init__(self, servicer: HealthServicer) -> None:
        self.servicer = servicer

    def h2_routes(self) -> Mapping[str, Route]:
        servicer = self.servicer

        def check(call: Call) -> Handler:
            return _CheckCall(call, servicer)

        def watch(call: Call) -> Handler:
            return _WatchCall(call, servicer)

        return {CHECK_PATH: check, WATCH_PATH: watch}

    def add_to_grpc_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)


class HealthServer:
    """Plaintext gRPC health on `--grpc-health-port` (kubelet gRPC probes do not speak TLS).

    >>> health = HealthServer(lambda: pipeline.ready, is_leader=None)
    >>> port = await health.start(9003)
    """

    def __init__(
        self,
        ready: Callable[[], bool],
        is_leader: Callable[[], bool] | None = None,
        host: str = "0.0.0.0",
        extra: Mapping[str, Callable[[], bool]] | None = None,
    ) -> None:
        self.servicer = HealthServicer(ready, is_leader, extra=extra)
        self._host = host
        self._server: grpc.aio.Server | None = None

    async def start(self, port: int) -> int:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        bound = server.add_insecure_port(f"{self._host}:{port}")
        await server.start()
        self._server = server
        return bound

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
