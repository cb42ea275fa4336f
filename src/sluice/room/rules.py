"""Whether an endpoint may take one more request: upstream's saturation rule plus Sluice's caps.

Upstream's rule, kept exactly (facts §4): an endpoint has room iff its metrics are fresh,
`waiting <= queueDepthThreshold` and `kv <= kvCacheUtilThreshold`. Sluice adds limits on its own
in-flight accounting, exact between scrapes because Sluice counts its own dispatches, so that a
burst released between two scrapes cannot overfill an endpoint that looked empty, and so that
the queue forms in Sluice — where priority and token fairness apply — rather than in the engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sluice.datalayer.registry import EndpointState
from sluice.room.settings import DEFAULT_ROOM, RoomSettings


class Ending(NamedTuple):
    """Pending prefills about to end, which the budget does not count: those sent by `sent_by`
    (in their engine step by now) and expected to end by `ends_by` (`RoomSettings.
    prefill_ending_s`, `background_ending_s`)."""

    sent_by: float
    ends_by: float

    @classmethod
    def within(cls, now: float, seconds: float) -> Ending | None:
        """Prefills sent at least `seconds` ago that are expected to end within `seconds`
        (None when `seconds` is 0: the rule is off)."""
        return cls(now - seconds, now + seconds) if seconds > 0 else None


def counted_pending_prefill(state: EndpointState, ending: Ending | None) -> int:
    """The endpoint's pending prefill tokens the budget counts: all of them, or (`ending`) all
    but those about to end. The other replicas' are added by the budget itself."""
    if ending is None:
        return state.pending_prefill_tokens
    return state.pending_prefill_tokens_not_ending(ending.sent_by, ending.ends_by)


def room_left(
    state: EndpointState,
    settings: RoomSettings,
    *,
    lower_band: bool = False,
    engine_slots: bool = True,
) -> int | None:
    """Requests the endpoint may still take under Sluice's in-flight caps (None: no cap). An
    engine that reports its slots (llama.cpp) gets no more than them — beyond them requests
    wait in the engine's arrival-order queue, out of priority's reach — and a lower band, while
    a higher one is expected, one fewer: a free slot for the higher band's next arrival. A
    dispatch Sluice holds back while its prefix is computed there takes no slot yet: it goes
    when the request ahead of it ends, into that request's slot. `engine_slots` False: only
    Sluice's own caps (placement: see `room.placement.placeable`)."""
    limit = settings.max_in_flight_requests
    if lower_band and settings.lower_priority_max_in_flight is not None:
        lower = settings.lower_priority_max_in_flight
        limit = lower if limit is None else min(limit, lower)
    lease = state.lease  # active-active replicas: this replica's part of the cap
    if lease is not None:
        limit = lease if limit is None else min(limit, lease)
    left = None if limit is None else limit - state.in_flight_requests
    if engine_slots and state.slots is not None and settings.cap_to_engine_slots:
        slots = max(1, state.slots - 1) if lower_band else state.slots
        # the engine's slots are the pool's: the other replicas' dispatches there count too
        at_engine = state.in_flight_requests - state.held_requests + state.peer_in_flight
        free = slots - at_engine
        left = free if left is None else min(left, free)
    return left


def has_room(
    state: EndpointState,
    now: float,
    settings: RoomSettings = DEFAULT_ROOM,
    *,
    lower_band: bool = False,
    contended: bool = True,
    priority: int | None = None,
    ending: Ending | None = None,
) -> bool:
    """Upstream's utilization rule plus Sluice's caps; `lower_band` for a request of band
    `priority` that keeps headroom for a higher one, which gets the tighter cap and no endpoint
    where a higher band's prefill is pending. The pending-prefill budget holds only while the
    endpoint's prefills are `contended` — someone else (a higher band, another tenant of the
    band) is expected to want room soon and would wait behind them; with nobody to protect, the
    engine batches the prefills itself. `ending`: the budget does not count prefills about
    to end (`prefill_hold`). Pending prefills are those the registry still
    holds: `EndpointRegistry.settle_prefills(now)` must have run first."""
    rule = hold_rule(
        state,
        now,
        settings,
        lower_band=lower_band,
        contended=contended,
        priority=priority,
        ending=ending,
    )
    return rule is None


# The names of the rules `has_room` applies, in the order it applies them: what a decision
# receipt says held a request (`hold_rule`).
STALE_METRICS = "stale-metrics"
QUEUE_DEPTH = "queue-depth"
KV_CACHE = "kv-cache"
UNSEEN_REQUESTS = "unseen-requests"
PENDING_PREFILL = "pending-prefill"
HIGHER_BAND_PREFILL = "higher-band-prefill"
IN_FLIGHT_CAP = "in-flight-cap"
LOWER_BAND_CAP = "lower-band-cap"
BACKGROUND_HEADROOM = "background-headroom"
# Not a rule of one endpoint: the pool's saturation reached the band's ceiling (room/ceiling.py).
USAGE_LIMIT = "usage-limit"


def rule_inputs(
    state: EndpointState, now: float, priority: int | None = None, ending: Ending | None = None
) -> dict[str, Any]:
    """What the rules (and the built-in scorers) read of an endpoint as of `now`, as plain
    values: a receipt records them so that its hold can be recomputed (`priority`: the band
    asking, whose higher bands' pending prefills a lower band's room reads; `ending`: as the
    rules were asked, so `pending_prefill_tokens` is what the budget counted)."""
    m = state.metrics
    above = 0 if priority is None else state.pending_prefills_above(priority)
    pending = counted_pending_prefill(state, ending)
    return {
        "waiting": m.waiting,
        "running": m.running,
        "kv_cache_usage": m.kv_cache_usage,
        "kv_cache_known": m.kv_cache_known,
        "in_flight": state.in_flight_requests,
        "unseen": state.unseen_requests,
        "ended_since_scrape": state.ended_since_scrape,
        "pending_prefill_tokens": pending,
        "pending_prefill_tokens_ending": state.pending_prefill_tokens - pending,
        "higher_band_prefills": above,
        "age_s": None if m.updated_at == float("-inf") else now - m.updated_at,
    }


def hold_rule(
    state: EndpointState,
    now: float,
    settings: RoomSettings = DEFAULT_ROOM,
    *,
    lower_band: bool = False,
    contended: bool = True,
    priority: int | None = None,
    ending: Ending | None = None,
) -> str | None:
    """The first rule that refuses the endpoint one more request, or None when it has room: the
    rules themselves, which `has_room` asks, so that what a receipt names as the hold is what
    held. Pending prefills count pool-wide (the other replicas' too); a higher band's pending
    prefill counts this replica's (`priority`: the band asking)."""
    metrics = state.metrics
    if now - metrics.updated_at > settings.metrics_staleness_s:
        return STALE_METRICS
    if metrics.waiting > settings.queue_depth:
        return QUEUE_DEPTH
    if metrics.kv_cache_known and metrics.kv_cache_usage > settings.kv_cache_util:
        return KV_CACHE
    limit = settings.max_unseen_requests
    if limit is not None and state.unseen_requests >= limit:
        return UNSEEN_REQUESTS
    prefill = prefill_hold(
        state,
        settings,
        lower_band=lower_band,
        contended=contended,
        priority=priority,
        ending=ending,
    )
    if prefill is not None:
        return prefill
    left = room_left(state, settings, lower_band=lower_band)
    if left is not None and left <= 0:
        plain = room_left(state, settings)
        return LOWER_BAND_CAP if plain is None or plain > 0 else IN_FLIGHT_CAP
    return None


def prefill_hold(
    state: EndpointState,
    settings: RoomSettings,
    *,
    lower_band: bool,
    contended: bool,
    priority: int | None,
    ending: Ending | None = None,
) -> str | None:
    """The pending-prefill budget's part of `hold_rule`, which placement applies as well (see
    `room.placement.placeable`): while prefills compete, no new request on an endpoint whose
    pending prefills fill the budget, and none of a band that keeps headroom for a higher one
    where a higher band's prefill is pending. `ending`: prefills about to end do not count
    (`RoomSettings.prefill_ending_s`; the other replicas' always do)."""
    budget = settings.max_pending_prefill_tokens
    if not contended or budget is None:
        return None
    pending = counted_pending_prefill(state, ending)
    if pending + state.peer_pending_prefill_tokens >= budget:  # pool-wide
        return PENDING_PREFILL
    # A prompt sent after a higher band's is prefilled in the same engine step (chunked prefill
    # takes every waiting prompt that fits the step's token budget), so the higher band's first
    # token waits for it too: a higher band's pending prefill takes the whole budget from the
    # bands below it.
    if lower_band and priority is not None and state.pending_prefills_above(priority):
        return HIGHER_BAND_PREFILL
    return None


def has_room_for_background(
    candidates: Sequence[EndpointState],
    now: float,
    settings: RoomSettings = DEFAULT_ROOM,
    *,
    lower_band: bool = False,
    priority: int | None = None,
    ending: Ending | None = None,
) -> bool:
    """Room for one more request of its band's heavy hitter, while the rest of the band is
    expected to want room soon (`lower_band`: the band keeps headroom for a higher one). It
    gets the tighter in-flight cap of a lower band, and leaves `background_headroom_endpoints`
    of the candidates that have room for the rest of its band to them (when there are more
    candidates than that, so that a small subset hint never shuts it out). `ending`: an
    endpoint whose pending prefills are about to end counts as one with room for the
    rest (`RoomSettings.background_ending_s`); the heavy hitter itself only goes where there is
    room now."""
    if not any(has_room(s, now, settings, lower_band=True, priority=priority) for s in candidates):
        return False
    keep = settings.background_headroom_endpoints
    if keep <= 0 or len(candidates) <= keep:
        return True
    with_room = 0
    for s in candidates:
        if has_room(s, now, settings, lower_band=lower_band, priority=priority, ending=ending):
            with_room += 1
            if with_room > keep:
                return True
    return False


def endpoints_with_room(
    candidates: Iterable[EndpointState], now: float, settings: RoomSettings = DEFAULT_ROOM
) -> list[EndpointState]:
    """The candidates that can take one more request now, in the given order."""
    return [s for s in candidates if has_room(s, now, settings)]


def is_saturated(
    candidates: Iterable[EndpointState], now: float, settings: RoomSettings = DEFAULT_ROOM
) -> bool:
    """Upstream's `IsSaturated`: true unless some candidate has room (so empty → saturated)."""
    return not any(has_room(s, now, settings) for s in candidates)
