"""Scheduler and pool metrics carry upstream's names."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from sluice.config import default_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.pool_metrics import PoolMetricsCollector
from sluice.scheduling.metrics import PrometheusSchedulerObserver
from sluice.scheduling.scheduler import Scheduler

from .helpers import NOW, pool, request


def test_scheduling_records_upstream_metric_names() -> None:
    prom = CollectorRegistry()
    holder: list[Scheduler] = []
    observer = PrometheusSchedulerObserver(prom, lambda: holder[0].prefix_index_size())
    sched = Scheduler.from_config(default_config(), random.Random(0), observer)
    holder.append(sched)
    registry = pool(EngineMetrics(waiting=1, kv_cache_usage=0.5), EngineMetrics())
    prom.register(PoolMetricsCollector(registry, "my-pool", clock=lambda: NOW))
    req = request("p" * 1000)
    sched.on_dispatch(req, sched.schedule(req, registry.snapshot(), NOW).primary)
    text = generate_latest(prom).decode()
    for expected in (
        "inference_extension_scheduler_e2e_duration_seconds_count 1.0",
        'inference_extension_scheduler_attempts_total{status="success"} 1.0',
        'plugin_type="prefix-cache-scorer"',
        'extension_point="Picker"',
        "inference_extension_prefix_indexer_size 15.0",
        "inference_extension_prefix_indexer_hit_ratio_count 1.0",
        'inference_pool_average_queue_size{name="my-pool"} 0.5',
        'inference_pool_ready_pods{name="my-pool"} 2.0',
        'inference_pool_per_pod_queue_size{model_server_pod="pod-0",name="my-pool"} 1.0',
    ):
        assert expected in text
