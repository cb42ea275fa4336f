"""The director's sans-I/O core: parse → submit (flow control) → release (the room) → place
(the scheduler) → complete, with `now` passed to every step.

It owns no loop, no clock and no socket. Late binding: the scheduler runs at the moment flow
control releases a request, inside `FlowController.dispatch` (through `Release.take_room`), with
the freshest metrics plus Sluice's own in-flight counts; whether there is room at all is the
room's call (`sluice.room.Room`). Every release — a placed request or the error that ended its
wait — is reported once through `on_release`; after every pump the core tells its shell when it
next wants to be woken (`on_wakeup`), since room also opens when a scrape shows an engine
drained or a prefill estimate passes, which no request announces.

A request that arrives while the pool has no endpoints waits for one (`noEndpointRequestTTL`,
scale from zero) instead of failing at once; with `enableEviction`, a band left waiting on a
full pool may end in-flight negative-band requests that have no first token yet
(`flowcontrol/eviction.py`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.outlier import OutlierDetector, OutlierSettings
from sluice.datalayer.registry import EndpointRegistry
from sluice.director.dispatched import DispatchedRequest
from sluice.director.ports import Admitted, Counted
from sluice.director.prefix_wait import Computing, Hold, wait_or_move
from sluice.director.release import Release
from sluice.flowcontrol.config import LEGACY
from sluice.flowcontrol.controller import FlowController, error_for
from sluice.flowcontrol.eviction import EvictionPacer, sheddable
from sluice.flowcontrol.model import Accepted, Finalized, QueueOutcome, Ticket
from sluice.logs import get_logger
from sluice.receipts.recorder import ReceiptRecorder
from sluice.request_metrics import RequestMetrics
from sluice.requests.errors import DroppedReason, ErrorCode, SluiceError, contended, unavailable
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.requests.parse import DEFAULT_PATH, parse_request
from sluice.requests.rewrite import set_top_level_field
from sluice.room import Room, RoomSettings, in_subset
from sluice.scheduling.prefix_computing import Blocked
from sluice.scheduling.record import CycleRecord
from sluice.scheduling.scheduler import Scheduler
from sluice.sources.state import PoolState

log = get_logger("director")

# While anything waits, re-check for room at least this often: room also opens when a scrape
# shows an engine drained, which no completion announces.
RECHECK_S = 0.01


@dataclass(frozen=True, slots=True)
class DirectorSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    disable_subset_filter: bool = False
    # Output tokens assumed for in-flight accounting when a request sets no max_tokens.
    default_output_tokens: int = 256
    # The models' context length (--max-model-len): prompt estimates and max_tokens are
    # clamped to it before flow control charges them, so no request costs more than a model
    # can possibly do.
    max_model_len: int = 131_072
    # Passive outlier detection: consecutive 5xx / failed connections eject an endpoint.
    outliers: OutlierSettings = field(default_factory=OutlierSettings)


OnRelease = Callable[[Ticket, DispatchedRequest | SluiceError], None]


def _ignore_wakeup(at: float | None) -> None:
    return None


class DispatchCore:
    """The sans-I/O heart of the director (see the module docstring)."""

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        flow: FlowController,
        registry: EndpointRegistry,
        room: RoomSettings,
        settings: DirectorSettings | None = None,
        metrics: RequestMetrics | None = None,
        rng: random.Random | None = None,
        on_release: OnRelease | None = None,
        on_wakeup: Callable[[float | None], None] | None = None,
        receipts: ReceiptRecorder | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.flow = flow
        self.registry = registry
        self.room = Room(room)
        # Decision receipts (and what reads them: traces, endpoint scores); None: off, free.
        self.receipts = receipts
        self.room.explain_holds = receipts is not None
        self.settings = settings or DirectorSettings()
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.on_release: OnRelease = on_release or _abandon
        self.on_wakeup = on_wakeup or _ignore_wakeup
        self.state: PoolState | None = None
        self._ticket_of: dict[int, Ticket] = {}  # by id(request): request ids may repeat
        self.in_flight = 0
        # In flight in negative bands, while eviction is on: its candidates, by id().
        self._sheddable: dict[int, DispatchedRequest] = {}
        self._eviction = EvictionPacer()
        self._evicting = False
        # request id -> its dispatch, while in flight: what a request waiting on its prefix
        # expects of it (computingPrefixes)
        self._computing: dict[str, Computing] = {}
        self.outliers = OutlierDetector(self.settings.outliers)
        # Each model's context as its engines report it (`datalayer.model_context`); models
        # not in it are clamped to `settings.max_model_len`.
        self.model_context: Mapping[str, int] = {}

    # -- the pool --------------------------------------------------------------------------------

    def set_state(self, state: PoolState, now: float) -> None:
        """A source published a new picture of the pool."""
        self.state = state
        self.registry.set_endpoints(state.endpoints)
        names = {e.name for e in state.endpoints}
        self.scheduler.prune(names)
        self.room.forget_except(names)
        self._eviction.forget_except(names)
        self.outliers.forget_except(names)
        self.pump(now)

    @property
    def ready(self) -> bool:
        return self.state is not None and self.state.loaded

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(s.endpoint for s in self.registry.snapshot())

    def pick_any(self) -> Endpoint:
        states = self.registry.snapshot()
        if not states:
            raise SluiceError(ErrorCode.INTERNAL, "no pods available in datastore")
        return self.rng.choice(states).endpoint

    # -- the request path ------------------------------------------------------------------------

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = DEFAULT_PATH,
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        """Parse and classify (`sluice.requests`); raises `SluiceError` (400, 413)."""
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
            priorities=state.priorities if state is not None else None,
        )
        context = self.model_context.get(request.target_model) or self.settings.max_model_len
        clamp_to_context(request, context)
        engine_priority = self.flow.engine_priority_for(request)
        if engine_priority is not None and request.model:
            request.body = set_top_level_field(
                request.body, "priority", str(engine_priority).encode()
            )
        return request

    def submit(self, request: InferenceRequest, now: float) -> Ticket:
        """Queue a request; raises `SluiceError` if it cannot even wait (no endpoints, full).

        Then call `pump(now)`: on an idle pool it releases the request at once (no added delay).
        Call `forget(ticket)` once its release was handled.
        """
        if self.metrics is not None:
            self.metrics.received(request)
        if self.receipts is not None:
            self.receipts.queued(request, now)
        self._note_pool_regime(now)
        if not self._may_wait(request.subset_hint):
            raise self._failed(request, _no_candidates(), now)
        self.room.arrived(request.priority, request.fairness_id, now)
        result = self.flow.enqueue(request, now)
        if isinstance(result, Finalized):
            self._left(result.ticket)
            raise self._failed(request, _queue_error(result), now)
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

    def cancel(self, ticket: Ticket, now: float) -> None:
        """The client went away while waiting: the request leaves the queue at once."""
        if ticket.waiting:
            event = self.flow.cancel(ticket, now)
            if event is not None:
                self._left(ticket)
                self._failed(ticket.request, error_for(event), now)
        self.forget(ticket)

    def _may_wait(self, subset: frozenset[str] | None) -> bool:
        """Whether a request may queue: some endpoint could serve it, or the pool has none at
        all and flow control keeps a waiting room for the first (legacy admission has none)."""
        if flow_keeps_waiting_room(self.flow) and not self.registry.snapshot():
            return True
        return self._has_candidates(subset)

    def _note_pool_regime(self, now: float) -> None:
        """Tell flow control whether the pool has endpoints; when they come back, requests
        that waited for one but may use none of them (their subset) get their 503 now."""
        was_empty = self.flow.pool_empty
        self.flow.set_pool_empty(not self.registry.snapshot(), now)
        if not was_empty or self.flow.pool_empty:
            return
        for ticket in list(self._ticket_of.values()):
            subset = ticket.request.subset_hint
            if ticket.waiting and subset is not None and not self._has_candidates(subset):
                event = self.flow.drop_unreachable(ticket, now)
                if event is not None:
                    self._resolve(event, {})

    def _has_candidates(self, subset: frozenset[str] | None) -> bool:
        states = self.registry.snapshot()
        if subset is None:
            return bool(states)
        return any(in_subset(s.endpoint, subset) for s in states)

    def _left(self, ticket: Ticket) -> None:
        self.room.left(ticket.flow.priority, ticket.flow.fairness_id)

    # -- releasing -------------------------------------------------------------------------------

    def pump(self, now: float) -> None:
        """Release whatever has room now; call whenever room may have opened."""
        self._note_pool_regime(now)
        self.room.settle(self.registry, now)
        release = Release(self, now)
        for event in self.flow.dispatch(now, release):
            self._resolve(event, release.bound)
        self._evict_for_waiting(release, now)
        self.on_wakeup(self.next_wakeup(now))

    def _evict_for_waiting(self, release: Release, now: float) -> None:
        """With eviction on: while a band waits and no endpoint has room for it, end in-flight
        negative-band requests with no first token yet (`flowcontrol/eviction.py` chooses)."""
        if not self._sheddable or self._evicting:
            return  # nested: an eviction's own completion pumps, and must not evict again
        top = self.flow.top_waiting_priority()
        if top is None or release.has_room(None, top):
            return
        victims = self._eviction.choose(
            [d for d in self._sheddable.values() if d.evictable],
            blocked_priority=top,
            waiting_above=self.flow.waiting_above,
            scraped_at=self._scraped_at,
            now=now,
        )
        self._evicting = True
        try:
            for victim in victims:
                victim.evict(_evicted(), now)
        finally:
            self._evicting = False

    def may_evict(self, dispatched: DispatchedRequest) -> bool:
        """Whether flow control may evict this in-flight request (eviction on, negative band)."""
        return id(dispatched) in self._sheddable

    def _scraped_at(self, endpoint: str) -> float:
        state = self.registry.get(endpoint)
        return state.metrics.updated_at if state is not None else float("-inf")

    def next_wakeup(self, now: float) -> float | None:
        """When to pump next without an outside event: the next TTL deadline, or soon while
        anything waits."""
        due = self.flow.next_deadline()
        if self.flow.queued_requests:
            recheck = now + RECHECK_S
            due = recheck if due is None else min(due, recheck)
        return due

    def bind(
        self,
        request: InferenceRequest,
        ticket: Ticket,
        endpoints: tuple[Endpoint, ...],
        now: float,
        record: CycleRecord | None = None,
    ) -> DispatchedRequest:
        hold = None
        blocked = self.scheduler.blocked_on(request, endpoints[0])
        if blocked is not None:
            endpoints, hold = self._wait_or_move(request, endpoints, blocked, now)
        dispatched = DispatchedRequest(self, request, ticket, endpoints, now, record, hold=hold)
        if hold is not None:  # in flight, but not at the engine: it takes no slot there yet
            self.registry.hold(dispatched.dispatch_ticket)
        return dispatched

    def _wait_or_move(
        self,
        request: InferenceRequest,
        endpoints: tuple[Endpoint, ...],
        blocked: Blocked,
        now: float,
    ) -> tuple[tuple[Endpoint, ...], Hold | None]:
        subset = request.subset_hint
        others = [
            (s, self.scheduler.cached_fraction(request, s.endpoint))
            for s in self.registry.snapshot()
            if (subset is None or in_subset(s.endpoint, subset))
            and s.is_fresh(now, self.room.settings.metrics_staleness_s)
        ]
        estimate = self.room.prefill.estimate
        chosen, hold = wait_or_move(
            prompt_tokens=request.prompt_tokens,
            endpoints=endpoints,
            blocked=blocked,
            blocker=self._computing.get(blocked.blocker),
            others=others,
            estimate=lambda name, tokens: estimate(name, tokens),
            now=now,
            max_hold_s=self.room.settings.max_prefill_hold_s,
        )
        log.debug(
            "prefix still being computed on its endpoint",
            request=request.request_id,
            endpoint=endpoints[0].name,
            blocker=blocked.blocker,
            ready_blocks=blocked.ready,
            matched_blocks=blocked.matched,
            decision=f"hold {hold.until - now:.3f} s" if hold else f"move to {chosen[0].name}",
        )
        return chosen, hold

    def hold_ended(self, dispatched: DispatchedRequest) -> None:
        """The held request goes to its engine now."""
        self.registry.unhold(dispatched.dispatch_ticket)

    def hold_over(self, hold: Hold, request_id: str, now: float) -> bool:
        """Whether a held request may go now: time is up, or its blocker's prefix is computed
        and no other request is ahead of it in line for those blocks."""
        if now >= hold.until:
            return True
        scheduler = self.scheduler
        return not scheduler.still_computing(hold.blocker) and (
            scheduler.computing_ahead(request_id) is None
        )

    def _resolve(self, event: Finalized, bound: Mapping[int, Admitted | SluiceError]) -> None:
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
                if self.flow.config.enable_eviction and sheddable(placed.priority):
                    self._sheddable[id(placed)] = placed
                if self.metrics is not None:
                    self.metrics.dispatched(placed.request, event.waited_s)
                if self.receipts is not None:
                    self.receipts.dispatched(placed.request, placed.endpoints)
                self.on_release(ticket, placed)
                return
            error = placed if isinstance(placed, SluiceError) else None
            error = error or SluiceError(ErrorCode.INTERNAL, "dispatched without an endpoint")
            self.flow.complete(ticket, None, event.at)
        else:
            error = _queue_error(event)
        self.on_release(ticket, self._failed(ticket.request, error, event.at))

    # -- the ledger: what admitted requests report ------------------------------------------------

    def count(self, request: InferenceRequest, endpoint: Endpoint, now: float) -> Counted:
        """Count `request` in flight on `endpoint`, its uncached prompt pending prefill there
        until its first byte, the engine's word or the room's estimate."""
        cached = self.scheduler.cached_fraction(request, endpoint)
        uncached = round(request.prompt_tokens * (1.0 - cached))
        tokens = request.prompt_tokens + (request.max_tokens or self.settings.default_output_tokens)
        expected_at, due_at = self.room.prefill_ends(
            endpoint.name, uncached, now, first_byte_expected=request.first_byte_expected
        )
        ticket = self.registry.dispatch(
            endpoint.name,
            tokens,
            prefill_tokens=uncached,
            priority=request.priority,
            prefill_due_at=due_at,
            first_byte_expected=request.first_byte_expected,
            prefill_expected=(now, expected_at),
        )
        self.scheduler.on_dispatch(request, endpoint)
        if self.receipts is not None:
            self.receipts.counted(request, endpoint, request.prompt_tokens - uncached, now)
        self._computing[request.request_id] = Computing(now, uncached)
        return Counted(ticket, uncached, now, request.request_id)

    def moved(self, counted: Counted, failed: Endpoint) -> None:
        state = self.registry.get(failed.name)
        if state is not None and state.scraped:  # stale until its next successful scrape
            state.metrics = replace(state.metrics, updated_at=float("-inf"))
        self.registry.complete(counted.ticket, got_first_token=False)
        self._note_failure(failed.name, counted.at)

    def first_byte(
        self, counted: Counted, endpoint: Endpoint, now: float, *, streamed: bool
    ) -> None:
        self.registry.first_byte(counted.ticket)
        self.scheduler.on_prefill_end_id(counted.request_id)
        if streamed:
            self.room.first_byte(endpoint.name, counted.uncached_tokens, now - counted.at)

    def finished(
        self, dispatched: Admitted, outcome: Outcome, usage: Usage | None, now: float
    ) -> None:
        self.in_flight -= 1
        self._sheddable.pop(id(dispatched), None)
        self._computing.pop(dispatched.request.request_id, None)
        first_byte_at = dispatched.first_byte_at
        self.registry.complete(
            dispatched.dispatch_ticket,
            got_first_token=first_byte_at is not None or outcome is Outcome.COMPLETED,
        )
        if outcome is Outcome.COMPLETED and usage is not None and usage.completion_tokens > 0:
            self._learn_decode(dispatched, usage, now)
        self.flow.complete(dispatched.ticket, usage, now)
        self.scheduler.on_complete(dispatched.request, dispatched.endpoint)
        if outcome is Outcome.UPSTREAM_ERROR:
            self._note_failure(dispatched.endpoint.name, now)
        elif outcome is Outcome.COMPLETED:
            self.outliers.success(dispatched.endpoint.name)
        ttft_s = None if first_byte_at is None else first_byte_at - dispatched.started_at
        if self.metrics is not None:
            self.metrics.completed(
                dispatched.request,
                outcome,
                usage,
                duration_s=now - dispatched.started_at,
                ttft_s=ttft_s,
            )
        if self.receipts is not None:
            self.receipts.finished(dispatched.request, outcome.value, usage, ttft_s, now)
        self.pump(now)

    def _learn_decode(self, dispatched: Admitted, usage: Usage, now: float) -> None:
        """A completed request's decode time: after its first byte when it streamed, else
        after the prefill estimate (what a detached request's estimated end is made of)."""
        endpoint = dispatched.endpoint.name
        first = dispatched.first_byte_at
        if first is not None and dispatched.request.first_byte_expected:
            decode_s, tokens = now - first, usage.completion_tokens - 1
        else:
            uncached = max(0, usage.prompt_tokens - usage.cached_tokens)
            prefill_s = self.room.prefill.estimate(endpoint, uncached)
            decode_s, tokens = now - dispatched.started_at - prefill_s, usage.completion_tokens
        self.room.completed(endpoint, tokens, decode_s)

    def _note_failure(self, name: str, now: float) -> None:
        if self.outliers.failure(name, now):
            log.warning(
                "endpoint ejected after consecutive failures (5xx or failed connections)",
                endpoint=name,
                failures=self.outliers.settings.consecutive_failures,
            )

    def detached(self, dispatched: Admitted, now: float) -> None:
        self.in_flight -= 1
        self._sheddable.pop(id(dispatched), None)
        computing = self._computing.pop(dispatched.request.request_id, None)
        request = dispatched.request
        sent_at = dispatched.started_at if computing is None else computing.at
        uncached = request.prompt_tokens if computing is None else computing.uncached_tokens
        output = request.max_tokens or self.settings.default_output_tokens
        ends_at, prefill_s = self.room.detached_end(
            dispatched.endpoint.name, uncached, output, sent_at
        )
        if dispatched.first_byte_at is not None:  # its prefill is known to be over
            ends_at += (dispatched.first_byte_at - sent_at) - prefill_s
            prefill_s = dispatched.first_byte_at - sent_at
        self.registry.detach(
            dispatched.dispatch_ticket,
            dispatched_at=sent_at,
            ends_at=ends_at,
            prefill_s=prefill_s,
            output_tokens=output,
        )
        self.flow.complete(dispatched.ticket, None, now)  # its charge stays the estimate
        self.scheduler.on_complete(dispatched.request, dispatched.endpoint)
        if self.metrics is not None:
            self.metrics.detached(dispatched.request)
        if self.receipts is not None:
            first = dispatched.first_byte_at
            ttft_s = None if first is None else first - dispatched.started_at
            self.receipts.finished(dispatched.request, "detached", None, ttft_s, now)
        self.pump(now)

    def _failed(
        self, request: InferenceRequest, error: SluiceError | None, now: float
    ) -> SluiceError:
        error = error or SluiceError(ErrorCode.INTERNAL, "request was not dispatched")
        if self.metrics is not None:
            self.metrics.failed(request, error)
        if self.receipts is not None:
            self.receipts.failed(request, error, now)
        return error


def clamp_to_context(request: InferenceRequest, max_model_len: int) -> None:
    """No estimate above what the model can hold: prompt ≤ context, output ≤ what is left
    (the engine refuses more; its refusal is then refunded, see `requests.model.NO_WORK`)."""
    if max_model_len <= 0:
        return
    request.prompt_tokens = min(request.prompt_tokens, max_model_len)
    if request.max_tokens is not None:
        room = max(0, max_model_len - request.prompt_tokens)
        request.max_tokens = min(request.max_tokens, room)


def _abandon(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
    """Nobody waits for this release: a placed request ends at once (its client is gone)."""
    if isinstance(result, DispatchedRequest):
        result.finish(Outcome.CLIENT_GONE, result.started_at)


def _queue_error(event: Finalized) -> SluiceError:
    return error_for(event) or SluiceError(ErrorCode.INTERNAL, "request left the queue")


def flow_keeps_waiting_room(flow: FlowController) -> bool:
    return flow.config.mode != LEGACY


def _no_candidates() -> SluiceError:
    return unavailable("failed to find endpoint candidates for serving the request")


def _evicted() -> SluiceError:
    """Upstream's eviction answer (its body is this text alone, not `inference error: ...`)."""
    return contended("request evicted by flow control", DroppedReason.EVICTED)
