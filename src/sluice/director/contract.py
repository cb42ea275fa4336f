"""The director's contract: what the front ends (`extproc`, `proxy`) program against.

The front ends own sockets and streams; the director owns every decision: classify → admit (flow
control, the room) → schedule → complete. `Pipeline` is what a front end holds (the director's
asyncio shell implements it), `Admission` what `admit` returns.

Life of a request, as a front end drives it:

1. `pipeline.parse(...)` turns headers + body bytes into an `InferenceRequest`, or raises
   `SluiceError` (400 / 413) — the front end answers with that error and is done.
2. `await pipeline.admit(request)` waits in flow control until an endpoint has room, then
   schedules. It returns an `Admission` (primary endpoint first, then fallbacks) or raises
   `SluiceError` (429 while the pool is contended: queue full, displaced, TTL expired; 503
   while it has no endpoint for the request; 500), each with its `dropped_reason`. If the
   client goes away while waiting, the front end cancels the `admit` task: the request leaves
   the queue at once.
3. The front end forwards the request (or tells Envoy where to), feeds response bytes to
   `admission.observe_response_chunk(...)` (usage is parsed incrementally), and finally calls
   `admission.finish(...)` exactly once (further calls are ignored). That releases in-flight
   accounting and reports true usage to flow control.
4. With eviction on, a front end that can still take a routed request back (nothing of the
   response reached the client) offers a hook with `admission.allow_eviction(hook)`; flow
   control may then end the request (its outcome is `EVICTED`) and call the hook with the 429
   to answer. The front end withdraws the offer (`allow_eviction(None)`) once bytes flow.
"""

from __future__ import annotations

__all__ = ["Admission", "Limits", "Outcome", "Pipeline"]

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sluice.datalayer.endpoint import Endpoint
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.requests.parse import DEFAULT_PATH


class Admission(Protocol):
    """A request that flow control released and the scheduler placed."""

    @property
    def request(self) -> InferenceRequest: ...

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Primary first, then fallbacks in score order (never empty)."""
        ...

    def endpoint_scores(self) -> dict[str, float] | None:
        """The primary profile's score per scored endpoint `ip:port`, picked or not, when the
        scheduler recorded them (receipts on), else None."""
        ...

    def retarget(self, endpoint: Endpoint) -> None:
        """The front end moved the request to a fallback before any byte was sent."""
        ...

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        """Feed response body bytes as they pass (SSE or JSON); usage is parsed from them."""
        ...

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        """Exactly-once completion; usage defaults to what the response chunks reported."""
        ...

    def detach(self) -> None:
        """The gateway will show nothing more of this request (it shows Sluice no response):
        instead of `finish`, once. The engine's own metrics take over its accounting."""
        ...

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        """Offer (or, with None, withdraw) a way to end this request before its first token:
        flow control calls `hook` with the error to answer. True if it may be evicted at all
        (eviction on, a negative band); a front end that gets False need not hold anything."""
        ...


class Pipeline(Protocol):
    @property
    def ready(self) -> bool:
        """True once the pool is loaded (health turns SERVING)."""
        ...

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = DEFAULT_PATH,
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        """Parse and classify; raises `SluiceError` (400, 413)."""
        ...

    async def admit(self, request: InferenceRequest) -> Admission:
        """Queue, wait for room, schedule; raises `SluiceError` (429, 503, 500)."""
        ...

    def pick_any(self) -> Endpoint:
        """An endpoint for a header-only request (no body to classify); raises `SluiceError`."""
        ...

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The pool's current endpoints."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Request-size limit shared by both front ends."""

    max_body_bytes: int = 16 * 1024 * 1024
