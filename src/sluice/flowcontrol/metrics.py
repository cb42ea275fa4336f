"""Prometheus metrics for flow control: a `FlowObserver` that writes to a registry passed in.

Upstream's series keep upstream's names and labels, under llm-d-router's `llm_d_epp_flow_control_*`
and GIE v1.3's `inference_extension_flow_control_*` names (either or both, `ExportedNames`); the
rest are Sluice's fairness and priority observability (queued bytes per band, served tokens and
virtual counter per flow, Jain's index per band, outcomes by reason).

Fairness ids and model names come from clients: they pass `ClientLabels` (printable, 1,000
distinct values per label, then `other`) and the series they create are charged to a
`SeriesBudget`. Per-flow gauges of flows folded into `other` are not exported (a sum of virtual
counters means nothing).

Cost matters here (every request passes through the hooks): labelled children are cached per
label set, and the per-band gauges are read from the live bands at scrape time instead of being
set on every event.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.flowcontrol.model import Finalized, QueueOutcome, Ticket
from sluice.flowcontrol.observer import BandView, FlowView
from sluice.util.exported_names import BOTH, ExportedNames
from sluice.util.labels import OVERFLOW, ClientLabels
from sluice.util.series import (
    CounterChild,
    CounterFamily,
    Families,
    GaugeChild,
    GaugeFamily,
    HistogramChild,
    HistogramFamily,
    SeriesBudget,
)

_UPSTREAM_LABELS = (
    "fairness_id",
    "priority",
    "outcome",
    "inference_pool",
    "model_name",
    "target_model_name",
)
_QUEUE_LABELS = tuple(label for label in _UPSTREAM_LABELS if label != "outcome")
_CLIENT = ("fairness_id", "model_name", "target_model_name")
# GIE v1.3's range: 0.1 ms … 60 s; llm-d-router v0.10 adds 25 ms.
QUEUE_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
LLMD_QUEUE_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
MAX_CACHED_SERIES = 4096  # past this, children are looked up per event, not cached

_QueueKey = tuple[str, str, str, str, str]  # fairness id, priority, pool, model, target (bounded)


class _Bands(Collector):
    """Per-band gauges computed at scrape time from the bands the observer has seen."""

    def __init__(self) -> None:
        self.bands: dict[int, BandView] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue_bytes = GaugeMetricFamily(
            "sluice_flow_control_queue_bytes",
            "Bytes of request bodies queued, per priority band.",
            labels=("priority",),
        )
        band_requests = GaugeMetricFamily(
            "sluice_flow_control_band_queue_requests",
            "Requests queued, per priority band.",
            labels=("priority",),
        )
        jain = GaugeMetricFamily(
            "sluice_flow_control_jain_fairness_index",
            "Jain's fairness index over per-flow weighted service in a band (1 = equal).",
            labels=("priority",),
        )
        for priority, band in sorted(self.bands.items()):
            queue_bytes.add_metric((str(priority),), band.queued_bytes)
            band_requests.add_metric((str(priority),), band.queued_requests)
            jain.add_metric((str(priority),), band.jain_index)
        yield from (queue_bytes, band_requests, jain)


class _QueueSeries:
    """The queue gauges of one (flow, model pair) in every exported name set."""

    __slots__ = ("bytes", "size")

    def __init__(self, size: list[GaugeChild], queued_bytes: list[GaugeChild]) -> None:
        self.size = size
        self.bytes = queued_bytes


class FlowControlMetrics:
    """Implements `FlowObserver`. Create once per registry (the shell passes a shared one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        inference_pool: str = "",
        names: ExportedNames = BOTH,
        labels: ClientLabels | None = None,
        budget: SeriesBudget | None = None,
    ) -> None:
        self.inference_pool = inference_pool
        self.labels = labels or ClientLabels()
        families = Families(registry, client_labels=_CLIENT, budget=budget or SeriesBudget())
        gauge = families.gauge

        def histogram(name: str, buckets: tuple[float, ...]) -> HistogramFamily:
            doc = "Time a request spent in flow control, by outcome."
            return families.histogram(name, doc, _UPSTREAM_LABELS, buckets)

        size_doc = "Requests currently queued in flow control."
        self.queue_duration: list[HistogramFamily] = []
        self.queue_size: list[GaugeFamily] = []
        self.queue_bytes: list[GaugeFamily] = []
        self.requests_total: CounterFamily | None = None
        if names.gie:
            self.queue_duration.append(
                histogram(
                    "inference_extension_flow_control_request_queue_duration_seconds",
                    QUEUE_DURATION_BUCKETS,
                )
            )
            self.queue_size.append(
                gauge("inference_extension_flow_control_queue_size", size_doc, _QUEUE_LABELS)
            )
        if names.llm_d:
            self.queue_duration.append(
                histogram(
                    "llm_d_epp_flow_control_request_queue_duration_seconds",
                    LLMD_QUEUE_DURATION_BUCKETS,
                )
            )
            self.queue_size.append(
                gauge("llm_d_epp_flow_control_queue_size", size_doc, _QUEUE_LABELS)
            )
            self.queue_bytes.append(
                gauge(
                    "llm_d_epp_flow_control_queue_bytes",
                    "Bytes of request bodies currently queued in flow control.",
                    _QUEUE_LABELS,
                )
            )
            self.requests_total = families.counter(
                "llm_d_epp_flow_control_requests_total",
                "Requests finalized by flow control, by outcome.",
                ("outcome", "priority", "inference_pool"),
            )
        self.outcomes = families.counter(
            "sluice_flow_control_outcomes",
            "Requests finalized by flow control, by outcome.",
            ("priority", "outcome"),
        )
        self.served = gauge(
            "sluice_flow_control_served_token_cost",
            "Token cost served per flow (w_in·uncached prompt + w_out·output; estimate at "
            "dispatch, corrected with true usage at completion).",
            ("fairness_id", "priority"),
        )
        self.counter = gauge(
            "sluice_flow_control_virtual_counter",
            "Virtual token counter per flow (weighted service; token-fair serves the lowest).",
            ("fairness_id", "priority"),
        )
        self._bands = _Bands()
        registry.register(self._bands)
        # `labels()` hashes a label tuple per call; children are cached per label set instead.
        self._queues: dict[_QueueKey, _QueueSeries] = {}
        self._finalized: dict[
            tuple[_QueueKey, QueueOutcome], tuple[list[HistogramChild], list[CounterChild]]
        ] = {}

    def _key(self, ticket: Ticket) -> _QueueKey:
        request, guard = ticket.request, self.labels
        return (
            guard.fairness_id(ticket.flow.fairness_id),
            str(ticket.priority),
            self.inference_pool,
            guard.model(request.model),
            guard.model(request.target_model),
        )

    def _queue(self, key: _QueueKey) -> _QueueSeries:
        series = self._queues.get(key)
        if series is None:
            series = _QueueSeries(
                [family.labels(*key) for family in self.queue_size],
                [family.labels(*key) for family in self.queue_bytes],
            )
            if len(self._queues) < MAX_CACHED_SERIES:
                self._queues[key] = series
        return series

    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        series = self._queue(self._key(ticket))
        for size in series.size:
            size.inc()
        for queued in series.bytes:
            queued.inc(ticket.byte_size)
        self._bands.bands[band.priority] = band

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        ticket, outcome = event.ticket, event.outcome
        key = self._key(ticket)
        children = self._finalized.get((key, outcome))
        if children is None:
            fairness_id, priority, pool, model, target = key
            labels = (fairness_id, priority, outcome.upstream_label, pool, model, target)
            counts = [self.outcomes.labels(priority, outcome.value)]
            if self.requests_total is not None:
                counts.append(self.requests_total.labels(outcome.upstream_label, priority, pool))
            children = ([family.labels(*labels) for family in self.queue_duration], counts)
            if len(self._finalized) < MAX_CACHED_SERIES:
                self._finalized[(key, outcome)] = children
        durations, counts = children
        waited = max(0.0, event.waited_s)
        for duration in durations:
            duration.observe(waited)
        for count in counts:
            count.inc()
        if band is not None and outcome.was_queued:
            series = self._queue(key)
            for size in series.size:
                size.dec()
            for queued in series.bytes:
                queued.dec(ticket.byte_size)

    def on_served(self, flow: FlowView, band: BandView) -> None:
        self._bands.bands[band.priority] = band
        fairness_id = self.labels.fairness_id(flow.key.fairness_id)
        if fairness_id == OVERFLOW:
            return
        labels = (fairness_id, str(flow.key.priority))
        served, counter = self.served.labels(*labels), self.counter.labels(*labels)
        if OVERFLOW not in served.labels:  # the budget may have folded it
            served.set(flow.served)
            counter.set(flow.counter)
