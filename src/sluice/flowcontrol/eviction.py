"""Eviction (upstream's `flowControl.enableEviction`, off by default): which in-flight requests
to end so that a higher band blocked on a full pool finds room.

The rule, sans-I/O (the director asks after each dispatch, with `now`):

* only while a band waits and no endpoint has room for it (the caller checks the room);
* only requests of **negative** bands (upstream's "sheddable"), below the waiting band, that
  have **not produced their first token** and whose front end can still answer them with a 429
  (the caller passes only those);
* lowest band first, then the newest dispatched first (upstream's
  `eviction-priority-then-time-ordering`: the least sunk prefill work);
* at most **one per endpoint per scrape**: an endpoint that lost a request is not asked again
  until metrics scraped after the eviction show what it freed (upstream paces by confirmation
  of the stream's end plus a grace derived from the detector; the scrape is that signal here);
* evictions not yet confirmed by a scrape count against the demand: no more victims than
  requests waiting above the victim's band, so no eviction is made without someone to take the
  room it frees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar


class Evictable(Protocol):
    """An in-flight request as eviction sees it."""

    @property
    def priority(self) -> int: ...

    @property
    def endpoint_name(self) -> str: ...

    @property
    def dispatch_order(self) -> tuple[float, int]:
        """(dispatch time, sequence): larger is newer."""
        ...


E = TypeVar("E", bound=Evictable)


def sheddable(priority: int) -> bool:
    """Upstream's `IsSheddable`: only negative bands may be evicted."""
    return priority < 0


class EvictionPacer:
    """Chooses victims and remembers, per endpoint, when it last lost one."""

    def __init__(self) -> None:
        self._evicted_at: dict[str, float] = {}

    def choose(
        self,
        candidates: Iterable[E],
        *,
        blocked_priority: int,
        waiting_above: Callable[[int], int],
        scraped_at: Callable[[str], float],
        now: float,
    ) -> list[E]:
        """The requests to evict now for band `blocked_priority`, which waits on a full pool.
        `waiting_above(p)`: requests waiting in bands above `p`; `scraped_at(endpoint)`: when
        the endpoint's last applied scrape was taken (-inf: never)."""
        unconfirmed = sum(1 for name, at in self._evicted_at.items() if not scraped_at(name) > at)
        eligible = [
            c
            for c in candidates
            if sheddable(c.priority)
            and c.priority < blocked_priority
            and self._scraped_since_eviction(c.endpoint_name, scraped_at)
        ]
        eligible.sort(key=_eviction_order)
        chosen: list[E] = []
        endpoints: set[str] = set()
        for candidate in eligible:
            if candidate.endpoint_name in endpoints:
                continue
            if unconfirmed + len(chosen) >= waiting_above(candidate.priority):
                continue  # nobody above this band is left to take the room
            chosen.append(candidate)
            endpoints.add(candidate.endpoint_name)
            self._evicted_at[candidate.endpoint_name] = now
        return chosen

    def forget_except(self, endpoints: set[str]) -> None:
        for name in [n for n in self._evicted_at if n not in endpoints]:
            del self._evicted_at[name]

    def _scraped_since_eviction(self, endpoint: str, scraped_at: Callable[[str], float]) -> bool:
        last = self._evicted_at.get(endpoint)
        return last is None or scraped_at(endpoint) > last


def _eviction_order(candidate: Evictable) -> tuple[int, float, int]:
    dispatched_at, sequence = candidate.dispatch_order
    return (candidate.priority, -dispatched_at, -sequence)
