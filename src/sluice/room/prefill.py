"""How long an endpoint takes to prefill a prompt: the estimate behind "a pending prefill is over".

The room holds an endpoint's next prefill while the previous one runs
(`max_pending_prefill_tokens`), and a prefill is over at the first of: its first response byte,
the engine reporting its first token, or this estimate of its time to first token having passed.
The first two can be absent — a non-streamed response's first byte is its last, a gateway may
never show Sluice the response, an engine may not export a TTFT histogram — so the estimate is what
guarantees that no endpoint's room waits on a signal that never comes.

Per endpoint, TTFT ≈ overhead + seconds-per-token × uncached prompt tokens, fitted online by
weighted least squares with exponential forgetting, from two kinds of sample:

- a streamed response's first byte: the request's uncached tokens and its TTFT as Sluice saw it;
- the engine's own counters between two scrapes (vLLM/SGLang: the TTFT histogram's count and sum,
  prompt and prefix-cache-hit token counters): the mean uncached tokens and mean TTFT of the
  requests that got their first token in between — this covers non-streamed traffic too.

A prior (`RoomSettings.prefill_tokens_per_s`, `prefill_overhead_s`) weighs as a fifth of a sample
that never decays, so an endpoint with no samples yet is treated as a slow engine and a fit never
rests on samples of one size alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from sluice.datalayer.registry import EndpointState
from sluice.room.settings import RoomSettings

# Each new unit of sample weight keeps this much of the old: the fit follows the last ~10
# samples, so it tracks an engine whose speed changes with its batch.
_KEEP = 0.9
# An engine interval's mean counts as at most this many samples.
_MAX_INTERVAL_WEIGHT = 4.0
# The prior's pseudo-samples sit at 0 and at this many tokens, and weigh this much in all.
_PRIOR_TOKENS = 1000.0
_PRIOR_WEIGHT = 0.2
# The spread is measured once the samples outweigh the prior this much (before, it is the
# prior's error, not the engine's).
_SETTLED_WEIGHT = 2.0
# The estimate is the fit times a margin: the running mean of (sample / fit) plus this many of
# its standard deviations (past the 99th percentile of a normal spread), so that a streamed
# response's first byte — the exact signal — nearly always comes first, and the estimate
# decides only in the tail or where no first byte comes. Clamped to [1, _MAX_MARGIN].
_MARGIN_SIGMAS = 3.0
_MAX_MARGIN = 3.0
# When a first byte will mark the prefill's end, the estimate is only the fallback for a first
# byte that never comes: it waits this much longer, so it decides only when the byte is lost
# (on a busy machine streamed TTFTs spread wide: at 2x, 1 in 3 holds ended before their byte).
FALLBACK_FACTOR = 4.0


class _Fit:
    """Weighted least squares of seconds on tokens, forgetting old samples, and the spread of
    the samples around it (as ratios, so that one margin fits short and long prompts)."""

    __slots__ = ("_q", "_qq", "_w", "_x", "_xx", "_xy", "_y")

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._q, self._qq = 1.0, 1.0  # running mean of (sample / fit) and of its square

    def add(self, tokens: float, seconds: float, weight: float, prior: _Fit | None = None) -> None:
        if prior is not None and self._w >= _SETTLED_WEIGHT:  # the spread of a settled fit
            overhead, per_token = self.line(prior)
            predicted = overhead + per_token * tokens
            if predicted > 0.0:
                ratio = min(seconds / predicted, _MAX_MARGIN)
                share = 1.0 - _KEEP**weight
                self._q += share * (ratio - self._q)
                self._qq += share * (ratio * ratio - self._qq)
        keep = _KEEP**weight
        self._w = self._w * keep + weight
        self._x = self._x * keep + weight * tokens
        self._y = self._y * keep + weight * seconds
        self._xx = self._xx * keep + weight * tokens * tokens
        self._xy = self._xy * keep + weight * tokens * seconds

    def line(self, prior: _Fit) -> tuple[float, float]:
        """(overhead s, seconds per token) of the samples plus the prior's."""
        w = self._w + prior._w
        x = (self._x + prior._x) / w
        y = (self._y + prior._y) / w
        var = (self._xx + prior._xx) / w - x * x
        cov = (self._xy + prior._xy) / w - x * y
        slope = cov / var if var > 1e-9 else 0.0
        if slope <= 0.0:  # noise or one size only: a line through the origin
            return 0.0, (y / x if x > 0 else 0.0)
        overhead = y - slope * x
        if overhead < 0.0:
            return 0.0, y / x
        return overhead, slope

    @property
    def margin(self) -> float:
        spread = max(0.0, self._qq - self._q * self._q) ** 0.5
        return min(_MAX_MARGIN, max(1.0, self._q + _MARGIN_SIGMAS * spread))


class _Endpoint:
    __slots__ = ("counters", "fit", "seen_at")

    def __init__(self) -> None:
        self.fit = _Fit()
        self.seen_at = float("-inf")
        self.counters: tuple[float, float, float, float] | None = None


class PrefillEstimator:
    """Per endpoint, the expected seconds from dispatch to first token for a prompt."""

    def __init__(self, settings: RoomSettings) -> None:
        self._max_s = settings.max_prefill_hold_s
        self._prior = _Fit()
        per_token = 1.0 / settings.prefill_tokens_per_s
        half = _PRIOR_WEIGHT / 2
        self._prior.add(0.0, settings.prefill_overhead_s, half)
        self._prior.add(
            _PRIOR_TOKENS, settings.prefill_overhead_s + per_token * _PRIOR_TOKENS, half
        )
        self._endpoints: dict[str, _Endpoint] = {}

    def estimate(self, endpoint: str, uncached_tokens: int) -> float:
        """Seconds until `uncached_tokens` of new prompt on `endpoint` produce a first token."""
        return self.estimates(endpoint, uncached_tokens)[0]

    def estimates(self, endpoint: str, uncached_tokens: int) -> tuple[float, float]:
        """(the estimate, the fallback for a first byte that should mark it), in seconds."""
        entry = self._endpoints.get(endpoint)
        fit = entry.fit if entry is not None else _Fit()
        overhead, per_token = fit.line(self._prior)
        seconds = (overhead + per_token * max(0, uncached_tokens)) * fit.margin
        return min(self._max_s, seconds), min(self._max_s, seconds * FALLBACK_FACTOR)

    def observe_first_byte(self, endpoint: str, uncached_tokens: int, seconds: float) -> None:
        """A streamed response started `seconds` after its dispatch."""
        if seconds >= 0.0:
            self._entry(endpoint).fit.add(float(max(0, uncached_tokens)), seconds, 1.0, self._prior)

    def observe_scrapes(self, states: Iterable[EndpointState]) -> None:
        """Learn from the engines' counters where a scrape brought news."""
        for state in states:
            metrics = state.metrics
            if metrics.first_tokens is None or metrics.first_token_seconds is None:
                continue
            entry = self._entry(state.name)
            if metrics.updated_at <= entry.seen_at:
                continue
            entry.seen_at = metrics.updated_at
            now = (
                metrics.first_tokens,
                metrics.first_token_seconds,
                metrics.prompt_tokens or 0.0,
                metrics.cached_prompt_tokens or 0.0,
            )
            before, entry.counters = entry.counters, now
            if before is None:
                continue
            requests = now[0] - before[0]
            if requests < 1.0 or now[1] < before[1]:
                continue  # nothing new, or the engine restarted (counters went back)
            uncached = max(0.0, (now[2] - before[2]) - (now[3] - before[3])) / requests
            seconds = (now[1] - before[1]) / requests
            entry.fit.add(uncached, seconds, min(requests, _MAX_INTERVAL_WEIGHT), self._prior)

    def forget_except(self, endpoints: set[str]) -> None:
        """Drop what was learned about endpoints that left the pool."""
        for name in [n for n in self._endpoints if n not in endpoints]:
            del self._endpoints[name]

    def _entry(self, endpoint: str) -> _Endpoint:
        entry = self._endpoints.get(endpoint)
        if entry is None:
            entry = self._endpoints[endpoint] = _Endpoint()
        return entry
