"""Pool gauges (facts §8.3), computed from the registry over endpoints with fresh metrics
(upstream's 2 s pool staleness) at most once per `refresh_s` (upstream's
--refresh-prometheus-metrics-interval, 5 s; a scrape in between sees the last values), under
GIE v1.3's `inference_pool_*` names and llm-d-router's `llm_d_epp_*` ones (which add running
requests and standard deviations, and say endpoint where GIE said pod), either or both
(`ExportedNames`). KV-cache gauges cover the endpoints that report KV usage; when none does
(llama.cpp) they are left out — unknown, not 0.

And Sluice's own `sluice_endpoint_metrics_missing{endpoint,metric}`: 1 for each load metric of
the engine profile an endpoint's last page lacked, whatever its freshness (a page without
waiting or running makes the endpoint stale, and this gauge says why)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.datalayer.registry import EndpointRegistry
from sluice.util.exported_names import BOTH, ExportedNames


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std_dev(values: Sequence[float]) -> float:
    """Population standard deviation (0 for fewer than two endpoints)."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class PoolMetricsCollector(Collector):
    def __init__(
        self,
        registry: EndpointRegistry,
        pool_name: str,
        *,
        staleness_s: float = 2.0,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        names: ExportedNames = BOTH,
    ) -> None:
        self._registry, self._pool, self._staleness, self._clock = (
            registry,
            pool_name,
            staleness_s,
            clock,
        )
        self._names = names
        self._refresh_s = refresh_s
        self._pool_gauges: list[GaugeMetricFamily] = []
        self._computed_at = -math.inf

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self._clock()
        if now - self._computed_at >= self._refresh_s:
            self._pool_gauges = list(self._compute_pool_gauges(now))
            self._computed_at = now
        yield from self._pool_gauges
        yield from self._live_families()

    def _compute_pool_gauges(self, now: float) -> Iterator[GaugeMetricFamily]:
        fresh = [s for s in self._registry.snapshot() if s.is_fresh(now, self._staleness)]
        kv = [s.metrics.kv_cache_usage for s in fresh if s.metrics.kv_cache_known]
        kv_unknown = bool(fresh) and not kv
        waiting = [float(s.metrics.waiting) for s in fresh]
        running = [float(s.metrics.running) for s in fresh]

        def pool_gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            gauge = GaugeMetricFamily(name, doc, labels=["name"])
            gauge.add_metric([self._pool], value)
            return gauge

        def per_endpoint(name: str, endpoint_label: str) -> GaugeMetricFamily:
            gauge = GaugeMetricFamily(
                name, "Waiting queue per endpoint.", labels=["name", endpoint_label]
            )
            for s in fresh:
                gauge.add_metric([self._pool, s.name], s.metrics.waiting)
            return gauge

        if self._names.gie:
            if not kv_unknown:
                yield pool_gauge(
                    "inference_pool_average_kv_cache_utilization",
                    "Average KV-cache use of the pool's endpoints.",
                    _mean(kv),
                )
            yield pool_gauge(
                "inference_pool_average_queue_size", "Average waiting queue.", _mean(waiting)
            )
            yield pool_gauge(
                "inference_pool_ready_pods", "Endpoints with fresh metrics.", len(fresh)
            )
            yield per_endpoint("inference_pool_per_pod_queue_size", "model_server_pod")
        if self._names.llm_d:
            for stat, of in (("average", _mean), ("std_dev", _std_dev)):
                if not kv_unknown:
                    yield pool_gauge(
                        f"llm_d_epp_{stat}_kv_cache_utilization",
                        f"KV-cache use of the pool's endpoints ({stat.replace('_', ' ')}).",
                        of(kv),
                    )
                yield pool_gauge(
                    f"llm_d_epp_{stat}_queue_size",
                    f"Waiting queue of the pool's endpoints ({stat.replace('_', ' ')}).",
                    of(waiting),
                )
                yield pool_gauge(
                    f"llm_d_epp_{stat}_running_requests",
                    f"Running requests of the pool's endpoints ({stat.replace('_', ' ')}).",
                    of(running),
                )
            yield pool_gauge(
                "llm_d_epp_ready_endpoints", "Endpoints with fresh metrics.", len(fresh)
            )
            yield per_endpoint("llm_d_epp_per_endpoint_queue_size", "model_server_endpoint")

    def _live_families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Sluice's own diagnostics, current at every scrape."""
        missing = GaugeMetricFamily(
            "sluice_endpoint_metrics_missing",
            "1 for each load metric of the engine profile (waiting, running, KV usage) that the "
            "endpoint's last metrics page lacked; without waiting or running it gets no traffic.",
            labels=["endpoint", "metric"],
        )
        for s in self._registry.snapshot():
            for metric in s.missing_metrics:
                missing.add_metric([s.name, metric], 1)
        yield missing
        ended = CounterMetricFamily(
            "sluice_prefills_ended",
            "Pending prefills the room stopped counting, by what ended them: the first response "
            "byte, the engine's first-token counter, the prefill-time estimate, or completion.",
            labels=["cause"],
        )
        for cause, count in self._registry.prefills_ended.items():
            ended.add_metric([cause], count)
        yield ended
        detached = CounterMetricFamily(
            "sluice_detached_ended",
            "Detached requests (a gateway that shows Sluice no response) the room stopped "
            "counting in flight, by what ended them: a scrape showing the engine running fewer "
            "than Sluice counted, or their estimated end (docs/room.md).",
            labels=["cause"],
        )
        for cause, count in self._registry.detached_ended.items():
            detached.add_metric([cause], count)
        yield detached
