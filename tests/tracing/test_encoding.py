"""The tracer's own OTLP encoding of a request's spans (`sluice.tracing.otlp`) is the message
the SDK's encoder makes of the same spans as `ReadableSpan`s — the path any other exporter
takes — field for field."""

from __future__ import annotations

import random

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from director_harness import make_director, report
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.model import Outcome, Usage
from sluice.tracing import otlp
from sluice.tracing.export import RequestTracer, _encoded_sender, _parent
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
    return list(ring.newest_first())


def spans_of(message: ExportTraceServiceRequest) -> list[dict]:
    [resource_spans] = message.resource_spans
    [scope_spans] = resource_spans.scope_spans
    spans = [MessageToDict(s) for s in scope_spans.spans]
    for span in spans:
        span.pop("status", None)  # the SDK sends an empty status for UNSET; the same on the wire
    return spans


async def test_the_direct_encoding_is_the_sdks_encoding_of_the_same_spans() -> None:
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
    for trace, seed in traces:
        data, count = otlp.encode(
            [trace], tracer.resource.attributes, "sluice", tracer._offset_ns, random.Random(seed)
        )
        message = ExportTraceServiceRequest.FromString(data)
        assert count == trace.root.size() == len(message.resource_spans[0].scope_spans[0].spans)
        ours += spans_of(message)
        assert MessageToDict(message.resource_spans[0].resource) == MessageToDict(
            sdk.resource_spans[0].resource
        )
    assert ours == spans_of(sdk)
    assert {s["name"] for s in ours} >= {"gateway.request", "score_endpoints", "pick_endpoints"}


def test_the_sdks_otlp_exporter_sends_the_encoded_request_itself() -> None:
    """The installed SDK's OTLP/HTTP exporter has the client the direct encoding is sent with;
    were it gone, the tracer would fall back to the SDK's encoder (slower, same message)."""
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert _encoded_sender(exporter) is not None
    assert _encoded_sender(Kept()) is None
    exporter.shutdown()
