"""The vocabulary of flow control: flows, tickets, outcomes, and the room the pool offers.

Everything here is plain data. The controller mutates tickets; callers only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from sluice.requests.model import InferenceRequest


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A flow: the requests of one tenant (fairness id) at one priority."""

    fairness_id: str
    priority: int


class QueueOutcome(Enum):
    """How an item left flow control. Every item gets exactly one."""

    DISPATCHED = "dispatched"
    REJECTED_CAPACITY = "rejected_capacity"  # never queued: the queue was full
    DISPLACED = "displaced"  # queued, then pushed out by a higher-priority arrival
    EXPIRED = "expired"  # its TTL ran out while it waited
    # Never queued: the queue was full while the pool had no endpoints.
    REJECTED_NO_ENDPOINTS = "rejected_no_endpoints"
    # Queued while the pool had no endpoints, then waited `noEndpointRequestTTL` out (or the
    # pool came back with none the request may use).
    EXPIRED_NO_ENDPOINTS = "expired_no_endpoints"
    CANCELLED = "cancelled"  # the client went away
    SHED = "shed"  # legacy mode: priority < 0 while the pool was saturated

    @property
    def was_queued(self) -> bool:
        """Whether the item was in a queue before this outcome (rejections never were)."""
        return self not in (QueueOutcome.REJECTED_CAPACITY, QueueOutcome.REJECTED_NO_ENDPOINTS)

    @property
    def upstream_label(self) -> str:
        """The `outcome` label value upstream's queue-duration histogram uses."""
        return _UPSTREAM_LABELS[self]


_UPSTREAM_LABELS = {
    QueueOutcome.DISPATCHED: "Dispatched",
    QueueOutcome.REJECTED_CAPACITY: "RejectedCapacity",
    QueueOutcome.DISPLACED: "EvictedDisplaced",
    QueueOutcome.EXPIRED: "EvictedTTL",
    QueueOutcome.REJECTED_NO_ENDPOINTS: "RejectedNoEndpoints",
    QueueOutcome.EXPIRED_NO_ENDPOINTS: "EvictedNoEndpoints",
    QueueOutcome.CANCELLED: "EvictedContextCancelled",
    QueueOutcome.SHED: "RejectedSaturated",
}


@dataclass(slots=True, eq=False)
class Ticket:
    """One request's place in flow control, from enqueue to its single outcome.

    Compared by identity. `outcome` is None while the item waits.
    """

    seq: int
    request: InferenceRequest
    flow: FlowKey
    enqueued_at: float
    deadline: float  # when it expires in the regime in force; math.inf: never
    cost_estimate: float  # virtual-token cost charged at dispatch (see fairness.py)
    byte_size: int  # the body's size, read once (hot path)
    outcome: QueueOutcome | None = None
    finalized_at: float | None = None
    # Cost charged to the flow so far; corrected to the true cost at completion.
    charged: float = field(default=0.0)
    completed: bool = False

    @property
    def priority(self) -> int:
        return self.flow.priority

    @property
    def candidates(self) -> frozenset[str] | None:
        """Endpoints this request may go to (the gateway's subset hint); None = any."""
        return self.request.subset_hint

    @property
    def waiting(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True, slots=True)
class Finalized:
    """The event that an item left flow control."""

    ticket: Ticket
    outcome: QueueOutcome
    at: float
    # For outcomes the client should retry (capacity, displaced, shed): a hint in seconds.
    retry_after_s: float | None = None

    @property
    def waited_s(self) -> float:
        return self.at - self.ticket.enqueued_at


@dataclass(frozen=True, slots=True)
class Accepted:
    """`enqueue` queued the item; to make room it displaced `displaced` (lower priority)."""

    ticket: Ticket
    displaced: tuple[Finalized, ...] = ()


class CapacityView(Protocol):
    """What flow control needs to know about the pool, adapted from the data layer.

    Contract within one `dispatch` call: room only shrinks (the controller only takes it), so the
    controller may remember that a candidate set is full for the rest of the call.
    """

    def has_room(
        self, candidates: frozenset[str] | None, priority: int, *, heavy_hitter: str | None = None
    ) -> bool:
        """True if at least one endpoint in `candidates` (None = the whole pool) can take one
        more request of band `priority` now. A lower band may be offered less room than a
        higher one (headroom kept for higher bands), never more. `heavy_hitter`: the asking
        flow is its band's heavy hitter (`Band.heavy_hitter`), this fairness id; it may be
        offered less room than the band's other requests, never more, and a lower band's heavy
        hitter no more than a higher band's."""
        ...

    def take_room(self, request: InferenceRequest, *, heavy_hitter: str | None = None) -> None:
        """The controller just released `request` into the room `has_room` reported. Account
        for it before returning (typically: run the scheduler now — late binding — and count
        the request in flight), so that the next `has_room` sees the room taken.
        `heavy_hitter`: as `has_room` was asked, so that the request goes where that room was.

        In legacy mode requests of priority >= 0 are released even when there is no room
        (upstream's behaviour: the model servers queue them)."""
        ...
