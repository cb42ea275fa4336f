"""Queue limits (requests and bytes; global, per band, per flow) and the Retry-After estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """A cap on queued requests and bytes; 0 means unlimited."""

    max_requests: int = 0
    max_bytes: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.max_requests or self.max_bytes)

    def fits(self, requests: int, bytes_: int, extra_bytes: int) -> bool:
        """Would one more item of `extra_bytes` fit on top of `requests` / `bytes_` queued?"""
        if self.max_requests and requests + 1 > self.max_requests:
            return False
        # A zero-byte item always fits the byte cap (as upstream).
        return not (self.max_bytes and extra_bytes and bytes_ + extra_bytes > self.max_bytes)

    def can_ever_fit(self, extra_bytes: int) -> bool:
        return not (self.max_bytes and extra_bytes > self.max_bytes)

    def shortfall(self, requests: int, bytes_: int, extra_bytes: int) -> tuple[int, int]:
        """How many requests and bytes must leave before one more item fits."""
        need_requests = max(0, requests + 1 - self.max_requests) if self.max_requests else 0
        need_bytes = (
            max(0, bytes_ + extra_bytes - self.max_bytes) if self.max_bytes and extra_bytes else 0
        )
        return need_requests, need_bytes


class DrainRate:
    """An exponentially weighted estimate of dispatches per second, for Retry-After.

    Time is passed in; dispatches are bucketed per `window_s` so bursts do not read as
    infinite rates.
    """

    __slots__ = ("_bucket_count", "_bucket_start", "_rate", "window_s")

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._bucket_start: float | None = None
        self._bucket_count = 0
        self._rate: float | None = None

    def record(self, now: float, count: int = 1) -> None:
        if self._bucket_start is None:
            self._bucket_start = now
        elapsed = now - self._bucket_start
        if elapsed >= self.window_s:
            observed = self._bucket_count / elapsed
            self._rate = observed if self._rate is None else 0.7 * self._rate + 0.3 * observed
            self._bucket_start = now
            self._bucket_count = 0
        self._bucket_count += count

    @property
    def per_second(self) -> float | None:
        return self._rate

    def retry_after(self, ahead: int, *, floor_s: float = 1.0, cap_s: float = 60.0) -> float:
        """Seconds until `ahead` queued items have likely drained (whole seconds, clamped)."""
        rate = self._rate
        if not rate:
            return floor_s
        return float(min(cap_s, max(floor_s, math.ceil((ahead + 1) / rate))))
