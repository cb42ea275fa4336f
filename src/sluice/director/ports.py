"""What the director's pieces need of each other, as small interfaces, so that no module of the
director imports the one that uses it: an admitted request reports to a `Ledger`; one dispatch
call's `Release` binds endpoints through a `Binder`. The core implements both; the core is the
only module that knows them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.outlier import OutlierDetector
from sluice.datalayer.registry import DispatchTicket, EndpointRegistry
from sluice.flowcontrol.model import Ticket
from sluice.receipts.recorder import ReceiptRecorder
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.room import Room
from sluice.scheduling.record import CycleRecord
from sluice.scheduling.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class Counted:
    """One dispatch as the accounting knows it: the registry's ticket, the uncached prompt
    tokens it counts as pending prefill, and when it was sent."""

    ticket: DispatchTicket
    uncached_tokens: int
    at: float
    request_id: str = ""


class Admitted(Protocol):
    """An admitted request, as the accounting sees it when it ends."""

    request: InferenceRequest
    ticket: Ticket
    started_at: float
    first_byte_at: float | None

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def dispatch_ticket(self) -> DispatchTicket: ...


class Ledger(Protocol):
    """Where an admitted request reports what happens to it."""

    def count(self, request: InferenceRequest, endpoint: Endpoint, now: float) -> Counted:
        """The request was sent to `endpoint`: count it in flight there."""
        ...

    def moved(self, counted: Counted, failed: Endpoint) -> None:
        """The request left `failed` before any byte (refused, reset): uncount it there and
        treat that endpoint as stale until its next successful scrape."""
        ...

    def first_byte(
        self, counted: Counted, endpoint: Endpoint, now: float, *, streamed: bool
    ) -> None:
        """The response started."""
        ...

    def finished(
        self,
        dispatched: Admitted,
        outcome: Outcome,
        usage: Usage | None,
        now: float,
    ) -> None:
        """The request ended, once."""
        ...

    def detached(self, dispatched: Admitted, now: float) -> None:
        """Sluice will learn nothing more of the request (instead of `finished`)."""
        ...


class Binder(Protocol):
    """What one dispatch call needs to place the requests flow control releases."""

    room: Room
    scheduler: Scheduler
    registry: EndpointRegistry
    receipts: ReceiptRecorder | None
    outliers: OutlierDetector

    def ticket_of(self, request: InferenceRequest) -> Ticket | None: ...

    def bind(
        self,
        request: InferenceRequest,
        ticket: Ticket,
        endpoints: tuple[Endpoint, ...],
        now: float,
        record: CycleRecord | None = None,
    ) -> Admitted:
        """Admit `request` to `endpoints` (primary first) now."""
        ...
