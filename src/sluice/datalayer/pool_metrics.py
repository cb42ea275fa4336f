"""`inference_pool_*` gauges (facts §8.3), computed from the registry at scrape time over
endpoints with fresh metrics (upstream's 2 s pool staleness)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.datalayer.registry import EndpointRegistry


class PoolMetricsCollector(Collector):
    def __init__(
        self,
        registry: EndpointRegistry,
        pool_name: str,
        *,
        staleness_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry, self._pool, self._staleness, self._clock = (
            registry,
            pool_name,
            staleness_s,
            clock,
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        fresh = [s for s in self._registry.snapshot() if s.is_fresh(now, self._staleness)]
        kv = GaugeMetricFamily(
            "inference_pool_average_kv_cache_utilization",
            "Average KV-cache use of the pool's endpoints.",
            labels=["name"],
        )
        queue = GaugeMetricFamily(
            "inference_pool_average_queue_size", "Average waiting queue.", labels=["name"]
        )
        ready = GaugeMetricFamily(
            "inference_pool_ready_pods", "Endpoints with fresh metrics.", labels=["name"]
        )
        per_pod = GaugeMetricFamily(
            "inference_pool_per_pod_queue_size",
            "Waiting queue per endpoint.",
            labels=["name", "model_server_pod"],
        )
        n = len(fresh)
        kv.add_metric([self._pool], sum(s.metrics.kv_cache_usage for s in fresh) / n if n else 0)
        queue.add_metric([self._pool], sum(s.metrics.waiting for s in fresh) / n if n else 0)
        ready.add_metric([self._pool], n)
        for s in fresh:
            per_pod.add_metric([self._pool, s.name], s.metrics.waiting)
        yield from (kv, queue, ready, per_pod)
