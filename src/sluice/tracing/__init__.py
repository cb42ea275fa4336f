"""OpenTelemetry traces of each request, exported over OTLP/HTTP when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off, and not even
imported, when neither is.

The spans are built from the request's decision receipt when it ends (`spans.py`), not opened
and closed around each step: the hot path pays nothing more than the receipt and a sampling
decision, and Sluice's batch thread (batching as the SDK's processor does) builds, encodes and
exports them off the event loop. Names follow upstream's where it has them
(`gateway.request`, `gateway.request_orchestration`, `run_scheduler_profile`,
`filter_endpoints`, `pick_endpoints`, `llm_d.epp.*` and `gen_ai.*` attributes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sluice.tracing.variables import ENDPOINT_VARIABLES

if TYPE_CHECKING:
    from sluice.tracing.export import RequestTracer


def tracer_from_environment(environ: Mapping[str, str] | None = None) -> RequestTracer | None:
    """A tracer exporting over OTLP/HTTP when an OTLP endpoint variable is set, else None (and
    the OpenTelemetry SDK is never imported)."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in ENDPOINT_VARIABLES):
        return None
    from sluice.tracing.export import otlp_tracer

    return otlp_tracer(env)


__all__ = ["ENDPOINT_VARIABLES", "RequestTracer", "tracer_from_environment"]
