"""The benchmarks' OTLP receiver counts what a real exporter sends it, over one kept-alive
connection."""

from __future__ import annotations

import os
import random

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from sluice.bench.harness.otlp_sink import OtlpSink, OtlpSinkProcess
from sluice.receipts.model import Receipt
from sluice.tracing import otlp
from sluice.tracing.export import _lighter_transport
from sluice.tracing.spans import request_spans


def test_the_sink_counts_the_spans_of_each_export() -> None:
    receipt = Receipt(1, "req-1", None, "m", 0, "tenant", 3, 10.0)
    receipt.released_at, receipt.finished_at, receipt.outcome = 10.0, 10.5, "completed"
    spans = request_spans(receipt)
    encoder = otlp.Encoder({"service.name": "test"}, "sluice", 0)
    data, count = encoder.encode(
        [otlp.Trace(spans, 7, None), otlp.Trace(spans, 8, None)], random.Random(1)
    )
    with OtlpSink() as sink:
        exporter = OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces")
        _lighter_transport(exporter)
        for _ in range(3):
            assert exporter._client.export(data).success
        exporter.shutdown()
    assert count == 2 * len(spans.form)
    assert sink.exports == 3
    assert sink.spans == 3 * count
    assert sink.connections == 1


def test_the_sink_in_a_process_of_its_own_reports_its_counts_when_stopped() -> None:
    receipt = Receipt(1, "req-1", None, "m", 0, "tenant", 3, 10.0)
    receipt.released_at, receipt.finished_at, receipt.outcome = 10.0, 10.5, "completed"
    spans = request_spans(receipt)
    encoder = otlp.Encoder({"service.name": "test"}, "sluice", 0)
    data, count = encoder.encode([otlp.Trace(spans, 7, None)], random.Random(1))
    with OtlpSinkProcess() as sink:
        assert sink.pid not in (0, os.getpid())
        exporter = OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces")
        _lighter_transport(exporter)
        for _ in range(2):
            assert exporter._client.export(data).success
        exporter.shutdown()
    assert (sink.exports, sink.spans, sink.connections) == (2, 2 * count, 1)
