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
        "_endpoints",
        "_first_byte_at",
        "_parser",
        "_started_at",
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
        dispatch: DispatchTicket,
        now: float,
    ) -> None:
        self._director = director
        self.request = request
        self.ticket = ticket
        self._endpoints = endpoints
        self._dispatch = dispatch
        self._parser: UsageParser | None = None
        self._started_at = now
        self._first_byte_at: float | None = None
        self.finished = False

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
        director.registry.complete(self._dispatch)
        self._dispatch = director.registry.dispatch(
            endpoint.name,
            self._dispatch.tokens,
            prefill_tokens=self.request.prompt_tokens,
            lower_band=self.request.priority < director.top_priority,
        )
        self._endpoints = (endpoint, *(e for e in self._endpoints if e != endpoint))
        director.scheduler.on_dispatch(self.request, endpoint)

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        if self._parser is None:
            self._parser = UsageParser(
                streaming=streaming, prompt_tokens_estimate=self.request.prompt_tokens
            )
            self.first_byte()
        self._parser.feed(chunk)

    def first_byte(self) -> None:
        """The response started, so the engine finished this request's prefill: the room and
        placement rules stop counting it. Front ends get this from the first chunk; the
        virtual-time runner calls it at the simulated first token."""
        if self._first_byte_at is None:
            self._first_byte_at = self._director.clock()
            self._director.registry.first_byte(self._dispatch)

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
