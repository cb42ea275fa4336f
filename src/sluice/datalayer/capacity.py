"""Which endpoints have room: upstream's utilization detector plus Sluice's in-flight limits.

Flow control asks this before releasing a request (facts §4). Upstream rule, kept exactly: an
endpoint has room iff its metrics are fresh, `waiting <= queueDepthThreshold` and
`kv <= kvCacheUtilThreshold`. Sluice adds optional limits on its own in-flight counts, so that a
burst released between two scrapes cannot overfill an endpoint that looked empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    # Sluice: a tighter cap for requests below the pool's highest priority, so the engines keep
    # headroom a high-priority arrival can use at once instead of waiting for a slot to drain.
    lower_priority_max_in_flight: int | None = None
    # Sluice: no new request while this many prompt tokens dispatched to the endpoint still wait
    # for their first byte — prefill is what a new arrival's first token waits behind.
    max_pending_prefill_tokens: int | None = None
    # Sluice: a band's heavy hitter (flow control's `Band.heavy_hitter`: its requests ask for
    # room as background) never takes the last this many endpoints with room for the rest of
    # its band, so a tenant below its share finds one without a long prefill ahead (0: none).
    background_headroom_endpoints: int = 1


def room_left(
    state: EndpointState, thresholds: CapacityThresholds, *, lower_band: bool = False
) -> int | None:
    """Requests the endpoint may still take under Sluice's in-flight caps (None: no cap)."""
    limit = thresholds.max_in_flight_requests
    if lower_band and thresholds.lower_priority_max_in_flight is not None:
        lower = thresholds.lower_priority_max_in_flight
        limit = lower if limit is None else min(limit, lower)
    if limit is None:
        return None
    return limit - state.in_flight_requests


DEFAULT_THRESHOLDS = CapacityThresholds()


def has_room(
    state: EndpointState,
    now: float,
    thresholds: CapacityThresholds = DEFAULT_THRESHOLDS,
    *,
    lower_band: bool = False,
) -> bool:
    """Upstream's utilization rule plus Sluice's caps; `lower_band` for requests below the
    pool's highest priority, which get the tighter cap."""
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
    budget = thresholds.max_pending_prefill_tokens
    if budget is not None and state.pending_prefill_tokens >= budget:
        return False
    left = room_left(state, thresholds, lower_band=lower_band)
    return left is None or left > 0


def has_room_for_background(
    candidates: Sequence[EndpointState],
    now: float,
    thresholds: CapacityThresholds = DEFAULT_THRESHOLDS,
    *,
    lower_band: bool = False,
) -> bool:
    """Room for one more background request — one of its band's heavy hitter (`lower_band`:
    the band is below the pool's top priority). It gets the tighter in-flight cap of a lower
    band, and leaves `background_headroom_endpoints` of the candidates that have room for the
    rest of its band to them (when there are more candidates than that, so that a small
    subset hint never shuts it out)."""
    if not any(has_room(s, now, thresholds, lower_band=True) for s in candidates):
        return False
    keep = thresholds.background_headroom_endpoints
    if keep <= 0 or len(candidates) <= keep:
        return True
    with_room = 0
    for s in candidates:
        if has_room(s, now, thresholds, lower_band=lower_band):
            with_room += 1
            if with_room > keep:
                return True
    return False


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
