"""`--refresh-prometheus-metrics-interval`: as upstream, the pool gauges (average KV cache and
queue, ready endpoints, queue per endpoint) are recomputed once per interval; a scrape in between
sees the values of the last refresh (issue #17: the flag was read by nothing)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from sluice.app import App
from sluice.cli.serve_options import parse_serve_options
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.pool_metrics import PoolMetricsCollector
from sluice.datalayer.registry import EndpointRegistry


def scraped(registry: EndpointRegistry, name: str, waiting: int, now: float) -> None:
    """`name` joins the pool with a page saying `waiting` requests wait, scraped at `now`."""
    registry.add(Endpoint(name, "127.0.0.1", 8000 + len(registry)))
    mark = registry.begin_scrape(name)
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(waiting=waiting, updated_at=now))


def queue_gauge(prom: CollectorRegistry) -> str:
    text = generate_latest(prom).decode()
    return next(
        line for line in text.splitlines() if line.startswith("inference_pool_average_queue_size")
    )


def test_the_pool_gauges_change_only_when_the_interval_has_passed() -> None:
    clock = [100.0]
    registry, prom = EndpointRegistry(), CollectorRegistry()
    prom.register(
        PoolMetricsCollector(registry, "p", staleness_s=60.0, refresh_s=5.0, clock=lambda: clock[0])
    )
    scraped(registry, "a", 2, now=100.0)
    assert queue_gauge(prom).endswith(" 2.0")
    scraped(registry, "b", 4, now=101.0)
    clock[0] = 101.0
    assert queue_gauge(prom).endswith(" 2.0")  # within the interval: the last refresh's value
    clock[0] = 105.0
    assert queue_gauge(prom).endswith(" 3.0")  # (2 + 4) / 2, recomputed


def test_the_flag_sets_the_interval_of_sluice_serves_pool_gauges() -> None:
    def gauges_after_a_change(interval: str) -> tuple[str, str]:
        app = App(
            parse_serve_options(
                ["--pool-name=p", f"--refresh-prometheus-metrics-interval={interval}"]
            )
        )
        scraped(app.registry, "a", 2, now=time.monotonic())
        before = queue_gauge(app.metrics_registry)
        scraped(app.registry, "b", 4, now=time.monotonic())
        return before, queue_gauge(app.metrics_registry)

    before, after = gauges_after_a_change("1h")
    assert before == after
    before, after = gauges_after_a_change("1ns")
    assert before != after
