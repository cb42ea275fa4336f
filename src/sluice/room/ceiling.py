"""Upstream's usage-limit gate: a ceiling on pool saturation per band (docs/room.md, rule 7).

llm-d-router v0.10 computes one pool saturation per dispatch cycle and, per active band, a
ceiling from the configured `UsageLimitPolicy`; a band whose ceiling the saturation has reached
(`saturation >= ceiling`) is not released, and the cycle stops there, so no lower band goes
either. Both upstream policies give ceilings that never rise as priority falls, so "held for
this band ⇒ held for every band below" holds whichever band asks first.

- `static-usage-limit-policy`: every band's ceiling is `threshold` (default 1.0).
- `priority-holdback-policy`: the highest active band gets `maxCeiling`, the lowest
  `minCeiling`; `domain: rank` spaces the others in equal steps by rank
  (`c_i = max - i (max - min) / (N - 1)`), `domain: value` in proportion to their priority
  values (`c_i = min + (p_i - p_min) / (p_max - p_min) (max - min)`). One active band, or all
  of one value, gets `maxCeiling`.

Saturation is upstream's utilization detector: the mean over the pool's endpoints of
`max(waiting / queueDepthThreshold, kv / kvCacheUtilThreshold)`, an endpoint with stale metrics
counting 1.0 and an empty pool 1.0. The active bands are the configured ones plus every band
something arrived in within upstream's band collection time (10 minutes).

Sans-I/O: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sluice.datalayer.registry import EndpointState
from sluice.room.settings import RANK, STATIC, RoomSettings, UsageLimit

# Upstream's defaultPriorityBandGCTimeout: a band provisioned by traffic is collected after
# this long without any (registry/config.go: 2 x the 5-minute flow collection time).
BAND_IDLE_S = 600.0


def ceilings(limit: UsageLimit, priorities: Sequence[int]) -> list[float]:
    """Each active band's ceiling, `priorities` highest first (upstream's `ComputeLimit`)."""
    n = len(priorities)
    high, low = limit.max_ceiling, limit.min_ceiling
    if limit.domain == STATIC or n == 1:
        return [high] * n
    spread = high - low
    if limit.domain == RANK:
        return [high - i * spread / (n - 1) for i in range(n)]
    p_max, p_min = priorities[0], priorities[-1]
    if p_max == p_min:
        return [high] * n
    return [low + (p - p_min) / (p_max - p_min) * spread for p in priorities]


def pool_saturation(states: Iterable[EndpointState], now: float, settings: RoomSettings) -> float:
    """Upstream's utilization detector over the whole pool (1.0 when it is empty)."""
    total, count = 0.0, 0
    for state in states:
        count += 1
        m = state.metrics
        if now - m.updated_at > settings.metrics_staleness_s:
            total += 1.0  # fail closed, as upstream
            continue
        queue = m.waiting / settings.queue_depth
        kv = m.kv_cache_usage / settings.kv_cache_util if m.kv_cache_known else 0.0
        total += max(queue, kv)
    return total / count if count else 1.0


class ActiveBands:
    """The bands that count for the ceilings: the configured ones, and each band something
    arrived in within `BAND_IDLE_S`."""

    def __init__(self, configured: Iterable[int] = ()) -> None:
        self._configured = frozenset(configured)
        self._seen: dict[int, float] = {}

    def touched(self, priority: int, now: float) -> None:
        self._seen[priority] = now

    def active(self, now: float, asking: int) -> list[int]:
        """Highest first; `asking` counts whatever its history."""
        horizon = now - BAND_IDLE_S
        for priority in [p for p, at in self._seen.items() if at < horizon]:
            del self._seen[priority]
        return sorted({*self._configured, *self._seen, asking}, reverse=True)


def ceiling_for(limit: UsageLimit, priority: int, active: Sequence[int]) -> float:
    """The ceiling of band `priority` among the `active` bands (highest first, containing it)."""
    return ceilings(limit, active)[list(active).index(priority)]
