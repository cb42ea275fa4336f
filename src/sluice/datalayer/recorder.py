"""Apply one scrape's outcome to the registry: parse the page, or fail the scrape.

A page without the engine profile's waiting or running series (the wrong `--engine`, a renamed
metric) counts as a failed scrape: the endpoint's metrics go stale, so it has no room and takes
no new request, exactly like an endpoint that does not answer. Storing it instead would show an
engine with 0 waiting and 0 running — idle forever — and the room rule would send it every
request at once, with no flow control and no priority. A page without KV usage is used, with KV
unknown. Either way the observer hears once per endpoint (and again when it changes) which
metrics are missing and which the page has, so the log says what to fix; the registry keeps the
list (`EndpointState.missing_metrics`) for the `sluice_endpoint_metrics_missing` gauge.

Why the page memo: engines often serve the same bytes scrape after scrape (an idle engine's
gauges and counters do not move), and parsing is most of a scrape's CPU. A page whose 128-bit
hash equals that of the page that produced the endpoint's current metrics would parse to the
same values, so only the timestamp is renewed. The memo is checked against the current metrics
object itself, so a pod restart, a failed parse or another writer always forces a full parse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import xxhash

from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.extract import lacks_queue_metrics, metrics_from_text
from sluice.datalayer.metric_names import MetricNames
from sluice.datalayer.promtext import family_names
from sluice.datalayer.registry import EndpointRegistry, ScrapeMark


@dataclass(frozen=True, slots=True)
class MissingMetrics:
    """What an endpoint's page lacks of the engine profile (`missing` empty: found again).
    `usable` False: no waiting or running series, so its scrapes count as failed."""

    endpoint: str
    missing: tuple[str, ...]
    found: tuple[str, ...]
    usable: bool


MissingMetricsObserver = Callable[[MissingMetrics], None]


class ScrapeRecorder:
    def __init__(
        self,
        registry: EndpointRegistry,
        names: MetricNames,
        clock: Callable[[], float],
        on_missing: MissingMetricsObserver | None = None,
    ) -> None:
        self._registry = registry
        self._names = names
        self._clock = clock
        self._on_missing = on_missing
        self._memo: dict[str, tuple[int, EngineMetrics]] = {}  # name -> (page hash, metrics)
        self._reported: dict[str, tuple[str, ...]] = {}  # name -> missing, as last reported

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
        missing = metrics.missing_metrics
        if missing or name in self._reported:
            self._report(name, missing, body)
        if missing and lacks_queue_metrics(metrics, self._names):
            error = (
                f"metrics page lacks {', '.join(missing)}: the engine profile does not match "
                "this engine (set --engine, or --total-queued-requests-metric and "
                "--total-running-requests-metric)"
            )
            self._registry.record_scrape_failure(mark, error, missing=missing)
            return
        self._registry.record_scrape(mark, metrics)
        if state is not None and state.metrics is metrics:  # applied (not a late answer)
            self._memo[name] = (digest, metrics)

    def failure(self, mark: ScrapeMark, error: str) -> None:
        self._registry.record_scrape_failure(mark, error)

    def _report(self, name: str, missing: tuple[str, ...], body: bytes | memoryview) -> None:
        """Tell the observer when an endpoint's missing metrics change (once, not per scrape)."""
        if self._reported.get(name, ()) == missing:
            return
        if missing:
            self._reported[name] = missing
        else:
            del self._reported[name]
        if self._on_missing is None:
            return
        found = tuple(family_names(str(body, "utf-8", "replace"))) if missing else ()
        usable = not any(str(spec) in missing for spec in self._names.queue_specs)
        self._on_missing(MissingMetrics(name, missing, found, usable))

    def forget(self, name: str) -> None:
        self._memo.pop(name, None)
        self._reported.pop(name, None)
