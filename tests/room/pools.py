"""A registry of endpoints that have all just reported, for the room's tests."""

from __future__ import annotations

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry


def fresh_pool(n: int, now: float) -> EndpointRegistry:
    """Endpoints pod-0 … pod-(n-1), each scraped at `now` with idle metrics."""
    registry = EndpointRegistry()
    registry.set_endpoints(Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000) for i in range(n))
    for state in registry.snapshot():
        mark = registry.begin_scrape(state.name)
        assert mark is not None
        registry.record_scrape(mark, EngineMetrics(updated_at=now))
    return registry
