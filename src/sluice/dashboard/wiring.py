"""From `sluice serve` options to the observability pieces: the receipt recorder the director
calls (None when nothing reads receipts: free), the OTLP tracer fed by it, and the dashboard's
routes on the metrics port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from sluice.cli.serve_options import ServeOptions
from sluice.dashboard.routes import DashboardRoutes
from sluice.dashboard.snapshot import DashboardView
from sluice.director import Director
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.tracing import tracer_from_environment

if TYPE_CHECKING:
    from sluice.tracing.export import RequestTracer


class ObservabilityError(ValueError):
    """A bad observability flag; the message names it and the fix."""


@dataclass
class Observability:
    recorder: ReceiptRecorder | None
    emit_endpoint_scores: bool
    tracing: RequestTracer | None = None  # when OTLP export is on

    @classmethod
    def from_options(cls, options: ServeOptions) -> Observability:
        size = int(options["decision-receipts"])
        max_bytes = int(options["decision-receipts-max-bytes"])
        if size < 0:
            raise ObservabilityError(
                f"--decision-receipts {size}: give 0 (off) or the number of receipts to keep"
            )
        if max_bytes < 0:
            raise ObservabilityError(
                f"--decision-receipts-max-bytes {max_bytes}: give a size in bytes >= 0"
            )
        tracer = tracer_from_environment()
        emit = bool(options["emit-endpoint-scores"])
        sinks = [tracer.on_receipt] if tracer is not None else []
        recorder = None
        if size > 0 or emit or tracer is not None:
            recorder = ReceiptRecorder(ReceiptRing(size, max_bytes), on_finished=sinks)
        return cls(recorder, emit, tracer)

    def routes(
        self,
        director: Director,
        *,
        staleness_s: float,
        pool: str,
        authorize: Callable[[web.Request], Awaitable[bool]] | None,
    ) -> DashboardRoutes:
        def objectives() -> Mapping[str, int]:
            state = director.core.state
            return state.priorities if state is not None else {}

        view = DashboardView(
            objectives=objectives,
            flow=director.flow,
            registry=director.registry,
            recorder=self.recorder,
            staleness_s=staleness_s,
            pool=pool,
        )
        return DashboardRoutes(view, clock=director.clock, authorize=authorize)

    def shutdown(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
