"""The director's asyncio shell: the `Pipeline` the front ends drive, around the sans-I/O core
by composition. It owns the clock, the futures requests wait on, and the one timer the core asks
for; every decision is the core's."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry
from sluice.director.core import DirectorSettings, DispatchCore
from sluice.director.dispatched import DispatchedRequest
from sluice.flowcontrol.controller import FlowController
from sluice.flowcontrol.model import Ticket
from sluice.receipts.recorder import ReceiptRecorder
from sluice.request_metrics import RequestMetrics
from sluice.requests.errors import SluiceError, shutting_down
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.requests.parse import DEFAULT_PATH
from sluice.room import Room, RoomSettings
from sluice.scheduling.scheduler import Scheduler
from sluice.sources.state import PoolState

HOLD_POLL_S = 0.01  # how often a held request looks whether its prefix is computed


class Admission:
    """What `admit` hands a front end (`contract.Admission`): the core's admitted request, with
    the shell's clock supplying the time of each step."""

    __slots__ = ("_clock", "_may_evict", "dispatched")

    def __init__(
        self,
        dispatched: DispatchedRequest,
        clock: Callable[[], float],
        *,
        may_evict: bool = False,
    ) -> None:
        self.dispatched = dispatched
        self._clock = clock
        self._may_evict = may_evict

    @property
    def request(self) -> InferenceRequest:
        return self.dispatched.request

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.dispatched.endpoints

    @property
    def endpoint(self) -> Endpoint:
        return self.dispatched.endpoint

    @property
    def finished(self) -> bool:
        return self.dispatched.finished

    def endpoint_scores(self) -> dict[str, float] | None:
        return self.dispatched.endpoint_scores()

    def retarget(self, endpoint: Endpoint) -> None:
        self.dispatched.retarget(endpoint, self._clock())

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        self.dispatched.observe_response_chunk(chunk, self._clock(), streaming=streaming)

    def first_byte(self, *, streamed: bool = True) -> None:
        self.dispatched.first_byte(self._clock(), streamed=streamed)

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        self.dispatched.finish(outcome, self._clock(), usage)

    def detach(self) -> None:
        self.dispatched.detach(self._clock())

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        if not self._may_evict:
            return False
        self.dispatched.allow_eviction(hook)
        return True


class Director:
    """The concrete `contract.Pipeline`: the core plus asyncio waiting and its timer."""

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
        receipts: ReceiptRecorder | None = None,
    ) -> None:
        self.clock = clock
        self.core = DispatchCore(
            scheduler=scheduler,
            flow=flow,
            registry=registry,
            room=room,
            settings=settings,
            metrics=metrics,
            rng=rng,
            on_release=self._release,
            on_wakeup=self._wake_at,
            receipts=receipts,
        )
        self._waiters: dict[int, asyncio.Future[Admission]] = {}
        self._tickets: dict[int, Ticket] = {}  # of the requests in `_waiters`
        self.draining = False  # shutting down: `admit` refuses new requests (503, retryable)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    # -- what the core owns, for the app and for tests -------------------------------------------

    @property
    def registry(self) -> EndpointRegistry:
        return self.core.registry

    @property
    def flow(self) -> FlowController:
        return self.core.flow

    @property
    def room(self) -> Room:
        return self.core.room

    @property
    def in_flight(self) -> int:
        return self.core.in_flight

    # -- contract.Pipeline -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.core.ready

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.core.endpoints()

    def pick_any(self) -> Endpoint:
        return self.core.pick_any()

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = DEFAULT_PATH,
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        return self.core.parse(headers, body, path=path, subset_hint=subset_hint)

    async def admit(self, request: InferenceRequest) -> Admission:
        if self.draining:
            raise shutting_down()
        core = self.core
        ticket = core.submit(request, self.clock())
        waiter: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._waiters[ticket.seq] = waiter
        self._tickets[ticket.seq] = ticket
        core.pump(self.clock())
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                waiter.result().finish(Outcome.CLIENT_GONE)
            core.cancel(ticket, self.clock())
            raise
        finally:
            self._waiters.pop(ticket.seq, None)
            self._tickets.pop(ticket.seq, None)
            core.forget(ticket)

    # -- shutting down ---------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests waiting in flow control (their `admit` has not returned)."""
        return sum(1 for w in self._waiters.values() if not w.done())

    def drain(self) -> None:
        """Refuse new requests from now on; those waiting keep their place (see
        `reject_waiting`), those in flight finish."""
        self.draining = True

    def reject_waiting(self) -> int:
        """Answer every waiting request with a retryable 503 (nothing of it was sent yet); the
        number answered."""
        rejected = 0
        for seq, waiter in list(self._waiters.items()):
            ticket = self._tickets.get(seq)
            if waiter.done() or ticket is None:
                continue
            self.core.cancel(ticket, self.clock())
            waiter.set_exception(shutting_down())
            rejected += 1
        return rejected

    # -- the rest of the shell -------------------------------------------------------------------

    def set_state(self, state: PoolState) -> None:
        self.core.set_state(state, self.clock())

    def pump(self) -> None:
        """Release whatever has room now (the scraper calls this after applying metrics)."""
        self.core.pump(self.clock())

    def _release(self, ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        waiter = self._waiters.pop(ticket.seq, None)
        if waiter is None or waiter.done():
            if isinstance(result, DispatchedRequest):  # nobody waits: its client is gone
                result.finish(Outcome.CLIENT_GONE, self.clock())
        elif isinstance(result, SluiceError):
            waiter.set_exception(result)
        elif result.hold is not None and not self._hold_over(result):
            self._hold(waiter, result)
        else:
            if result.hold is not None:
                self.core.hold_ended(result)
            waiter.set_result(Admission(result, self.clock, may_evict=self.core.may_evict(result)))

    def _hold_over(self, result: DispatchedRequest) -> bool:
        assert result.hold is not None
        return self.core.hold_over(result.hold, result.request.request_id, self.clock())

    def _hold(self, waiter: asyncio.Future[Admission], result: DispatchedRequest) -> None:
        """Its prefix is being computed on its endpoint: answer the waiter once that is over
        (checked every `HOLD_POLL_S`; the hold has a deadline, see prefix_wait.py)."""

        def check() -> None:
            if waiter.done():  # the client went away meanwhile
                if waiter.cancelled():
                    result.finish(Outcome.CLIENT_GONE, self.clock())
                return
            if result.finished or self._hold_over(result):
                self.core.hold_ended(result)
                admission = Admission(result, self.clock, may_evict=self.core.may_evict(result))
                waiter.set_result(admission)
            else:
                loop.call_later(HOLD_POLL_S, check)

        loop = asyncio.get_running_loop()
        loop.call_later(HOLD_POLL_S, check)

    def _wake_at(self, due: float | None) -> None:
        """The core wants a pump at `due` (None: no wish)."""
        if due is None or due >= self._timer_at:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_later(max(0.0, due - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self.pump()
