"""The endpoint registry: the current endpoint set and, per endpoint, the latest metrics, their
age, and Sluice's own in-flight accounting.

Why the accounting: engines are scraped every 50 ms; a burst that arrives between two scrapes
would otherwise land on whichever endpoint looked best at the last scrape (herding). Every
dispatch is counted here at once, and the requests the engine has not yet reported ("unseen":
dispatched after the last applied scrape started) are kept apart so scorers can add them to the
engine's own numbers without double counting.

Pure: no clock, no I/O. The scraper (shell) and the pipeline call it with `now`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.datalayer.endpoint import Endpoint, EngineMetrics

NO_METRICS = EngineMetrics()


@dataclass(slots=True, eq=False)
class EndpointState:
    """Everything Sluice knows about one endpoint. Live: the registry mutates it in place, so a
    snapshot is valid for one synchronous scheduling cycle."""

    endpoint: Endpoint
    # Never None, so scorers read attributes directly; NO_METRICS (scraped at -inf) until the
    # first successful scrape.
    metrics: EngineMetrics = field(default_factory=lambda: NO_METRICS)
    last_error: str | None = None
    consecutive_failures: int = 0
    # The engine profile's load metrics (specs) its last page lacked; see `ScrapeRecorder`.
    missing_metrics: tuple[str, ...] = ()
    in_flight_requests: int = 0
    in_flight_tokens: int = 0
    unseen_requests: int = 0
    unseen_tokens: int = 0
    dispatched_total: int = 0
    # Dispatches whose prefill is not over yet (first byte, the engine's counter or the room's
    # estimate): the engine is (or will be) running them, the step cost every other request on
    # that engine shares; and the same per priority band, [count, tokens].
    pending_prefills: int = 0
    pending_prefill_tokens: int = 0
    pending_by_priority: dict[int, list[int]] = field(default_factory=dict)
    # Active-active replicas (`sluice.replicas`): this replica's lease on the endpoint's
    # in-flight cap (None: no lease, the whole cap), and the other replicas' dispatches still
    # in flight and prefilling there, as of the last sync.
    lease: int | None = None
    # Requests the engine runs at once where it says so (llama.cpp's `total_slots`,
    # `datalayer.engine_slots`); more wait in its own arrival-order queue. None: not reported.
    slots: int | None = None
    # Dispatches Sluice still holds back while their prefix is computed on this endpoint
    # (director/prefix_wait.py): counted in flight, but not at the engine yet.
    _held: set[int] = field(default_factory=set, repr=False)
    peer_in_flight: int = 0
    peer_pending_prefill_tokens: int = 0
    # dispatch sequence number -> estimated tokens, for dispatches the engine has not reported yet
    _unseen: dict[int, int] = field(default_factory=dict, repr=False)
    # dispatch sequence number -> (uncached prompt tokens, priority), while its prefill is pending
    _prefilling: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    # the pending prefills whose response will show its first byte (streamed, and the gateway
    # sends Sluice the response): only that byte or the estimate ends them, never the counter
    _awaiting_byte: set[int] = field(default_factory=set, repr=False)
    # dispatch sequence number -> (when it was sent, when its prefill is expected to end: the
    # room's estimate, not the later fallback that ends its hold), for those that have one
    _expected: dict[int, tuple[float, float]] = field(default_factory=dict, repr=False)
    # scrape id -> (dispatches, and ends of dispatches a scrape had counted) when it began
    _scrape_marks: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    _ended_seen_total: int = 0
    _ended_seen_at_scrape: int = 0  # `_ended_seen_total` when the applied scrape began
    _next_scrape_id: int = 0
    # The engine's first-token counter predicts which dispatches have had their first token:
    # dispatch `sequence` has once the counter reaches `sequence + _first_token_offset` (in
    # dispatch order; None until a scrape showed the counter). See `record_scrape`.
    _first_token_offset: float | None = field(default=None, repr=False)
    _first_tokens_last: float = field(default=0.0, repr=False)
    # dispatch sequence number -> its detached record, oldest detach first, until a scrape
    # shows it gone (see `EndpointRegistry.detach`)
    _detached: dict[int, DetachedDispatch] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def current(self) -> EngineMetrics:
        """Alias of `metrics` (all-zero metrics before the first successful scrape)."""
        return self.metrics

    @property
    def scraped(self) -> bool:
        return self.metrics is not NO_METRICS

    def age(self, now: float) -> float:
        """Seconds since the last successful scrape (infinite before the first)."""
        return now - self.metrics.updated_at

    def is_fresh(self, now: float, staleness_threshold_s: float) -> bool:
        return now - self.metrics.updated_at <= staleness_threshold_s

    @property
    def held_requests(self) -> int:
        """In flight from Sluice but held back before the engine (a prefix being computed)."""
        return len(self._held)

    @property
    def ended_since_scrape(self) -> int:
        """Requests Sluice saw end after the applied scrape began, which that scrape still
        counted in `running + waiting`: the engine's load is that much lower than it said."""
        return self._ended_seen_total - self._ended_seen_at_scrape

    def pending_prefills_above(self, priority: int) -> int:
        """Pending prefills of bands above `priority`."""
        return sum(n for p, (n, _) in self.pending_by_priority.items() if p > priority)

    def pending_prefill_tokens_not_ending(self, sent_by: float, ends_by: float) -> int:
        """Pending uncached prompt tokens, but for prefills sent by `sent_by` and expected to end
        by `ends_by` (those without an expected end always count)."""
        expected = self._expected
        if not expected:
            return self.pending_prefill_tokens
        never = (math.inf, math.inf)
        total = 0
        for sequence, (tokens, _) in self._prefilling.items():
            sent, ends = expected.get(sequence, never)
            if sent > sent_by or ends > ends_by:
                total += tokens
        return total

    def pending_prefill_tokens_below(self, priority: int) -> int:
        """Pending uncached prompt tokens of bands below `priority`."""
        return sum(t for p, (_, t) in self.pending_by_priority.items() if p < priority)


@dataclass(frozen=True, slots=True)
class DispatchTicket:
    """Proof of one dispatch; hand it back to `EndpointRegistry.complete` exactly once."""

    endpoint_name: str
    tokens: int
    sequence: int


@dataclass(slots=True)
class DetachedDispatch:
    """A dispatch whose end Sluice will not see (`EndpointRegistry.detach`): what its estimated
    end was made of, so that the scrape that shows it gone is a sample of how long it took."""

    tokens: int
    dispatched_at: float
    ends_at: float
    prefill_s: float  # the part of `ends_at - dispatched_at` that was the prefill estimate
    output_tokens: int
    counted: bool = True  # still in the in-flight count (False: its estimate passed)


@dataclass(frozen=True, slots=True)
class DetachedEnd:
    """A detached dispatch a scrape showed gone: it ended between `after` and `by`."""

    endpoint_name: str
    dispatch: DetachedDispatch
    after: float
    by: float


@dataclass(frozen=True, slots=True)
class ScrapeMark:
    """Taken when a scrape request is sent: dispatches up to `dispatched_total` are assumed to
    be reflected in the response."""

    endpoint_name: str
    scrape_id: int


class PrefillEnd:
    """Why a pending prefill stopped counting (the labels of `prefills_ended`)."""

    FIRST_BYTE = "first_byte"  # the response started
    ENGINE = "engine"  # the engine's first-token counter reached it
    ESTIMATE = "estimate"  # its estimated time to first token passed
    COMPLETED = "completed"  # the request ended first


class DetachedEndCause:
    """Why a detached dispatch left the in-flight count (the labels of `detached_ended`)."""

    ENGINE = "engine"  # a scrape showed the engine running fewer than Sluice counted
    ESTIMATE = "estimate"  # its estimated end passed first


# An estimate-ended detached dispatch the scrapes never showed gone is forgotten once this many
# times its estimated duration has passed (traffic that bypasses Sluice can keep the engine's
# count above Sluice's for good).
_UNCONFIRMED_FACTOR = 2.0


class EndpointRegistry:
    """The pool's current endpoints and their state, keyed by endpoint name."""

    def __init__(self) -> None:
        self._states: dict[str, EndpointState] = {}
        self._snapshot: tuple[EndpointState, ...] = ()
        self.version = 0  # bumped on every membership change, so watchers can resync cheaply
        self.scrapes = 0  # bumped on every applied scrape, so learners can skip quiet pumps
        # (due time, endpoint, dispatch sequence): when each pending prefill's estimate ends
        self._prefill_due: list[tuple[float, str, int]] = []
        self.prefills_ended: dict[str, int] = dict.fromkeys(
            (PrefillEnd.FIRST_BYTE, PrefillEnd.ENGINE, PrefillEnd.ESTIMATE, PrefillEnd.COMPLETED),
            0,
        )
        # (estimated end, endpoint, dispatch sequence) of each detached dispatch still counted
        self._detached_due: list[tuple[float, str, int]] = []
        self.detached_ended: dict[str, int] = dict.fromkeys(
            (DetachedEndCause.ENGINE, DetachedEndCause.ESTIMATE), 0
        )
        # Detached dispatches scrapes showed gone since the room last drained this (its samples
        # of how long a request takes; bounded: the oldest are dropped past 256).
        self.detached_ends: list[DetachedEnd] = []

    # -- membership (called by the sources) --------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set. Endpoints that stay keep their metrics and accounting."""
        wanted = {e.name: e for e in endpoints}
        for name in [n for n in self._states if n not in wanted]:
            del self._states[name]
        for endpoint in wanted.values():
            self._upsert(endpoint)
        self._changed()

    def add(self, endpoint: Endpoint) -> None:
        self._upsert(endpoint)
        self._changed()

    def remove(self, name: str) -> None:
        if self._states.pop(name, None) is not None:
            self._changed()

    def _upsert(self, endpoint: Endpoint) -> None:
        state = self._states.get(endpoint.name)
        if state is None:
            self._states[endpoint.name] = EndpointState(endpoint)
        elif state.endpoint != endpoint:
            # Same name, new address (pod restarted): old metrics and accounting are meaningless.
            self._states[endpoint.name] = EndpointState(endpoint)

    def _changed(self) -> None:
        self._snapshot = tuple(self._states.values())
        self.version += 1

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self) -> tuple[EndpointState, ...]:
        """All endpoint states (no copy: cached until membership changes)."""
        return self._snapshot

    def get(self, name: str) -> EndpointState | None:
        return self._states.get(name)

    def set_slots(self, name: str, slots: int) -> None:
        """What the engine reports it runs at once (`datalayer.engine_slots`)."""
        state = self._states.get(name)
        if state is not None:
            state.slots = slots

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, name: object) -> bool:
        return name in self._states

    # -- scraping (called by the scraper) --------------------------------------------------------

    def begin_scrape(self, name: str) -> ScrapeMark | None:
        """Call right before sending a scrape request; `None` if the endpoint is gone."""
        state = self._states.get(name)
        if state is None:
            return None
        scrape_id = state._next_scrape_id
        state._next_scrape_id += 1
        state._scrape_marks[scrape_id] = (state.dispatched_total, state._ended_seen_total)
        return ScrapeMark(name, scrape_id)

    def record_scrape(self, mark: ScrapeMark, metrics: EngineMetrics) -> None:
        """Store a successful scrape; dispatches made before it started are no longer unseen."""
        state = self._states.get(mark.endpoint_name)
        if state is None:
            return
        marks = state._scrape_marks.pop(mark.scrape_id, None)
        self._forget_marks_before(state, mark.scrape_id)
        if marks is None:
            return  # a late answer to an older scrape than one already applied
        seen_up_to, state._ended_seen_at_scrape = marks
        previous_at = state.metrics.updated_at
        state.metrics = metrics
        state.missing_metrics = metrics.missing_metrics
        state.last_error = None
        state.consecutive_failures = 0
        self.scrapes += 1
        unseen = state._unseen
        while unseen:
            sequence = next(iter(unseen))
            if sequence > seen_up_to:
                break
            state.unseen_tokens -= unseen.pop(sequence)
            state.unseen_requests -= 1
        if metrics.first_tokens is not None:
            self._credit_first_tokens(state, metrics.first_tokens, seen_up_to)
        if state._detached:
            self._confirm_detached(state, seen_up_to, previous_at)

    def _confirm_detached(self, state: EndpointState, seen_up_to: int, previous_at: float) -> None:
        """End the detached dispatches the engine's own count says are over, oldest first.

        The engine counts what it runs and queues (`running + waiting`); of what Sluice sent
        it, the scrape saw every dispatch up to `seen_up_to`: those still in Sluice's in-flight
        count plus the detached ones whose estimate already passed. When the engine counts fewer,
        that many of the detached ones it saw are over: the oldest first (engines finish roughly
        in arrival order), each a sample of how long it took (it ended between the previous
        scrape and this one). Traffic that bypasses Sluice or another replica's keeps the
        engine's count higher, so this errs towards ending none; the estimate bounds that."""
        metrics = state.metrics
        unseen_counted = state.unseen_requests
        seen_uncounted: list[int] = []
        for sequence, entry in state._detached.items():
            if not entry.counted:
                if sequence in state._unseen:
                    unseen_counted -= 1
                else:
                    seen_uncounted.append(sequence)
        # Held for a prefix (counted, not sent yet): the engine cannot count those.
        held_seen = sum(1 for q in state._held if q not in state._unseen)
        seen = state.in_flight_requests - unseen_counted - held_seen + len(seen_uncounted)
        gone = seen - (metrics.running + metrics.waiting)
        if gone <= 0:
            return
        after = metrics.updated_at if previous_at == float("-inf") else previous_at
        ended: list[int] = []
        for sequence in state._detached:
            if len(ended) >= gone:
                break
            if sequence <= seen_up_to and sequence not in state._unseen:
                ended.append(sequence)
        ends = self.detached_ends
        for sequence in ended:
            entry = state._detached.pop(sequence)
            if entry.counted:
                self._uncount(state, entry.tokens)
                self.detached_ended[DetachedEndCause.ENGINE] += 1
            ends.append(DetachedEnd(state.name, entry, after, metrics.updated_at))
        if len(ends) > 256:
            del ends[: len(ends) - 256]

    @staticmethod
    def _uncount(state: EndpointState, tokens: int) -> None:
        state.in_flight_requests = max(0, state.in_flight_requests - 1)
        state.in_flight_tokens = max(0, state.in_flight_tokens - tokens)

    def _credit_first_tokens(self, state: EndpointState, counter: float, seen_up_to: int) -> None:
        """End the pending prefills the engine's first-token counter says are over.

        Engines prefill roughly in arrival order, so dispatch `sequence` (numbered per endpoint)
        has had its first token once the counter reaches `sequence + offset`. The offset is
        anchored at the first scrape that shows the counter (what is pending then is not done),
        moved down by each dispatch that ended with no first token (it never
        reaches the counter), and re-anchored when the counter goes back (the engine
        restarted). Traffic that bypasses Sluice moves the counter too and so ends a pending
        prefill early; the estimate and the first byte bound every other case."""
        offset = state._first_token_offset
        last, state._first_tokens_last = state._first_tokens_last, counter
        if offset is None or counter < last:
            # Anchor: whatever is still pending has not had its first token yet.
            oldest = next(iter(state._prefilling), state.dispatched_total + 1)
            state._first_token_offset = counter - (oldest - 1)
            return
        done_up_to = min(int(counter - offset + 1e-9), seen_up_to)
        # The order is only roughly the engine's: a short prompt dispatched after a long one
        # gets its first token first. A request whose first byte will come is left to it, so
        # that a burst of short first tokens cannot end a long prefill still running (measured:
        # a heavy tenant's 4,000-token prefills ended by a light tenant's first tokens, three
        # stacked on one engine, the light tenant waiting behind them).
        awaiting = state._awaiting_byte
        done = list(itertools.takewhile(lambda q: q <= done_up_to, state._prefilling))
        for sequence in done:
            if sequence not in awaiting:
                self._end_prefill(state, sequence, PrefillEnd.ENGINE)

    def record_scrape_failure(
        self, mark: ScrapeMark, error: str, *, missing: tuple[str, ...] | None = None
    ) -> None:
        """A failed scrape never removes the endpoint: its metrics just grow stale. `missing`:
        the page arrived but lacked these metrics (None: no page, what it lacks is unknown)."""
        state = self._states.get(mark.endpoint_name)
        if state is None:
            return
        state._scrape_marks.pop(mark.scrape_id, None)
        state.last_error = error
        state.consecutive_failures += 1
        if missing is not None:
            state.missing_metrics = missing

    @staticmethod
    def _forget_marks_before(state: EndpointState, scrape_id: int) -> None:
        for old in [i for i in state._scrape_marks if i < scrape_id]:
            del state._scrape_marks[old]

    # -- accounting (called by the pipeline) ------------------------------------------------------

    def dispatch(
        self,
        name: str,
        tokens: int,
        *,
        prefill_tokens: int = 0,
        priority: int = 0,
        prefill_due_at: float = float("inf"),
        first_byte_expected: bool = False,
        prefill_expected: tuple[float, float] | None = None,
    ) -> DispatchTicket:
        """Count a request sent to `name` with an estimated `tokens` (prompt + expected output);
        its `prefill_tokens` stay pending until its first byte, the engine's first-token counter
        reaching it, `prefill_due_at` (see `settle_prefills`) or its completion.
        `prefill_expected`: (when it is sent, when its prefill is expected to end: the estimate
        itself, where `prefill_due_at` may be a later fallback), for rules that look ahead."""
        state = self._states.get(name)
        if state is None:
            return DispatchTicket(name, tokens, -1)
        state.dispatched_total += 1
        sequence = state.dispatched_total
        state.in_flight_requests += 1
        state.in_flight_tokens += tokens
        state.unseen_requests += 1
        state.unseen_tokens += tokens
        state._unseen[sequence] = tokens
        state._prefilling[sequence] = (prefill_tokens, priority)
        if first_byte_expected:
            state._awaiting_byte.add(sequence)
        if prefill_expected is not None:
            state._expected[sequence] = prefill_expected
        state.pending_prefills += 1
        state.pending_prefill_tokens += prefill_tokens
        band = state.pending_by_priority.setdefault(priority, [0, 0])
        band[0] += 1
        band[1] += prefill_tokens
        if prefill_due_at != float("inf"):
            heapq.heappush(self._prefill_due, (prefill_due_at, name, sequence))
        return DispatchTicket(name, tokens, sequence)

    def first_byte(self, ticket: DispatchTicket) -> bool:
        """The response started: the request's prefill is done. True if that ended a pending
        prefill (False: it had already ended, or the endpoint is gone). Idempotent."""
        state = self._states.get(ticket.endpoint_name)
        if state is None or ticket.sequence not in state._prefilling:
            return False
        self._end_prefill(state, ticket.sequence, PrefillEnd.FIRST_BYTE)
        return True

    def settle_prefills(self, now: float) -> None:
        """End every pending prefill whose estimated time to first token has passed."""
        due = self._prefill_due
        while due and due[0][0] <= now:
            _, name, sequence = heapq.heappop(due)
            state = self._states.get(name)
            if state is not None and sequence in state._prefilling:
                self._end_prefill(state, sequence, PrefillEnd.ESTIMATE)
        if len(due) > 64 and len(due) > 4 * sum(len(s._prefilling) for s in self._snapshot):
            self._prefill_due = [e for e in due if self._pending(e[1], e[2])]
            heapq.heapify(self._prefill_due)

    def _pending(self, name: str, sequence: int) -> bool:
        state = self._states.get(name)
        return state is not None and sequence in state._prefilling

    def _end_prefill(self, state: EndpointState, sequence: int, why: str) -> None:
        tokens, priority = state._prefilling.pop(sequence)
        state._awaiting_byte.discard(sequence)
        state._expected.pop(sequence, None)
        state.pending_prefills -= 1
        state.pending_prefill_tokens -= tokens
        band = state.pending_by_priority[priority]
        if band[0] == 1:
            del state.pending_by_priority[priority]
        else:
            band[0] -= 1
            band[1] -= tokens
        self.prefills_ended[why] += 1

    def hold(self, ticket: DispatchTicket) -> None:
        """The dispatch waits in Sluice for a prefix to be computed there before it is sent."""
        state = self._states.get(ticket.endpoint_name)
        if state is not None and ticket.sequence >= 0:
            state._held.add(ticket.sequence)

    def unhold(self, ticket: DispatchTicket) -> None:
        """The held dispatch goes to the engine now (also implied by its completion)."""
        state = self._states.get(ticket.endpoint_name)
        if state is not None:
            state._held.discard(ticket.sequence)

    def detach(
        self,
        ticket: DispatchTicket,
        *,
        dispatched_at: float,
        ends_at: float,
        prefill_s: float = 0.0,
        output_tokens: int = 0,
    ) -> None:
        """Sluice will learn nothing more of this dispatch (a gateway that shows it no response
        ends the stream once the request is routed). It stays in Sluice's in-flight count
        until the first of: a scrape showing the engine running fewer requests than Sluice
        counts there (`record_scrape`, oldest detached first), or `ends_at`, its estimated end
        (`settle_detached`); it stays unseen until a scrape begun after it, and its prefill
        pending until the engine's counter or its estimate ends it — so a burst still cannot
        herd onto an endpoint that looked empty, and the next request goes where one ended.
        Call instead of `complete` (room/ends.py makes `ends_at`)."""
        state = self._states.get(ticket.endpoint_name)
        if state is None or ticket.sequence < 0:
            return
        state._held.discard(ticket.sequence)  # routed: it went to the engine
        state._awaiting_byte.discard(ticket.sequence)  # no byte will come: the counter may end it
        state._detached[ticket.sequence] = DetachedDispatch(
            ticket.tokens, dispatched_at, ends_at, prefill_s, output_tokens
        )
        heapq.heappush(self._detached_due, (ends_at, ticket.endpoint_name, ticket.sequence))

    def settle_detached(self, now: float) -> None:
        """Take out of the in-flight count every detached dispatch whose estimated end has
        passed; it stays on record, uncounted, for the scrape that shows it gone (a sample),
        until `_UNCONFIRMED_FACTOR` times its estimated duration has passed."""
        due = self._detached_due
        while due and due[0][0] <= now:
            _, name, sequence = heapq.heappop(due)
            state = self._states.get(name)
            entry = None if state is None else state._detached.get(sequence)
            if state is None or entry is None:
                continue
            forget_at = entry.dispatched_at + _UNCONFIRMED_FACTOR * max(
                0.0, entry.ends_at - entry.dispatched_at
            )
            if entry.counted:
                entry.counted = False
                self._uncount(state, entry.tokens)
                self.detached_ended[DetachedEndCause.ESTIMATE] += 1
                if forget_at > now:
                    heapq.heappush(due, (forget_at, name, sequence))
                    continue
            del state._detached[sequence]
        if len(due) > 64 and len(due) > 4 * sum(len(s._detached) for s in self._snapshot):
            # Most entries are of dispatches a scrape already showed gone: drop them.
            self._detached_due = [e for e in due if self._detached_open(e[1], e[2])]
            heapq.heapify(self._detached_due)

    def _detached_open(self, name: str, sequence: int) -> bool:
        state = self._states.get(name)
        return state is not None and sequence in state._detached

    def complete(self, ticket: DispatchTicket, *, got_first_token: bool = True) -> None:
        """Release a dispatch. Safe for endpoints removed meanwhile; call exactly once.
        `got_first_token` False: it ended before the engine produced a token (an error, or the
        client left while it was prefilling), so the engine's first-token counter never counts
        it."""
        state = self._states.get(ticket.endpoint_name)
        if state is None or ticket.sequence < 0:
            return
        if ticket.sequence in state._prefilling:
            self._end_prefill(state, ticket.sequence, PrefillEnd.COMPLETED)
        if not got_first_token and state._first_token_offset is not None:
            state._first_token_offset -= 1
        held = ticket.sequence in state._held
        state._held.discard(ticket.sequence)
        state.in_flight_requests = max(0, state.in_flight_requests - 1)
        state.in_flight_tokens = max(0, state.in_flight_tokens - ticket.tokens)
        tokens = state._unseen.pop(ticket.sequence, None)
        if tokens is not None:
            state.unseen_requests -= 1
            state.unseen_tokens -= tokens
        elif not held:  # a scrape counted it at the engine: until the next, it counts it too
            state._ended_seen_total += 1
