"""The OTLP side: finished requests to the official SDK's OTLP/HTTP exporter (configured by the
standard `OTEL_*` variables: endpoint, headers, timeout, compression, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`; batching by `OTEL_BSP_SCHEDULE_DELAY`,
`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`). Unset, a batch is what the
OpenTelemetry Collector's own batch processor sends (8,192 spans, ~680 requests, ~2 MB) and the
queue four batches, as the SDK's (32,768 spans): the SDK's 512 and 2,048 are sized for spans
that end one at a time, where a request here ends with its dozen at once, and each POST costs
the HTTP client ~0.4 ms of CPU whatever its size — at the SDK's batch that is ~10 µs a traced
request, at 2,048 spans ~3, at 8,192 under 1 (`benchmarks/tracing_batch_cost.py`).

The event loop pays for the sampling decision and one deque append per sampled request: the
batch thread turns each queued receipt into its spans (`spans.py`) and exports them. To the
SDK's OTLP/HTTP exporter it hands the request already encoded (`otlp.py`, a tenth of the cost
of the SDK's `ReadableSpan`s and encoder), sent by the exporter's own HTTP client (its
retries, timeout, headers, compression) over the SDK's urllib3 transport where that changes
nothing (`_lighter_transport`); any other `SpanExporter` gets finished `ReadableSpan`s with the
recorded times.
An incoming W3C `traceparent` header (Envoy's, or a client's) makes the request's span its
child.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from sluice.logs import get_logger
from sluice.receipts.model import Receipt
from sluice.tracing import otlp
from sluice.tracing.spans import Span, attributes, request_spans, utf8
from sluice.tracing.variables import ENDPOINT_VARIABLES

log = get_logger("tracing")
SCOPE = InstrumentationScope("sluice")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
SPANS_PER_REQUEST = 12  # the default config's tree (five scorers); only sizes the queue
BATCH_SPANS, QUEUE_SPANS = 8192, 4 * 8192  # unless OTEL_BSP_* say otherwise (see above)


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
    exporter = OTLPSpanExporter()
    light = _lighter_transport(exporter)
    log.info("tracing on: OTLP/HTTP", endpoint=endpoint, transport=light)
    return RequestTracer(exporter, env)


class RequestTracer:
    def __init__(self, exporter: SpanExporter, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "sluice"}
        provider = TracerProvider(resource=Resource.create(attributes))
        self.resource = provider.resource
        self.sampler = provider.sampler
        # the sampler's decision without the SDK's contexts and results, for the samplers
        # `OTEL_TRACES_SAMPLER` names (same decisions); None: the SDK decides
        self._decide = _decision(self.sampler)
        self.exporter = exporter
        self._send = _encoded_sender(exporter)
        self._rng = random.Random()
        # the director's monotonic clock -> Unix nanoseconds
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._encoder = otlp.Encoder(self.resource.attributes, SCOPE.name, self._offset_ns)
        # As the SDK's BatchSpanProcessor: wait up to the delay, or until a batch is queued.
        self._delay_s = _env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._batch_spans = max(1, _env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", BATCH_SPANS))
        # a request is about a dozen spans: the queue holds requests, its bound is in spans
        queue_spans = _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", QUEUE_SPANS)
        self._queue: deque[tuple[Receipt, int, SpanContext | None]] = deque(
            maxlen=max(1, queue_spans // SPANS_PER_REQUEST)
        )
        self._wake_at = max(1, self._batch_spans // SPANS_PER_REQUEST)
        self.dropped = 0  # requests whose spans were dropped: the queue was full
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="sluice-otlp-export", daemon=True)
        self._worker.start()

    def on_receipt(self, receipt: Receipt) -> None:
        """The request ended: queue it for export if sampled (as `OTEL_TRACES_SAMPLER` says)."""
        parent = _parent(receipt.traceparent) if receipt.traceparent else None
        trace_id = parent.trace_id if parent is not None else self._rng.getrandbits(128)
        decide = self._decide
        if decide is not None:
            if not decide(trace_id, parent):
                return
        else:
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
            decision = self.sampler.should_sample(context, trace_id, "gateway.request")
            if not decision.decision.is_sampled():  # type: ignore[no-untyped-call]
                return
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1  # the oldest goes, as the SDK's processor drops
        queue.append((receipt, trace_id, parent))
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    # -- the batch thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            woken = self._wake.wait(self._delay_s)
            self._wake.clear()
            # woken by a full batch: export full batches only (the rest waits for the next
            # batch or the delay, as the SDK's processor does); the delay passed: everything
            self._export_queued(everything=not woken)
        self._export_queued()

    def _export_queued(self, *, everything: bool = True) -> None:
        """Export what is queued now — not what the event loop queues meanwhile, which would
        have the thread chase it with a request per trickle."""
        with self._export_lock:
            left = len(self._queue)
            while left > 0 and (everything or left >= self._wake_at):
                try:
                    left -= self._export_batch(left)
                except Exception:  # the exporter logs its own failures; never kill the thread
                    log.error("span export failed", exc=True)
                    return

    def _export_batch(self, most: int) -> int:
        """One export of up to `most` queued requests (fewer if their spans fill a batch);
        returns how many it took. Each request's spans are built as the encoder reaches it and
        dropped once encoded: a batch's span tuples are never all alive at once (they would
        count towards the garbage collector's thresholds, whose collections walk the ring)."""
        queue, limit = self._queue, self._batch_spans
        taken = spans = 0

        def traces() -> Iterator[otlp.Trace]:
            nonlocal taken, spans
            while queue and taken < most and spans < limit:
                receipt, trace_id, parent = queue.popleft()
                tree = request_spans(receipt)
                taken += 1
                spans += len(tree.form)
                yield otlp.Trace(tree, trace_id, parent)

        if self._send is not None:
            data, _ = self._encoder.encode(traces(), self._rng)
            self._send(data)
        else:
            readables = [
                span
                for t in traces()
                for span in self._readables(t.spans.listed(), t.trace_id, t.parent)
            ]
            if readables:
                self.exporter.export(readables)
        return taken

    def _spans(
        self, receipt: Receipt, trace_id: int, parent: SpanContext | None
    ) -> list[ReadableSpan]:
        return self._readables(request_spans(receipt).listed(), trace_id, parent)

    def _readables(
        self, spans: list[Span], trace_id: int, parent: SpanContext | None
    ) -> list[ReadableSpan]:
        ids = otlp.span_ids(self._rng, len(spans))
        contexts = [
            SpanContext(trace_id, int.from_bytes(ids[8 * i : 8 * i + 8], "big"), False, _SAMPLED)
            for i in range(len(spans))
        ]
        offset = self._offset_ns
        out = []
        for own, span in zip(contexts, spans):
            shape, up, start, end, _, error = span
            status = _OK if error is None else Status(StatusCode.ERROR, _text(error))
            out.append(
                ReadableSpan(
                    shape.name,
                    context=own,
                    parent=contexts[up] if up >= 0 else parent,
                    resource=self.resource,
                    attributes={
                        k: _text(v) if isinstance(v, str) else v for k, v in attributes(spans, span)
                    },
                    kind=SpanKind.INTERNAL if up >= 0 else SpanKind.SERVER,
                    status=status,
                    start_time=int(start * 1e9) + offset,
                    end_time=int(end * 1e9) + offset,
                    instrumentation_scope=SCOPE,
                )
            )
        return out

    def force_flush(self, timeout_ms: int = 5000) -> bool:
        """Export what is queued now (blocking; the exporter's own timeout applies)."""
        self._export_queued()
        return True

    def shutdown(self) -> None:
        """Export what is queued, stop the batch thread and the exporter."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout=30)
        self.exporter.shutdown()


def _encoded_sender(exporter: SpanExporter) -> Callable[[bytes | bytearray], object] | None:
    """The OTLP/HTTP exporter's own client, which sends an encoded request (with the exporter's
    retries, timeout, headers and compression); None for another exporter, or an SDK version
    whose exporter has no such client (the `ReadableSpan` path then serves)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return None
    if not isinstance(exporter, OTLPSpanExporter):
        return None
    send = getattr(getattr(exporter, "_client", None), "export", None)
    return send if callable(send) else None


def _lighter_transport(exporter: SpanExporter) -> str:
    """Swap the exporter's `requests` session for the SDK's own urllib3 transport when the
    session would take nothing else from the environment for this endpoint (no proxy, no netrc
    entry, no custom session; the CA bundle it would read is passed on): the same export on
    the wire (the client's body and headers; its retries, timeout and compression) at half the
    CPU, as `requests` reads the whole environment and the netrc file on every POST. Returns
    the transport used."""
    try:
        import certifi
        from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport

        import requests
    except ImportError:
        return "requests"
    client = getattr(exporter, "_client", None)
    transport = getattr(client, "_transport", None)
    session = getattr(transport, "_session", None)
    url = getattr(client, "_endpoint", None)
    if (
        not isinstance(transport, RequestsHTTPTransport)
        or type(session) is not requests.Session
        or not isinstance(url, str)
        or session.auth is not None
        or session.proxies
        or requests.utils.get_environ_proxies(url)
        or requests.utils.get_netrc_auth(url) is not None
    ):
        return "requests"
    # what requests verifies against: the file it was given, else the variables', else certifi's
    verify = session.verify
    if verify is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        verify = bundle or certifi.where()
    if isinstance(verify, str) and os.path.isdir(verify):  # a CA directory: requests' own way
        return "requests"
    setattr(client, "_transport", Urllib3HTTPTransport(verify=verify, cert=session.cert))  # noqa: B010
    session.close()
    return "urllib3"


Decide = Callable[[int, SpanContext | None], bool]


def _decision(sampler: Sampler) -> Decide | None:
    """`sampler`'s decision for a trace id and incoming parent, as a plain function, for the
    SDK's own samplers (always on/off, trace-id ratio, parent-based over them: every value of
    `OTEL_TRACES_SAMPLER` but a custom one) — the SDK's `should_sample` builds a context and a
    result per call, ~3–10 µs on the event loop; None for any other sampler."""
    if isinstance(sampler, ParentBased):
        parts = [
            _leaf(getattr(sampler, f"_{name}", None))
            for name in (
                "root",
                "remote_parent_sampled",
                "remote_parent_not_sampled",
                "local_parent_sampled",
                "local_parent_not_sampled",
            )
        ]
        root, remote_yes, remote_no, local_yes, local_no = parts
        if (
            root is None
            or remote_yes is None
            or remote_no is None
            or local_yes is None
            or local_no is None
        ):
            return None

        def parent_based(trace_id: int, parent: SpanContext | None) -> bool:
            if parent is None or not parent.is_valid:
                return root(trace_id)
            sampled = parent.trace_flags.sampled
            if parent.is_remote:
                return (remote_yes if sampled else remote_no)(trace_id)
            return (local_yes if sampled else local_no)(trace_id)

        return parent_based
    leaf = _leaf(sampler)
    if leaf is None:
        return None
    return lambda trace_id, parent: leaf(trace_id)


def _leaf(sampler: object) -> Callable[[int], bool] | None:
    if type(sampler) is StaticSampler:
        sampled = getattr(sampler, "_decision", None) is Decision.RECORD_AND_SAMPLE
        return (lambda trace_id: True) if sampled else (lambda trace_id: False)
    if type(sampler) is TraceIdRatioBased:
        bound, mask = sampler.bound, TraceIdRatioBased.TRACE_ID_LIMIT
        return lambda trace_id: trace_id & mask < bound
    return None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        log.warning("not an integer; using the default", variable=name, default=default)
        return default


def _text(value: str) -> str:
    return utf8(value).decode("utf-8")


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
