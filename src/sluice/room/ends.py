"""When a detached request is over: the estimate behind its leaving the in-flight count.

A gateway that never shows Sluice the response (Envoy with response processing off, a one-shot
API behind a buffering hop) ends Sluice's part of a request once it is routed. Sluice still
counts it in flight on its endpoint (`EndpointRegistry.detach`) until the first of two signals
every request has:

- the engine's own count: a scrape that shows the engine running and queueing fewer requests
  than Sluice counts there ends that many detached ones, the oldest first;
- this estimate: dispatch + the prefill estimate (room/prefill.py) + output tokens (`max_tokens`,
  else the director's default) x the endpoint's seconds per output token.

The second comes first when it is right: a closed loop's next request then goes where one just
ended, not where the last scrape (up to an interval old) says the load is lowest. Seconds per
output token are learned online per endpoint, from what every request has: the detached
requests a scrape showed gone (each ended between that scrape and the one before; the middle is
taken) and attached requests' completions. An estimate that is early only drops a request
from Sluice's count while the engine still reports it (the load scorer takes the larger of the
two, so nothing is flooded); one that is late is cut short by the next scrape.
"""

from __future__ import annotations

from sluice.datalayer.registry import DetachedEnd
from sluice.room.settings import RoomSettings

# Each new sample keeps this much of the old: the rate follows the last ~10 requests, so it
# tracks an engine whose step time changes with its batch.
_KEEP = 0.9
# The prior's weight, as a fraction of one sample (it never decays).
_PRIOR_WEIGHT = 0.2


class _Rate:
    __slots__ = ("per_token", "weight")

    def __init__(self) -> None:
        self.per_token = 0.0  # weighted sum of the samples' seconds per output token
        self.weight = 0.0  # their weight


class EndEstimator:
    """Per endpoint, the expected seconds a request spends producing its output tokens."""

    def __init__(self, settings: RoomSettings) -> None:
        self._prior_s = settings.decode_seconds_per_token
        self._max_s = settings.max_detached_hold_s
        self._endpoints: dict[str, _Rate] = {}

    def seconds_per_token(self, endpoint: str) -> float:
        rate = self._endpoints.get(endpoint)
        if rate is None:
            return self._prior_s
        prior = _PRIOR_WEIGHT
        return (rate.per_token + prior * self._prior_s) / (rate.weight + prior)

    def duration(self, endpoint: str, prefill_s: float, output_tokens: int) -> float:
        """Seconds from dispatch to the end of a request whose prefill is estimated at
        `prefill_s` and which produces `output_tokens`."""
        decode = max(0, output_tokens) * self.seconds_per_token(endpoint)
        return min(self._max_s, max(0.0, prefill_s) + decode)

    def observe(self, endpoint: str, output_tokens: int, decode_seconds: float) -> None:
        """A request on `endpoint` spent `decode_seconds` after its prefill on `output_tokens`."""
        if output_tokens <= 0 or decode_seconds < 0.0:
            return
        rate = self._endpoints.get(endpoint)
        if rate is None:
            rate = self._endpoints[endpoint] = _Rate()
        # Each sample weighs as one request, whatever its length: per token, so that a long
        # request does not drown the rest.
        rate.per_token = rate.per_token * _KEEP + decode_seconds / output_tokens
        rate.weight = rate.weight * _KEEP + 1.0

    def observe_detached_ends(self, ends: list[DetachedEnd]) -> None:
        """Learn from the detached requests scrapes showed gone (each ended in (after, by])."""
        for end in ends:
            entry = end.dispatch
            took = (end.after + end.by) / 2 - entry.dispatched_at
            self.observe(end.endpoint_name, entry.output_tokens, max(0.0, took - entry.prefill_s))

    def forget_except(self, endpoints: set[str]) -> None:
        for name in [n for n in self._endpoints if n not in endpoints]:
            del self._endpoints[name]
