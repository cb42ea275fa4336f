"""Which endpoints have room: upstream's utilization detector plus Sluice's in-flight limits.

Flow control asks this before releasing a request (facts §4). Upstream rule, kept exactly: an
endpoint has room iff its metrics are fresh, `waiting <= queueDepthThreshold` and
`kv <= kvCacheUtilThreshold`. Sluice adds optional limits on its own in-flight counts, so that a
burst released between two scrapes cannot overfill an endpoint that looked empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sluice.datalayer.registry import EndpointState


@dataclass(frozen=True, slots=True)
class CapacityThresholds:
    queue_depth: int = 5
    kv_cache_util: float = 0.8
    metrics_staleness_s: float = 0.2
    # Sluice: at most this many dispatches the engine has not reported yet (None = no limit).
    max_unseen_requests: int | None = None
    # Sluice: at most this many requests in flight from Sluice in total (None = no limit).
    max_in_flight_requests: int | None = None
    # Sluice: of `max_in_flight_requests`, this many are kept for the pool's highest priority,
    # so a high-priority arrival finds a free slot instead of waiting for one to drain.
    reserved_for_highest_priority: int = 0


def room_left(
    state: EndpointState, thresholds: CapacityThresholds, *, reserved: bool = False
) -> int | None:
    """Requests the endpoint may still take under Sluice's in-flight cap (None: no cap)."""
    limit = thresholds.max_in_flight_requests
    if limit is None:
        return None
    if reserved:
        limit -= thresholds.reserved_for_highest_priority
    return limit - state.in_flight_requests


DEFAULT_THRESHOLDS = CapacityThresholds()


def has_room(
    state: EndpointState,
    now: float,
    thresholds: CapacityThresholds = DEFAULT_THRESHOLDS,
    *,
    keep_reserve: bool = False,
) -> bool:
    """Upstream's utilization rule plus Sluice's caps; `keep_reserve` for requests below the
    pool's highest priority, which may not take the reserved slots."""
    metrics = state.metrics
    if now - metrics.updated_at > thresholds.metrics_staleness_s:  # also: never scraped
        return False
    if metrics.waiting > thresholds.queue_depth:
        return False
    if metrics.kv_cache_usage > thresholds.kv_cache_util:
        return False
    limit = thresholds.max_unseen_requests
    if limit is not None and state.unseen_requests >= limit:
        return False
    left = room_left(state, thresholds, reserved=keep_reserve)
    return left is None or left > 0


def endpoints_with_room(
    candidates: Iterable[EndpointState],
    now: float,
    thresholds: CapacityThresholds = DEFAULT_THRESHOLDS,
) -> list[EndpointState]:
    """The candidates that can take one more request now, in the given order."""
    return [s for s in candidates if has_room(s, now, thresholds)]


def is_saturated(
    candidates: Iterable[EndpointState],
    now: float,
    thresholds: CapacityThresholds = DEFAULT_THRESHOLDS,
) -> bool:
    """Upstream's `IsSaturated`: true unless some candidate has room (so empty → saturated)."""
    return not any(has_room(s, now, thresholds) for s in candidates)
