"""Which flow a request belongs to, and how its band maps to the engine's own priority."""

from __future__ import annotations

from collections.abc import Callable

from sluice.flowcontrol.model import FlowKey
from sluice.requests.model import DEFAULT_FAIRNESS_ID, InferenceRequest

# Looks up `spec.priority` of the InferenceObjective with this name in the pool's namespace;
# None when the objective is unknown or has no priority.
ObjectivePriority = Callable[[str], int | None]


def priority_of(objective: str | None, lookup: ObjectivePriority) -> int:
    """The request's priority: its objective's `spec.priority`; unknown or unset → 0."""
    if not objective:
        return 0
    priority = lookup(objective)
    return 0 if priority is None else priority


def flow_of(request: InferenceRequest) -> FlowKey:
    """Flow = (fairness id, priority); an empty fairness id is the default flow."""
    return FlowKey(request.fairness_id or DEFAULT_FAIRNESS_ID, request.priority)


def engine_priority(band: int) -> int:
    """vLLM's request `priority` for a band: lower is sooner, so the band is negated.

    Band 10 → -10 (first), band 0 → 0, band -5 → 5 (last); same total order as the bands.
    """
    return -band
