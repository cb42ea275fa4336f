"""An admitted request: where it goes, what its response says, and its one completion."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import DispatchTicket
from sluice.flowcontrol.model import Ticket
from sluice.pipeline import Outcome
from sluice.requests.model import InferenceRequest, Usage
from sluice.requests.usage import UsageParser

if TYPE_CHECKING:
    from sluice.director.core import DispatchCore


class DispatchedRequest:
    """An admitted request: where it goes, and its exactly-once completion."""

    __slots__ = (
        "_director",
        "_dispatch",
        "_dispatched_at",
        "_endpoints",
        "_first_byte_at",
        "_parser",
        "_started_at",
        "_uncached_tokens",
        "finished",
        "request",
        "ticket",
    )

    def __init__(
        self,
        director: DispatchCore,
        request: InferenceRequest,
        ticket: Ticket,
        endpoints: tuple[Endpoint, ...],
        now: float,
    ) -> None:
        self._director = director
        self.request = request
        self.ticket = ticket
        self._endpoints = endpoints
        self._parser: UsageParser | None = None
        self._started_at = now
        self._first_byte_at: float | None = None
        self.finished = False
        self._dispatch = self._count_dispatch(now)

    def _count_dispatch(self, now: float) -> DispatchTicket:
        """Count this request in flight on its primary endpoint, its uncached prompt pending
        prefill there until the first byte, the engine's word or the room's estimate."""
        director = self._director
        request = self.request
        endpoint = self._endpoints[0]
        self._dispatched_at = now
        self._uncached_tokens = round(
            request.prompt_tokens * (1.0 - director.scheduler.cached_fraction(request, endpoint))
        )
        tokens = request.prompt_tokens + (
            request.max_tokens or director.settings.default_output_tokens
        )
        room = director.room
        dispatch = director.registry.dispatch(
            endpoint.name,
            tokens,
            prefill_tokens=self._uncached_tokens,
            priority=request.priority,
            prefill_due_at=room.prefill_due(endpoint.name, self._uncached_tokens, now),
        )
        director.scheduler.on_dispatch(request, endpoint)
        return dispatch

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoints[0]

    def retarget(self, endpoint: Endpoint) -> None:
        """The front end moved to a fallback because the primary failed before the first byte
        (connection refused or reset): that endpoint is treated as stale — no room, so no new
        request goes there — until its next successful scrape, instead of for the staleness
        threshold."""
        if self.finished or endpoint == self._endpoints[0]:
            return
        director = self._director
        failed = director.registry.get(self._endpoints[0].name)
        if failed is not None and failed.scraped:
            failed.metrics = replace(failed.metrics, updated_at=float("-inf"))
        director.registry.complete(self._dispatch, got_first_token=False)
        self._endpoints = (endpoint, *(e for e in self._endpoints if e != endpoint))
        self._dispatch = self._count_dispatch(director.clock())

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        if self._parser is None:
            self._parser = UsageParser(
                streaming=streaming, prompt_tokens_estimate=self.request.prompt_tokens
            )
            self.first_byte(streamed=streaming)
        self._parser.feed(chunk)

    def first_byte(self, *, streamed: bool = True) -> None:
        """The response started, so the engine finished this request's prefill: the room and
        placement rules stop counting it. A streamed response's first byte is also a sample of
        the endpoint's prefill time (a non-streamed one's is its last byte). Front ends get this
        from the first chunk; the virtual-time runner calls it at the simulated first token."""
        if self._first_byte_at is not None:
            return
        director = self._director
        now = self._first_byte_at = director.clock()
        director.registry.first_byte(self._dispatch)
        if streamed:
            director.room.first_byte(
                self._endpoints[0].name, self._uncached_tokens, now - self._dispatched_at
            )

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        if usage is None and self._parser is not None:
            usage = self._parser.finish()
        self._director._finished(self, outcome, usage, self._started_at, self._first_byte_at)

    @property
    def dispatch_ticket(self) -> DispatchTicket:
        return self._dispatch
