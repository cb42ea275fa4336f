"""Apply one scrape's outcome to the registry: parse the page, or fail the scrape.

Why the page memo: engines often serve the same bytes scrape after scrape (an idle engine's
gauges and counters do not move), and parsing is most of a scrape's CPU. A page whose 128-bit
hash equals that of the page that produced the endpoint's current metrics would parse to the
same values, so only the timestamp is renewed. The memo is checked against the current metrics
object itself, so a pod restart, a failed parse or another writer always forces a full parse.
"""

from __future__ import annotations

from collections.abc import Callable

import xxhash

from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.extract import metrics_from_text
from sluice.datalayer.metric_names import MetricNames
from sluice.datalayer.registry import EndpointRegistry, ScrapeMark


class ScrapeRecorder:
    def __init__(
        self, registry: EndpointRegistry, names: MetricNames, clock: Callable[[], float]
    ) -> None:
        self._registry = registry
        self._names = names
        self._clock = clock
        self._memo: dict[str, tuple[int, EngineMetrics]] = {}  # name -> (page hash, metrics)

    def response(self, mark: ScrapeMark, status: int, body: bytes | memoryview) -> None:
        """A complete HTTP response to the scrape taken with `mark`."""
        if status != 200:
            self.failure(mark, f"HTTP {status}")
            return
        name = mark.endpoint_name
        state = self._registry.get(name)
        previous = state.metrics if state is not None and state.scraped else None
        digest = xxhash.xxh3_128_intdigest(body)
        memo = self._memo.get(name)
        try:
            if memo is not None and memo[0] == digest and memo[1] is previous:
                metrics = memo[1].restamped(self._clock())
            else:
                text = str(body, "utf-8", "replace")
                metrics = metrics_from_text(text, self._names, previous, self._clock())
        except Exception as exc:  # a bad page only makes the metrics stale
            self.failure(mark, f"{type(exc).__name__}: {exc}")
            return
        self._registry.record_scrape(mark, metrics)
        if state is not None and state.metrics is metrics:  # applied (not a late answer)
            self._memo[name] = (digest, metrics)

    def failure(self, mark: ScrapeMark, error: str) -> None:
        self._registry.record_scrape_failure(mark, error)

    def forget(self, name: str) -> None:
        self._memo.pop(name, None)
