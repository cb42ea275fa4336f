"""One dispatch call's view of the room: flow control's `CapacityView`, answered by the room
(`sluice.room.Room`), and the endpoint bound — the scheduler run — the moment a request is
released (late binding)."""

from __future__ import annotations

from collections.abc import Sequence

from sluice.datalayer.registry import EndpointState
from sluice.director.ports import Admitted, Binder
from sluice.requests.errors import DroppedReason, SluiceError, contended
from sluice.requests.model import InferenceRequest
from sluice.room import in_subset
from sluice.scheduling.framework import NoEndpointsError


class Release:
    """Adapts the room to flow control's `CapacityView` for one `dispatch` call at `now`, and
    binds the endpoint (runs the scheduler) the moment an item is released."""

    def __init__(self, binder: Binder, now: float) -> None:
        self.binder = binder
        self.now = now
        self.bound: dict[int, Admitted | SluiceError] = {}
        # Membership cannot change during one dispatch: read the snapshot once.
        # Endpoints ejected by outlier detection get nothing new (`datalayer.outlier`).
        self._states = binder.outliers.admissible(binder.registry.snapshot(), now)

    def candidates(self, subset: frozenset[str] | None) -> Sequence[EndpointState]:
        if subset is None:
            return self._states
        return [s for s in self._states if in_subset(s.endpoint, subset)]

    def has_room(
        self, candidates: frozenset[str] | None, priority: int, *, heavy_hitter: str | None = None
    ) -> bool:
        return self.binder.room.has_room(
            self.candidates(candidates), priority, self.now, heavy_hitter=heavy_hitter
        )

    def take_room(self, request: InferenceRequest, *, heavy_hitter: str | None = None) -> None:
        binder = self.binder
        ticket = binder.ticket_of(request)
        if ticket is None:
            return
        room = binder.room
        states = room.placeable(
            self.candidates(request.subset_hint),
            request.priority,
            self.now,
            heavy_hitter=heavy_hitter,
        )
        receipts = binder.receipts
        record = None
        if receipts is not None:
            record = receipts.scheduling(request)
            receipts.released(request, states, room.holds.get(request.priority), self.now)
        try:
            result = binder.scheduler.schedule(request, states, self.now, record)
        except NoEndpointsError as exc:
            # Filters drained a non-empty candidate set: the pool is busy, not broken (upstream).
            self.bound[ticket.seq] = contended(
                f"failed to find target endpoint: {exc}", DroppedReason.SATURATED
            )
            return
        self.bound[ticket.seq] = binder.bind(request, ticket, result.endpoints, self.now, record)
