"""`--health-checking`: upstream's flag adds the standard gRPC health service to the ext_proc
port (beside `Process`), for gateways that health-check the port they call; without it that
port answers health checks UNIMPLEMENTED, as upstream's."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import StartApp

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"


async def check(port: int, service: str) -> health_pb2.HealthCheckResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)


@pytest.mark.parametrize("transport", ["h2", "hyper", "grpc"])
async def test_the_ext_proc_port_answers_health_checks_with_the_flag(
    start_app: StartApp, transport: str
) -> None:
    port = await start_app(
        "--health-checking", "--secure-serving=false", f"--ext-proc-transport={transport}"
    )
    for service in ("", EXT_PROC):
        assert (await check(port, service)).status == health_pb2.HealthCheckResponse.SERVING


async def test_without_the_flag_it_does_not(start_app: StartApp) -> None:
    port = await start_app("--secure-serving=false")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await check(port, "")
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
