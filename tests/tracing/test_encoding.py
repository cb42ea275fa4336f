"""The tracer's own OTLP encoding of a request's spans (`sluice.tracing.otlp`, with its native
part or without) is the message the SDK's encoder makes of the same spans as `ReadableSpan`s —
the path any other exporter takes — field for field."""

from __future__ import annotations

import copy
import random

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from director_harness import make_director, report
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.model import Outcome, Usage
from sluice.scheduling.record import CycleRecord, ProfileRecord, thaw
from sluice.tracing import otlp
from sluice.tracing.export import RequestTracer, _encoded_sender, _lighter_transport, _parent
from sluice.tracing.spans import request_spans


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


async def finished_receipts():  # type: ignore[no-untyped-def]
    director = make_director(ports=(8000, 8001, 8002))
    ring = ReceiptRing(10, 1 << 20)
    director.core.receipts = ReceiptRecorder(ring)
    report(director)
    for i, headers in enumerate(
        [{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, {}]
    ):
        request = director.parse(
            {"x-request-id": f"req-{i}", **headers},
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}',
        )
        admission = await director.admit(request)
        admission.first_byte()
        admission.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=4))
    receipts = list(ring.newest_first())
    # and one the encoder's other branches see: rejected (an error status), a negative
    # priority, client text that is not UTF-8
    odd = copy.copy(receipts[-1])
    odd.request_id, odd.priority, odd.fairness_id = "req-\udcff", -10, "t\u00e9nant"
    odd.outcome, odd.reason, odd.traceparent = "rejected", "queue_full", None
    # and a profile whose filters kept one endpoint of three (the default config has none)
    assert odd.frozen is not None
    [(name, _, steps, totals, took)], primary, cycle_s = thaw(odd.frozen)
    states = director.registry.snapshot()
    profile = ProfileRecord(name, states)
    profile.ran("filter", "by-label", "by-label", 2e-6, states[:2])
    profile.ran("filter", "least-queue", "least-queue", 3e-6, states[:1])
    for kind, type_name, step_name, step_s, _, weight, raw, picked in steps:
        profile.ran(kind, type_name, step_name, step_s, states, weight, raw, picked)
    profile.totals, profile.duration_s = totals, took
    odd.cycle, odd.frozen = CycleRecord([profile], primary, cycle_s), None
    odd.finish(odd.finished_at or 0.0)
    return [*receipts, odd]


def spans_of(message: ExportTraceServiceRequest) -> list[dict]:
    [resource_spans] = message.resource_spans
    [scope_spans] = resource_spans.scope_spans
    spans = [MessageToDict(s) for s in scope_spans.spans]
    for span in spans:
        if not span.get("status"):  # the SDK sends an empty status for UNSET: the same on the wire
            span.pop("status", None)
    return spans


@pytest.mark.parametrize("encoder_part", ["native", "python"])
async def test_the_direct_encoding_is_the_sdks_encoding_of_the_same_spans(
    encoder_part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the extension's part (where it is built) and with the Python encoder alone."""
    if encoder_part == "python":
        monkeypatch.setattr(otlp, "NATIVE", None)
    elif otlp.NATIVE is None:
        pytest.skip("the OTLP extension is not built")
    receipts = await finished_receipts()
    kept = Kept()
    tracer = RequestTracer(kept, {})
    traces = []
    for i, receipt in enumerate(receipts):
        parent = _parent(receipt.traceparent)
        trace_id = parent.trace_id if parent is not None else 1000 + i
        tracer._rng.seed(i)
        kept.export(tracer._spans(receipt, trace_id, parent))  # the ReadableSpan path
        traces.append((otlp.Trace(request_spans(receipt), trace_id, parent), i))
    tracer.shutdown()
    sdk = ExportTraceServiceRequest.FromString(encode_spans(kept.spans).SerializeToString())

    ours: list[dict] = []
    encoder = otlp.Encoder(tracer.resource.attributes, "sluice", tracer._offset_ns)
    for trace, seed in traces:
        data, count = encoder.encode([trace], random.Random(seed))
        message = ExportTraceServiceRequest.FromString(data)
        assert count == len(trace.spans.form) == len(message.resource_spans[0].scope_spans[0].spans)
        ours += spans_of(message)
        assert MessageToDict(message.resource_spans[0].resource) == MessageToDict(
            sdk.resource_spans[0].resource
        )
    assert ours == spans_of(sdk)
    assert any(s.get("status", {}).get("code") == "STATUS_CODE_ERROR" for s in ours)
    assert {s["name"] for s in ours} >= {
        "gateway.request",
        "filter_endpoints",
        "score_endpoints",
        "pick_endpoints",
    }


def test_the_sdks_otlp_exporter_sends_the_encoded_request_itself() -> None:
    """The installed SDK's OTLP/HTTP exporter has the client the direct encoding is sent with;
    were it gone, the tracer would fall back to the SDK's encoder (slower, same message)."""
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert _encoded_sender(exporter) is not None
    assert _encoded_sender(Kept()) is None
    exporter.shutdown()


def test_the_lighter_transport_only_where_requests_would_read_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """urllib3 (the SDK's other transport) replaces requests' session unless the session would
    use a proxy (or netrc, or a custom session) for the endpoint; the CA bundle it would read
    is kept."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    exporter = OTLPSpanExporter(endpoint="https://collector.example:4318/v1/traces")
    assert _lighter_transport(exporter) == "urllib3"
    pool = exporter._client._transport._pool  # type: ignore[attr-defined]
    assert pool.connection_pool_kw["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"
    exporter.shutdown()

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    exporter = OTLPSpanExporter(endpoint="https://collector.example:4318/v1/traces")
    assert _lighter_transport(exporter) == "requests"
    exporter.shutdown()
