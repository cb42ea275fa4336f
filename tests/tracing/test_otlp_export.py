"""Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each request's spans reach a real OTLP/HTTP
receiver (aiohttp on loopback, decoded with opentelemetry-proto) with upstream's names and the
parent/child structure the module documents; without it nothing is built or imported."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from certs import make_pair
from director_harness import make_director, report
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.model import Outcome, Usage
from sluice.tracing import tracer_from_environment


class Receiver:
    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list = []
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in message.resource_spans:
            self.resources.append(
                {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield got, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        value = a.value
        kind = value.WhichOneof("value")
        out[a.key] = (
            [v.string_value or v.double_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return out


async def test_each_request_arrives_as_a_tree_of_upstream_named_spans(
    receiver, monkeypatch
) -> None:
    got, url = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    tracer = tracer_from_environment()
    assert tracer is not None
    director = make_director(ports=(8000, 8001))
    director.core.receipts = ReceiptRecorder(ReceiptRing(0, 0), on_finished=[tracer.on_receipt])
    director.core.room.explain_holds = True
    report(director)
    parent_trace = "0af7651916cd43dd8448eb211c80319c"
    request = director.parse(
        {
            "x-request-id": "req-1",
            "x-gateway-inference-objective": "interactive",
            "traceparent": f"00-{parent_trace}-b7ad6b7169203331-01",
        },
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}',
    )
    admission = await director.admit(request)
    admission.first_byte()
    admission.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=4))
    await asyncio.to_thread(tracer.force_flush)
    for _ in range(100):
        if len(got.spans) >= 8:
            break
        await asyncio.sleep(0.05)
    tracer.shutdown()

    assert got.paths and set(got.paths) == {"/v1/traces"}
    assert got.resources[0]["service.name"] == "sluice"
    by_id = {s.span_id: s for s in got.spans}
    names = sorted(s.name for s in got.spans)
    assert names == sorted(
        [
            "gateway.request",
            "gateway.request_orchestration",
            "flow_control.queue_wait",
            "run_scheduler_profile",
            "gateway.dispatch",
            "gateway.response",
            "pick_endpoints",
            *["score_endpoints"] * (names.count("score_endpoints")),
            *["filter_endpoints"] * (names.count("filter_endpoints")),
        ]
    )
    assert names.count("score_endpoints") >= 1

    def parent_name(span) -> str | None:
        parent = by_id.get(span.parent_span_id)
        return parent.name if parent is not None else None

    structure = {s.name: parent_name(s) for s in got.spans}
    assert structure["gateway.request"] is None  # its parent is the caller's, outside
    assert structure["gateway.request_orchestration"] == "gateway.request"
    assert structure["flow_control.queue_wait"] == "gateway.request_orchestration"
    assert structure["run_scheduler_profile"] == "gateway.request_orchestration"
    assert structure["score_endpoints"] == "run_scheduler_profile"
    assert structure["pick_endpoints"] == "run_scheduler_profile"
    assert structure["gateway.dispatch"] == "gateway.request"
    assert structure["gateway.response"] == "gateway.request"
    # One trace, continuing the incoming traceparent.
    assert {s.trace_id.hex() for s in got.spans} == {parent_trace}
    root = next(s for s in got.spans if s.name == "gateway.request")
    assert root.parent_span_id.hex() == "b7ad6b7169203331"
    assert attributes(root)["gen_ai.request.id"] == "req-1"
    profile = next(s for s in got.spans if s.name == "run_scheduler_profile")
    assert attributes(profile)["llm_d.epp.scheduling.profile.name"]
    pick = attributes(next(s for s in got.spans if s.name == "pick_endpoints"))
    assert pick["llm_d.epp.picker.candidate_endpoints"] == 2
    assert pick["llm_d.epp.picker.top_endpoints"][0] == admission.endpoint.hostport
    response = attributes(next(s for s in got.spans if s.name == "gateway.response"))
    assert response["gen_ai.usage.output_tokens"] == 4
    # Children lie within their parents.
    for span in got.spans:
        parent = by_id.get(span.parent_span_id)
        if parent is not None:
            assert parent.start_time_unix_nano <= span.start_time_unix_nano
            assert span.end_time_unix_nano <= parent.end_time_unix_nano + 1_000


def test_without_an_endpoint_nothing_is_built_nor_imported() -> None:
    assert tracer_from_environment({}) is None
    code = (
        "import sys; from sluice.tracing import tracer_from_environment as t;"
        "assert t({}) is None;"
        "import sluice.app;"
        "print(sorted(m for m in sys.modules if m == 'sluice.tracing.export' or "
        "m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    env = {"PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    # (redis-py imports parts of the OpenTelemetry API for its own metrics; Sluice's tracer,
    # the SDK's tracing and the exporter stay out)
    assert out.stdout.strip() == "[]"


async def test_over_tls_the_lighter_transport_verifies_against_the_configured_ca(
    tmp_path, monkeypatch
) -> None:
    """With OTEL_EXPORTER_OTLP_CERTIFICATE the urllib3 transport that replaces requests'
    session verifies the collector against that CA: spans arrive; against another CA none do."""
    ca_pair, ca_cert, ca_key = make_pair("Test CA")
    server_pair, _, _ = make_pair("127.0.0.1", issuer=(ca_cert, ca_key))
    server_pair.write(tmp_path / "server")
    ca_pair.write(tmp_path / "ca", cert="ca.crt", key="ca.key")
    other_pair, _, _ = make_pair("Other CA")
    other_pair.write(tmp_path / "other", cert="ca.crt", key="ca.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server" / "tls.crt", tmp_path / "server" / "tls.key")
    got = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        arrived = []
        for ca in ("ca", "other"):
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://127.0.0.1:{port}")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path / ca / "ca.crt"))
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
            tracer = tracer_from_environment()
            assert tracer is not None
            assert type(tracer.exporter._client._transport).__name__ == "Urllib3HTTPTransport"  # type: ignore[attr-defined]
            director = make_director(ports=(8000,))
            director.core.receipts = ReceiptRecorder(
                ReceiptRing(0, 0), on_finished=[tracer.on_receipt]
            )
            report(director)
            before = len(got.spans)
            request = director.parse(
                {"x-request-id": f"req-{ca}"},
                b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
            )
            admission = await director.admit(request)
            admission.first_byte()
            admission.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=4))
            await asyncio.to_thread(tracer.force_flush)
            await asyncio.to_thread(tracer.shutdown)
            arrived.append(len(got.spans) - before)
        assert arrived[0] >= 8
        assert arrived[1] == 0
    finally:
        await runner.cleanup()
