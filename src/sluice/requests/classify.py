"""A request's class, decided once and carried on the request: the band of the objective it
names (`x-llm-d-inference-objective`, or the older `x-gateway-inference-objective`) and, within
the band, its flow (the fairness id, set by the parser with its default)."""

from __future__ import annotations

from collections.abc import Mapping


def priority_of(objective: str | None, priorities: Mapping[str, int]) -> int:
    """The band of a request naming `objective`: that objective's priority in the pool
    (`PoolState.priorities`); no objective, or one the pool does not know, is band 0."""
    if not objective:
        return 0
    return priorities.get(objective, 0)
