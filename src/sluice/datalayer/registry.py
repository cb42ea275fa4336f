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
    in_flight_requests: int = 0
    in_flight_tokens: int = 0
    unseen_requests: int = 0
    unseen_tokens: int = 0
    dispatched_total: int = 0
    # Dispatches whose first response byte has not arrived: the engine is (or will be) running
    # their prefill, the step cost every other request on that engine shares. "Lower" counts
    # those below the pool's top priority.
    pending_prefills: int = 0
    pending_prefill_tokens: int = 0
    pending_lower_prefills: int = 0
    pending_lower_prefill_tokens: int = 0
    # dispatch sequence number -> estimated tokens, for dispatches the engine has not reported yet
    _unseen: dict[int, int] = field(default_factory=dict, repr=False)
    # dispatch sequence number -> (prompt tokens, lower band), while its prefill is pending
    _prefilling: dict[int, tuple[int, bool]] = field(default_factory=dict, repr=False)
    _scrape_marks: dict[int, int] = field(default_factory=dict, repr=False)
    _next_scrape_id: int = 0

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


@dataclass(frozen=True, slots=True)
class DispatchTicket:
    """Proof of one dispatch; hand it back to `EndpointRegistry.complete` exactly once."""

    endpoint_name: str
    tokens: int
    sequence: int


@dataclass(frozen=True, slots=True)
class ScrapeMark:
    """Taken when a scrape request is sent: dispatches up to `dispatched_total` are assumed to
    be reflected in the response."""

    endpoint_name: str
    scrape_id: int


class EndpointRegistry:
    """The pool's current endpoints and their state, keyed by endpoint name."""

    def __init__(self) -> None:
        self._states: dict[str, EndpointState] = {}
        self._snapshot: tuple[EndpointState, ...] = ()
        self.version = 0  # bumped on every membership change, so watchers can resync cheaply

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
        state._scrape_marks[scrape_id] = state.dispatched_total
        return ScrapeMark(name, scrape_id)

    def record_scrape(self, mark: ScrapeMark, metrics: EngineMetrics) -> None:
        """Store a successful scrape; dispatches made before it started are no longer unseen."""
        state = self._states.get(mark.endpoint_name)
        if state is None:
            return
        seen_up_to = state._scrape_marks.pop(mark.scrape_id, None)
        self._forget_marks_before(state, mark.scrape_id)
        if seen_up_to is None:
            return  # a late answer to an older scrape than one already applied
        state.metrics = metrics
        state.last_error = None
        state.consecutive_failures = 0
        unseen = state._unseen
        while unseen:
            sequence = next(iter(unseen))
            if sequence > seen_up_to:
                break
            state.unseen_tokens -= unseen.pop(sequence)
            state.unseen_requests -= 1

    def record_scrape_failure(self, mark: ScrapeMark, error: str) -> None:
        """A failed scrape never removes the endpoint: its metrics just grow stale."""
        state = self._states.get(mark.endpoint_name)
        if state is None:
            return
        state._scrape_marks.pop(mark.scrape_id, None)
        state.last_error = error
        state.consecutive_failures += 1

    @staticmethod
    def _forget_marks_before(state: EndpointState, scrape_id: int) -> None:
        for old in [i for i in state._scrape_marks if i < scrape_id]:
            del state._scrape_marks[old]

    # -- accounting (called by the pipeline) ------------------------------------------------------

    def dispatch(
        self, name: str, tokens: int, *, prefill_tokens: int = 0, lower_band: bool = False
    ) -> DispatchTicket:
        """Count a request sent to `name` with an estimated `tokens` (prompt + expected output);
        its `prefill_tokens` stay pending until `first_byte` (or `complete`)."""
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
        state._prefilling[sequence] = (prefill_tokens, lower_band)
        state.pending_prefills += 1
        state.pending_prefill_tokens += prefill_tokens
        if lower_band:
            state.pending_lower_prefills += 1
            state.pending_lower_prefill_tokens += prefill_tokens
        return DispatchTicket(name, tokens, sequence)

    def first_byte(self, ticket: DispatchTicket) -> None:
        """The response started: the request's prefill is done. Idempotent."""
        state = self._states.get(ticket.endpoint_name)
        if state is None:
            return
        pending = state._prefilling.pop(ticket.sequence, None)
        if pending is None:
            return
        tokens, lower_band = pending
        state.pending_prefills -= 1
        state.pending_prefill_tokens -= tokens
        if lower_band:
            state.pending_lower_prefills -= 1
            state.pending_lower_prefill_tokens -= tokens

    def complete(self, ticket: DispatchTicket) -> None:
        """Release a dispatch. Safe for endpoints removed meanwhile; call exactly once."""
        state = self._states.get(ticket.endpoint_name)
        if state is None or ticket.sequence < 0:
            return
        self.first_byte(ticket)
        state.in_flight_requests = max(0, state.in_flight_requests - 1)
        state.in_flight_tokens = max(0, state.in_flight_tokens - ticket.tokens)
        tokens = state._unseen.pop(ticket.sequence, None)
        if tokens is not None:
            state.unseen_requests -= 1
            state.unseen_tokens -= tokens
