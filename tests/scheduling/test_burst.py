"""Sluice's in-flight accounting spreads a burst that arrives between two scrapes."""

from __future__ import annotations

import random
from collections import Counter

from sluice.config import default_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.scheduling.defaults import UPSTREAM_DEFAULT_CONFIG_YAML
from sluice.scheduling.scheduler import Scheduler

from .helpers import NOW, pool, request, scheduler


def _burst(sched: Scheduler, n_requests: int, n_endpoints: int) -> Counter[str]:
    registry = pool(*(EngineMetrics() for _ in range(n_endpoints)))
    landed: Counter[str] = Counter()
    for i in range(n_requests):  # no scrape in between: metrics stay "all idle"
        req = request(f"request {i}: " + "tell me something new " * 20)
        target = sched.schedule(req, registry.snapshot(), NOW).primary
        registry.dispatch(target.name, req.prompt_tokens + 256)
        sched.on_dispatch(req, target)
        landed[target.name] += 1
    return landed


def test_burst_of_50_spreads_evenly_over_idle_endpoints_with_the_default_profile() -> None:
    landed = _burst(Scheduler.from_config(default_config(), random.Random(1)), 50, 8)
    assert len(landed) == 8
    assert max(landed.values()) - min(landed.values()) <= 1


def test_without_in_flight_accounting_the_same_burst_herds_by_prompt_luck_only() -> None:
    # Upstream's default profile sees only scraped metrics, identical for every request of
    # the burst: placement is decided by random tie-breaks, not by load.
    landed = _burst(scheduler(UPSTREAM_DEFAULT_CONFIG_YAML, seed=1), 50, 8)
    assert max(landed.values()) - min(landed.values()) > 1
