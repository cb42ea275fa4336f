"""What one gateway connection can make Sluice hold, on both ext_proc transports: request bodies
that never complete count against the connection's buffer limit, and the calls past it end with
RESOURCE_EXHAUSTED instead of growing memory (the old frame layer went from 163 to 630 MB with
30 streams x 15 MiB)."""

from __future__ import annotations

import asyncio
import tracemalloc

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from sluice.bench.harness.pipeline_double import DoublePipeline
from sluice.datalayer.endpoint import Endpoint
from sluice.extproc import ExtProcServer, ServerOptions, StreamOptions, wire

from . import envoy_messages as m

MiB = 1 << 20


@pytest.mark.parametrize("transport", ["h2", "hyper", "grpc"])
async def test_unfinished_bodies_are_capped_per_connection(transport):
    options = ServerOptions(
        grpc_port=0, host="127.0.0.1", secure_serving=False, transport=transport
    )
    limit = options.limits_for(StreamOptions()).max_connection_buffer_bytes
    server = ExtProcServer(DoublePipeline([Endpoint("e1", "10.0.0.1", 8000)]), options)
    port = await server.start()
    chunk = m.request_body(b"x" * wire.STREAMED_CHUNK_BYTES, end_of_stream=False)
    per_call = (15 * MiB) // wire.STREAMED_CHUNK_BYTES  # 15 MiB of body, never finished
    outcomes: list[grpc.StatusCode | None] = []
    tracemalloc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # one connection
            stub = pb_grpc.ExternalProcessorStub(channel)

            async def one_call() -> None:
                call = stub.Process()
                try:
                    await call.write(m.request_headers({":path": "/v1/completions"}))
                    for _ in range(per_call):
                        await call.write(chunk)
                    outcomes.append(None)  # all of it was taken
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    # The server ended the call while we wrote: its status is in the trailers.
                    outcomes.append(await call.code())
                call.cancel()

            await asyncio.wait_for(asyncio.gather(*(one_call() for _ in range(30))), 60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await server.stop(None)
    # Once the connection is over its limit, every call that adds bytes is ended (with
    # RESOURCE_EXHAUSTED; a grpc client whose write fails first reports its own INTERNAL).
    taken = outcomes.count(None)
    assert taken <= limit // (15 * MiB), outcomes
    assert peak < limit + 48 * MiB, f"peak {peak // MiB} MiB with a limit of {limit // MiB} MiB"
