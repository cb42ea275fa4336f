"""An admitted request: where it goes, what its response says, and its one completion.

Sans-I/O: each step takes `now`. Front ends reach it through the shell's `Admission`, which
supplies the time.
"""

from __future__ import annotations

from collections.abc import Callable

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import DispatchTicket
from sluice.director.ports import Ledger
from sluice.director.prefix_wait import Hold
from sluice.flowcontrol.model import Ticket
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.requests.usage import UsageParser
from sluice.scheduling.record import CycleRecord


class DispatchedRequest:
    """An admitted request: where it goes, and its exactly-once completion."""

    __slots__ = (
        "_counted",
        "_endpoints",
        "_evict_hook",
        "_ledger",
        "_parser",
        "finished",
        "first_byte_at",
        "hold",
        "record",
        "request",
        "started_at",
        "ticket",
    )

    def __init__(
        self,
        ledger: Ledger,
        request: InferenceRequest,
        ticket: Ticket,
        endpoints: tuple[Endpoint, ...],
        now: float,
        record: CycleRecord | None = None,
        *,
        hold: Hold | None = None,
    ) -> None:
        self._ledger = ledger
        self.record = record  # what the scheduler did, when receipts are on
        # Forward only once this is over (`Director` awaits it; see prefix_wait.py).
        self.hold = hold
        self.request = request
        self.ticket = ticket
        self._endpoints = endpoints
        self._parser: UsageParser | None = None
        self.started_at = now
        self.first_byte_at: float | None = None
        self.finished = False
        self._evict_hook: Callable[[SluiceError], None] | None = None
        self._counted = ledger.count(request, endpoints[0], now)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Primary first, then fallbacks in score order."""
        return self._endpoints

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoints[0]

    def endpoint_scores(self) -> dict[str, float] | None:
        """The primary profile's score per scored endpoint (None: not recorded)."""
        return None if self.record is None else self.record.endpoint_scores()

    @property
    def dispatch_ticket(self) -> DispatchTicket:
        return self._counted.ticket

    def retarget(self, endpoint: Endpoint, now: float) -> None:
        """The front end moved to a fallback because the primary failed before the first byte
        (connection refused or reset)."""
        if self.finished or endpoint == self._endpoints[0]:
            return
        self._ledger.moved(self._counted, self._endpoints[0])
        self._endpoints = (endpoint, *(e for e in self._endpoints if e != endpoint))
        self._counted = self._ledger.count(self.request, endpoint, now)

    def observe_response_chunk(self, chunk: bytes, now: float, *, streaming: bool) -> None:
        if self._parser is None:
            self._parser = UsageParser(
                streaming=streaming, prompt_tokens_estimate=self.request.prompt_tokens
            )
            self.first_byte(now, streamed=streaming)
        self._parser.feed(chunk)

    def first_byte(self, now: float, *, streamed: bool = True) -> None:
        """The response started, so the engine finished this request's prefill: the room and
        placement rules stop counting it. A streamed response's first byte is also a sample of
        the endpoint's prefill time (a non-streamed one's is its last byte). Front ends get this
        from the first chunk; the virtual-time runner calls it at the simulated first token."""
        if self.first_byte_at is not None or self.finished:
            return
        self.first_byte_at = now
        self._ledger.first_byte(self._counted, self._endpoints[0], now, streamed=streamed)

    def detach(self, now: float) -> None:
        """The gateway will show nothing more of this request: it ends here for Sluice, its
        end unknown (see `EndpointRegistry.detach`). Ignored once finished."""
        if self.finished:
            return
        self.finished = True
        self._ledger.detached(self, now)

    # -- eviction (flowcontrol/eviction.py) ------------------------------------------------------

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def endpoint_name(self) -> str:
        return self._endpoints[0].name

    @property
    def dispatch_order(self) -> tuple[float, int]:
        return (self.started_at, self.ticket.seq)

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> None:
        """The front end can still answer this request with an error and cancel its upstream
        call — `hook` does both — or, with None, no longer can (bytes reached the client)."""
        self._evict_hook = hook

    @property
    def evictable(self) -> bool:
        """Not finished, no first token, and a front end that can still take it back."""
        return self._evict_hook is not None and self.first_byte_at is None and not self.finished

    def evict(self, error: SluiceError, now: float) -> None:
        """End the request now (its one outcome is EVICTED) and have the front end answer
        `error` and cancel the upstream call."""
        hook = self._evict_hook
        if hook is None or not self.evictable:
            return
        self._evict_hook = None
        self.finish(Outcome.EVICTED, now)
        hook(error)

    def finish(self, outcome: Outcome, now: float, usage: Usage | None = None) -> None:
        """Exactly-once completion (later calls are ignored); usage defaults to what the
        response chunks reported."""
        if self.finished:
            return
        self.finished = True
        if usage is None and self._parser is not None:
            usage = self._parser.finish()
        self._ledger.finished(self, outcome, usage, now)
