"""Test doubles for flow control: requests, and a deterministic pool of slots."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from sluice.flowcontrol import Ticket
from sluice.requests.model import ApiKind, InferenceRequest

_ids = itertools.count()


def request(
    fairness_id: str = "tenant",
    priority: int = 0,
    *,
    prompt_tokens: int = 100,
    max_tokens: int | None = 10,
    body_bytes: int = 100,
    ttl_s: float | None = None,
    subset_hint: Iterable[str] | None = None,
    slo_ttft_s: float | None = None,
) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{next(_ids)}",
        api=ApiKind.CHAT,
        model="m",
        target_model="m",
        body=b"x" * body_bytes,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        fairness_id=fairness_id,
        priority=priority,
        ttl_s=ttl_s,
        slo_ttft_s=slo_ttft_s,
        subset_hint=frozenset(subset_hint) if subset_hint is not None else None,
    )


class SlotPool:
    """A `CapacityView`: each endpoint runs up to `slots[endpoint]` requests at once.

    `take_room` plays the scheduler: it binds the request to the candidate endpoint with the
    most free slots, at the moment of release (late binding).
    """

    def __init__(self, slots: dict[str, int]) -> None:
        self.slots = dict(slots)
        self.busy: dict[str, int] = dict.fromkeys(slots, 0)
        self.placed: dict[str, str] = {}  # request id → endpoint
        self.released: list[InferenceRequest] = []
        self.overbooked = 0
        # Called just before a release is accounted, to check invariants at that instant.
        self.on_take: Callable[[InferenceRequest], None] | None = None
        # Every question asked, heavy hitter included (to compare two controllers' runs).
        self.asked: list[tuple[frozenset[str] | None, int, str | None]] = []

    def free(self, endpoint: str) -> int:
        return self.slots[endpoint] - self.busy[endpoint]

    def has_room(
        self,
        candidates: frozenset[str] | None,
        priority: int = 0,
        *,
        heavy_hitter: str | None = None,
    ) -> bool:
        self.asked.append((candidates, priority, heavy_hitter))
        endpoints = self.slots if candidates is None else candidates
        return any(e in self.slots and self.free(e) > 0 for e in endpoints)

    def take_room(self, request: InferenceRequest, *, heavy_hitter: str | None = None) -> None:
        if self.on_take is not None:
            self.on_take(request)
        endpoints = self.slots if request.subset_hint is None else request.subset_hint
        best = max((e for e in endpoints if e in self.slots), key=self.free)
        if self.free(best) <= 0:
            self.overbooked += 1  # only legacy mode may release without room
        self.busy[best] += 1
        self.placed[request.request_id] = best
        self.released.append(request)

    def finish(self, request: InferenceRequest) -> None:
        self.busy[self.placed.pop(request.request_id)] -= 1

    def resize(self, endpoint: str, slots: int) -> None:
        """Capacity changes (a pod's room grows or shrinks); busy work keeps running."""
        self.slots[endpoint] = slots


def waiting(tickets: Iterable[Ticket]) -> list[Ticket]:
    return [t for t in tickets if t.waiting]
