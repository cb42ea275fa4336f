"""What the room is configured with: `saturationDetector` in the YAML (docs/room.md)."""

from __future__ import annotations

from dataclasses import dataclass

# Upstream's usage-limit policies (`flowControl.usageLimitPolicyPluginRef`; room/ceiling.py).
STATIC = "static"  # static-usage-limit-policy: one ceiling for every band
RANK = "rank"  # priority-holdback-policy, domain rank: equal steps by ordinal rank
VALUE = "value"  # priority-holdback-policy, domain value: proportional to the priority value


@dataclass(frozen=True, slots=True)
class UsageLimit:
    """A ceiling on pool saturation per band: a band's requests are released only while the
    pool's saturation is below its ceiling. `STATIC`: every band gets `max_ceiling`
    (upstream's `threshold`); `RANK`/`VALUE`: the highest active band gets `max_ceiling`, the
    lowest `min_ceiling`, the others a linear interpolation by rank or by priority value."""

    domain: str = STATIC
    min_ceiling: float = 1.0
    max_ceiling: float = 1.0
    # The bands that count as active although nothing arrived lately (upstream provisions the
    # configured `priorityBands` at start and never collects them).
    configured_bands: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomSettings:
    # Upstream's utilization detector: an endpoint has room iff its metrics are fresh and
    # `waiting <= queue_depth` and `kv <= kv_cache_util`.
    queue_depth: int = 5
    kv_cache_util: float = 0.8
    metrics_staleness_s: float = 0.2
    # Sluice: at most this many dispatches the engine has not reported yet (None = no limit).
    max_unseen_requests: int | None = None
    # Sluice: at most this many requests in flight from Sluice per endpoint (None = no limit).
    max_in_flight_requests: int | None = None
    # Sluice: a tighter cap for a band while a higher band is expected to want room soon, so
    # the engines keep headroom a high-priority arrival can use at once.
    lower_priority_max_in_flight: int | None = None
    # Sluice: no new request while this many uncached prompt tokens dispatched to the endpoint
    # are still being prefilled — prefill is what a new arrival's first token waits behind.
    max_pending_prefill_tokens: int | None = None
    # Sluice: for the highest band expected while a band below it is, a pending prefill sent at
    # least this many seconds ago and expected to end within as many no longer fills the budget:
    # the request could not join the engine step in progress anyway, and sent now it reaches
    # the engine's queue as that step ends instead of a front end's delay after the first byte
    # (0: off). It is placed by the same budget.
    prefill_ending_s: float = 0.05
    # Sluice: placement keeps prefills of different bands apart (`room.placement.steer_prefills`).
    # Off only in the benchmarks' plain routers (round-robin, upstream's profile, ...): the
    # routers they stand for have no such rule.
    steer_prefills: bool = True
    # Sluice: a band's heavy hitter never takes the last this many endpoints with room for the
    # rest of its band while the rest is expected to want room soon (0: no reserve).
    background_headroom_endpoints: int = 1
    # ... counting as "with room" an endpoint whose pending prefills were sent at least this many
    # seconds ago and are expected to end within as many, while none of the rest of its band is
    # waiting (0: room now only).
    background_ending_s: float = 0.2
    # Sluice: an engine that reports its slots (llama.cpp's `total_slots`) gets at most that
    # many requests in flight, and a lower band one fewer while a higher band is expected.
    cap_to_engine_slots: bool = True
    # When a pending prefill is over without a first byte or the engine's word: its estimated
    # time to first token, from a per-endpoint fit of TTFT against uncached prompt tokens,
    # starting from this prior (a slow engine, so that an unknown one is not flooded) ...
    prefill_tokens_per_s: float = 2500.0
    prefill_overhead_s: float = 0.025
    # ... and never longer than this: no request holds an endpoint's room for longer.
    max_prefill_hold_s: float = 30.0
    # When a detached request (a gateway that shows Sluice no response) is taken as over if no
    # scrape said so first: dispatch + its prefill estimate + output tokens x the endpoint's
    # seconds per output token, learned online from this prior (room/ends.py) ...
    decode_seconds_per_token: float = 0.02
    # ... and never later than this after its dispatch.
    max_detached_hold_s: float = 300.0
    # How long a reserve outlives the last arrival of whoever it is kept for (room/demand.py):
    # this many of their mean gaps between arrivals, within [min, max] seconds.
    reserve_hold_gaps: float = 10.0
    reserve_hold_min_s: float = 2.0
    reserve_hold_max_s: float = 30.0
    # Upstream's usage-limit policy (None: no ceiling below the rules above, upstream's default
    # static threshold 1.0).
    usage_limit: UsageLimit | None = None


DEFAULT_ROOM = RoomSettings()
