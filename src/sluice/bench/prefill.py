"""A bench-only prototype: placement that keeps prefills apart ("pending prefill" rule).

The physics it answers: an engine step costs ~0.2 ms per prefill token, and every request in
the step waits for the whole step. An interactive request that shares a step with another
request's 1,000-token prefill pays ~200 ms on top of its own ~70 ms TTFT, whichever router
sent it there. Sluice knows which of its dispatches have not produced a first token yet (the
proxy sees the first byte), so it knows which endpoints have a prefill pending.

Rule (both halves run before the scorers, on the candidates the room rule left):

* a request of the pool's top priority goes only to endpoints with no pending prefill of a
  lower band, if any such endpoint exists (else to those with the fewest pending
  lower-band prompt tokens);
* a lower-band request avoids endpoints where a top-priority prefill is pending, and, with
  `max_lower_prefills`, endpoints that already have that many lower-band prefills pending
  (if every candidate is excluded it goes where the scorers say: the rule never blocks).

`first_token()` is how the runner reports the first byte; completion also clears.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import SchedulingResult
from sluice.scheduling.scheduler import Scheduler


class PrefillAwareScheduler(Scheduler):
    top_priority = 0
    max_lower_prefills: int | None = None

    def _table(self) -> dict[int, tuple[str, int, int]]:
        table: dict[int, tuple[str, int, int]] | None = getattr(self, "_pending", None)
        if table is None:
            table = {}
            self._pending = table
        return table

    def pending(self, endpoint: str) -> tuple[int, int, int]:
        """(top-band prefills, lower-band prefills, lower-band prompt tokens) pending."""
        top = lower = lower_tokens = 0
        for name, priority, tokens in self._table().values():
            if name != endpoint:
                continue
            if priority >= self.top_priority:
                top += 1
            else:
                lower += 1
                lower_tokens += tokens
        return top, lower, lower_tokens

    def schedule(
        self, request: InferenceRequest, endpoints: Sequence[EndpointState], now: float
    ) -> SchedulingResult:
        if self._table() and len(endpoints) > 1:
            endpoints = self._steer(request, endpoints)
        return super().schedule(request, endpoints, now)

    def _steer(
        self, request: InferenceRequest, endpoints: Sequence[EndpointState]
    ) -> Sequence[EndpointState]:
        pend = {s.name: self.pending(s.name) for s in endpoints}
        if request.priority >= self.top_priority:
            least = min(p[2] for p in pend.values())
            return [s for s in endpoints if pend[s.name][2] == least]
        cap = self.max_lower_prefills
        kept = [
            s for s in endpoints if pend[s.name][0] == 0 and (cap is None or pend[s.name][1] < cap)
        ]
        return kept or endpoints

    def on_dispatch(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        super().on_dispatch(request, endpoint)
        self._table()[id(request)] = (endpoint.name, request.priority, request.prompt_tokens)

    def first_token(self, request: InferenceRequest) -> None:
        self._table().pop(id(request), None)

    def on_complete(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        super().on_complete(request, endpoint)
        self._table().pop(id(request), None)
