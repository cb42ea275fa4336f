"""The engine's waiting queue: first come first served, or by request priority (lower value sooner,
ties by arrival) as vLLM's ``--scheduling-policy priority``."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from sluice.sim.sequence import Sequence


class WaitingQueue(Protocol):
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Sequence]: ...
    def push(self, seq: Sequence) -> None: ...
    def push_front(self, seqs: list[Sequence]) -> None:
        """Put back requests that were taken out (skipped, or preempted) ahead of newcomers."""

    def pop(self) -> Sequence: ...
    def remove(self, seq: Sequence) -> None: ...


class FcfsQueue:
    def __init__(self) -> None:
        self._items: deque[Sequence] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self._items)

    def push(self, seq: Sequence) -> None:
        self._items.append(seq)

    def push_front(self, seqs: list[Sequence]) -> None:
        self._items.extendleft(reversed(seqs))

    def pop(self) -> Sequence:
        return self._items.popleft()

    def remove(self, seq: Sequence) -> None:
        self._items.remove(seq)


class PriorityQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Sequence]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Sequence]:
        return (entry[3] for entry in self._heap)

    def push(self, seq: Sequence) -> None:
        heapq.heappush(self._heap, (seq.request.priority, seq.arrival_time, seq.seq_no, seq))

    def push_front(self, seqs: list[Sequence]) -> None:
        # Order is the key's business: a preempted request keeps its priority and arrival time.
        for seq in seqs:
            self.push(seq)

    def pop(self) -> Sequence:
        return heapq.heappop(self._heap)[3]

    def remove(self, seq: Sequence) -> None:
        self._heap = [entry for entry in self._heap if entry[3] is not seq]
        heapq.heapify(self._heap)


def make_queue(policy: str) -> WaitingQueue:
    return PriorityQueue() if policy == "priority" else FcfsQueue()
