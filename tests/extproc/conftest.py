"""Fixtures for the hermetic suite: Sluice's ext_proc server on a loopback port, driven by a
grpc.aio client stub exactly as Envoy would drive it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from sluice.bench.harness.pipeline_double import DoublePipeline
from sluice.datalayer.endpoint import Endpoint
from sluice.extproc import ExtProcServer, ServerOptions, StreamOptions

ENDPOINTS = [Endpoint(name=f"e{i}", address=f"10.0.0.{i}", port=8000) for i in (1, 2, 3)]


@pytest.fixture
def pipeline() -> DoublePipeline:
    return DoublePipeline(list(ENDPOINTS))


@pytest.fixture
def stream_options() -> StreamOptions:
    return StreamOptions()


TRANSPORTS = ["h2", "hyper", "grpc"]  # Sluice's frame layer, python-hyper's h2, grpc.aio


@pytest.fixture(params=TRANSPORTS)
async def stub(
    request: pytest.FixtureRequest, pipeline: DoublePipeline, stream_options: StreamOptions
) -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    server = ExtProcServer(
        pipeline,
        ServerOptions(grpc_port=0, host="127.0.0.1", secure_serving=False, transport=request.param),
        stream_options,
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.ExternalProcessorStub(channel)
    await channel.close()
    await server.stop(None)
