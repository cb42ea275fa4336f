"""Upstream's queueing contract, through the Endpoint Picker Protocol: with every endpoint saturated
and requests queued, an endpoint that reports room (waiting 0, KV 10 %) takes as many queued
requests as its thresholds and Sluice's caps allow, highest priority first — and no response ever
comes back to Sluice (a gateway that has not forwarded it yet, or never will).

Real ext_proc streams on loopback gRPC (both transports), the real director, and metrics set as
the scraper would set them.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc import envoy_messages as m
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.director import Director
from sluice.extproc import ExtProcServer, ServerOptions
from sluice.flowcontrol.controller import FlowController
from sluice.flowcontrol.model import Ticket
from sluice.requests.errors import SluiceError
from sluice.scheduling.scheduler import Scheduler
from test_director import Clock, pool_state

CAP = 4  # Sluice's maxInFlightPerEndpoint
QUEUED = (-1, 0, 10, 0, -1, 10)  # priorities, in arrival order
OBJECTIVE = {10: "interactive", 0: None, -1: "batch"}


class Recording(Director):
    """The real director, recording the priority of each request it releases, in order."""

    released: list[int]

    def _release(self, ticket: Ticket, result: object) -> None:
        if not isinstance(result, SluiceError):
            self.released.append(ticket.priority)
        super()._release(ticket, result)  # type: ignore[arg-type]


def director(saturation: str) -> tuple[Recording, Clock]:
    config = load_sluice_config(
        "flowControl: {maxRequests: 100}\n"
        f"saturationDetector: {{maxInFlightPerEndpoint: {CAP}, {saturation}}}\n"
    )
    clock = Clock()
    clock.now = time.monotonic()
    d = Recording(
        scheduler=Scheduler.from_config(config.picker, rng=random.Random(1)),
        flow=FlowController(config.flow),
        registry=EndpointRegistry(),
        room=config.room,
        clock=time.monotonic,
        rng=random.Random(1),
    )
    d.released = []
    d.set_state(pool_state())  # two endpoints, e.g. 10.0.0.1:8001 and :8002
    return d, clock


def report(d: Director, name: str, *, waiting: int, kv: float) -> None:
    mark = d.registry.begin_scrape(name)
    assert mark is not None
    d.registry.record_scrape(
        mark, EngineMetrics(waiting=waiting, kv_cache_usage=kv, updated_at=time.monotonic())
    )


async def open_streams(stub: pb_grpc.ExternalProcessorStub) -> list:
    calls = []
    for i, priority in enumerate(QUEUED):
        headers = {":path": "/v1/completions", "x-gateway-inference-fairness-id": f"tenant-{i % 3}"}
        if OBJECTIVE[priority]:
            headers["x-gateway-inference-objective"] = OBJECTIVE[priority]
        body = json.dumps(
            {"model": "m", "max_tokens": 8, "prompt": f"request {i} " + "word " * 300}
        ).encode()
        call = stub.Process()
        await call.write(m.request_headers(headers))
        await call.write(m.request_body(body, end_of_stream=True))
        calls.append(call)
    return calls


def start_readers(calls: list) -> list[asyncio.Future[str]]:
    """For each stream, its routing answer (the endpoint) once it comes."""

    async def answer(call) -> str:
        first = await call.read()
        return m.destination_metadata(first)

    return [asyncio.ensure_future(answer(c)) for c in calls]


async def routed(readers: list[asyncio.Future[str]], timeout: float, count: int) -> list[str]:
    """Wait up to `timeout` for `count` routing answers; the endpoints answered so far."""
    deadline = time.monotonic() + timeout
    while sum(r.done() for r in readers) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return [r.result() for r in readers if r.done()]


@pytest.fixture(params=["h2", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def serve(d: Director, transport: str):
    server = ExtProcServer(
        d, ServerOptions(grpc_port=0, host="127.0.0.1", secure_serving=False, transport=transport)
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, pb_grpc.ExternalProcessorStub(channel)


async def test_an_endpoint_reporting_room_takes_the_queue_in_priority_order_in_one_tick(
    transport: str,
) -> None:
    # Pure upstream semantics for prefills (no budget): only thresholds and the in-flight cap.
    d, _ = director("maxPendingPrefillTokensPerEndpoint: 0")
    for state in d.registry.snapshot():
        report(d, state.name, waiting=50, kv=0.95)  # every endpoint saturated
    server, channel, stub = await serve(d, transport)
    try:
        readers = start_readers(await open_streams(stub))
        assert await routed(readers, 0.2, 1) == [], "saturated: everything waits in Sluice"
        idle = d.registry.snapshot()[0]
        report(d, idle.name, waiting=0, kv=0.10)
        started = time.monotonic()
        answers = await routed(readers, 1.0, CAP)
        took = time.monotonic() - started
        assert await routed(readers, 0.1, CAP + 1) == answers, "no more than the cap"
        assert len(answers) == CAP, "as many as the in-flight cap allows"
        assert set(answers) == {idle.endpoint.hostport}
        assert d.released == sorted(QUEUED, reverse=True)[:CAP], "highest priority first"
        assert took < 0.5, f"released within a dispatch tick, not after responses ({took:.3f}s)"
        for reader in readers:
            reader.cancel()
    finally:
        await channel.close()
        await server.stop(None)


async def test_with_the_prefill_budget_they_follow_one_estimate_apart_without_responses(
    transport: str,
) -> None:
    # Sluice's default budget holds one uncached prefill at a time per engine while tenants
    # compete; no first byte ever comes, so each hold ends with its prefill estimate.
    d, _ = director("maxPendingPrefillTokensPerEndpoint: 1, prefillTokensPerSecond: 20000")
    for state in d.registry.snapshot():
        report(d, state.name, waiting=50, kv=0.95)
    server, channel, stub = await serve(d, transport)
    try:
        readers = start_readers(await open_streams(stub))
        assert await routed(readers, 0.2, 1) == []
        idle = d.registry.snapshot()[0]
        estimate = d.room.prefill.estimate(idle.name, 310)
        report(d, idle.name, waiting=0, kv=0.10)

        async def keep_fresh() -> None:  # the scraper: the engine keeps saying it has room
            while True:
                await asyncio.sleep(0.05)
                report(d, idle.name, waiting=0, kv=0.10)

        scraper = asyncio.ensure_future(keep_fresh())
        answers = await routed(readers, CAP * (estimate + 0.05) + 1.0, CAP)
        scraper.cancel()
        assert len(answers) == CAP
        assert set(answers) == {idle.endpoint.hostport}
        assert d.released == sorted(QUEUED, reverse=True)[:CAP]
        assert d.registry.prefills_ended["estimate"] >= CAP - 1
        for reader in readers:
            reader.cancel()
    finally:
        await channel.close()
        await server.stop(None)
