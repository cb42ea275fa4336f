"""Health (upstream's service names and leader semantics), /metrics, and TLS serving."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from sluice.bench.harness.pipeline_double import DoublePipeline
from sluice.extproc import ExtProcServer, ServerOptions, tls
from sluice.health import HealthServer, MetricsServer, serving_status

from . import envoy_messages as m

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"
NAMES = ["", EXT_PROC, "liveness", "readiness"]


def test_without_leader_election_every_name_follows_readiness():
    assert [serving_status(n, ready=False, is_leader=None) for n in NAMES] == [NOT_SERVING] * 4
    assert [serving_status(n, ready=True, is_leader=None) for n in NAMES] == [SERVING] * 4


def test_with_leader_election_only_the_ready_leader_is_ready_but_all_are_alive():
    def standby():
        return False

    assert [serving_status(n, ready=True, is_leader=standby) for n in NAMES] == [
        NOT_SERVING, NOT_SERVING, SERVING, NOT_SERVING
    ]  # fmt: skip
    assert serving_status("readiness", ready=True, is_leader=lambda: True) == SERVING
    assert serving_status("readiness", ready=False, is_leader=lambda: True) == NOT_SERVING


def test_unknown_service_names_are_reported_unknown():
    assert serving_status("something", ready=True, is_leader=None) == SERVICE_UNKNOWN


async def test_health_service_turns_serving_when_the_pipeline_is_ready():
    pipeline = DoublePipeline([])
    pipeline.ready = False
    health = HealthServer(lambda: pipeline.ready, host="127.0.0.1")
    port = await health.start(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        before = await stub.Check(health_pb2.HealthCheckRequest(service=EXT_PROC))
        pipeline.ready = True
        after = await stub.Check(health_pb2.HealthCheckRequest(service=EXT_PROC))
    await health.stop(None)
    assert (before.status, after.status) == (NOT_SERVING, SERVING)


async def test_metrics_endpoint_serves_the_given_registry_and_honours_the_auth_hook():
    registry = CollectorRegistry()
    Counter("sluice_test_things", "things", registry=registry).inc(3)

    async def only_bearer_secret(request):
        return request.headers.get("Authorization") == "Bearer secret"

    metrics = MetricsServer(registry, authorize=only_bearer_secret, host="127.0.0.1")
    port = await metrics.start(0)
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as anonymous:
            anonymous_status = anonymous.status
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as wrong:
            wrong_status = wrong.status
        async with http.get(url, headers={"Authorization": "Bearer secret"}) as allowed:
            text = await allowed.text()
    await metrics.stop()
    assert (anonymous_status, wrong_status) == (401, 403)
    assert "sluice_test_things_total 3.0" in text


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = tls.self_signed_pair()
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return directory


@pytest.mark.parametrize("transport", ["h2", "hyper", "grpc"])
async def test_ext_proc_serves_tls_from_a_cert_directory(cert_dir, transport):
    pipeline = DoublePipeline([])
    server = ExtProcServer(
        pipeline,
        ServerOptions(grpc_port=0, host="127.0.0.1", cert_path=cert_dir, transport=transport),
    )
    port = await server.start()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(cert_dir / "tls.crt").read_bytes()
    )
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(m.request_headers({}, end_of_stream=True))
        answer = await call.read()
    await server.stop(None)
    assert answer.immediate_response.status.code == 500  # an empty pool, answered over TLS


@pytest.mark.parametrize("transport", ["h2", "hyper", "grpc"])
async def test_ext_proc_generates_a_self_signed_certificate_by_default(transport):
    options = ServerOptions(grpc_port=0, host="127.0.0.1", transport=transport)
    server = ExtProcServer(DoublePipeline([]), options)
    port = await server.start()
    await server.stop(None)
    assert port > 0
