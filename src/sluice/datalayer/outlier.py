"""Passive outlier detection, as Envoy's: an endpoint whose requests fail several times in a
row is ejected — given no new requests — for a back-off period.

Why: an engine that answers 500 at once looks idle to every load signal (empty queue, nothing
running), so without this it attracts *more* traffic than its share (issue #15: one of four
such engines failed 41 of 100 requests). A failure is a 5xx answer or a connection that failed
before the first byte; any other answer resets the count.

Envoy's defaults, the same meaning: 5 consecutive failures; ejected for 30 s times the number
of times it was ejected before (capped at 300 s); at most half the pool ejected at once, and
never the last endpoint (a pool that fails everywhere still gets its requests — and their
errors — rather than a queue that cannot drain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


class _HasName(Protocol):
    @property
    def name(self) -> str: ...


class _HasEndpoint(Protocol):
    @property
    def endpoint(self) -> _HasName: ...


S = TypeVar("S", bound=_HasEndpoint)


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive_failures: int = 5  # Envoy's consecutive_5xx
    base_ejection_s: float = 30.0  # Envoy's base_ejection_time
    max_ejection_s: float = 300.0  # Envoy's max_ejection_time
    max_ejected_fraction: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.consecutive_failures > 0


@dataclass(slots=True)
class _Record:
    consecutive: int = 0
    ejections: int = 0
    ejected_until: float = float("-inf")


@dataclass
class OutlierDetector:
    settings: OutlierSettings = field(default_factory=OutlierSettings)
    _records: dict[str, _Record] = field(default_factory=dict)

    def failure(self, name: str, now: float) -> bool:
        """A request on `name` failed; True if that ejects it now."""
        if not self.settings.enabled:
            return False
        record = self._records.setdefault(name, _Record())
        if record.ejected_until > now:
            return False  # already out (a request placed before the ejection failing late)
        record.consecutive += 1
        if record.consecutive < self.settings.consecutive_failures:
            return False
        record.ejections += 1
        record.consecutive = 0
        period = min(self.settings.base_ejection_s * record.ejections, self.settings.max_ejection_s)
        record.ejected_until = now + period
        return True

    def success(self, name: str) -> None:
        record = self._records.get(name)
        if record is not None:
            record.consecutive = 0

    def ejected(self, name: str, now: float) -> bool:
        record = self._records.get(name)
        return record is not None and record.ejected_until > now

    def admissible(self, states: Sequence[S], now: float) -> Sequence[S]:
        """`states` without the ejected endpoints — at most the allowed fraction of them (the
        longest-ejected first back), never all."""
        if not self._records:
            return states
        out = [s for s in states if self.ejected(s.endpoint.name, now)]
        if not out:
            return states
        allowed = min(int(len(states) * self.settings.max_ejected_fraction), len(states) - 1)
        out.sort(key=lambda s: -self._records[s.endpoint.name].ejected_until)
        dropped = {id(s) for s in out[: max(0, allowed)]}
        return [s for s in states if id(s) not in dropped]

    def forget_except(self, names: set[str]) -> None:
        for name in list(self._records):
            if name not in names:
                del self._records[name]
