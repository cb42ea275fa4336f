"""The OTLP side: finished span trees to the official SDK's batch processor and OTLP/HTTP
exporter (both configured by the standard `OTEL_*` variables: endpoint, headers, timeout,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`).

Spans are handed over as finished `ReadableSpan`s with their recorded times, which costs a
fraction of opening and closing live spans. An incoming W3C `traceparent` header (Envoy's, or
a client's) makes the request's span its child.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from sluice.logs import get_logger
from sluice.receipts.model import Receipt
from sluice.tracing.spans import SpanData, request_spans
from sluice.tracing.variables import ENDPOINT_VARIABLES

log = get_logger("tracing")
SCOPE = InstrumentationScope("sluice")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


def otlp_tracer(env: Mapping[str, str]) -> RequestTracer:
    """The tracer over the SDK's OTLP/HTTP exporter, which reads the `OTEL_EXPORTER_OTLP_*`
    variables itself."""
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning(
            "this OTEL_EXPORTER_OTLP_PROTOCOL is not supported; Sluice exports OTLP over HTTP "
            "(http/protobuf): point the endpoint at the collector's HTTP port (4318)",
            protocol=protocol,
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # xds-protos ships an older opentelemetry/proto over the real one
        raise RuntimeError(
            f"OTLP tracing cannot start: {exc}. Another package (xds-protos) overwrote "
            "opentelemetry-proto's modules; run `pip install --force-reinstall --no-deps "
            "opentelemetry-proto` (the Makefile does this after installing), or unset "
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from exc

    endpoint = next(env[n] for n in ENDPOINT_VARIABLES if env.get(n))
    log.info("tracing on: OTLP/HTTP", endpoint=endpoint)
    return RequestTracer(OTLPSpanExporter())


class RequestTracer:
    def __init__(self, exporter: SpanExporter) -> None:
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "sluice"}
        provider = TracerProvider(resource=Resource.create(attributes))
        self.resource = provider.resource
        self.sampler = provider.sampler
        self.processor = BatchSpanProcessor(exporter)
        self._rng = random.Random()
        # the director's monotonic clock -> Unix nanoseconds
        self._offset_ns = time.time_ns() - time.monotonic_ns()

    def on_receipt(self, receipt: Receipt) -> None:
        """The request ended: export its spans (sampled as `OTEL_TRACES_SAMPLER` says)."""
        parent = _parent(receipt.traceparent)
        trace_id = parent.trace_id if parent is not None else self._rng.getrandbits(128)
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        decision = self.sampler.should_sample(context, trace_id, "gateway.request")
        if not decision.decision.is_sampled():  # type: ignore[no-untyped-call]
            return
        root = request_spans(receipt)
        ids: dict[int, SpanContext] = {}
        for span, up in root.walk():
            own = SpanContext(trace_id, self._rng.getrandbits(64), False, _SAMPLED)
            ids[id(span)] = own
            parent_context = ids[id(up)] if up is not None else parent
            self.processor.on_end(self._readable(span, own, parent_context, up is None))

    def _readable(
        self, span: SpanData, own: SpanContext, parent: SpanContext | None, is_root: bool
    ) -> ReadableSpan:
        offset = self._offset_ns
        status = _OK if span.error is None else Status(StatusCode.ERROR, span.error)
        return ReadableSpan(
            span.name,
            context=own,
            parent=parent,
            resource=self.resource,
            attributes=span.attributes,
            kind=SpanKind.SERVER if is_root else SpanKind.INTERNAL,
            status=status,
            start_time=int(span.start_s * 1e9) + offset,
            end_time=int(span.end_s * 1e9) + offset,
            instrumentation_scope=SCOPE,
        )

    def force_flush(self, timeout_ms: int = 5000) -> bool:
        return self.processor.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.processor.shutdown()  # type: ignore[no-untyped-call]


def _parent(traceparent: str | None) -> SpanContext | None:
    """W3C `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
        flags = int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, True, TraceFlags(flags))
