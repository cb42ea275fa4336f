"""Prometheus metrics for flow control: a `FlowObserver` that writes to a registry passed in.

Upstream's two series keep upstream's names and labels; the rest are Sluice's fairness and
priority observability (queued bytes per band, served tokens and virtual counter per flow,
Jain's index per band, outcomes by reason).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.flowcontrol.model import Finalized, QueueOutcome, Ticket
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
        self.queue_bytes = Gauge(
            "sluice_flow_control_queue_bytes",
            "Bytes of request bodies queued, per priority band.",
            ("priority",),
            registry=registry,
        )
        self.band_requests = Gauge(
            "sluice_flow_control_band_queue_requests",
            "Requests queued, per priority band.",
            ("priority",),
            registry=registry,
        )
        self.served_tokens = Gauge(
            "sluice_flow_control_served_token_cost",
            "Token cost served per flow (w_in·uncached prompt + w_out·output; estimate at "
            "dispatch, corrected with true usage at completion).",
            ("fairness_id", "priority"),
            registry=registry,
        )
        self.virtual_counter = Gauge(
            "sluice_flow_control_virtual_counter",
            "Virtual token counter per flow (weighted service; token-fair picks the lowest).",
            ("fairness_id", "priority"),
            registry=registry,
        )
        self.jain_index = Gauge(
            "sluice_flow_control_jain_fairness_index",
            "Jain's fairness index over per-flow weighted service in a band (1 = equal).",
            ("priority",),
            registry=registry,
        )
        self.outcomes = Counter(
            "sluice_flow_control_outcomes",
            "Requests finalized by flow control, by outcome.",
            ("priority", "outcome"),
            registry=registry,
        )

    def _upstream_labels(self, ticket: Ticket) -> tuple[str, ...]:
        request = ticket.request
        return (
            ticket.flow.fairness_id,
            str(ticket.priority),
            self.inference_pool,
            request.model,
            request.target_model,
        )

    def _band(self, band: BandView) -> None:
        priority = str(band.priority)
        self.queue_bytes.labels(priority).set(band.queued_bytes)
        self.band_requests.labels(priority).set(band.queued_requests)

    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        self.queue_size.labels(*self._upstream_labels(ticket)).inc()
        self._band(band)

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        ticket = event.ticket
        fairness_id, priority, pool, model, target = self._upstream_labels(ticket)
        outcome = event.outcome
        self.queue_duration.labels(
            fairness_id, priority, outcome.upstream_label, pool, model, target
        ).observe(max(0.0, event.waited_s))
        self.outcomes.labels(priority, outcome.value).inc()
        if band is not None and outcome is not QueueOutcome.REJECTED_CAPACITY:
            self.queue_size.labels(fairness_id, priority, pool, model, target).dec()
            self._band(band)

    def on_served(self, flow: FlowView, band: BandView) -> None:
        labels = (flow.key.fairness_id, str(flow.key.priority))
        self.served_tokens.labels(*labels).set(flow.served)
        self.virtual_counter.labels(*labels).set(flow.counter)
        self.jain_index.labels(str(band.priority)).set(band.jain_index)
