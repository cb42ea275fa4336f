"""The director: the one `Pipeline` both front ends drive (see `sluice.pipeline`).

It ties the pure cores together on the event loop — request parsing, the flow controller
(*when*), the scheduler (*where*) and the endpoint registry (live state and in-flight
accounting) — and owns nothing else: no sockets, no clock of its own (`clock` is injected).

Late binding: the scheduler runs at the moment flow control releases a request, inside
`FlowController.dispatch` (through `Release.take_room`), with the freshest metrics plus Sluice's
own in-flight counts. Whether there is room at all is the room's call (`sluice.room.Room`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry
from sluice.director.dispatched import DispatchedRequest
from sluice.director.room import Release
from sluice.flowcontrol.controller import FlowController, error_for
from sluice.flowcontrol.model import Accepted, Finalized, QueueOutcome, Ticket
from sluice.pipeline import Outcome
from sluice.request_metrics import RequestMetrics
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import DEFAULT_FAIRNESS_ID, InferenceRequest, Usage
from sluice.requests.parse import parse_request
from sluice.requests.rewrite import set_top_level_field
from sluice.room import Room, RoomSettings, in_subset
from sluice.scheduling.scheduler import Scheduler
from sluice.sources.state import PoolState

# While anything waits, re-check for room at least this often: room also opens when a scrape
# shows an engine drained, which no completion announces.
_IDLE_RECHECK_S = 0.01


@dataclass(frozen=True, slots=True)
class DirectorSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    disable_subset_filter: bool = False
    # Output tokens assumed for in-flight accounting when a request sets no max_tokens.
    default_output_tokens: int = 256


class DispatchCore:
    """The sans-I/O heart of the pipeline: classify, queue, release, place, complete.

    It owns no loop and no clock of its own (`clock` is injected: the live server passes
    `time.monotonic`, the virtual-time benchmark its simulated clock). Every release — a
    placed request or the error that ended its wait — is reported once through `on_release`.
    """

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        flow: FlowController,
        registry: EndpointRegistry,
        room: RoomSettings,
        settings: DirectorSettings | None = None,
        metrics: RequestMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_release: Callable[[Ticket, DispatchedRequest | SluiceError], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.flow = flow
        self.registry = registry
        self.room = Room(room)
        self.settings = settings or DirectorSettings()
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_release = on_release or _ignore_release
        self.state: PoolState | None = None
        self._ticket_of: dict[int, Ticket] = {}  # by id(request): request ids may repeat
        self.in_flight = 0

    # -- state ---------------------------------------------------------------------------------

    def set_state(self, state: PoolState) -> None:
        """A source published a new picture of the pool."""
        self.state = state
        self.registry.set_endpoints(state.endpoints)
        names = {e.name for e in state.endpoints}
        self.scheduler.prune(names)
        self.room.forget_except(names)
        self.pump()

    @property
    def ready(self) -> bool:
        return self.state is not None and self.state.loaded

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(s.endpoint for s in self.registry.snapshot())

    # -- the request path ----------------------------------------------------------------------

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = "/v1/chat/completions",
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        state = self.state
        rewrites: Iterable[object] = state.rewrites.values() if state is not None else ()
        if self.settings.disable_subset_filter:
            subset_hint = None
        request = parse_request(
            headers,
            body,
            path=path,
            subset_hint=subset_hint,
            max_body_bytes=self.settings.max_body_bytes,
            rewrites=rewrites,  # type: ignore[arg-type]
            rng=self.rng,
        )
        if state is not None:
            request.priority = state.priority_of(request.objective)
        engine_priority = self.flow.engine_priority_for(request)
        if engine_priority is not None and request.model:
            request.body = set_top_level_field(
                request.body, "priority", str(engine_priority).encode()
            )
        return request

    def pick_any(self) -> Endpoint:
        states = self.registry.snapshot()
        if not states:
            raise SluiceError(ErrorCode.INTERNAL, "no pods available in datastore")
        return self.rng.choice(states).endpoint

    def submit(self, request: InferenceRequest) -> Ticket:
        """Queue a request; raises `SluiceError` if it cannot even wait (no endpoints, full).

        Then call `pump()`: on an idle pool it releases the request at once (no added delay).
        Call `forget(ticket)` once its release was handled.
        """
        if self.metrics is not None:
            self.metrics.received(request)
        if not self._has_candidates(request.subset_hint):
            raise self._failed(
                request, SluiceError(ErrorCode.SERVICE_UNAVAILABLE, "no endpoints available")
            )
        now = self.clock()
        self.room.arrived(request.priority, request.fairness_id or DEFAULT_FAIRNESS_ID, now)
        result = self.flow.enqueue(request, now)
        if isinstance(result, Finalized):
            self._left(result.ticket)
            raise self._failed(request, _queue_error(result))
        assert isinstance(result, Accepted)
        for displaced in result.displaced:
            self._resolve(displaced, {})
        self._ticket_of[id(request)] = result.ticket
        return result.ticket

    def ticket_of(self, request: InferenceRequest) -> Ticket | None:
        """The flow-control ticket of a submitted, not yet forgotten request."""
        return self._ticket_of.get(id(request))

    def forget(self, ticket: Ticket) -> None:
        self._ticket_of.pop(id(ticket.request), None)

    def cancel(self, ticket: Ticket) -> None:
        """The client went away while waiting: the request leaves the queue at once."""
        if ticket.waiting:
            event = self.flow.cancel(ticket, self.clock())
            if event is not None:
                self._left(ticket)
                self._failed(ticket.request, error_for(event))
        self.forget(ticket)

    def _left(self, ticket: Ticket) -> None:
        self.room.left(ticket.flow.priority, ticket.flow.fairness_id)

    def _has_candidates(self, subset: frozenset[str] | None) -> bool:
        states = self.registry.snapshot()
        if subset is None:
            return bool(states)
        return any(in_subset(s.endpoint, subset) for s in states)

    # -- dispatching ---------------------------------------------------------------------------

    def pump(self, now: float | None = None) -> None:
        """Release whatever has room now; call whenever room may have opened."""
        now = self.clock() if now is None else now
        self.room.settle(self.registry, now)
        release = Release(self, now)
        for event in self.flow.dispatch(now, release):
            self._resolve(event, release.bound)

    def next_wakeup(self, now: float, recheck_s: float = _IDLE_RECHECK_S) -> float | None:
        """When to pump next without an outside event: the next TTL deadline, or soon while
        anything waits (room also opens when a scrape shows an engine drained)."""
        due = self.flow.next_deadline()
        if self.flow.queued_requests:
            recheck = now + recheck_s
            due = recheck if due is None else min(due, recheck)
        return due

    def _resolve(
        self, event: Finalized, bound: Mapping[int, DispatchedRequest | SluiceError]
    ) -> None:
        ticket = event.ticket
        self._left(ticket)
        if event.outcome is QueueOutcome.DISPATCHED:
            placed = bound.get(ticket.seq)
            if placed is None:  # legacy mode released it without room: schedule anyway
                release = Release(self, event.at)
                release.take_room(ticket.request)
                placed = release.bound.get(ticket.seq)
            if isinstance(placed, DispatchedRequest):
                self.in_flight += 1
                if self.metrics is not None:
                    self.metrics.dispatched(placed.request, event.waited_s)
                self.on_release(ticket, placed)
                return
            error = placed or SluiceError(ErrorCode.INTERNAL, "dispatched without an endpoint")
            self.flow.complete(ticket, None, event.at)
        else:
            error = _queue_error(event)
        self.on_release(ticket, self._failed(ticket.request, error))

    # -- completion ----------------------------------------------------------------------------

    def _finished(
        self,
        dispatched: DispatchedRequest,
        outcome: Outcome,
        usage: Usage | None,
        started_at: float,
        first_byte_at: float | None,
    ) -> None:
        now = self.clock()
        self.in_flight -= 1
        self.registry.complete(
            dispatched.dispatch_ticket,
            got_first_token=first_byte_at is not None or outcome is Outcome.COMPLETED,
        )
        self.flow.complete(dispatched.ticket, usage, now)
        self.scheduler.on_complete(dispatched.request, dispatched.endpoint)
        if self.metrics is not None:
            self.metrics.completed(
                dispatched.request,
                outcome,
                usage,
                duration_s=now - started_at,
                ttft_s=None if first_byte_at is None else first_byte_at - started_at,
            )
        self.pump(now)

    def _failed(self, request: InferenceRequest, error: SluiceError | None) -> SluiceError:
        error = error or SluiceError(ErrorCode.INTERNAL, "request was not dispatched")
        if self.metrics is not None:
            self.metrics.failed(request, error)
        return error


def _ignore_release(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
    if isinstance(result, DispatchedRequest):
        result.finish(Outcome.CLIENT_GONE)


class Director(DispatchCore):
    """The concrete `sluice.pipeline.Pipeline`: the core plus asyncio waiting and timers."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.on_release = self._release
        self._waiters: dict[int, asyncio.Future[DispatchedRequest]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    async def admit(self, request: InferenceRequest) -> DispatchedRequest:
        ticket = self.submit(request)
        waiter: asyncio.Future[DispatchedRequest] = asyncio.get_running_loop().create_future()
        self._waiters[ticket.seq] = waiter
        self.pump()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                waiter.result().finish(Outcome.CLIENT_GONE)
            self.cancel(ticket)
            raise
        finally:
            self._waiters.pop(ticket.seq, None)
            self.forget(ticket)

    def _release(self, ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        waiter = self._waiters.pop(ticket.seq, None)
        if waiter is None or waiter.done():
            _ignore_release(ticket, result)
        elif isinstance(result, SluiceError):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)

    def pump(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        super().pump(now)
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        due = self.next_wakeup(now)
        if due is None or due >= self._timer_at:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_later(max(0.0, due - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self.pump()


def _queue_error(event: Finalized) -> SluiceError:
    return error_for(event) or SluiceError(ErrorCode.INTERNAL, "request left the queue")
