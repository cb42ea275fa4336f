"""Prometheus metrics for the scheduler, with upstream's names (facts §5.1, §5.3, §8.3).

The only scheduling module that imports prometheus_client: the scheduler core calls a
`SchedulerObserver`, and this is the Prometheus implementation of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip
_RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_CHARS_BUCKETS = tuple(float(2**k) for k in range(6, 22))


class PrometheusSchedulerObserver:
    def __init__(self, registry: CollectorRegistry, index_size: Callable[[], int]) -> None:
        self._e2e = Histogram(
            "inference_extension_scheduler_e2e_duration_seconds",
            "End-to-end scheduling latency.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._attempts = Counter(
            "inference_extension_scheduler_attempts_total",
            "Scheduling attempts by status.",
            ["status"],
            registry=registry,
        )
        self._plugin = Histogram(
            "inference_extension_plugin_duration_seconds",
            "Plugin latency by extension point.",
            ["extension_point", "plugin_type", "plugin_name"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._hit_ratio = Histogram(
            "inference_extension_prefix_indexer_hit_ratio",
            "Fraction of the prompt's prefix found on the best endpoint.",
            buckets=_RATIO_BUCKETS,
            registry=registry,
        )
        self._hit_bytes = Histogram(
            "inference_extension_prefix_indexer_hit_bytes",
            "Prefix length (chars) found on the best endpoint.",
            buckets=_CHARS_BUCKETS,
            registry=registry,
        )
        registry.register(_IndexSizeCollector(index_size))

        # `.labels()` hashes and locks on every call; the label sets here are few and fixed, so
        # each child is resolved once (this runs several times per request).
        self._success = self._attempts.labels("success")
        self._failure = self._attempts.labels("failure")
        self._plugin_children: dict[tuple[str, str, str], Histogram] = {}

    def scheduled(self, duration_s: float, success: bool) -> None:
        self._e2e.observe(duration_s)
        (self._success if success else self._failure).inc()

    def plugin_ran(
        self, extension_point: str, plugin_type: str, plugin_name: str, duration_s: float
    ) -> None:
        key = (extension_point, plugin_type, plugin_name)
        child = self._plugin_children.get(key)
        if child is None:
            child = self._plugin_children[key] = self._plugin.labels(*key)
        child.observe(duration_s)

    def prefix_matched(self, hit_ratio: float, hit_chars: int) -> None:
        self._hit_ratio.observe(hit_ratio)
        self._hit_bytes.observe(hit_chars)


class _IndexSizeCollector(Collector):
    """Reads the index size at scrape time instead of refreshing a gauge every second."""

    def __init__(self, index_size: Callable[[], int]) -> None:
        self._index_size = index_size

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "inference_extension_prefix_indexer_size",
            "Block hashes held by the prefix indexer.",
            value=self._index_size(),
        )
