"""Prometheus metrics of precise prefix routing: each endpoint's KV-event stream, the precise
index, and how far the approximate guess is from the engines' truth.

* ``sluice_kv_events_endpoint_mode{endpoint, mode}`` — 1 for the source the endpoint's score
  comes from now (``precise``, ``partial``, ``fallback``), 0 for the others;
* ``sluice_kv_events_fallback_endpoints`` — how many endpoints fall back to the approximate guess;
* ``sluice_kv_events_{batches,events,gaps,replays,replays_failed,resets,malformed,probes}_total
  {endpoint}`` — per stream (see ``datalayer.kvevents.stream``), and
  ``sluice_kv_events_subscriber_restarts_total``;
* ``sluice_precise_prefix_index_blocks`` — keys held by the precise index, and
  ``sluice_precise_prefix_index_other_tier_events_total`` — events about another cache tier
  than the GPU's (``medium``, e.g. vLLM's CPU offloading), skipped;
* ``sluice_prefix_cache_predicted_tokens_total{index}`` — cached tokens predicted for the chosen
  endpoints by the ``approximate`` and the ``precise`` index (their ratio is the approximate
  index's bias), and ``sluice_prefix_cache_approximate_error_tokens`` — per dispatch, |approximate
  - precise| in tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer

_MODES = ("precise", "partial", "fallback")
_COUNTERS = (
    "batches",
    "events",
    "gaps",
    "replays",
    "replays_failed",
    "resets",
    "malformed",
    "probes",
)
_TOKEN_BUCKETS = (0.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0)


class PrecisePrefixMetrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        scorer: PrecisePrefixCacheScorer,
        restarts: Callable[[], int] = lambda: 0,
    ) -> None:
        self._scorer = scorer
        self._restarts = restarts
        predicted = Counter(
            "sluice_prefix_cache_predicted_tokens",
            "Cached tokens predicted for the chosen endpoint, by index.",
            ["index"],
            registry=registry,
        )
        self._approximate = predicted.labels("approximate")
        self._precise = predicted.labels("precise")
        self._error = Histogram(
            "sluice_prefix_cache_approximate_error_tokens",
            "Per dispatch: |approximate - precise| predicted cached tokens.",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        scorer.on_compare = self.compared
        registry.register(self)

    def compared(self, prompt_tokens: int, approximate: int, precise: int) -> None:
        self._approximate.inc(approximate)
        self._precise.inc(precise)
        self._error.observe(abs(approximate - precise))

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        scorer = self._scorer
        mode = GaugeMetricFamily(
            "sluice_kv_events_endpoint_mode",
            "1 for the source the endpoint's prefix score comes from.",
            labels=["endpoint", "mode"],
        )
        counters = {
            name: CounterMetricFamily(
                f"sluice_kv_events_{name}", f"KV-event stream: {name}.", labels=["endpoint"]
            )
            for name in _COUNTERS
        }
        fallback = 0
        for stream in scorer.streams:
            current, _ = scorer.source_of(stream.name)
            fallback += current == "fallback"
            for m in _MODES:
                mode.add_metric([stream.name, m], 1.0 if m == current else 0.0)
            for name, family in counters.items():
                family.add_metric([stream.name], float(getattr(stream.counters, name)))
        yield mode
        yield from counters.values()
        yield GaugeMetricFamily(
            "sluice_kv_events_fallback_endpoints",
            "Endpoints scored from the approximate index (no trustworthy KV events).",
            value=fallback,
        )
        yield CounterMetricFamily(
            "sluice_kv_events_subscriber_restarts",
            "KV-event subscribers restarted after dying.",
            value=self._restarts(),
        )
        yield GaugeMetricFamily(
            "sluice_precise_prefix_index_blocks",
            "Block keys held by the precise prefix index.",
            value=len(scorer.precise),
        )
        yield CounterMetricFamily(
            "sluice_precise_prefix_index_other_tier_events",
            "KV events about another cache tier than the GPU's (skipped by the index).",
            value=scorer.precise.other_tiers,
        )
        yield CounterMetricFamily(
            "sluice_precise_prefix_index_other_group_events",
            "KV events about another KV-cache group than the full-attention one indexed "
            "(hybrid models; skipped by the index).",
            value=scorer.precise.other_groups,
        )
