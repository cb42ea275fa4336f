"""Prometheus metrics for the scheduler, under upstream's names (facts §5.1, §5.3, §8.3):
llm-d-router's `llm_d_epp_*` and GIE v1.3's `inference_extension_*`, either or both
(`ExportedNames`).

The only scheduling module that writes metrics: the scheduler core calls a `SchedulerObserver`,
and this is the Prometheus implementation of it. Every label here is Sluice's own (status,
plugin names), so nothing a client sends can grow these families. Upstream's llm-d attempts
counter also carries the chosen endpoint and target model, and its prefix-indexer series the
plugin's name and type; Sluice's observer does not see those, so they are left out (a query that
sums over them reads the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.util.exported_names import BOTH, ExportedNames
from sluice.util.series import (
    CounterChild,
    Families,
    HistogramChild,
    HistogramFamily,
)

_LATENCY_BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip
_LLMD_LATENCY_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_CHARS_BUCKETS = tuple(float(2**k) for k in range(6, 22))
_LLMD_HIT_BYTES_BUCKETS = (0.0, *(float(2**k) for k in range(4, 17)))  # 0, 16 … 65536
_PLUGIN_LABELS = ("extension_point", "plugin_type", "plugin_name")
GIE, LLMD = "inference_extension_", "llm_d_epp_"


class PrometheusSchedulerObserver:
    def __init__(
        self,
        registry: CollectorRegistry,
        index_size: Callable[[], int],
        *,
        names: ExportedNames = BOTH,
    ) -> None:
        prefixes = [p for p, on in ((GIE, names.gie), (LLMD, names.llm_d)) if on]
        families = Families(registry)

        def histogram(
            name: str,
            doc: str,
            buckets: tuple[float, ...],
            llmd_buckets: tuple[float, ...],
            labels: tuple[str, ...] = (),
        ) -> list[HistogramFamily]:
            return [
                families.histogram(
                    prefix + name, doc, labels, llmd_buckets if prefix == LLMD else buckets
                )
                for prefix in prefixes
            ]

        self._e2e = [
            f.labels()
            for f in histogram(
                "scheduler_e2e_duration_seconds",
                "End-to-end scheduling latency.",
                _LATENCY_BUCKETS,
                _LLMD_LATENCY_BUCKETS,
            )
        ]
        attempts = [
            families.counter(
                prefix + "scheduler_attempts_total", "Scheduling attempts by status.", ("status",)
            )
            for prefix in prefixes
        ]
        self._plugin = histogram(
            "plugin_duration_seconds",
            "Plugin latency by extension point.",
            _LATENCY_BUCKETS,
            _LLMD_LATENCY_BUCKETS,
            _PLUGIN_LABELS,
        )
        self._hit_ratio = [
            f.labels()
            for f in histogram(
                "prefix_indexer_hit_ratio",
                "Fraction of the prompt's prefix found on the best endpoint.",
                _RATIO_BUCKETS,
                _RATIO_BUCKETS,
            )
        ]
        self._hit_bytes = [
            f.labels()
            for f in histogram(
                "prefix_indexer_hit_bytes",
                "Prefix length (chars) found on the best endpoint.",
                _CHARS_BUCKETS,
                _LLMD_HIT_BYTES_BUCKETS,
            )
        ]
        for prefix in prefixes:
            registry.register(_IndexSizeCollector(prefix + "prefix_indexer_size", index_size))

        # The label sets here are few and fixed, so each child is resolved once (this runs
        # several times per request).
        self._success: list[CounterChild] = [f.labels("success") for f in attempts]
        self._failure: list[CounterChild] = [f.labels("failure") for f in attempts]
        self._plugin_children: dict[tuple[str, str, str], list[HistogramChild]] = {}

    def scheduled(self, duration_s: float, success: bool) -> None:
        for e2e in self._e2e:
            e2e.observe(duration_s)
        for attempt in self._success if success else self._failure:
            attempt.inc()

    def plugin_ran(
        self, extension_point: str, plugin_type: str, plugin_name: str, duration_s: float
    ) -> None:
        key = (extension_point, plugin_type, plugin_name)
        children = self._plugin_children.get(key)
        if children is None:
            children = self._plugin_children[key] = [f.labels(*key) for f in self._plugin]
        for child in children:
            child.observe(duration_s)

    def prefix_matched(self, hit_ratio: float, hit_chars: int) -> None:
        for ratio in self._hit_ratio:
            ratio.observe(hit_ratio)
        for length in self._hit_bytes:
            length.observe(hit_chars)


class _IndexSizeCollector(Collector):
    """Reads the index size at scrape time instead of refreshing a gauge every second."""

    def __init__(self, name: str, index_size: Callable[[], int]) -> None:
        self._name = name
        self._index_size = index_size

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            self._name, "Block hashes held by the prefix indexer.", value=self._index_size()
        )
