"""Which flow a request belongs to, and how its band maps to the engine's own priority. (A
request's band itself is decided once, when it is parsed: `sluice.requests.classify`.)"""

from __future__ import annotations

from sluice.flowcontrol.model import FlowKey
from sluice.requests.model import DEFAULT_FAIRNESS_ID, InferenceRequest


def flow_of(request: InferenceRequest) -> FlowKey:
    """Flow = (fairness id, priority); an empty fairness id is the default flow."""
    return FlowKey(request.fairness_id or DEFAULT_FAIRNESS_ID, request.priority)


def engine_priority(band: int) -> int:
    """vLLM's request `priority` for a band: lower is sooner, so the band is negated.

    Band 10 → -10 (first), band 0 → 0, band -5 → 5 (last); same total order as the bands.
    """
    return -band
