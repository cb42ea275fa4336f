"""The director core's one call site for receipts: each step of a request, with `now`.

Cheap on the hot path: a step is a dict lookup and a few attribute writes; nothing is rendered —
the finished receipt goes into the ring with its scheduling record frozen into one flat tuple
(which the garbage collector stops tracking), and is rendered when read. Besides
the ring it keeps the live aggregates the dashboard shows (recent waits per band, in flight per
tenant, rejections by reason), all bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.receipts.model import Receipt
from sluice.receipts.ring import ReceiptRing
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Usage
from sluice.room.core import Hold
from sluice.scheduling.record import CycleRecord

WAIT_SAMPLES = 2048  # per band: the recent waits the dashboard's percentiles are taken over

OnFinished = Callable[[Receipt], None]


class ReceiptRecorder:
    def __init__(
        self,
        ring: ReceiptRing,
        *,
        on_finished: Sequence[OnFinished] = (),
    ) -> None:
        self.ring = ring
        self.on_finished = list(on_finished)
        self._open: dict[int, Receipt] = {}  # by id(request): request ids may repeat
        self._seq = 0
        self.waits: dict[int, deque[tuple[float, float]]] = {}
        self.in_flight: dict[tuple[int, str], int] = {}
        self.rejections: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}

    @property
    def open_receipts(self) -> int:
        return len(self._open)

    def receipt_of(self, request: InferenceRequest) -> Receipt | None:
        return self._open.get(id(request))

    # -- the steps -------------------------------------------------------------------------------

    def queued(self, request: InferenceRequest, now: float) -> None:
        self._seq += 1
        self._open[id(request)] = Receipt(
            self._seq,
            request.request_id,
            request.objective,
            request.model,
            request.priority,
            request.fairness_id,
            request.prompt_tokens,
            now,
            request.headers.get("traceparent"),
        )

    def scheduling(self, request: InferenceRequest) -> CycleRecord | None:
        """A record for the scheduling cycle about to run for `request` (None: not tracked)."""
        receipt = self._open.get(id(request))
        if receipt is None:
            return None
        receipt.cycle = CycleRecord()
        return receipt.cycle

    def released(
        self,
        request: InferenceRequest,
        states: Sequence[EndpointState],
        hold: Hold | None,
        now: float,
    ) -> None:
        """Flow control released it, the scheduler ran over `states` (the placeable candidates);
        `hold` is the band's last refusal of room, kept if it came while this request waited."""
        receipt = self._open.get(id(request))
        if receipt is None:
            return
        receipt.released_at = now
        if hold is not None and hold.at >= receipt.queued_at:
            receipt.hold = hold

    def dispatched(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> None:
        receipt = self._open.get(id(request))
        if receipt is None:
            return
        receipt.fallbacks = tuple([e.hostport for e in endpoints[1:]])
        key = (receipt.priority, receipt.fairness_id)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        if receipt.released_at is not None:
            self._wait(
                receipt.priority, receipt.released_at, receipt.released_at - receipt.queued_at
            )

    def counted(
        self, request: InferenceRequest, endpoint: Endpoint, cached_tokens: int, now: float
    ) -> None:
        """Sent to `endpoint` (the primary, or a fallback after a failed connect)."""
        receipt = self._open.get(id(request))
        if receipt is None:
            return
        receipt.endpoint = endpoint.hostport
        receipt.prefix_match_tokens = cached_tokens
        receipt.dispatched_at = now

    def finished(
        self,
        request: InferenceRequest,
        outcome: str,
        usage: Usage | None,
        ttft_s: float | None,
        now: float,
    ) -> None:
        receipt = self._open.pop(id(request), None)
        if receipt is None:
            return
        key = (receipt.priority, receipt.fairness_id)
        left = self.in_flight.get(key, 0) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)
        receipt.outcome = outcome
        receipt.ttft_s = ttft_s
        if usage is not None:
            receipt.prompt_tokens = usage.prompt_tokens
            receipt.completion_tokens = usage.completion_tokens
        self._close(receipt, now)

    def failed(self, request: InferenceRequest, error: SluiceError, now: float) -> None:
        """It ended without a dispatch (rejected, expired, cancelled, unschedulable)."""
        receipt = self._open.pop(id(request), None)
        if receipt is None:
            return
        reason = error.dropped_reason or error.code.name_on_wire
        receipt.outcome = "rejected"
        receipt.reason = reason
        receipt.error = error.message
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        self._wait(receipt.priority, now, now - receipt.queued_at)
        self._close(receipt, now)

    # -- the rest --------------------------------------------------------------------------------

    def _wait(self, priority: int, at: float, waited: float) -> None:
        samples = self.waits.get(priority)
        if samples is None:
            samples = self.waits[priority] = deque(maxlen=WAIT_SAMPLES)
        samples.append((at, waited))

    def _close(self, receipt: Receipt, now: float) -> None:
        receipt.finish(now)
        self.outcomes[receipt.outcome or ""] = self.outcomes.get(receipt.outcome or "", 0) + 1
        if self.ring.max_entries:
            self.ring.add(receipt)
        for sink in self.on_finished:
            sink(receipt)
