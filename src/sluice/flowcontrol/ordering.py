"""Ordering policies: which item of one flow goes first.

`fcfs`: arrival order. `edf`: earliest deadline (enqueue time + TTL, as it stood when the item was
queued) first; no TTL sorts last. `slo-deadline` (upstream's `slo-deadline-ordering-policy`):
earliest arrival + the request's time-to-first-token objective (`x-llm-d-slo-ttft-ms`) first; a
request without one sorts after every request with one. Ties in arrival order.

Items leave a queue in two ways: taken by `take_first` (dispatch), or finalized elsewhere
(cancel, expiry, displacement). The second is lazy: the controller only tells the queue via
`forget`, and the queue skips finalized tickets when it meets them, compacting when garbage
outweighs live items. That keeps cancel O(1) while its accounting is freed at once.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sluice.flowcontrol.model import Ticket

OrderKey = tuple[float, int]
Fits = Callable[[Ticket], bool]

FCFS = "fcfs"
EDF = "edf"
SLO_DEADLINE = "slo-deadline"
ORDERING_POLICIES = (FCFS, EDF, SLO_DEADLINE)


class OrderingQueue(Protocol):
    live: int

    def push(self, ticket: Ticket) -> None: ...

    def head_key(self) -> OrderKey | None:
        """The order key of the best waiting item (None when empty)."""
        ...

    def take_first(self, fits: Fits) -> Ticket | None:
        """Remove and return the best waiting item for which `fits` is true."""
        ...

    def forget(self, ticket: Ticket) -> None:
        """`ticket` was finalized elsewhere; drop it from the live count."""
        ...


def ttl_deadline(ticket: Ticket) -> float:
    """EDF's key: when the item's TTL runs out (inf: no TTL)."""
    return ticket.deadline


def slo_deadline(ticket: Ticket) -> float:
    """slo-deadline's key: arrival + the time-to-first-token objective (inf: none)."""
    slo = ticket.request.slo_ttft_s
    return math.inf if slo is None else ticket.enqueued_at + slo


def new_queue(policy: str) -> OrderingQueue:
    if policy == EDF:
        return DeadlineQueue(ttl_deadline)
    if policy == SLO_DEADLINE:
        return DeadlineQueue(slo_deadline)
    return FcfsQueue()


class FcfsQueue:
    """A FIFO; finalized tickets are skipped lazily."""

    __slots__ = ("_items", "live")

    def __init__(self) -> None:
        self._items: deque[Ticket] = deque()
        self.live = 0

    def push(self, ticket: Ticket) -> None:
        self._items.append(ticket)
        self.live += 1

    def _clean_head(self) -> None:
        items = self._items
        while items and not items[0].waiting:
            items.popleft()

    def head_key(self) -> OrderKey | None:
        self._clean_head()
        return (0.0, self._items[0].seq) if self._items else None

    def take_first(self, fits: Fits) -> Ticket | None:
        self._clean_head()
        for index, ticket in enumerate(self._items):
            if ticket.waiting and fits(ticket):
                if index == 0:
                    self._items.popleft()
                # Otherwise it stays in place; the caller finalizes it, so it becomes garbage.
                self.live -= 1
                return ticket
        return None

    def forget(self, ticket: Ticket) -> None:
        self.live -= 1
        if len(self._items) > 2 * self.live + 32:
            self._items = deque(t for t in self._items if t.waiting)


class DeadlineQueue:
    """A min-heap on (deadline, seq), the deadline read once when the item is queued;
    finalized tickets are skipped lazily."""

    __slots__ = ("_deadline", "_heap", "live")

    def __init__(self, deadline: Callable[[Ticket], float]) -> None:
        self._deadline = deadline
        self._heap: list[tuple[float, int, Ticket]] = []
        self.live = 0

    def push(self, ticket: Ticket) -> None:
        heapq.heappush(self._heap, (self._deadline(ticket), ticket.seq, ticket))
        self.live += 1

    def _clean_head(self) -> None:
        heap = self._heap
        while heap and not heap[0][2].waiting:
            heapq.heappop(heap)

    def head_key(self) -> OrderKey | None:
        self._clean_head()
        return (self._heap[0][0], self._heap[0][1]) if self._heap else None

    def take_first(self, fits: Fits) -> Ticket | None:
        heap = self._heap
        blocked: list[tuple[float, int, Ticket]] = []
        found: Ticket | None = None
        while heap:
            entry = heapq.heappop(heap)
            ticket = entry[2]
            if not ticket.waiting:
                continue
            if fits(ticket):
                found = ticket
                self.live -= 1
                break
            blocked.append(entry)
        for entry in blocked:
            heapq.heappush(heap, entry)
        return found

    def forget(self, ticket: Ticket) -> None:
        self.live -= 1
        if len(self._heap) > 2 * self.live + 32:
            self._heap = [e for e in self._heap if e[2].waiting]
            heapq.heapify(self._heap)
