"""Room: flow control's `CapacityView` over the endpoint registry, and placement at release.

See docs/flowcontrol.md ("Room: when a request may go, and where").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sluice.datalayer.capacity import has_room, has_room_for_background, room_left
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.director.dispatched import DispatchedRequest
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import NoEndpointsError

if TYPE_CHECKING:
    from sluice.director.core import DispatchCore


class Room:
    """Adapts the endpoint registry to flow control's `CapacityView`, and binds the endpoint
    (runs the scheduler) the moment an item is released."""

    def __init__(self, director: DispatchCore, now: float) -> None:
        self.director = director
        self.now = now
        self.bound: dict[int, DispatchedRequest | SluiceError] = {}
        # Membership cannot change during one dispatch: read the snapshot once.
        self._states = director.registry.snapshot()

    def candidates(self, subset: frozenset[str] | None) -> Sequence[EndpointState]:
        if subset is None:
            return self._states
        return [s for s in self._states if in_subset(s.endpoint, subset)]

    def has_room(
        self, candidates: frozenset[str] | None, priority: int, *, background: bool = False
    ) -> bool:
        """The release gate: upstream's saturation rule over the candidates (any one with room
        lets a request go) plus Sluice's caps, the tighter one below the pool's top priority.
        A band's heavy hitter (`background`) gets the tighter cap too, and leaves the last
        endpoint with room for the rest of its band to them."""
        thresholds = self.director.thresholds
        lower_band = priority < self.director.top_priority
        states = self.candidates(candidates)
        if background:
            return has_room_for_background(states, self.now, thresholds, lower_band=lower_band)
        return any(has_room(s, self.now, thresholds, lower_band=lower_band) for s in states)

    def placeable(self, states: Sequence[EndpointState], priority: int) -> Sequence[EndpointState]:
        """Where a released request may be placed. As upstream, the scheduler weighs every
        candidate — sending a request to the engine that holds its prefix can beat an emptier
        one — except endpoints Sluice knows are unusable: stale metrics (down, or refusing
        connections) and those at Sluice's own in-flight cap."""
        director = self.director
        thresholds = director.thresholds
        lower_band = priority < director.top_priority
        usable = [
            s
            for s in states
            if s.is_fresh(self.now, thresholds.metrics_staleness_s)
            and _under_cap(room_left(s, thresholds, lower_band=lower_band))
        ]
        return steer_prefills(usable or states, lower_band=lower_band)

    def take_room(self, request: InferenceRequest) -> None:
        director = self.director
        ticket = director.ticket_of(request)
        if ticket is None:
            return
        states = self.placeable(self.candidates(request.subset_hint), request.priority)
        try:
            result = director.scheduler.schedule(request, states, self.now)
        except NoEndpointsError as exc:
            self.bound[ticket.seq] = SluiceError(
                ErrorCode.RESOURCE_EXHAUSTED, f"failed to find an endpoint: {exc}"
            )
            return
        endpoints = result.endpoints
        tokens = request.prompt_tokens + (
            request.max_tokens or director.settings.default_output_tokens
        )
        cached = director.scheduler.cached_fraction(request, endpoints[0])
        dispatch = director.registry.dispatch(
            endpoints[0].name,
            tokens,
            prefill_tokens=round(request.prompt_tokens * (1.0 - cached)),
            lower_band=request.priority < director.top_priority,
        )
        director.scheduler.on_dispatch(request, endpoints[0])
        self.bound[ticket.seq] = DispatchedRequest(
            director, request, ticket, endpoints, dispatch, self.now
        )


def steer_prefills(states: Sequence[EndpointState], *, lower_band: bool) -> Sequence[EndpointState]:
    """Keep prefills of different bands apart. An engine step costs ~0.2 ms per prefill token
    (8B on an H100) and every request in the step waits for the whole step, so a top-priority
    request that lands next to a lower band's long prefill pays for it. Top priority goes where
    the fewest lower-band prompt tokens still wait for their first byte; a lower band avoids
    endpoints where a top-priority prefill is pending. It narrows, never empties: the scorers
    then choose among what is left."""
    if len(states) < 2:
        return states
    if lower_band:
        calm = [s for s in states if s.pending_prefills == s.pending_lower_prefills]
        return calm or states
    least = min(s.pending_lower_prefill_tokens for s in states)
    if least == max(s.pending_lower_prefill_tokens for s in states):
        return states
    return [s for s in states if s.pending_lower_prefill_tokens == least]


def _under_cap(left: int | None) -> bool:
    return left is None or left > 0


def in_subset(endpoint: Endpoint, subset: frozenset[str]) -> bool:
    """Upstream matches the hint on the IP (port stripped); we accept either form."""
    return endpoint.hostport in subset or endpoint.address in subset
