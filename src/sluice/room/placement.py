"""Where a released request may be placed, before the scorers choose among the candidates."""

from __future__ import annotations

from collections.abc import Sequence

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.room.rules import Ending, prefill_hold, room_left
from sluice.room.settings import RoomSettings


def in_subset(endpoint: Endpoint, subset: frozenset[str]) -> bool:
    """The gateway's subset hint (`x-gateway-destination-endpoint-subset`). Upstream matches on
    the IP (port stripped); either form is accepted."""
    return endpoint.hostport in subset or endpoint.address in subset


def placeable(
    states: Sequence[EndpointState],
    now: float,
    settings: RoomSettings,
    *,
    priority: int,
    lower_band: bool,
    contended: bool = False,
    ending: Ending | None = None,
) -> Sequence[EndpointState]:
    """Where a released request of band `priority` may be placed. As upstream, the scheduler
    weighs every candidate — sending a request to the engine that holds its prefix can beat an
    emptier one — except endpoints Sluice knows are unusable: stale metrics (down, or refusing
    connections) and those at Sluice's own in-flight cap (`lower_band`: the band keeps headroom
    for a higher one). An engine's slots gate the release; in placement they bind only a band
    that keeps a slot free for a higher one (`lower_band`). Any other request may still wait in
    the engine that holds its prefix rather than prefill it cold in a free slot elsewhere
    (llama.cpp, shared prefix: with full engines excluded TTFT p50 went above round-robin's);
    the load scorers weigh the full slots. Measured, llama.cpp two-bands: with the slots out
    of placement for every band, batch filled the interactive class's reserved slots through
    the engines' queues (1.79x unloaded p99). A band that keeps headroom for a higher one goes
    only where the pending-prefill budget has room (`prefill_hold`), when one does: the
    release gate let it go because some endpoint had room, and on another it would stack a
    prefill where the budget said no, or join a higher band's prefill in its step
    (`contended`: the pool's prefills compete). So does the highest band's request released
    because a prefill is about to end (`ending`, `RoomSettings.prefill_ending_s`): the gate
    let it go for that endpoint, and the scorers, which count pending tokens, not time, would
    prefer one whose prefill has only begun. Then prefills of different bands are kept apart."""
    usable = [
        s
        for s in states
        if s.is_fresh(now, settings.metrics_staleness_s)
        and _under_cap(room_left(s, settings, lower_band=lower_band, engine_slots=lower_band))
    ] or list(states)
    if (lower_band or ending is not None) and len(usable) > 1:
        roomy = [
            s
            for s in usable
            if prefill_hold(
                s,
                settings,
                lower_band=lower_band,
                contended=contended,
                priority=priority,
                ending=ending,
            )
            is None
        ]
        usable = roomy or usable
    if not settings.steer_prefills:
        return usable
    return steer_prefills(usable, priority=priority, lower_band=lower_band)


def steer_prefills(
    states: Sequence[EndpointState], *, priority: int, lower_band: bool
) -> Sequence[EndpointState]:
    """Keep prefills of different bands apart. An engine step costs ~0.2 ms per prefill token
    (8B on an H100) and every request in the step waits for the whole step, so a request that
    lands next to a lower band's long prefill pays for it. A band that keeps headroom for a
    higher one (`lower_band`) avoids endpoints where a higher band's prefill is pending; any
    other request goes where the fewest prompt tokens of bands below it are pending. Bands are
    compared by priority at the moment of placement, so a band that is the highest one left is
    not steered by its own earlier prefills. It narrows, never empties: the scorers then choose
    among what is left."""
    if len(states) < 2:
        return states
    if lower_band:
        calm = [s for s in states if not s.pending_prefills_above(priority)]
        return calm or states
    below = [s.pending_prefill_tokens_below(priority) for s in states]
    least = min(below)
    if least == max(below):
        return states
    return [s for s, tokens in zip(states, below, strict=True) if tokens == least]


def _under_cap(left: int | None) -> bool:
    return left is None or left > 0
