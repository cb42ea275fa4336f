"""Prometheus metrics for flow control: a `FlowObserver` that writes to a registry passed in.

Upstream's two series keep upstream's names and labels; the rest are Sluice's fairness and
priority observability (queued bytes per band, served tokens and virtual counter per flow,
Jain's index per band, outcomes by reason).

Cost matters here (every request passes through the hooks): labelled children are cached per
label set, and the per-band and per-flow gauges are read from the live bands and flows at scrape
time instead of being set on every event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.flowcontrol.model import Finalized, FlowKey, QueueOutcome, Ticket
from sluice.flowcontrol.observer import BandView, FlowView

_UPSTREAM_LABELS = (
    "fairness_id",
    "priority",
    "outcome",
    "inference_pool",
    "model_name",
    "target_model_name",
)
_QUEUE_SIZE_LABELS = tuple(label for label in _UPSTREAM_LABELS if label != "outcome")
# Upstream's range: 0.1 ms … 60 s.
QUEUE_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class _BandsAndFlows(Collector):
    """Gauges computed at scrape time from the bands and flows the observer has seen."""

    def __init__(self) -> None:
        self.bands: dict[int, BandView] = {}
        self.flows: dict[FlowKey, FlowView] = {}

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
        served = GaugeMetricFamily(
            "sluice_flow_control_served_token_cost",
            "Token cost served per flow (w_in·uncached prompt + w_out·output; estimate at "
            "dispatch, corrected with true usage at completion).",
            labels=("fairness_id", "priority"),
        )
        counter = GaugeMetricFamily(
            "sluice_flow_control_virtual_counter",
            "Virtual token counter per flow (weighted service; token-fair serves the lowest).",
            labels=("fairness_id", "priority"),
        )
        for key, flow in self.flows.items():
            labels = (key.fairness_id, str(key.priority))
            served.add_metric(labels, flow.served)
            counter.add_metric(labels, flow.counter)
        yield from (queue_bytes, band_requests, jain, served, counter)


class FlowControlMetrics:
    """Implements `FlowObserver`. Create once per registry (the shell passes a shared one)."""

    def __init__(self, registry: CollectorRegistry, *, inference_pool: str = "") -> None:
        self.inference_pool = inference_pool
        self.queue_duration = Histogram(
            "inference_extension_flow_control_request_queue_duration_seconds",
            "Time a request spent in flow control, by outcome.",
            _UPSTREAM_LABELS,
            buckets=QUEUE_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_size = Gauge(
            "inference_extension_flow_control_queue_size",
            "Requests currently queued in flow control.",
            _QUEUE_SIZE_LABELS,
            registry=registry,
        )
        self.outcomes = Counter(
            "sluice_flow_control_outcomes",
            "Requests finalized by flow control, by outcome.",
            ("priority", "outcome"),
            registry=registry,
        )
        self._live = _BandsAndFlows()
        registry.register(self._live)
        # `labels()` costs microseconds per call; children are cached per label set instead.
        self._queue_size: dict[tuple[FlowKey, str, str], Any] = {}
        self._finalized: dict[tuple[FlowKey, str, str, QueueOutcome], tuple[Any, Any]] = {}

    def _upstream_labels(self, ticket: Ticket) -> tuple[str, str, str, str, str]:
        request = ticket.request
        return (
            ticket.flow.fairness_id,
            str(ticket.priority),
            self.inference_pool,
            request.model,
            request.target_model,
        )

    def _queue_size_child(self, ticket: Ticket) -> Any:
        key = (ticket.flow, ticket.request.model, ticket.request.target_model)
        child = self._queue_size.get(key)
        if child is None:
            child = self._queue_size[key] = self.queue_size.labels(*self._upstream_labels(ticket))
        return child

    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        self._queue_size_child(ticket).inc()
        self._live.bands[band.priority] = band

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        ticket = event.ticket
        outcome = event.outcome
        key = (ticket.flow, ticket.request.model, ticket.request.target_model, outcome)
        children = self._finalized.get(key)
        if children is None:
            fairness_id, priority, pool, model, target = self._upstream_labels(ticket)
            duration = self.queue_duration.labels(
                fairness_id, priority, outcome.upstream_label, pool, model, target
            )
            children = self._finalized[key] = (
                duration,
                self.outcomes.labels(priority, outcome.value),
            )
        duration, count = children
        duration.observe(max(0.0, event.waited_s))
        count.inc()
        if band is not None and outcome is not QueueOutcome.REJECTED_CAPACITY:
            self._queue_size_child(ticket).dec()

    def on_served(self, flow: FlowView, band: BandView) -> None:
        self._live.flows[flow.key] = flow
        self._live.bands[band.priority] = band
